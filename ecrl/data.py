"""ECRL's data: the shared grounding layer read from the config (``common.tsg.data``).

    python -m ecrl.data --config ecrl/configs/charades_i3d.yaml --data-root /data/tsg   # check a dataset

The embedded set is ``common.tsg.synthetic`` (``make -C ecrl data``); the real sets are read in
their public formats (README, Data layout).
"""

from __future__ import annotations

from pathlib import Path

from common.config import Config
from common.tsg.data import GroundingData, check_main, load_grounding_data
from ecrl.config import DEFAULTS, RULES

HINT = "See ecrl/README.md (Data layout); the embedded set is made by `make -C ecrl data`."


def load_data(cfg: Config, root: str | Path | None = None, **kw) -> GroundingData:
    """Everything read and checked before a model is built (``common.tsg.data.load_grounding_data``;
    ``kw``: seed, vocab, glove_cache, need_train_set, log)."""
    return load_grounding_data(cfg, root, word_dim=cfg.model.word_dim, hint=HINT, **kw)


def main(argv=None) -> int:
    return check_main("ecrl", DEFAULTS, argv, RULES)


if __name__ == "__main__":
    raise SystemExit(main())
