"""Shared fixtures: a tiny embedded world written once per session in the ARL-VTF layout (and read
only through the real reader), tiny embedders, and the tiny recipe as --set items."""

from __future__ import annotations

import pytest

from common.config import load_config
from dal_gan.config import DEFAULTS, RULES

# 6 training, 2 validation, 4 test subjects; 10 frames each (3 baseline, 1 expression, 5 poses, 1 eyewear)
WORLD = ["synthetic.n_train=6", "synthetic.n_val=2", "synthetic.n_test=4", "synthetic.pose_frames=5",
         "synthetic.expression_frames=1", "synthetic.eyewear_frames=1", "synthetic.workers=1"]
# a small, fast recipe on that world
TINY = [*WORLD, "model.ngf=8", "model.max_mult=4", "model.ndf=8", "model.local_ndf=8", "model.proj_dim=16",
        "embedders.width=8", "embedders.epochs=2", "embedders.dim=16", "train.batch_size=8", "train.epochs=2",
        "eval.real_assets=false", "data.check=fast"]


def tiny_cfg(*extra: str):
    return load_config("dal_gan/configs/synthetic.yaml", [*TINY, *extra], DEFAULTS, RULES)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """(data_root, runs_root) holding the tiny embedded set and its two embedders."""
    from dal_gan.data import dataset_dir, generate, load_data
    from dal_gan.embedders import ensure_embedders

    root = tmp_path_factory.mktemp("dal_gan_data")
    runs = tmp_path_factory.mktemp("dal_gan_runs")
    cfg = tiny_cfg()
    generate(dataset_dir(cfg, root), cfg)
    ensure_embedders(cfg, load_data(cfg, root), runs)
    return root, runs
