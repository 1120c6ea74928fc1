"""ECRL's config schema: every key, its default and why that value (``--config`` YAML and ``--set``
may only name these keys, with these types). Only the abstract of arXiv 2305.04123 was available,
so most values are the Liu group's conventions (IA-Net, CSMGAN released code) or RECONSTRUCTED.
The defaults are the real-data (Charades-STA, I3D) setting; ``configs/synthetic.yaml`` shrinks it
for the embedded set.

IA-Net = github.com/liudaizong/IA-Net at commit bc04dfb (README training/evaluation commands,
code/main.py defaults), the group's released code that ECRL's conventions are taken from."""

from common.config import ConfigError, Range
from common.tsg.data import DATA_DEFAULTS, DATA_RULES
from common.tsg.schedule import SCHEDULES

DEFAULTS = {
    # the dataset: files, formats, clips, words, checks (each key documented in common/tsg/data.py)
    "data": dict(DATA_DEFAULTS),
    "model": {
        "word_dim": 300,           # GloVe 840B 300-d (IA-Net README: glove.840B.300d)
        "d": 512,                  # model width (IA-Net main.py --d-model 512)
        "heads": 4,                # attention heads (IA-Net README commands: --num-heads 4)
        "query_layers": 1,         # RECONSTRUCTED: the abstract names no query encoder (group code: one BiGRU)
        "video_layers": 2,         # RECONSTRUCTED: transformer layers over the clips
        "fusion_layers": 2,        # RECONSTRUCTED: transformer layers after the cross-modal fusion
        "dropout": 0.2,            # IA-Net README commands: --dropout 0.2
        "max_clips": 512,          # rows of the fixed sinusoidal position table (raised to data.num_clips if smaller)
        "freeze_words": True,      # RECONSTRUCTED: GloVe vectors frozen (the abstract says nothing)
    },
    "ecrl": {
        "augment": True,           # the abstract: spatio-temporal augmentation + equivariant grounding of the augmented video
        "refine": True,            # the abstract: self-refine module on the augmented video (needs augment)
        "w_aug": 1.0,              # RECONSTRUCTED: weight of the grounding loss on the augmented video (abstract: none given)
        "w_sscl": 1.0,             # RECONSTRUCTED: SSCL weight (0 switches SSCL off, augmentation kept)
        "w_refine": 1.0,           # RECONSTRUCTED: self-refine objective weight
        "w_inside": 1.0,           # RECONSTRUCTED: inside-BCE weight within each grounding loss
        "label_sigma": 1.0,        # RECONSTRUCTED: soft boundary targets, Gaussian width in clips
        "sscl_sigma": 0.05,        # RECONSTRUCTED: SSCL's Gaussian prior width over timestamp distance, fraction of the video
        "sscl_kappa": 0.1,         # RECONSTRUCTED: SSCL similarity temperature
        "sscl_foreground_only": False,  # RECONSTRUCTED: SSCL rows over every own clip (True: only the moved foreground)
        "refine_hidden": 128,      # RECONSTRUCTED: self-refine bottleneck width
        "refine_p_drop": 0.15,     # RECONSTRUCTED: share of clean clips dropped for the completeness (inpainting) term
        "refine_smooth": 0.1,      # RECONSTRUCTED: weight of the smoothness term inside the refine objective
        "aug": {                   # ecrl/augment.py: AugConfig
            "p_temporal": 1.0,     # RECONSTRUCTED: probability that a sample gets the temporal transform
            "speed_min": 0.5,      # RECONSTRUCTED: foreground length factor range (log-uniform)
            "speed_max": 2.0,      # RECONSTRUCTED: (its upper end)
            "crop_max": 0.3,       # RECONSTRUCTED: at most this share of each background side is cropped away
            "p_foreign": 0.5,      # RECONSTRUCTED: probability of splicing another video's clips into the background
            "foreign_max": 0.4,    # RECONSTRUCTED: at most this share of the background becomes foreign
            "relocate": True,      # RECONSTRUCTED: re-place the foreground uniformly (False: keep its relative position)
            "noise_std": 0.1,      # RECONSTRUCTED: feature noise ("spatial" transform on features), per-video std units
            "clip_dropout": 0.1,   # RECONSTRUCTED: probability that a clip's features are zeroed
        },
    },
    "train": {
        "epochs": 40,              # IA-Net README Charades evaluation command (its training command: 80)
        "batch_size": 64,          # per process (IA-Net README Charades/TACoS: --batch-size 64)
        "lr": 4e-4,                # peak LR (IA-Net README Charades/TACoS: --lr 4e-4)
        "weight_decay": 1e-8,      # DEVIATION: AdamW (decoupled decay); IA-Net README Charades/TACoS: Adam, --weight-decay 1e-8
        "warmup_steps": 300,       # IA-Net README: --warmup-updates 300
        "schedule": "inverse_sqrt",  # cosine | inverse_sqrt | constant (IA-Net main.py --lr-scheduler inverse_sqrt)
        "grad_clip": 1.0,          # RECONSTRUCTED: global gradient-norm clip (0 = off)
        "num_workers": 4,          # DataLoader workers per process (HDF5 reads overlap compute)
    },
    "eval": {
        "k": 5,                    # moments kept per query (R@5, the papers' tables)
        "nms": 0.5,                # DEVIATION: one greedy NMS threshold at decoding (the group: theta - 0.05 per IoU threshold)
        "max_len_frac": 1.0,       # longest decodable span, fraction of the clips (1: no limit)
        "inside_weight": 1.0,      # RECONSTRUCTED: weight of the mean inside log-probability in the span score
        "batch_size": 64,          # queries per eval forward (memory only)
        "figures": 6,              # test queries drawn in eval's figure (0: none)
    },
}

POSITIVE, NONNEG, PROB = Range(min=0.0, open_min=True), Range(min=0.0), Range(min=0.0, max=1.0)
RULES = {
    **DATA_RULES,
    **{f"model.{k}": Range(min=1) for k in ("word_dim", "d", "heads", "query_layers", "video_layers",
                                            "fusion_layers", "max_clips")},
    "model.dropout": Range(min=0.0, max=1.0, open_max=True),
    **{f"ecrl.{k}": NONNEG for k in ("w_aug", "w_sscl", "w_refine", "w_inside", "label_sigma", "refine_smooth")},
    **{f"ecrl.{k}": POSITIVE for k in ("sscl_sigma", "sscl_kappa")},
    "ecrl.refine_hidden": Range(min=1),
    "ecrl.refine_p_drop": Range(min=0.0, max=1.0, open_max=True),
    **{f"ecrl.aug.{k}": PROB for k in ("p_temporal", "crop_max", "p_foreign", "foreign_max", "clip_dropout")},
    **{f"ecrl.aug.{k}": POSITIVE for k in ("speed_min", "speed_max")},
    "ecrl.aug.noise_std": NONNEG,
    "train.epochs": Range(min=1),
    "train.batch_size": Range(min=1),
    "train.lr": POSITIVE,
    "train.weight_decay": NONNEG,
    "train.warmup_steps": Range(min=0),
    "train.schedule": SCHEDULES,
    "train.grad_clip": NONNEG,
    "train.num_workers": Range(min=0),
    "eval.k": Range(min=1),
    "eval.nms": Range(min=0.0, max=1.0, open_min=True),
    "eval.max_len_frac": Range(min=0.0, max=1.0, open_min=True),
    "eval.inside_weight": NONNEG,
    "eval.batch_size": Range(min=1),
    "eval.figures": Range(min=0),
}

# keys a --resume may change (a longer schedule); any other difference from the run's config is refused
RESUMABLE = ("train.epochs",)


def validate(cfg) -> None:
    """What RULES cannot say (one key against another): the self-refine module works on augmented
    videos, so ``ecrl.refine`` needs ``ecrl.augment``; the speed range must be ordered."""
    if cfg.ecrl.refine and not cfg.ecrl.augment:
        raise ConfigError("ecrl.refine=true needs ecrl.augment=true (the self-refine module works on augmented "
                          "videos); set ecrl.refine=false for the plain grounding model")
    if cfg.ecrl.aug.speed_min > cfg.ecrl.aug.speed_max:
        raise ConfigError(f"ecrl.aug.speed_min={cfg.ecrl.aug.speed_min} > ecrl.aug.speed_max={cfg.ecrl.aug.speed_max}")
