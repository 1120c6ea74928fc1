"""MGSL-Net's data: the shared grounding layer read from the config (``common.tsg.data``), with
the frozen-GloVe vocabulary of peers (``common.tsg.text.glove_vocab``: the train words, plus the
test words GloVe has, so a rare or unseen test word keeps its vector: what the memory's rare
cases are about).

    python -m mgslnet.data --config mgslnet/configs/charades_i3d.yaml --data-root /data/tsg   # check a dataset
    python -m mgslnet.data --generate                   # make data/tsg_longtail if missing, then check it

The embedded long-tail set is ``common.tsg.synthetic`` with the knobs of :data:`LONGTAIL`
(``make -C mgslnet data``); the real sets are read in their public formats (README, Data layout).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

from common.config import Config
from common.data import DataFormatError, data_root
from common.tsg.data import GroundingData, check_main, layout, load_grounding_data
from common.tsg.dataset import TSGDataset
from common.tsg.synthetic import generate
from common.tsg.text import Vocab, glove_vocab
from mgslnet.config import DEFAULTS

log = logging.getLogger("mgslnet")

HINT = "See mgslnet/README.md (Data layout); the embedded set is made by `make -C mgslnet data`."

# The embedded default (data/tsg_longtail): the v2 world with a long-tailed train distribution and
# a concept-balanced test split, so that the test split holds many rare queries.
# DEVIATION: zipf 2.0, not the 1.5: at the v2 default size (2,000 train videos, which the
# plain cross-modal model needs) zipf 1.5 leaves no concept below 10 train occurrences (world seed
# 0: the rarest is seen 19 times, 0 rare test queries); zipf 2.0 leaves 6 of 46 concepts rare and
# 151 of 536 test queries rare (README, Data layout).
LONGTAIL = {"subdir": "tsg_longtail", "seed": 0, "knobs": {"zipf": 2.0, "test_zipf": 0.0}}


# SHARED-CANDIDATE: load_grounding_data(..., vocab="glove") in common/tsg/data.py (the shared loader
# builds a train-only vocabulary for load_glove; glove_vocab keeps the test words GloVe has).
def with_glove_vocab(data: GroundingData, cfg: Config, root: str | Path | None = None,
                     cache: str | Path | None = None) -> GroundingData:
    """``data`` with the vocabulary of :func:`common.tsg.text.glove_vocab` (train words with the
    same ids, then the other train and test words that the GloVe file has) and its embeddings;
    the datasets are re-encoded with it. Test moments are never read."""
    d = cfg.data
    base, files = layout(d, root)
    vocab, emb = glove_vocab(base / files["glove"], [q.sentence for q in data.train.queries],
                             [q.sentence for q in data.test.queries], min_freq=d.min_word_freq, cache=cache or None)
    if emb.shape[1] != cfg.model.word_dim:
        raise DataFormatError(f"{base / files['glove']}: {emb.shape[1]}-d vectors but the model expects "
                              f"{cfg.model.word_dim}-d (model.word_dim)")
    fdim = d.feature_dim or None
    mk = lambda a: TSGDataset(a, data.features, vocab, d.num_clips, d.max_words, d.resample, fdim)
    extra = len(vocab) - len(data.vocab)
    if extra:
        log.info("vocabulary: %d train words + %d test/low-frequency words with GloVe vectors", len(data.vocab) - 2,
                 extra)
    return replace(data, vocab=vocab, embeddings=emb, train_set=mk(data.train) if data.train_set is not None else None,
                   test_set=mk(data.test))


def load_data(cfg: Config, root: str | Path | None = None, *, seed: int = 0, vocab: Vocab | None = None,
              need_train_set: bool = True, glove_cache: str | Path | None = None) -> GroundingData:
    """Everything read and checked before a model is built. Training (``vocab=None``): the
    GloVe vocabulary of :func:`with_glove_vocab`. Evaluation: the run's ``vocab.json``
    (its embeddings are in the checkpoint)."""
    if vocab is not None:
        return load_grounding_data(cfg, root, seed=seed, vocab=vocab, need_train_set=need_train_set,
                                   need_embeddings=False, hint=HINT)
    data = load_grounding_data(cfg, root, seed=seed, need_train_set=need_train_set, need_embeddings=False, hint=HINT)
    return with_glove_vocab(data, cfg, root, glove_cache)


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
    return check_main("mgslnet", DEFAULTS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
