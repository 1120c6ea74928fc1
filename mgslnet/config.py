"""MGSL-Net's config schema: every key, its default and why that value (``--config`` YAML and
``--set`` may only name these keys, with these types; ``RULES`` adds choices and ranges).

Only the abstract and the figure-2 caption of arXiv 2201.00454 were available, so everything
below the three named modules (cross-modal GCN, memory augmentation, heterogeneous attention) and
the "regression based grounding heads" is RECONSTRUCTED. The defaults are the real-data
(Charades-STA, I3D) setting, taken from the same group's released code; ``configs/synthetic.yaml``
shrinks the widths and the schedule for the embedded set.

IA-Net = github.com/liudaizong/IA-Net at commit bc04dfb (README training/evaluation commands,
code/main.py defaults), the group's released code whose conventions are used where the abstract
is silent.
"""

from common.config import Range
from common.tsg.data import DATA_DEFAULTS, DATA_RULES
from common.tsg.schedule import SCHEDULES

DEFAULTS = {
    # the dataset: files, formats, clips, words, checks (each key documented in common/tsg/data.py)
    "data": dict(DATA_DEFAULTS),
    "model": {
        "word_dim": 300,            # GloVe 840B 300-d (IA-Net README: glove.840B.300d)
        "d": 512,                   # model width (IA-Net main.py --d-model 512)
        "heads": 4,                 # attention heads (IA-Net README commands: --num-heads 4)
        "video_encoder": "gru",     # RECONSTRUCTED: gru (BiGRU, the group's encoders) | attention (self-attention layers)
        "video_layers": 1,          # RECONSTRUCTED: BiGRU layers, or self-attention layers with video_encoder=attention
        "fusion_layers": 1,         # RECONSTRUCTED: self-attention layers after the heterogeneous fusion
        "dropout": 0.2,             # IA-Net README commands: --dropout 0.2
        "max_clips": 512,           # rows of the fixed sinusoidal position table (raised to data.num_clips if smaller)
        "freeze_words": True,       # the issue: GloVe frozen (the abstract says nothing)
    },
    "mgsl": {
        # --- cross-modal interaction (the abstract: "cross-modal graph convolutional network") ---
        "interaction": "gcn",       # gcn: one graph over clips + words | coattention: the same layers, cross-modal edges only
        "gcn_layers": 2,            # IA-Net main.py: 2 GCN layers (RECONSTRUCTED for MGSL-Net)
        # --- memory augmentation (the abstract: "domain-specific persistent memory") ---
        "memory": "both",           # both | video | query | none: which domains read a memory
        "slots": 128,               # RECONSTRUCTED: K slots per domain (the abstract gives no K; a 64-512 sweep is plausible)
        "tau": 0.1,                 # RECONSTRUCTED: temperature of the cosine read softmax(cos(h, M) / tau)
        "usage_momentum": 0.99,     # RECONSTRUCTED: EMA of each slot's read mass during training (a diagnostic buffer)
        "w_align": 0.1,             # RECONSTRUCTED: weight of the cross-modal alignment of the memory reads ("shared semantics")
        "align_tau": 0.1,           # RECONSTRUCTED: temperature of the alignment's in-batch contrast
        # --- heterogeneous attention (the abstract: integrates both domains' memory-enhanced features) ---
        "hetero": True,             # RECONSTRUCTED form: co-attention both ways + fusion; false: concatenation with the mean query
        # --- regression grounding head (figure 2 caption: "regression based grounding heads") ---
        "w_reg": 1.0,               # RECONSTRUCTED: smooth-L1 on the per-clip distances to start and end
        "w_iou": 1.0,               # RECONSTRUCTED: IoU loss of each inside clip's regressed span
        "w_conf": 1.0,              # RECONSTRUCTED: BCE of the per-clip confidence (target: the clip lies in the moment)
        "conf_target": "inside",    # RECONSTRUCTED: inside (1 on the moment's clips) | centerness (FCOS; DRN ranks by centre-ness too): the top clip is the one whose regression is most reliable
        "reg_beta": 0.02,           # RECONSTRUCTED: smooth-L1 transition, fraction of the video (about one clip at 64 clips)
    },
    "train": {
        "epochs": 40,               # IA-Net README Charades evaluation command (its training command: 80)
        "batch_size": 64,           # per process (IA-Net README Charades/TACoS: --batch-size 64)
        "lr": 4e-4,                 # peak LR (IA-Net README Charades/TACoS: --lr 4e-4)
        "weight_decay": 1e-8,       # IA-Net README Charades/TACoS: --weight-decay 1e-8 (Adam)
        "warmup_steps": 300,        # IA-Net README: --warmup-updates 300
        "schedule": "inverse_sqrt",  # cosine | inverse_sqrt | constant (IA-Net main.py --lr-scheduler inverse_sqrt)
        "grad_clip": 1.0,           # RECONSTRUCTED: global gradient-norm clip (0 = off)
        "num_workers": 4,           # DataLoader workers per process (HDF5 reads overlap compute)
        "threads": 0,               # torch CPU threads per process (0: torch's default)
        "glove_cache": "",          # a .npy to cache the GloVe vocabulary matrix (840B takes minutes to scan); "" = none
    },
    "eval": {
        "k": 5,                     # moments kept per query (R@5, the papers' tables)
        "nms": 0.5,                 # DEVIATION: one greedy NMS threshold at decoding (the group: theta - 0.05 per IoU threshold)
        "batch_size": 64,           # queries per eval forward (memory only)
        "figures": 6,               # test queries drawn in eval's figure (0: no figures)
        "rare": "auto",             # auto: meta.json's rare subset when the dataset has one, else `words` | meta | words
        "train_probe": 512,         # first N training queries scored too (results.json diagnostics: the train/test gap); 0 = off
        "rare_min_count": 10,       # the paper's rare case: a content word seen fewer than 10 times in train
    },
}

RULES = {
    **DATA_RULES,
    "model.d": Range(min=2),
    "model.heads": Range(min=1),
    "model.video_encoder": ("gru", "attention"),
    "model.video_layers": Range(min=1),
    "model.fusion_layers": Range(min=0),
    "model.dropout": Range(0.0, 1.0, open_max=True),
    "mgsl.interaction": ("gcn", "coattention"),
    "mgsl.gcn_layers": Range(min=1),
    "mgsl.memory": ("both", "video", "query", "none"),
    "mgsl.slots": Range(min=1),
    "mgsl.tau": Range(min=0.0, open_min=True),
    "mgsl.usage_momentum": Range(0.0, 1.0),
    "mgsl.w_align": Range(min=0.0),
    "mgsl.align_tau": Range(min=0.0, open_min=True),
    "mgsl.w_reg": Range(min=0.0),
    "mgsl.w_iou": Range(min=0.0),
    "mgsl.w_conf": Range(min=0.0),
    "mgsl.reg_beta": Range(min=0.0, open_min=True),
    "mgsl.conf_target": ("inside", "centerness"),
    "train.epochs": Range(min=1),
    "train.batch_size": Range(min=1),
    "train.lr": Range(min=0.0, open_min=True),
    "train.weight_decay": Range(min=0.0),
    "train.warmup_steps": Range(min=0),
    "train.schedule": SCHEDULES,
    "train.grad_clip": Range(min=0.0),
    "train.num_workers": Range(min=0),
    "train.threads": Range(min=0),
    "eval.k": Range(min=1),
    "eval.nms": Range(0.0, 1.0),
    "eval.batch_size": Range(min=1),
    "eval.figures": Range(min=0),
    "eval.rare": ("auto", "meta", "words"),
    "eval.rare_min_count": Range(min=1),
    "eval.train_probe": Range(min=0),
}

# keys a --resume may change (a longer schedule); any other difference from the run's config is refused
RESUMABLE = ("train.epochs",)
