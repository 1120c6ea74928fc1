"""DAL-GAN's claim testbed: switch off one named component at a time, 3 seeds each, on the embedded set.

    python -m dal_gan.claim                      # every variant, seeds 0 1 2 -> runs/dal_gan/claim/claim.md
    python -m dal_gan.claim --variants full pix2pix --seeds 0
    python -m dal_gan.claim --table-only         # the table of what has run

The abstract claims better frontal views than the baselines from four additions to a pix2pix-style
generator: the auxiliary classifier, the dual-path latent contrastive constraint, the local (besides
the global) discriminator and the multi-purpose loss. Each row below removes one; ``pix2pix`` removes
them all (and restores every U-Net skip); ``raw_thermal`` and the other reference rows come from every
run's results.json baselines. The table reports whatever the runs show.
"""

from __future__ import annotations

from common.claim import Variant, run_claim

PIX2PIX = ("model.skips=all", "dual.enabled=false", "local.enabled=false", "loss.perc=0", "loss.id=0", "loss.cls=0",
           "loss.con=0")
VARIANTS = {
    "full": Variant("DAL-GAN", config="claim"),
    "single_path": Variant("single path, no latent contrastive", config="claim", overrides=("dual.enabled=false",)),
    "no_local": Variant("no local discriminator", config="claim", overrides=("local.enabled=false",)),
    "no_cls": Variant("no auxiliary classifier", config="claim", overrides=("loss.cls=0",)),
    "pix2pix": Variant("pix2pix (U-Net, global PatchGAN, L1)", config="claim", overrides=PIX2PIX),
}
METRICS = ("AUC", "EER", "TAR@FAR1", "SSIM", "PSNR")


def prepare(args) -> None:
    """The embedded set and the two embedders, once, before any variant trains."""
    from common.config import load_config
    from dal_gan.config import DEFAULTS, RULES
    from dal_gan.data import ensure_generated, load_data
    from dal_gan.embedders import ensure_embedders

    cfg = load_config("dal_gan/configs/claim.yaml", args.overrides, DEFAULTS, RULES)
    if cfg.data.embedded:
        ensure_generated(cfg, args.data_root)
    ensure_embedders(cfg, load_data(cfg, args.data_root), args.runs_root)


def main(argv=None) -> int:
    return run_claim("dal_gan", VARIANTS, argv, metrics=METRICS, prepare=prepare, description=__doc__,
                     title="DAL-GAN claim testbed (embedded set, synthetic: not a paper result)",
                     subsets=("|yaw| >= 60",))   # the second column; every subset stays in results.json


if __name__ == "__main__":
    raise SystemExit(main())
