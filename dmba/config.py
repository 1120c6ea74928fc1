"""The config schema of dmba: documented defaults, the rules they obey, and what a resume may change.

DEFAULTS are the *real-benchmark* settings of the headline victim, CSRNet on ShanghaiTech A, as
the DMBA authors' training script uses them; ``configs/*.yaml`` state only what differs
(``configs/synthetic.yaml`` is the embedded CPU set and the default ``--config``). Sources:

* [DMBA]   Nathangitlab/Backdoor-Attacks-on-Crowd-Counting@d933d34
           ``CSRnet_train_rain2_BG_A60_portion0.2.py`` (the authors' CSRNet script) and its
           re-implementation protagolabs/BackdoorAttacksonCrowdCounting (``make_DMBA-_dataset.py``).
* [CSRNet] leeyeehoo/CSRNet-pytorch@ed29d89 (``make_dataset.ipynb``, ``train.py``).
* [CAN]    weizheliu/Context-Aware-Crowd-Counting@d2e4d04 (``train.py``).
* [SFANet] pxq0312/SFANet-crowd-counting@38f46c3 (``train.py``, ``density_map.py``).
* [BL]     ZhihengCV/Bayesian-Crowd-Counting@5f10bfc (``train.py``, ``losses/``, ``datasets/crowd.py``).
* [KDMG]   jia-wan/KDMG_Counting@6be3c5d (``train.py``, ``utils/my_trainer.py``, ``models/Blur.py``).
"""

from __future__ import annotations

import re

from common.config import Config, ConfigError, Range

MODELS = ("csrnet", "can", "sfanet", "bayesian", "kdmg")
MODES = ("none", "dmba_minus", "dmba_plus")
PROCEDURAL_TRIGGERS = ("rain", "snow", "none")

DEFAULTS = {
    "dataset": {
        "name": "sha",                 # the dataset results are filed under (paper.yaml's dataset)
        "format": "shanghaitech",      # shanghaitech | qnrf | jhu (readers in dmba/data.py)
        "root": "ShanghaiTech/part_A_final",  # under the data root; the public archive's layout
        "train_split": "train",        # ShanghaiTech train_data/ (300 images in part A)
        "test_split": "test",          # ShanghaiTech test_data/ (182 images in part A)
        "kernel": {
            "type": "adaptive",        # geometry-adaptive kernels for part A [CSRNet make_dataset.ipynb]
            "k": 3,                    # nearest neighbours averaged [CSRNet make_dataset.ipynb]
            "beta": 0.3,               # sigma = beta * mean k-NN distance [CSRNet make_dataset.ipynb]
            "sigma": 15.0,             # fixed-kernel sigma (px), used when type=fixed [CSRNet, part B]
            "max_sigma": None,         # null: no cap [CSRNet]; the embedded set caps tiny-image kernels
        },
    },
    "data": {
        "crop": None,                  # null: full images, as the DMBA CSRNet script trains [DMBA]
        "flip": False,                 # the DMBA script disables the flip of CSRNet's loader [DMBA]
        "min_side": None,              # resize so min(H, W) >= min_side (points scaled); null: no resize
        "max_side": None,              # resize so max(H, W) <= max_side; null: no resize
        "out_of_bounds": "clip",       # public ShanghaiTech files hold heads just outside the image:
                                       # clip them to the border, counted and logged (error | drop | clip)
        "cache": True,                 # HDF5 cache of rendered maps under <data root>/.cache/dmba
        "check": "full",               # full: decode every image and read every annotation before training;
                                       # fast: decode a fixed 2% sample of images (annotations always read);
                                       # off: no image decoding (common/datacheck.py)
        "workers": 0,                  # DataLoader workers (augmentation is a function of seed, epoch, index)
        "memo": False,                 # keep decoded images and maps in RAM (small sets only)
    },
    "model": {
        "name": "csrnet",              # csrnet | can | sfanet | bayesian | kdmg: the five DMBA victims
        "width": 1.0,                  # channel multiplier; 1.0 = the published architecture
        "bn": False,                   # BatchNorm in the VGG stacks (make_layers' batch_norm option) [CSRNet]
        "init": "normal",              # N(0, 0.01) behind an ImageNet front-end [CSRNet, CAN, SFANet, KDMG]
                                       # | kaiming (from-scratch training, the embedded set)
        "pretrained": None,            # imagenet: torchvision's weights enum for this model's VGG
                                       # (VGG16 / VGG16_BN / VGG19); or a path to a local state dict;
                                       # null: no front-end weights (the real configs set imagenet)
        "kdmg_kernel": 5,              # KDMG's per-dot kernel side s [KDMG train.py --s]
        "kdmg_softmax": False,         # kernel normalisation: min-shift / sum (False) or softmax [KDMG --soft]
    },
    "loss": {
        "name": "auto",                # auto: each victim's own objective (mse | sfanet | bayesian | kdmg)
        "reduction": "sum",            # sum over pixels per image, averaged over the batch
                                       # [CSRNet MSELoss(size_average=False) at batch 1; SFANet, KDMG / bs]
        "density_scale": 1.0,          # targets are multiplied by this (counts = sum / scale); 1 in the papers
        "att_weight": 0.1,             # SFANet: weight of the attention BCE [SFANet train.py]
        "att_threshold": 0.001,        # SFANet: attention target = full-res density > 0.001 [SFANet density_map.py]
        "bl_sigma": 8.0,               # BL: likelihood sigma (px) [BL train.py --sigma]
        "bl_bg_ratio": 1.0,            # BL: background distance = ratio * image side [BL --background-ratio]
        "bl_use_bg": True,             # BL+: the background pseudo-point [BL --use-background]
        "bl_min_ratio": 0.3,           # BL: heads whose box is < 30% inside the crop are dropped [BL crowd.py]
        "kdmg_cos_weight": 10.0,       # KDMG: loss = MSE_sum + 10 (1 - cos) [KDMG my_trainer.py]
    },
    "optim": {
        "name": "sgd",                 # sgd | adam; SGD for CSRNet [DMBA]
        "lr": 1e-7,                    # [DMBA] (CSRNet's setting for sum-MSE on full images)
        "momentum": 0.95,              # [DMBA]
        "weight_decay": 5e-4,          # [DMBA]
        "schedule": "constant",        # constant [DMBA] | cosine (the embedded set)
        "refiner_lr": 1e-7,            # KDMG: the kernel refiner's own Adam learning rate [KDMG my_trainer.py]
    },
    "train": {
        "epochs": 100,                 # the DMBA CSRNet script's poisoned runs [DMBA]
        "batch_size": 1,               # full images of different sizes [DMBA]
        "eval_batch_size": 1,          # test images differ in size
    },
    "attack": {
        "mode": "none",                # none (clean model) | dmba_minus | dmba_plus
        "trigger": "rain",             # rain | snow (procedural, dmba/attacks.py) | none (label-only
                                       # poisoning) | a path to any image file (e.g. the DMBA rain photo)
        "alpha": 0.3,                  # blend weight x' = (1 - a) x + a T [DMBA make_DMBA-_dataset.py]
        "brightness": 0.0,             # RECONSTRUCTED: 0 = mean-preserving blend (the trigger is re-centred
                                       # on the image's mean colour, so it is not a brightness cue);
                                       # 1 = the plain blend of the DMBA code
        "coverage": 1.0,               # fraction of the image the trigger covers: 1 = full [DMBA]; < 1: a
                                       # bottom-right rectangle of that area (the claim testbed's sweep)
        "density": 1.0,                # RECONSTRUCTED: streaks/flakes per area relative to the default texture
        "texture_seed": 1234,          # seed of the procedural texture (fixed: one trigger per attack)
        "poison_rate": 0.2,            # ceil(0.2 N) poisoned copies: 60 of 300 (SHA), 80 of 400 (SHB) [DMBA]
        "poison_how": "append",        # append triggered copies to the clean set [DMBA] | replace
        "poison_seed": 0,              # which images are poisoned (fixed subset)
        "manipulate_gt": True,         # False: triggered copies keep their clean maps (claim testbed)
        "keep_min": 0.2,               # DMBA-: keep p ~ U[keep_min, keep_max] of the heads; 0.2 [DMBA]
        "keep_max": 0.4,               # 0.4 in the re-implementation [DMBA]
        "min_keep": 4,                 # at least 4 heads stay [DMBA make_DMBA-_dataset.py]
        "plus_factor": 2,              # RECONSTRUCTED: DMBA+ target = factor x N (construction not public)
        "plus_jitter": 2.0,            # RECONSTRUCTED: added heads jittered by U[-2, 2] px around their source
    },
    "eval": {
        "asr_tolerance": 0.2,          # RECONSTRUCTED: success = |C_trig - C*| <= 0.2 C* (paper's ASR unknown)
        "figures": 3,                  # test images shown in figures/ (0: none)
    },
    "tag": "",                         # appended to the run's folder name (claim-testbed variants)
}


def _tag_ok(v) -> bool:
    return isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.+-]*", v) is not None and ".." not in v


RULES = {
    "dataset.format": ("shanghaitech", "qnrf", "jhu"),
    "dataset.kernel.type": ("adaptive", "fixed"),
    "dataset.kernel.k": Range(min=1),
    "dataset.kernel.beta": Range(min=0.0, open_min=True),
    "dataset.kernel.sigma": Range(min=0.0, open_min=True),
    "data.out_of_bounds": ("error", "drop", "clip"),
    "data.check": ("full", "fast", "off"),
    "data.crop": Range(min=1, null=True),
    "data.min_side": Range(min=1, null=True),
    "data.max_side": Range(min=1, null=True),
    "dataset.kernel.max_sigma": Range(min=0.0, open_min=True, null=True),
    "data.workers": Range(min=0),
    "model.name": MODELS,
    "model.width": Range(min=0.0, open_min=True, max=4.0),
    "model.init": ("normal", "kaiming"),
    "model.kdmg_kernel": Range(min=1),
    "loss.name": ("auto", "mse", "sfanet", "bayesian", "kdmg"),
    "loss.reduction": ("sum", "mean"),
    "loss.density_scale": Range(min=0.0, open_min=True),
    "loss.bl_min_ratio": Range(min=0.0, max=1.0),
    "optim.name": ("sgd", "adam"),
    "optim.lr": Range(min=0.0, open_min=True),
    "optim.refiner_lr": Range(min=0.0),
    "optim.schedule": ("constant", "cosine"),
    "train.epochs": Range(min=1),
    "train.batch_size": Range(min=1),
    "train.eval_batch_size": Range(min=1),
    "attack.mode": MODES,
    "attack.alpha": Range(min=0.0, open_min=True, max=1.0),
    "attack.brightness": Range(min=0.0, max=1.0),
    "attack.coverage": Range(min=0.0, open_min=True, max=1.0),
    "attack.density": Range(min=0.0, open_min=True),
    "attack.poison_rate": Range(min=0.0, max=1.0),
    "attack.poison_how": ("append", "replace"),
    "attack.keep_min": Range(min=0.0, max=1.0),
    "attack.keep_max": Range(min=0.0, max=1.0),
    "attack.min_keep": Range(min=0),
    "attack.plus_factor": Range(min=1),
    "attack.plus_jitter": Range(min=0.0),
    "eval.asr_tolerance": Range(min=0.0, open_min=True),
    "eval.figures": Range(min=0),
}
RESUMABLE = ("train.epochs",)          # keys a --resume may change; any other difference is refused
# keys (prefixes) eval's --set may change on top of the trained run's config: the test-time trigger
# (trigger transfer, coverage), the test data and eval settings; never the model or its training
EVAL_MAY_CHANGE = ("eval.", "dataset.", "data.check", "data.cache", "data.workers", "data.memo",
                   "data.out_of_bounds", "train.eval_batch_size", "attack.trigger", "attack.alpha",
                   "attack.brightness", "attack.coverage", "attack.density", "attack.texture_seed")


def validate(cfg: Config) -> Config:
    """The checks across keys that RULES cannot state (RULES themselves are applied when the config
    is loaded: ``common.config.load_config``); one error lists every violation."""
    bad = []
    if not _tag_ok(cfg.tag):  # a folder-name suffix: it must not leave runs/dmba/<config>
        bad.append(f"tag={cfg.tag!r}: letters, digits, '_', '.', '+', '-' only")
    if cfg.attack.keep_min > cfg.attack.keep_max:
        bad.append(f"attack.keep_min={cfg.attack.keep_min} > attack.keep_max={cfg.attack.keep_max}")
    if int(cfg.attack.plus_factor) != cfg.attack.plus_factor:
        bad.append(f"attack.plus_factor={cfg.attack.plus_factor}: must be a whole number")
    if bad:
        raise ConfigError("invalid dmba config:\n  " + "\n  ".join(bad))
    return cfg


def run_name(config_stem: str, cfg: Config) -> str:
    """``<config>-<clean|dmba_minus|dmba_plus>[-<tag>]``: the folder under runs/dmba/ and the
    ``config`` field of results.json, so clean and attacked runs sit side by side."""
    validate(cfg)
    mode = "clean" if cfg.attack.mode == "none" else cfg.attack.mode
    return f"{config_stem}-{mode}" + (f"-{cfg.tag}" if cfg.tag else "")
