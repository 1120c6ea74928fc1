"""DSCNet's data: the shared grounding layer (``common.tsg.data``) read the unsupervised way.

    python -m dscnet.data --config dscnet/configs/charades_i3d.yaml --data-root /data/tsg   # check a dataset

Unsupervised temporal video grounding (arXiv 2201.05307, abstract): training sees the train videos
and the *set* of train queries, nothing that links a query to a video and no start/end.
:func:`load_train` therefore keeps, from the train annotation file, only

* the train video ids, sorted, with their durations (from ``charades.json`` / the ActivityNet json,
  not from the moments), and
* the train sentences as a multiset: sorted, then shuffled by the seed,

so a file whose sentences are permuted across lines and whose times are redrawn gives the same
training input bit for bit (``tests/test_unpaired.py``). Only ``eval.py`` reads test pairs (and the
train moments, for the ``prior`` and ``bow`` reference baselines DSCNet never sees). The paired
ceiling (``dscnet.paired: true``, a comparison row, not DSCNet) is the one exception:
:func:`load_train` then also returns the train pairs.

Every file, record and video is checked before training through ``common.tsg.data``
(``load_grounding_data``): missing files in one list, bad records with file and line, missing or
non-finite features with file and video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.config import Config
from common.tsg.data import GroundingData, check_main, load_grounding_data
from common.tsg.dataset import TSGDataset
from common.tsg.features import FeatureStore, resample
from common.tsg.text import Vocab
from dscnet.config import DEFAULTS

HINT = "See dscnet/README.md (Data layout); the embedded set is made by `make -C dscnet data`."
SHUFFLE_TAG = 0xD5C  # the sentence order's random stream: (seed, SHUFFLE_TAG)


class VideoSet(Dataset):
    """The train videos alone: item ``i`` = ``{video [N, D], video_mask [N], duration, index}``."""

    def __init__(self, vids: list[str], durations: list[float], features: FeatureStore, num_clips: int,
                 mode: str = "mean"):
        self.vids, self.durations, self.features = list(vids), list(durations), features
        self.num_clips, self.mode = int(num_clips), mode

    def __len__(self) -> int:
        return len(self.vids)

    def __getitem__(self, i: int) -> dict:
        x, m = resample(self.features.get(self.vids[i]), self.num_clips, self.mode)
        return {"video": torch.from_numpy(x), "video_mask": torch.from_numpy(m),
                "duration": torch.tensor(self.durations[i], dtype=torch.float32), "index": torch.tensor(i)}


class SentenceSet(Dataset):
    """The train sentences alone: item ``i`` = ``{words [L], word_mask [L], index}`` (PAD-padded)."""

    def __init__(self, sentences: list[str], vocab: Vocab, max_words: int):
        self.sentences = list(sentences)
        self.words = torch.zeros(len(sentences), int(max_words), dtype=torch.long)
        for i, s in enumerate(self.sentences):
            ids = vocab.encode(s, int(max_words))
            self.words[i, : len(ids)] = torch.tensor(ids)
        self.word_mask = self.words != Vocab.PAD

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, i: int) -> dict:
        return {"words": self.words[i], "word_mask": self.word_mask[i], "index": torch.tensor(i)}


@dataclass
class TrainData:
    """What training may read. ``pairs`` is ``None`` unless the paired ceiling asked for it."""

    root: Path
    videos: VideoSet                  # sorted train video ids, their durations and features
    sentences: SentenceSet            # the train sentences: sorted, then shuffled by the seed
    vocab: Vocab
    embeddings: np.ndarray            # [len(vocab), word_dim] GloVe
    feature_dim: int
    pairs: TSGDataset | None = None   # dscnet.paired only (the paired ceiling)


def unpaired_view(ann, seed: int) -> tuple[list[str], list[float], list[str]]:
    """``(sorted video ids, their durations, sentences sorted then shuffled by seed)`` of an
    annotation split: everything of it that unsupervised training may see."""
    dur: dict[str, float] = {}
    for q in ann.queries:
        dur.setdefault(q.vid, q.duration)
    vids = sorted(dur)
    sents = sorted(q.sentence for q in ann.queries)
    perm = np.random.default_rng([int(seed), SHUFFLE_TAG]).permutation(len(sents))
    return vids, [dur[v] for v in vids], [sents[i] for i in perm]


def load_train(cfg: Config, root: str | Path | None = None, *, seed: int = 0,
               glove_cache: str | Path | None = None) -> TrainData:
    """Check the dataset (``common.tsg.data``: files, records, features of both splits) and return
    the unpaired training view (module doc). The vocabulary is the train words plus the test
    words GloVe has (``glove_vocab``: their sentences only, never their moments)."""
    d = cfg.data
    g = load_grounding_data(cfg, root, seed=seed, word_dim=cfg.model.word_dim, glove_cache=glove_cache,
                            need_train_set=False, hint=HINT)
    vocab, emb = g.vocab, g.embeddings   # ids are frequency-then-spelling ordered: independent of line order
    vids, durs, sents = unpaired_view(g.train, seed)
    fdim = d.feature_dim or g.features.dim
    pairs = None
    if cfg.dscnet.paired:
        pairs = TSGDataset(g.train, g.features, vocab, d.num_clips, d.max_words, d.resample, d.feature_dim or None)
    return TrainData(g.root, VideoSet(vids, durs, g.features, d.num_clips, d.resample),
                     SentenceSet(sents, vocab, d.max_words), vocab, emb, fdim, pairs)


def load_eval(cfg: Config, root: str | Path | None = None, *, vocab: Vocab, seed: int = 0) -> GroundingData:
    """The test split (with the run's vocabulary) and the train annotations for the reference
    baselines; the same checks as training."""
    return load_grounding_data(cfg, root, seed=seed, vocab=vocab, need_train_set=False, hint=HINT)


def main(argv=None) -> int:
    return check_main("dscnet", DEFAULTS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
