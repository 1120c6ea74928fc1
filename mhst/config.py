"""MHST's config schema: every key, its default and why that value (``--config`` YAML and ``--set``
may only name these keys, with these types; RULES adds choices and ranges).

Only the abstract and introduction of arXiv 2301.01871 (Liu et al., "Hypotheses Tree Building for
One-Shot Temporal Sentence Localization", AAAI 2023) were available and no code is public, so the
tree's thresholds, the losses' forms and weights and every width are RECONSTRUCTED. The defaults
are the real-data (Charades-STA, I3D) setting with the Liu group's conventions (IA-Net,
github.com/liudaizong/IA-Net@bc04dfb README commands); ``configs/synthetic.yaml`` shrinks it for
the embedded set.

The setting is ViGA's glance annotation (Cui et al., SIGIR 2022, arXiv 2204.09409): one timestamp
inside each training moment. The train split is therefore a *glance file*
(``glance/charades_sta_train.txt``) and training never reads its start/end (``mhst/data.py``).
"""

from common.config import Range
from common.tsg.data import DATA_DEFAULTS, DATA_RULES
from common.tsg.schedule import SCHEDULES

DEFAULTS = {
    # the dataset (each key documented in common/tsg/data.py); the train file is ViGA's glance file
    "data": {
        **DATA_DEFAULTS,
        "train": "glance/charades_sta_train.txt",  # ViGA's glance format: vid start end##glance##sentence
    },
    "model": {
        "word_dim": 300,           # GloVe 840B 300-d (ViGA and the Liu group: glove.840B.300d)
        "d": 512,                  # model width (IA-Net main.py --d-model 512)
        "video_layers": 2,         # RECONSTRUCTED: residual temporal-conv blocks over the clips (the abstract names no encoder)
        "fusion_layers": 1,        # RECONSTRUCTED: residual temporal-conv blocks over the query-gated leaves
        "kernel": 3,               # RECONSTRUCTED: temporal kernel of those blocks
        "dropout": 0.2,            # IA-Net README commands: --dropout 0.2
        "relevance_hidden": 0,     # RECONSTRUCTED: 0 = r = sigmoid(w . [h; q; h*q]) (linear); > 0 adds a hidden layer
        "freeze_words": True,      # RECONSTRUCTED: GloVe vectors frozen (ViGA freezes them)
    },
    "mhst": {
        "method": "mhst",          # mhst | viga: the ViGA-style peer baseline (same encoders, Gaussian clip-query loss, window decoder)
        "tree": "agglomerative",   # agglomerative | levels | none (none: no tree; leaf scores through the window decoder)
        "gamma": 1.0,              # RECONSTRUCTED: merge score s(a,b) = cos(h_a, h_b) * (r_a r_b)^gamma
        "tau_merge": 0.0,          # RECONSTRUCTED: no merge below this score (0: adjacent kept leaves whose features point apart never merge)
        "k_max": 1,                # RECONSTRUCTED: merging stops once a video has this many roots
        "levels": 8,               # RECONSTRUCTED: tree=levels: rounds of parallel pairwise merges (2^8 = 256 >= 200 clips)
        "prune": True,             # the abstract: query-irrelevant nodes are removed before merging (they split segments)
        "tau_prune": 0.5,          # RECONSTRUCTED: leaves with relevance below this are pruned
        "prune_rule": "relative",  # RECONSTRUCTED: relative (r < tau_prune * the video's max r) | absolute (r < tau_prune). Relative at 0.5:
                                   # the relevance learned from a glance uniform inside the moment is the moment's box blurred by
                                   # the Gaussian, whose half-maximum lies at the moment's edges; absolute 0.5 pruned 97 % of the
                                   # leaves on the embedded set (short run, seed 0)
        "w_match": 1.0,            # RECONSTRUCTED: hypothesis score = mean leaf relevance + w_match * cross-modal match
        "sigma": 0.1,              # RECONSTRUCTED: width of the Gaussian around the glance, fraction of the clip grid
        "w_relevance": 1.0,        # RECONSTRUCTED: leaf relevance vs the glance Gaussian (BCE)
        "w_anchor": 1.0,           # RECONSTRUCTED: glance anchoring (the root holding the glance vs the video's other roots)
        "anchor_temp": 0.1,        # RECONSTRUCTED: InfoNCE temperature of the anchoring loss
        "w_contrast": 0.5,         # RECONSTRUCTED: video-query contrastive loss on pooled glance roots (other queries as negatives)
        "contrast_temp": 0.1,      # RECONSTRUCTED: its temperature
        "w_sparsity": 0.1,         # RECONSTRUCTED: tree sparsity: mean relevance of the leaves outside the glance root
        "viga_temp": 0.1,          # RECONSTRUCTED: method=viga: temperature of the Gaussian-weighted clip softmax
    },
    "train": {
        "epochs": 40,              # RECONSTRUCTED: the Liu group's Charades schedule (IA-Net README evaluation command)
        "batch_size": 64,          # per process (IA-Net README Charades: --batch-size 64)
        "lr": 4e-4,                # peak LR (IA-Net README Charades: --lr 4e-4)
        "weight_decay": 1e-8,      # DEVIATION: AdamW (decoupled decay); IA-Net README: Adam, --weight-decay 1e-8
        "warmup_steps": 300,       # IA-Net README: --warmup-updates 300
        "schedule": "inverse_sqrt",  # cosine | inverse_sqrt | constant (IA-Net main.py --lr-scheduler inverse_sqrt)
        "grad_clip": 1.0,          # RECONSTRUCTED: global gradient-norm clip (0 = off)
        "num_workers": 4,          # DataLoader workers per process (HDF5 reads overlap compute)
    },
    "eval": {
        "k": 5,                    # moments kept per query (R@5)
        "nms": 0.5,                # greedy NMS over the ranked hypotheses before R@5 (2D-TAN/MMN: 0.45-0.5)
        "window_scales": [0.1, 0.2, 0.3, 0.4, 0.5, 0.7],  # tree=none and method=viga: window widths, fractions of the video
        "window_contrast": 1.0,    # RECONSTRUCTED: window score = mean inside - contrast * mean outside (common.tsg.decode)
        "batch_size": 64,          # queries per eval forward (memory only)
        "figures": 6,              # test queries drawn in eval's figures (0: none)
    },
}

RULES = {
    **DATA_RULES,
    "model.word_dim": Range(min=1),
    "model.d": Range(min=2),
    "model.video_layers": Range(min=0),
    "model.fusion_layers": Range(min=0),
    "model.kernel": Range(min=1),
    "model.dropout": Range(0, 1, open_max=True),
    "model.relevance_hidden": Range(min=0),
    "mhst.method": ("mhst", "viga"),
    "mhst.tree": ("agglomerative", "levels", "none"),
    "mhst.gamma": Range(min=0),
    "mhst.k_max": Range(min=1),
    "mhst.levels": Range(min=1),
    "mhst.tau_prune": Range(0, 1),
    "mhst.prune_rule": ("absolute", "relative"),
    "mhst.w_match": Range(min=0),
    "mhst.sigma": Range(min=0, open_min=True),
    "mhst.w_relevance": Range(min=0),
    "mhst.w_anchor": Range(min=0),
    "mhst.anchor_temp": Range(min=0, open_min=True),
    "mhst.w_contrast": Range(min=0),
    "mhst.contrast_temp": Range(min=0, open_min=True),
    "mhst.w_sparsity": Range(min=0),
    "mhst.viga_temp": Range(min=0, open_min=True),
    "train.epochs": Range(min=1),
    "train.batch_size": Range(min=1),
    "train.lr": Range(min=0, open_min=True),
    "train.weight_decay": Range(min=0),
    "train.warmup_steps": Range(min=0),
    "train.schedule": SCHEDULES,
    "train.grad_clip": Range(min=0),
    "train.num_workers": Range(min=0),
    "eval.k": Range(min=1),
    "eval.nms": Range(0, 1),
    "eval.window_scales": Range(0, 1, open_min=True),
    "eval.window_contrast": Range(min=0),
    "eval.batch_size": Range(min=1),
    "eval.figures": Range(min=0),
}

# keys a --resume may change (a longer schedule); any other difference from the run's config is refused
RESUMABLE = ("train.epochs",)


def uses_tree(cfg) -> bool:
    """Whether hypotheses come from the tree (else from the window decoder over leaf scores)."""
    return cfg.mhst.method == "mhst" and cfg.mhst.tree != "none"
