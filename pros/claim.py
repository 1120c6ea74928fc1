"""ProS's claim testbed: one named component off at a time, 3 seeds each (common.claim).

The abstract claims that the teacher ViT pretrained by prototype-based self-distillation on
face-aware curated images transfers to attribute estimation, expression recognition and
landmark alignment, in full and few-shot settings, and that pretraining on synthetic faces is
promising. Rows (every one evaluated on the same three tasks x {linear, finetune} x {full,
few-shot}, beside the baselines eval always reports: the same ViT at random init, whose
finetune protocol is supervised training from scratch; a linear probe on raw pixels; the priors):

* ``full``: ProS (shared cosine prototypes, Sinkhorn-balanced teacher, curated pool);
* ``dino_head``: DINO's head instead (a per-network weight-normalised last layer, the teacher's
  an EMA copy). DINO's last layer is itself a prototype bank, so this row tests *one shared
  prototype matrix* against *an EMA head*, not prototypes against none;
* ``centering``: DINO's centring instead of Sinkhorn balancing of the teacher;
* ``no_curation``: pretraining on the raw pool (clutter, non-faces, small faces, duplicates);
* ``other_style``: pretraining on the second render style (flat light, no blur or noise: the
  "synthetic faces" study), evaluated on the default style.

    python -m pros.claim [--seeds 0 1 2] [--variants full dino_head] [--data-root PATH] [--table-only]
"""

from __future__ import annotations

from common.claim import Variant, run_claim

CONFIG = "claim_pros"
VARIANTS = {
    "full": Variant("ProS (shared prototypes, Sinkhorn, curated pool)", CONFIG),
    "dino_head": Variant("DINO head (EMA last layer) instead of shared prototypes", CONFIG, ("head.kind=dino",)),
    "centering": Variant("centring instead of Sinkhorn balancing", CONFIG, ("loss.balance=centering",)),
    "no_curation": Variant("without face-aware curation (raw pool)", CONFIG, ("data.curation=false",)),
    "other_style": Variant("pretrained on the other render style (flat light)", CONFIG,
                           ("data.curation=false", "data.pretrain=pros_synthetic/pool_flat")),
}
METRICS = ("attr_mean_acc_linear_full", "attr_mean_acc_linear_fewshot", "expr_acc_linear_full",
           "expr_acc_linear_fewshot", "lmk_nme_linear_full", "lmk_nme_linear_fewshot",
           "attr_mean_acc_finetune_full", "expr_acc_finetune_full", "lmk_nme_finetune_full",
           "attr_mean_acc_finetune_fewshot", "expr_acc_finetune_fewshot", "lmk_nme_finetune_fewshot")


def prepare(args) -> None:
    """The embedded world and its curation (as `make data-pros`), unless already there."""
    from common.config import load_config
    from common.data import data_root
    from common.projects import REPO_ROOT
    from pros.config import DEFAULTS, RULES
    from pros.curate import curate
    from pros.data import _resolve, generate

    cfg = load_config(REPO_ROOT / "pros" / "configs" / f"{CONFIG}.yaml", [], DEFAULTS, RULES)
    generate(cfg, args.data_root)
    if not _resolve(data_root(args.data_root), cfg.data.curated).is_file():
        curate(cfg, args.data_root)


def main(argv=None) -> int:
    return run_claim("pros", VARIANTS, argv, metrics=METRICS, prepare=prepare,
                     title="ProS claim testbed (embedded test sets; accuracies up, NME down; mean ± sample std over seeds)",
                     description=__doc__, digits=3)


if __name__ == "__main__":
    raise SystemExit(main())
