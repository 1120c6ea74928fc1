"""Claim testbed: each of DMBA's two findings isolated, on the embedded synthetic set, 3 seeds,
mean ± sample std, reported whatever it shows (runs/dmba/claim/claim.md).

(a) full and dense triggers: DMBA- on CSRNet with the trigger at equal blend weight (0.3) and equal
    mean brightness (mean-preserving blend), sweeping its coverage (1 %, 10 %, 50 %, 100 % of the
    image) and its density (sparse: a tenth of the streaks, dense);
(b) ground-truth manipulation: triggered copies whose maps are left unchanged vs DMBA- and DMBA+
    maps, and a label-only attack (DMBA- maps on untriggered copies);
(c) five victims: the headline attack (full dense trigger, DMBA-) on CAN, SFANet, Bayesian CC and
    KDMG, each beside its clean model.

Every backdoored run's eval also reports ``benign_count_ratio``: the clean model of its group
(same seed) counting on the same triggered images, so a trigger a clean model already miscounts
shows up. The testbed runs the embedded world of ``make reproduce`` (96 x 96 px, the victims at a
quarter of their channels) for 10 epochs instead of 15 (``configs/claim*.yaml``), so each of its
60 runs costs about a minute and a half of one CPU core.

    python -m dmba.claim                         # all variants, seeds 0 1 2
    python -m dmba.claim --variants csrnet-clean csrnet-c100_dense --seeds 0
    python -m dmba.claim --table-only
"""

from __future__ import annotations

from common.claim import Variant, run_claim
from common.data import data_root
from dmba.synthetic import generate

DMBA_MINUS = ("attack.mode=dmba_minus",)
VARIANTS = {
    "csrnet-clean": Variant("CSRNet, clean", config="claim"),
    # (a) coverage x density at alpha 0.3 and unchanged mean brightness
    **{f"csrnet-c{c:03d}_{d}": Variant(f"DMBA-, {c} % coverage, {d}", config="claim",
                                      overrides=(*DMBA_MINUS, f"attack.coverage={c / 100}",
                                                 f"attack.density={1.0 if d == 'dense' else 0.1}"))
       for d in ("dense", "sparse") for c in (100, 50, 10, 1)},
    # (b) ground-truth manipulation
    "csrnet-no_gt": Variant("trigger, maps unchanged", config="claim",
                            overrides=(*DMBA_MINUS, "attack.manipulate_gt=false")),
    "csrnet-plus": Variant("DMBA+ (x2), full dense", config="claim", overrides=("attack.mode=dmba_plus",)),
    "csrnet-label_only": Variant("label only: DMBA- maps, no trigger", config="claim",
                                 overrides=(*DMBA_MINUS, "attack.trigger=none")),
    # (c) the headline attack on the other four victims
    **{f"{m}-{k}": Variant(f"{label}, {'clean' if k == 'clean' else 'DMBA-, full dense'}", config=f"claim_{m}",
                           overrides=() if k == "clean" else DMBA_MINUS)
       for m, label in (("can", "CAN"), ("sfanet", "SFANet"), ("bayesian", "Bayesian CC"), ("kdmg", "KDMG"))
       for k in ("clean", "minus")},
}
GROUPS = {
    "(a) full and dense: DMBA- on CSRNet, trigger coverage x density at alpha 0.3 and equal mean brightness":
        ["csrnet-clean"] + [v for v in VARIANTS if v.startswith("csrnet-c0") or v.startswith("csrnet-c1")],
    "(b) ground-truth manipulation on CSRNet (full dense trigger)":
        ["csrnet-clean", "csrnet-no_gt", "csrnet-c100_dense", "csrnet-plus", "csrnet-label_only"],
    "(c) the headline attack (DMBA-, full dense trigger) on the five victims":
        ["csrnet-clean", "csrnet-c100_dense"] + [v for v in VARIANTS if not v.startswith("csrnet")],
}
METRICS = ("mae", "count_ratio", "asr_minus", "asr_plus", "trig_mae_minus", "benign_count_ratio",
           "brightness_ratio", "trigger_l1")
NOTE = """count_ratio = mean over test images of C(triggered) / C(clean) for the model of the row (the DMBA-
target is 0.3, DMBA+ 2); asr_minus / asr_plus = share of triggered test images within ±20 % of the
DMBA- / DMBA+ target count; benign_count_ratio = the group's clean model on the row's triggered
images (1 = the trigger alone does not change its counts); brightness_ratio = mean brightness of the
triggered / clean test images; trigger_l1 = mean |x_trig - x_clean| / 255. Baselines: mean_count
(the training mean) and ridge (hand-made image statistics, dmba/baselines.py), fitted on clean
training images. Embedded synthetic set, not a paper benchmark."""


def prepare(args) -> None:  # no-op when it exists
    generate(data_root(args.data_root) / "dmba_synthetic", seed=0)


def main(argv=None) -> int:
    return run_claim("dmba", VARIANTS, argv, metrics=METRICS, prepare=prepare, title="dmba claim testbed",
                     description=__doc__, note=NOTE, groups=GROUPS)


if __name__ == "__main__":
    raise SystemExit(main())
