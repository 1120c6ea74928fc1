"""SSRN's claim testbed: one named component off at a time, 3 seeds each (common.claim).

The abstract claims that sparse sampling drops boundary frames (boundary bias) and that siamese
sampling (additional contextual frames) with a reasoning strategy (soft boundary labels) grounds
more accurately. Rows, on the embedded boundary-bias world with its own seed
(``TESTBED``: 8 raw frames/s, 60 % one-second moments, 16 anchor frames), same epochs each:

* SSRN: siamese sampling (S = 2) + reasoning (soft boundary labels);
* without siamese sampling: the anchor alone, still with random sub-step offsets;
* siamese sequences as extra samples, without reasoning (their GT losses kept, no soft labels);
* mean-pooled input, no siamese sequences (the MMN/VSLNet answer to the same loss of frames);
* SSRN with ``fuse_siamese`` (anchor frames attend to the siamese frames, also at inference).

    python -m ssrn.claim [--seeds 0 1 2] [--variants full no_siamese] [--data-root PATH] [--table-only]
"""

from __future__ import annotations

from common.claim import Variant, run_claim
from common.data import data_root
from common.tsg.synthetic import generate
from ssrn.data import BOUNDARY_SET

CONFIG = "claim_ssrn"
TESTBED = {"subdir": "tsg_boundary_claim", "seed": 1, "knobs": BOUNDARY_SET["knobs"]}  # the default world, own seed
VARIANTS = {
    "full": Variant("SSRN (siamese sampling S=2 + reasoning)", CONFIG),
    "no_siamese": Variant("without siamese sampling (anchor with random offsets)", CONFIG, ("ssrn.siamese=0",)),
    "no_reasoning": Variant("siamese sequences as extra samples, no reasoning", CONFIG, ("ssrn.reasoning=false",)),
    "mean_pool": Variant("mean-pooled input, no siamese (MMN/VSLNet)", CONFIG,
                         ("data.resample=mean", "ssrn.siamese=0", "ssrn.jitter=false")),
    "fuse": Variant("SSRN + fuse_siamese (siamese frames at inference too)", CONFIG, ("ssrn.fuse_siamese=true",)),
}


def prepare(args) -> None:
    """Generate the testbed's data set once (``<data root>/tsg_boundary_claim``)."""
    out = data_root(args.data_root) / TESTBED["subdir"]
    if not (out / "meta.json").is_file():
        generate(out, seed=TESTBED["seed"], **TESTBED["knobs"])


def main(argv=None) -> int:
    return run_claim("ssrn", VARIANTS, argv, metrics=("R1@0.5", "R1@0.7", "mIoU"), prepare=prepare,
                     title="SSRN claim testbed (test split, mean ± sample std over seeds)", description=__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
