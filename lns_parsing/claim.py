"""Claim testbed: does organ context (and which organs, predicted how) help station parsing?

The abstract claims that encoding referencing organs as context improves LNS parsing over a pure
CT model (81.1 vs 76.1 Dice, previous approach 61.9), that a small auto-searched set of key organs
is what matters, and that stratified (anchor -> non-anchor) organ segmentation helps. One named
component off at a time, each over 3 seeds (4-fold CV each), through ``common.claim.run_claim``;
the fixed-margin "previous approach" and the majority atlas come as baseline rows; the
``defining_in_topk`` column counts how many of the searched top-6 are organs the phantom's station
rules use (of 12; the other 10 organs are distractors).

    python -m lns_parsing.claim [--seeds 0 1 2] [--variants full ct_only ...] [--data-root R] [--table-only]
"""

from __future__ import annotations

from common.claim import Variant, run_claim

CONFIG = "synthetic"
COMMON = ("lns.ct_only_baseline=false", "eval.figures=false")  # the CT-only net is its own row here
VARIANTS = {
    "full": Variant("searched top-6, predicted stratified organs (DeepStationing)", CONFIG, COMMON),
    "ct_only": Variant("CT only (no context encoding)", CONFIG, (*COMMON, "lns.organs=none")),
    "all": Variant("all 22 organs (no auto-search)", CONFIG, (*COMMON, "lns.organs=all")),
    "random6": Variant("6 random organs (search replaced by chance)", CONFIG, (*COMMON, "lns.organs=random")),
    "non_stratified": Variant("searched, organs from one non-stratified net", CONFIG,
                              (*COMMON, "organs.stratified=false")),
    "gt_oracle": Variant("searched, ground-truth organs (oracle)", CONFIG, (*COMMON, "lns.organ_source=gt")),
}
METRICS = ("Dice", "HD95", "ASD", "organ_dice_anchor", "organ_dice_nonanchor", "defining_in_topk")


def main(argv=None) -> int:
    return run_claim("lns_parsing", VARIANTS, argv, metrics=METRICS, description=__doc__,
                     title="DeepStationing claim testbed (4-fold CV on the phantom, mean ± sample std over seeds)")


if __name__ == "__main__":
    raise SystemExit(main())
