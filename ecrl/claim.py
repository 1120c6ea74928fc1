"""ECRL's claim testbed: one named component off at a time, 3 seeds each (common.claim).

The abstract claims that equivariant consistency learning (augmentation + SSCL + self-refine +
the shared head on both videos) learns more discriminative query-related frame features and
relies less on the dataset's distribution bias, and that it is data-efficient. Rows:

* full ECRL; without SSCL (augmentation and the equivariant head kept); without augmentation (so
  without SSCL and self-refine: the plain grounding network); without self-refine; augmentation
  without foreground relocation (the moment keeps its relative position);
* data efficiency: full ECRL and ECRL without SSCL on 50 % and 25 % of the training pairs (a fixed
  subset per seed, ``data.train_fraction``).

    python -m ecrl.claim [--seeds 0 1 2] [--variants full no_sscl] [--data-root PATH] [--table-only]
"""

from __future__ import annotations

from common.claim import Variant, run_claim
from common.data import data_root
from common.tsg.synthetic import generate, stale_reason

CONFIG = "claim_ecrl"
TESTBED = {"subdir": "tsg_claim", "seed": 1, "knobs": {}}  # the generator's default world, its own seed
VARIANTS = {
    "full": Variant("ECRL (augmentation + self-refine + SSCL + shared head)", CONFIG),
    "no_sscl": Variant("without SSCL (augmentation kept)", CONFIG, ("ecrl.w_sscl=0",)),
    "no_aug": Variant("without augmentation (no SSCL, no self-refine)", CONFIG,
                      ("ecrl.augment=false", "ecrl.refine=false")),
    "no_refine": Variant("without self-refine", CONFIG, ("ecrl.refine=false",)),
    "no_relocate": Variant("augmentation without relocation", CONFIG, ("ecrl.aug.relocate=false",)),
    "full_50": Variant("ECRL, 50 % of the training pairs", CONFIG, ("data.train_fraction=0.5",)),
    "no_sscl_50": Variant("without SSCL, 50 % of the training pairs", CONFIG,
                          ("data.train_fraction=0.5", "ecrl.w_sscl=0")),
    "full_25": Variant("ECRL, 25 % of the training pairs", CONFIG, ("data.train_fraction=0.25",)),
    "no_sscl_25": Variant("without SSCL, 25 % of the training pairs", CONFIG,
                          ("data.train_fraction=0.25", "ecrl.w_sscl=0")),
}


def prepare(args) -> None:
    """Generate the testbed's data set (``<data root>/tsg_claim``) unless it is there with these knobs."""
    out = data_root(args.data_root) / TESTBED["subdir"]
    if stale_reason(out, TESTBED["seed"], **TESTBED["knobs"]) is not None:  # absent, or made by other knobs
        generate(out, seed=TESTBED["seed"], **TESTBED["knobs"])


def main(argv=None) -> int:
    return run_claim("ecrl", VARIANTS, argv, metrics=("R1@0.5", "R1@0.7", "mIoU"), prepare=prepare,
                     title="ECRL claim testbed (test split, mean ± sample std over seeds)", description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
