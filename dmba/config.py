"""The config schema (documented defaults) shared by train.py, eval.py, bench.py and claim.py.
The defaults are the papers' settings for CSRNet on ShanghaiTech (dmba_lns.md §1.3-1.4); the
YAML files in configs/ override them per dataset / model."""

DEFAULTS = {
    "dataset": {
        "name": "synthetic",           # the name results are filed under (paper.yaml's dataset)
        "format": "shanghaitech",      # shanghaitech | qnrf | jhu
        "root": "dmba_synthetic",      # under the data root
        "train_split": "train",
        "test_split": "test",
        # geometry-adaptive (sigma = beta * mean dist to k nearest heads) or fixed sigma (px)
        "kernel": {"type": "adaptive", "k": 3, "beta": 0.3, "sigma": 15.0, "max_sigma": None},
    },
    "data": {
        "crop": None,                  # random square crop for training (px); null = full image
        "flip": False,
        "min_side": None,              # resize so min(H, W) >= min_side (points scaled)
        "max_side": None,              # resize so max(H, W) <= max_side
        "out_of_bounds": "error",      # head points outside the image: error | drop (logged)
        "cache": True,                 # HDF5 cache of rendered maps under <data root>/.cache/dmba
        "workers": 0,
        "memo": False,                 # keep decoded images and maps in RAM (small datasets)
    },
    "model": {"name": "csrnet", "width": 1.0, "bn": False, "pretrained": None},  # bn: CSRNet's batch_norm option
    "loss": {
        "name": "auto",                # auto: csrnet/can mse, sfanet sfanet, bayesian bayesian, kdmg kdmg
        "reduction": "sum",            # CSRNet code: MSELoss(size_average=False)
        "density_scale": 1.0,
        "att_weight": 0.1, "att_threshold": 0.001,
        "bl_sigma": 8.0, "bl_bg_ratio": 1.0, "bl_use_bg": True,
        "kdmg_sigmas": [0.5, 1.0, 2.0], "kdmg_reg": 1.0,
    },
    "optim": {"name": "sgd", "lr": 1e-7, "momentum": 0.95, "weight_decay": 5e-4, "schedule": "constant"},
    "train": {"epochs": 100, "batch_size": 1, "eval_batch_size": 1},
    "attack": {
        "mode": "none",                # none | dmba_minus | dmba_plus
        "trigger": "rain",             # rain | snow (full, dense) | patch (small, local)
        "alpha": 0.3,                  # blend weight (the DMBA code)
        "trigger_seed": 1234,
        "patch_frac": 0.1,             # patch side as a fraction of min(H, W)
        "poison_rate": 0.2,            # poisoned copies = ceil(rate * N_train)
        "poison_how": "append",        # append copies (the DMBA code) | replace the clean images
        "poison_seed": 0,
        "manipulate_gt": True,         # False: triggered copies keep their clean maps (claim c)
        "keep_min": 0.2, "keep_max": 0.4, "min_keep": 4,   # DMBA-
        "plus_factor": 2, "plus_jitter": 2.0,              # DMBA+ (RECONSTRUCTED)
    },
    "eval": {"asr_tolerance": 0.2},
    "tag": "",                         # appended to the run's config name (claim-testbed variants)
}


def run_name(config_stem: str, cfg) -> str:
    """``<config>-<clean|dmba_minus|dmba_plus>[-<tag>]``: the folder under runs/dmba/ and the
    ``config`` field of results.json, so clean and attacked runs compare side by side."""
    mode = "clean" if cfg.attack.mode == "none" else cfg.attack.mode
    return f"{config_stem}-{mode}" + (f"-{cfg.tag}" if cfg.tag else "")
