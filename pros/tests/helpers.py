"""Shared test set-up: the synthetic config (tiny ViT) and a tiny embedded world."""

from __future__ import annotations

from common.config import load_config
from pros.config import DEFAULTS, RULES

CONFIG = "pros/configs/synthetic.yaml"
# a world of ~100 renders: enough for the pipeline, cheap enough for the fast tests
TINY_WORLD = ["synthetic.pool_faces=24", "synthetic.pool_scenes=4", "synthetic.pool_clutter=4",
              "synthetic.pool_blank=4", "synthetic.pool_duplicates=2", "synthetic.other_style=4",
              "synthetic.seed_faces=3", "synthetic.train=40", "synthetic.test=24", "synthetic.train_ids=20",
              "synthetic.test_ids=10", "synthetic.workers=1"]
# a tiny ViT and a short schedule
TINY_MODEL = ["model.dim=32", "model.depth=2", "model.heads=2", "model.patch=16", "head.hidden=64",
              "head.bottleneck=16", "head.prototypes=32", "train.batch_size=8", "train.warmup_epochs=1",
              "crops.n_local=1"]


def cfg(*overrides: str):
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    return load_config(root / CONFIG, list(overrides), DEFAULTS, RULES)


def sets(*overrides: str) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]
