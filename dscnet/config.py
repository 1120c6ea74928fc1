"""DSCNet's config schema: every key, its default and why that value (``--config`` YAML and ``--set``
may only name these keys, with these types). Only the abstract and the introduction of arXiv
2201.05307 are available and no code was released, so every value below the abstract is
RECONSTRUCTED. The defaults are the real-data (Charades-STA, I3D) setting; ``configs/synthetic.yaml``
shrinks it for the embedded set."""

from common.config import Range
from common.tsg.data import DATA_DEFAULTS, DATA_RULES
from common.tsg.schedule import SCHEDULES

DEFAULTS = {
    # the dataset (each key documented in common/tsg/data.py); DSCNet's training reads it unpaired (dscnet/data.py)
    "data": dict(DATA_DEFAULTS),
    "model": {
        "word_dim": 300,          # GloVe 840B 300-d, frozen (the Liu group's released code: IA-Net, CSMGAN)
        "freeze_words": True,     # RECONSTRUCTED: GloVe vectors frozen, so test words keep their GloVe meaning
        "query_hidden": 256,      # RECONSTRUCTED: BiGRU width per direction of the query encoder (abstract: "encoder-decoder")
        "z_dim": 256,             # RECONSTRUCTED: size of the deep semantic feature z of a query
        "d": 256,                 # RECONSTRUCTED: clip encoder width
        "video_layers": 2,        # RECONSTRUCTED: residual temporal conv blocks (kernel 3) over the clips
        "video_norm": False,      # RECONSTRUCTED: no LayerNorm after the clip projection, so the clips' feature norm,
                                  #   which tells salient event clips from background, reaches the attention (tiny aligned
                                  #   world: foreground branch alone R1@0.5 3.2 with the norm, 11.3 without)
        "head_layers": 2,         # RECONSTRUCTED: conv blocks of the grounding head after the FiLM conditioning
        "dropout": 0.1,           # RECONSTRUCTED
    },
    "dscnet": {
        "clusters": 128,          # RECONSTRUCTED: K deep semantic clusters of the train queries (paper silent; 12k Charades queries)
        "cluster": "kmeans",      # kmeans | dec: re-clustered each epoch (k-means, warm-started) or DEC's KL (Xie et al. 2016)
        "kmeans_iters": 50,       # RECONSTRUCTED: Lloyd iterations per epoch (stops earlier once converged)
        "dec_alpha": 1.0,         # DEC's Student-t degrees of freedom (Xie et al. 2016 use 1)
        "w_dec": 0.1,             # RECONSTRUCTED: weight of DEC's KL(P||Q) (cluster=dec only)
        "top_m": 2,               # RECONSTRUCTED: centres (activities) kept per video (Charades-STA: 2.3 queries per video)
        "size_prior": True,       # RECONSTRUCTED (identifiability): select centres by a Sinkhorn plan whose column
                                  #   marginals are the query clusters' sizes (false: the raw top-M of the matching scores)
        "sinkhorn_eps": 0.05,     # RECONSTRUCTED: entropic regularisation of the size prior's plan (scores in log-prob units)
        "sinkhorn_iters": 50,     # RECONSTRUCTED
        "foreground": True,       # the abstract's foreground attention branch (false: no branch, nothing multiplied in)
        "infer": "query",         # query | centre: condition the head on the real query's z or on its nearest centre
        "paired": False,          # the "paired ceiling": the same network trained with pairs and boundaries (NOT DSCNet)
        "ae_epochs": 2,           # RECONSTRUCTED: epochs of the query autoencoder alone before clustering starts
        "tau": 0.1,               # RECONSTRUCTED: temperature of the activity-centre matching (cosine / tau)
        "w_rec": 1.0,             # RECONSTRUCTED: weight of the query reconstruction loss
        "w_pull": 1.0,            # RECONSTRUCTED: weight of the term pulling a_k to c_k and away from the other centres
        "w_head": 1.0,            # RECONSTRUCTED: weight of the head's pseudo-segment loss
        "w_fg": 1.0,              # RECONSTRUCTED: weight of the foreground BCE
        "w_inside": 1.0,          # RECONSTRUCTED: weight of the inside-BCE within the head's loss
        "label_sigma": 1.0,       # RECONSTRUCTED: Gaussian width (clips) of the soft start/end targets
    },
    "train": {
        "epochs": 30,             # RECONSTRUCTED: the paper gives no schedule
        "batch_size": 64,         # videos per step and process
        "query_batch_size": 128,  # train sentences per step and process (the query autoencoder's batch)
        "lr": 4e-4,               # RECONSTRUCTED: the Liu group's peak LR (IA-Net README, Charades: --lr 4e-4)
        "weight_decay": 1e-4,     # RECONSTRUCTED: AdamW
        "warmup_steps": 300,      # IA-Net README: --warmup-updates 300
        "schedule": "cosine",     # cosine | inverse_sqrt | constant (common.tsg.schedule)
        "grad_clip": 1.0,         # RECONSTRUCTED: global gradient-norm clip (0 = off)
        "num_workers": 4,         # DataLoader workers per process
    },
    "eval": {
        "k": 5,                   # moments kept per query (R@5)
        "nms": 0.5,               # DEVIATION: one greedy NMS threshold at decoding (the group: theta - 0.05 per threshold)
        "inside_weight": 1.0,     # RECONSTRUCTED: weight of the mean inside (x foreground) log-probability in a span's score
        "max_len_frac": 1.0,      # longest decodable span, fraction of the clips (1: no limit)
        "window_contrast": 1.0,   # RECONSTRUCTED: window decoder (foreground alone, query-agnostic baseline): mean in - this x mean out
        "batch_size": 128,        # queries per eval forward (memory only)
        "figures": 6,             # test queries drawn in eval's figure (0: none)
    },
}

RULES = {
    **DATA_RULES,
    "model.word_dim": Range(min=1), "model.query_hidden": Range(min=1), "model.z_dim": Range(min=1),
    "model.d": Range(min=1), "model.video_layers": Range(min=0), "model.head_layers": Range(min=0),
    "model.dropout": Range(0.0, 1.0, open_max=True),
    "dscnet.clusters": Range(min=2), "dscnet.cluster": ("kmeans", "dec"), "dscnet.kmeans_iters": Range(min=1),
    "dscnet.dec_alpha": Range(min=0.0, open_min=True), "dscnet.w_dec": Range(min=0.0),
    "dscnet.top_m": Range(min=1), "dscnet.sinkhorn_eps": Range(min=0.0, open_min=True),
    "dscnet.sinkhorn_iters": Range(min=1), "dscnet.infer": ("query", "centre"), "dscnet.ae_epochs": Range(min=0),
    "dscnet.tau": Range(min=0.0, open_min=True), "dscnet.w_rec": Range(min=0.0), "dscnet.w_pull": Range(min=0.0),
    "dscnet.w_head": Range(min=0.0), "dscnet.w_fg": Range(min=0.0), "dscnet.w_inside": Range(min=0.0),
    "dscnet.label_sigma": Range(min=0.0),
    "train.epochs": Range(min=1), "train.batch_size": Range(min=1), "train.query_batch_size": Range(min=1),
    "train.lr": Range(min=0.0, open_min=True), "train.weight_decay": Range(min=0.0), "train.warmup_steps": Range(min=0),
    "train.schedule": SCHEDULES, "train.grad_clip": Range(min=0.0), "train.num_workers": Range(min=0),
    "eval.k": Range(min=1), "eval.nms": Range(0.0, 1.0), "eval.inside_weight": Range(min=0.0),
    "eval.max_len_frac": Range(0.0, 1.0, open_min=True), "eval.window_contrast": Range(min=0.0),
    "eval.batch_size": Range(min=1), "eval.figures": Range(min=0),
}

# keys a --resume may change (a longer schedule); any other difference from the run's config is refused
RESUMABLE = ("train.epochs", "data.check")   # data.check: how thoroughly the files are read, not what is trained
