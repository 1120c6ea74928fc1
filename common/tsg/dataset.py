"""A map-style dataset of (video clips, query words, normalised moment) for every TSG project, and
its glance view for one-shot (glance) supervision."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data import DataFormatError
from common.tsg.features import FeatureStore, resample
from common.tsg.records import Annotations
from common.tsg.text import Vocab


class TSGDataset(Dataset):
    """Item ``i`` is query ``annotations.queries[i]``::

        video      FloatTensor [num_clips, D]   (resampled, see features.resample)
        video_mask BoolTensor  [num_clips]      (False on padding of videos shorter than num_clips)
        words      LongTensor  [max_words]      (Vocab ids, PAD-padded)
        word_mask  BoolTensor  [max_words]
        start, end float tensors, fractions of the duration in [0, 1]
        glance     float tensor, fraction of the duration, -1 when the record has none
        duration   float tensor, seconds
        query_id   long tensor (the annotation file's query_id)
        vid        str

    Every video is checked for features (one error listing the missing ones) at construction,
    before any training starts.
    """

    def __init__(self, annotations: Annotations, features: FeatureStore, vocab: Vocab, num_clips: int,
                 max_words: int, resample_mode: str = "mean", feature_dim: int | None = None):
        if len(annotations.queries) == 0:
            raise DataFormatError(f"{annotations.path}: no queries")
        if resample_mode not in ("mean", "uniform"):
            raise ValueError(f"resample_mode must be 'mean' or 'uniform', got {resample_mode!r}")
        features.check(annotations.videos, feature_dim)
        self.annotations = annotations
        self.queries = annotations.queries
        self.features = features
        self.vocab = vocab
        self.num_clips = int(num_clips)
        self.max_words = int(max_words)
        self.resample_mode = resample_mode
        self.words = np.zeros((len(self.queries), self.max_words), dtype=np.int64)
        self.nwords = np.zeros(len(self.queries), dtype=np.int64)
        for i, q in enumerate(self.queries):
            ids = vocab.encode(q.sentence, self.max_words)
            self.words[i, : len(ids)] = ids
            self.nwords[i] = len(ids)

    def __len__(self) -> int:
        return len(self.queries)

    def __getitem__(self, i: int) -> dict:
        q = self.queries[i]
        feats, mask = resample(self.features.get(q.vid), self.num_clips, self.resample_mode)
        words = torch.from_numpy(self.words[i].copy())
        glance = -1.0 if q.glance is None else min(max(q.glance / q.duration, 0.0), 1.0)
        return {
            "video": torch.from_numpy(feats),
            "video_mask": torch.from_numpy(mask),
            "words": words,
            "word_mask": words != Vocab.PAD,
            "start": torch.tensor(min(max(q.start / q.duration, 0.0), 1.0), dtype=torch.float32),
            "end": torch.tensor(min(max(q.end / q.duration, 0.0), 1.0), dtype=torch.float32),
            "glance": torch.tensor(glance, dtype=torch.float32),
            "duration": torch.tensor(q.duration, dtype=torch.float32),
            "query_id": torch.tensor(q.query_id, dtype=torch.long),
            "vid": q.vid,
        }


def check_glances(ann: Annotations) -> None:
    """Every query of ``ann`` (a training split read for one-shot supervision) must carry its glance;
    one :class:`~common.data.DataFormatError` naming the file and the first ten records without one."""
    missing = [q for q in ann.queries if q.glance is None]
    if missing:
        where = ", ".join(f"record {q.query_id} ({q.vid})" for q in missing[:10])
        raise DataFormatError(
            f"{ann.path}: {len(missing)} of {len(ann.queries)} training record(s) have no glance (one-shot training "
            f"needs ViGA's glance format 'vid start end##glance##sentence', or 'glance' in the JSON): {where}"
            + (" ..." if len(missing) > 10 else ""))


class GlanceView(Dataset):
    """The items of a :class:`TSGDataset` without the moment, for glance (one-shot) supervision as
    in ViGA: ``start`` and ``end`` are removed, ``glance`` (fraction of the duration) stays, so a
    training loop fed from it cannot read a train moment. Refuses a dataset whose queries lack a
    glance (:func:`check_glances`)."""

    HIDDEN = ("start", "end")

    def __init__(self, base: TSGDataset):
        check_glances(base.annotations)
        self.base = base
        self.queries = base.queries

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        for k in self.HIDDEN:
            del item[k]
        return item


def collate_tsg(items: list[dict]) -> dict:
    """Stack every tensor field; ``vid`` becomes a list of str."""
    if not items:
        raise ValueError("collate_tsg: empty batch")
    out = {}
    for k, v in items[0].items():
        out[k] = [it[k] for it in items] if isinstance(v, str) else torch.stack([it[k] for it in items])
    return out


def to_device(batch: dict, device: torch.device | str) -> dict:
    """Every tensor of a collated batch moved to ``device`` (``vid`` stays a list)."""
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
