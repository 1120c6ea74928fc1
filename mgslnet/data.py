"""MGSL-Net's data: the shared grounding layer read from the config (``common.tsg.data``; its
vocabulary is ``common.tsg.text.glove_vocab``: the train words plus the test words GloVe has, so a
rare or unseen test word keeps its frozen vector, which is what the memory's rare cases are about).

    python -m mgslnet.data --config mgslnet/configs/charades_i3d.yaml --data-root /data/tsg   # check a dataset
    python -m mgslnet.data --generate                   # make data/tsg_longtail if missing, then check it

The embedded long-tail set is ``common.tsg.synthetic`` with the knobs of :data:`LONGTAIL`
(``make -C mgslnet data``); the real sets are read in their public formats (README, Data layout).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from common.config import Config
from common.data import data_root
from common.tsg.data import GroundingData, check_main, load_grounding_data
from common.tsg.synthetic import generate
from mgslnet.config import DEFAULTS, RULES

log = logging.getLogger("mgslnet")

HINT = "See mgslnet/README.md (Data layout); the embedded set is made by `make -C mgslnet data`."

# The embedded default (data/tsg_longtail): the v2 world with a long-tailed train distribution and
# a concept-balanced test split, so that the test split holds many rare queries.
# DEVIATION: zipf 2.0, not the 1.5: at the v2 default size (2,000 train videos, which the
# plain cross-modal model needs) zipf 1.5 leaves no concept below 10 train occurrences (world seed
# 0: the rarest is seen 19 times, so 0 rare test queries); zipf 2.0 leaves 6 of 46 concepts seen
# < 10 times in train and 151 of 536 test queries rare (meta.json, README Data layout).
LONGTAIL = {"subdir": "tsg_longtail", "seed": 0, "knobs": {"zipf": 2.0, "test_zipf": 0.0}}


def load_data(cfg: Config, root: str | Path | None = None, **kw) -> GroundingData:
    """Everything read and checked before a model is built (``common.tsg.data.load_grounding_data``;
    ``kw``: seed, vocab, glove_cache, need_train_set, log)."""
    return load_grounding_data(cfg, root, word_dim=cfg.model.word_dim, hint=HINT, **kw)


def generate_longtail(root: str | Path | None = None) -> Path:
    """Generate the embedded long-tail set under ``<data root>/tsg_longtail`` unless it exists."""
    out = data_root(root) / LONGTAIL["subdir"]
    if not (out / "meta.json").is_file():
        generate(out, seed=LONGTAIL["seed"], **LONGTAIL["knobs"])
        log.info("generated %s", out)
    return out


def main(argv=None) -> int:
    """``python -m mgslnet.data [--generate] --config CFG [--data-root R]``: with ``--generate``,
    first make the embedded long-tail set if it is missing; then check the dataset
    (``common.tsg.data.check_main``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--generate" in argv:
        argv.remove("--generate")
        root = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--data-root"), None)
        generate_longtail(root)
    return check_main("mgslnet", DEFAULTS, argv, RULES)


if __name__ == "__main__":
    raise SystemExit(main())
