"""MHST's data: the shared grounding layer read from the config (``common.tsg.data``), seen through
the glance only for training.

    python -m mhst.data --config mhst/configs/charades_i3d.yaml --data-root /data/tsg   # check a dataset

One-shot (glance) supervision, ViGA's setting: each training moment comes with one annotated time
inside it, and its boundaries exist only for evaluation. The train split is read from a glance
file (``vid start end##glance##sentence``; JSON with ``glance``), and ``common.tsg.dataset.GlanceView``
hands the training loop items *without* ``start``/``end``, so the loop cannot read a train moment
(a test moves every train moment around its glance and checks that the weights stay bit-identical).
The embedded set is ``common.tsg.synthetic`` (it writes ``glance/charades_sta_{train,test}.txt``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.config import Config, load_config
from common.data import DataFormatError
from common.tsg.data import GroundingData, check_main, layout, load_grounding_data
from common.tsg.dataset import GlanceView, check_glances
from common.tsg.records import read_annotations
from mhst.config import DEFAULTS, RULES

HINT = ("See mhst/README.md (Data layout); the embedded set is made by `make -C mhst data`. Glance files: "
        "github.com/r-cui/ViGA, data/<dataset>/annotations/glance/.")


def load_data(cfg: Config, root: str | Path | None = None, **kw) -> GroundingData:
    """Everything read and checked before a model is built (``common.tsg.data.load_grounding_data``;
    ``kw``: seed, vocab, glove_cache, need_train_set, need_embeddings), plus the glance of every
    training query (``common.tsg.dataset.check_glances``). ``train_set`` is a ``GlanceView``."""
    data = load_grounding_data(cfg, root, word_dim=cfg.model.word_dim, hint=HINT, **kw)
    check_glances(data.train)
    if data.train_set is not None:
        data.train_set = GlanceView(data.train_set)
    return data


def main(argv=None) -> int:
    """``python -m mhst.data``: the shared checker (files, records, features, GloVe), then the glances."""
    rc = check_main("mhst", DEFAULTS, argv)
    if rc:
        return rc
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--config", default=str(Path(__file__).parent / "configs" / "synthetic.yaml"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a, _ = ap.parse_known_args(argv)
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    base, files = layout(cfg.data, a.data_root)
    dur = base / files["durations"] if "durations" in files else None
    train = read_annotations(base / files["train"], cfg.data.format, on_bad_record="skip",
                             **({"durations": dur} if dur is not None else {}))
    try:
        check_glances(train)
    except DataFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"ok: every one of the {len(train.queries)} training queries has a glance ({base / files['train']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
