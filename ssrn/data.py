"""SSRN's data: the shared grounding layer read from the config (``common.tsg.data``: files,
records, features, subsets, every problem at once), frozen GloVe vectors for every word GloVe has
(``common.tsg.text.glove_vocab``), and the siamese-sampled datasets (``ssrn/sampling.py``).

    python -m ssrn.data --config ssrn/configs/charades_i3d.yaml --data-root /data/tsg   # check a dataset

The embedded set (``make -C ssrn data``) is ``common.tsg.synthetic`` with dense frames and many
short moments (README, Data layout); the real sets are read in their public formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch.distributed as dist

from common.config import Config
from common.runtime import barrier
from common.tsg.data import GroundingData, check_main, load_grounding_data
from common.tsg.text import Vocab
from ssrn.config import DEFAULTS
from ssrn.sampling import SiameseDataset

HINT = "See ssrn/README.md (Data layout); the embedded set is made by `make -C ssrn data`."
# the embedded default: the v2 world with 8 raw frames/s (~240 per video) and 60 % one-second
# moments, so that 16 uniformly sampled frames miss many boundaries (README, Data layout)
BOUNDARY_SET = {"subdir": "tsg_boundary", "seed": 0,
                "knobs": {"feature_rate": 8.0, "short_frac": 0.6, "short_len_s": 1.0}}


@dataclass
class SSRNData:
    grounding: GroundingData           # annotations, features, subsets (common.tsg.data)
    vocab: Vocab
    embeddings: np.ndarray             # [len(vocab), word_dim] frozen GloVe rows (eval: the checkpoint's replace them)
    train_set: SiameseDataset | None
    test_set: SiameseDataset

    @property
    def train(self):
        return self.grounding.train

    @property
    def test(self):
        return self.grounding.test

    @property
    def features(self):
        return self.grounding.features

    @property
    def subsets(self) -> dict[str, list[int]]:
        return self.grounding.subsets


def datasets(cfg: Config, g: GroundingData, vocab: Vocab, seed: int, need_train_set: bool = True):
    """The siamese-sampled train set (random offsets) and the test set (anchor at offset 0, plus the
    siamese sequences at fixed offsets when ``ssrn.fuse_siamese`` needs them at inference)."""
    d, s = cfg.data, cfg.ssrn
    fdim = d.feature_dim or None
    mk = lambda ann, train, siamese: SiameseDataset(ann, g.features, vocab, d.num_clips, d.max_words, d.resample,
                                                    siamese=siamese, train=train, jitter=s.jitter, seed=seed,
                                                    feature_dim=fdim)
    train = mk(g.train, True, s.siamese) if need_train_set else None
    return train, mk(g.test, False, s.siamese if s.fuse_siamese else 0)


def load_data(cfg: Config, root: str | Path | None = None, *, seed: int = 0, vocab: Vocab | None = None,
              need_train_set: bool = True, glove_cache: str | Path | None = None, log=None) -> SSRNData:
    """Everything read and checked before a model is built. Training (``vocab=None``): the
    vocabulary is the train words plus every test word the GloVe file has (``glove_vocab``; test
    sentences only, never their moments), with their frozen vectors. Eval passes the run's
    vocabulary (its vectors are read from the GloVe file again; the checkpoint also holds them)."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    if rank != 0 and glove_cache is not None:
        barrier()  # rank 0 reads GloVe and writes the cache; the others then read the cache
    try:
        g = load_grounding_data(cfg, root, seed=seed, word_dim=cfg.model.word_dim, vocab=vocab,
                                glove_cache=glove_cache, need_train_set=False, hint=HINT, log=log)
    finally:
        if rank == 0 and glove_cache is not None:
            barrier()  # also on an error: the other ranks then meet it themselves instead of waiting
    vocab = g.vocab
    train, test = datasets(cfg, g, vocab, seed, need_train_set)
    return SSRNData(g, vocab, g.embeddings, train, test)


def generate_boundary_set(root: str | Path | None = None, subdir: str = BOUNDARY_SET["subdir"],
                          seed: int = BOUNDARY_SET["seed"]) -> Path:
    """Write the embedded boundary-bias set into ``<data root>/<subdir>`` unless it is there."""
    from common.data import data_root
    from common.tsg.synthetic import generate

    out = data_root(root) / subdir
    if not (out / "meta.json").is_file():
        generate(out, seed=seed, **BOUNDARY_SET["knobs"])
    return out


def main(argv=None) -> int:
    """``python -m ssrn.data [--generate] --config CFG [--data-root R] [--set k=v] [--check full|fast]``:
    with ``--generate``, first write the embedded set (``BOUNDARY_SET``) when it is absent; then
    check the dataset the way training reads it (``common.tsg.data.check_main``)."""
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--generate", action="store_true")
    pre.add_argument("--data-root", default=None)
    a, _ = pre.parse_known_args(argv)
    rest = [x for x in (argv if argv is not None else __import__("sys").argv[1:]) if x != "--generate"]
    if a.generate:
        print(f"embedded set: {generate_boundary_set(a.data_root)}")
    return check_main("ssrn", DEFAULTS, rest)


if __name__ == "__main__":
    raise SystemExit(main())
