"""SSRN's config schema: every key, its default and why that value (``--config`` YAML and ``--set``
may only name these keys, with these types; ``RULES`` adds choices and ranges).

Only the abstract of arXiv 2301.00514 was available. The siamese sampling / reasoning formulation
is carried over from its design ancestor SiaSamRea (Yu et al., NeurIPS 2021, "Learning from
Inside: Self-driven Siamese Sampling and Reasoning for Video Question Answering", Sec. 3: alpha =
1, omega = 0.5); widths and schedules are the Liu group's released IA-Net settings
(github.com/liudaizong/IA-Net at commit bc04dfb: README commands, code/main.py defaults). The
defaults are the real-data (Charades-STA, I3D) setting; ``configs/synthetic.yaml`` shrinks them for
the embedded set."""

from common.config import ConfigError, Range
from common.tsg.data import DATA_DEFAULTS, DATA_RULES
from common.tsg.schedule import SCHEDULES

DEFAULTS = {
    # the dataset (each key documented in common/tsg/data.py); SSRN's premise is sparse sampling:
    "data": {**DATA_DEFAULTS,
             "resample": "uniform"},   # uniform (sparse frames, the paper's premise) | mean (MMN/VSLNet pooling)
    "model": {
        "word_dim": 300,           # GloVe 840B 300-d (IA-Net README: glove.840B.300d)
        "freeze_words": True,      # RECONSTRUCTED: frozen GloVe vectors (the group's code keeps them fixed)
        "d": 512,                  # model width (IA-Net main.py --d-model 512)
        "heads": 4,                # attention heads (IA-Net README commands: --num-heads 4)
        "query_encoder": "bigru",  # bigru (the group's code) | transformer; RECONSTRUCTED: the abstract names none
        "query_layers": 1,         # RECONSTRUCTED: one BiGRU / transformer layer over the words
        "video_layers": 1,         # RECONSTRUCTED: transformer layers over the projected clips
        "fusion_layers": 2,        # RECONSTRUCTED: transformer layers after the frame-query co-attention (IA-Net: 2)
        "dropout": 0.2,            # IA-Net README commands: --dropout 0.2
    },
    "ssrn": {
        "siamese": 2,              # S siamese sequences per video (0 = off). RECONSTRUCTED: SiaSamRea uses 8 clips;
                                   #   training costs ~(1+S)x, so 2 here (one either side of the anchor frames)
        "jitter": True,            # random sub-step offset of the anchor sequence in training (0 at test)
        "reasoning": True,         # soft boundary labels from the siamese sequences (False: siamese = extra samples)
        "alpha": 1.0,              # weight of KL(Q || P_anchor) (SiaSamRea Sec. 3.3: alpha = 1.0)
        "omega": 0.5,              # Q = omega * propagated + (1 - omega) * own (SiaSamRea Sec. 3.3: omega = 0.5)
        "tau": 0.1,                # RECONSTRUCTED: affinity temperature (SiaSamRea has none over 8 clips; over
                                   #   frames a plain cosine softmax is nearly flat)
        "window": 1.0,             # RECONSTRUCTED: a siamese frame propagates onto anchor frames within this many
                                   #   anchor steps of it (0 = every anchor frame)
        "w_siamese": 1.0,          # RECONSTRUCTED: weight of the siamese sequences' own GT losses (mean over S)
        "fuse_siamese": False,     # anchor frames cross-attend to the siamese frames (the abstract's "supplement
                                   #   the absent consecutive visual semantics"); inference then needs them too
        "label_sigma": 0.0,        # RECONSTRUCTED: GT boundary targets, Gaussian width in clips (0 = one-hot)
        "w_inside": 1.0,           # RECONSTRUCTED: weight of the inside (foreground) BCE in each GT loss
    },
    "train": {
        "epochs": 40,              # IA-Net README Charades evaluation command (its training command: 80)
        "batch_size": 64,          # per process (IA-Net README Charades/TACoS: --batch-size 64)
        "lr": 4e-4,                # peak LR (IA-Net README Charades/TACoS: --lr 4e-4)
        "weight_decay": 1e-8,      # DEVIATION: AdamW (decoupled decay); IA-Net README Charades/TACoS: Adam, 1e-8
        "warmup_steps": 300,       # IA-Net README: --warmup-updates 300
        "schedule": "inverse_sqrt",  # cosine | inverse_sqrt | constant (IA-Net main.py --lr-scheduler inverse_sqrt)
        "grad_clip": 1.0,          # RECONSTRUCTED: global gradient-norm clip (0 = off)
        "num_workers": 4,          # DataLoader workers per process (HDF5 reads and resampling overlap compute)
    },
    "eval": {
        "k": 5,                    # moments kept per query (R@5, the papers' tables)
        "nms": 0.5,                # DEVIATION: one greedy NMS threshold at decoding (the group: theta - 0.05 per IoU)
        "max_len_frac": 1.0,       # longest decodable span, fraction of the clips (1: no limit)
        "inside_weight": 1.0,      # RECONSTRUCTED: weight of the mean inside log-probability in the span score
        "batch_size": 64,          # queries per eval forward (memory only)
        "figures": 6,              # test queries drawn in the figures (0: none)
    },
}

RULES = {
    **DATA_RULES,
    "data.num_clips": Range(min=2),
    "data.max_words": Range(min=1),
    "data.train_fraction": Range(0.0, 1.0, open_min=True),
    "model.d": Range(min=2),
    "model.heads": Range(min=1),
    "model.query_encoder": ("bigru", "transformer"),
    "model.query_layers": Range(min=1),
    "model.video_layers": Range(min=0),
    "model.fusion_layers": Range(min=0),
    "model.dropout": Range(0.0, 1.0, open_max=True),
    "ssrn.siamese": Range(min=0),
    "ssrn.alpha": Range(min=0.0),
    "ssrn.omega": Range(0.0, 1.0),
    "ssrn.tau": Range(min=0.0, open_min=True),
    "ssrn.window": Range(min=0.0),
    "ssrn.w_siamese": Range(min=0.0),
    "ssrn.label_sigma": Range(min=0.0),
    "ssrn.w_inside": Range(min=0.0),
    "train.epochs": Range(min=1),
    "train.batch_size": Range(min=1),
    "train.lr": Range(min=0.0, open_min=True),
    "train.weight_decay": Range(min=0.0),
    "train.warmup_steps": Range(min=0),
    "train.schedule": SCHEDULES,
    "train.grad_clip": Range(min=0.0),
    "train.num_workers": Range(min=0),
    "eval.k": Range(min=1),
    "eval.nms": Range(0.0, 1.0),
    "eval.max_len_frac": Range(0.0, 1.0, open_min=True),
    "eval.inside_weight": Range(min=0.0),
    "eval.batch_size": Range(min=1),
    "eval.figures": Range(min=0),
}

# keys a --resume may change (a longer schedule); any other difference from the run's config is refused
RESUMABLE = ("train.epochs",)


def validate(cfg) -> None:
    """Cross-key rules RULES cannot state (raised before anything runs)."""
    if cfg.model.d % cfg.model.heads:
        raise ConfigError(f"model.d={cfg.model.d} must be divisible by model.heads={cfg.model.heads}")
    if cfg.model.query_encoder == "bigru" and cfg.model.d % 2:
        raise ConfigError(f"model.query_encoder=bigru needs an even model.d (two directions), got {cfg.model.d}")
    s = cfg.ssrn
    if cfg.data.resample != "uniform" and (s.siamese > 0 or s.jitter):
        raise ConfigError(f"data.resample={cfg.data.resample!r}: siamese sampling and the anchor jitter shift "
                          f"uniformly sampled frames (data.resample=uniform); set ssrn.siamese=0 and "
                          f"ssrn.jitter=false for pooled input")
    if s.fuse_siamese and s.siamese == 0:
        raise ConfigError("ssrn.fuse_siamese=true needs siamese sequences (ssrn.siamese >= 1)")
