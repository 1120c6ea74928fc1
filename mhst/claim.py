"""MHST's claim testbed: one named component off at a time, 3 seeds each (common.claim).

The abstract claims that the hypotheses tree (adjacent query-related leaves merged bottom-up into
root hypotheses, query-irrelevant nodes pruned as the tree grows) localizes a sentence from one
labelled frame per moment better than scoring frames alone. Rows:

* full MHST (agglomerative tree, pruning, the four self-supervised losses);
* without the tree: the same leaves and relevance, trained with the relevance, contrastive and
  sparsity losses, decoded by the shared multi-scale window decoder over the leaf relevance;
* without pruning: the tree merges every leaf (irrelevant leaves no longer split segments);
* the tree built by levels (parallel pairwise merges) instead of agglomeratively;
* the ViGA-style peer baseline: the same encoders, a Gaussian-weighted clip-query loss around the
  glance, the window decoder.

    python -m mhst.claim [--seeds 0 1 2] [--variants full no_tree] [--data-root PATH] [--table-only]
"""

from __future__ import annotations

from common.claim import Variant, run_claim
from common.data import data_root
from common.tsg.synthetic import generate

CONFIG = "claim_mhst"
TESTBED = {"subdir": "tsg_claim", "seed": 1, "knobs": {}}  # the generator's default world, its own seed
VARIANTS = {
    "full": Variant("MHST (agglomerative tree + pruning)", CONFIG),
    "no_tree": Variant("without the tree (leaf relevance through the window decoder)", CONFIG, ("mhst.tree=none",)),
    "no_prune": Variant("without pruning", CONFIG, ("mhst.prune=false",)),
    "levels": Variant("tree by levels (parallel pairwise merges)", CONFIG, ("mhst.tree=levels",)),
    "viga": Variant("ViGA-style baseline (Gaussian clip-query loss, window decoder)", CONFIG, ("mhst.method=viga",)),
}


def prepare(args) -> None:
    """Generate the testbed's data set once (``<data root>/tsg_claim``)."""
    out = data_root(args.data_root) / TESTBED["subdir"]
    if not (out / "meta.json").is_file():
        generate(out, seed=TESTBED["seed"], **TESTBED["knobs"])


def main(argv=None) -> int:
    return run_claim("mhst", VARIANTS, argv, metrics=("R1@0.5", "R1@0.7", "mIoU"), prepare=prepare,
                     title="MHST claim testbed (test split, mean ± sample std over seeds)", description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
