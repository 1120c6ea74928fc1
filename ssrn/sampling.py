"""Siamese sampling: the anchor sequence and the siamese sequences of one video, each on its own
grid, with the ground truth mapped onto each grid.

The paper's premise (abstract): grounding models first *sparsely* sample a fixed number of frames,
so the annotated start and end frames can be dropped and neighbouring irrelevant frames become the
new boundaries. Here:

* **Anchor**: ``N`` frames taken uniformly from the raw feature sequence,
  ``common.tsg.features.resample(feats, N, "uniform", offset)``, with a random sub-step ``offset``
  in training (``ssrn.jitter``) and ``0`` at test.
* **Siamese sequences** (``ssrn.siamese`` = S): S more sequences at the anchor's offset plus
  ``delta_s`` drawn in the s-th of S equal strata of ``(-1/2, 1/2)`` step, i.e. the frames between
  the anchor frames (SiaSamRea, Sec. 3.1: siamese clips start near the anchor's start, same
  interval). At test (only needed with ``ssrn.fuse_siamese``) ``delta_s`` is the stratum's centre.
* Every offset is a pure function of ``(seed, epoch, index)`` (:func:`sequence_offsets`), so a
  resumed run draws exactly what the uninterrupted one drew.
* **Grid**: sampled clip ``k`` stands for raw frame ``idx_k`` (or, with ``mean`` pooling, the bin
  it averages), at time ``t_k = (idx_k + 1/2) / T`` (a fraction of the video; the clip positions
  are found by resampling the frame indices with the same call, so there is one copy of the index
  math). The clip's *cell* is the span of the video closer to ``t_k`` than to its neighbours
  (:func:`cell_edges`); a clip span ``(i, j)`` decodes to ``[lo_i, hi_j]``.
* **Labels on each grid** (:func:`grid_labels`): a sampled frame is inside the moment when its time
  lies in ``[start, end]`` (``mean`` pooling: when its bin overlaps the moment); start / end labels
  are the first / last inside clip. A moment that holds no sampled frame (the paper's dropped
  boundary) is labelled with the clip nearest its centre: the "new boundary" the paper describes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from common.tsg.dataset import TSGDataset
from common.tsg.features import FeatureStore, resample
from common.tsg.records import Annotations
from common.tsg.text import Vocab

EPS = 1e-6      # fractions of the video: a frame exactly on a boundary counts as inside
SALT = 0x55A3   # the offset stream's own key


def sequence_offsets(siamese: int, *, train: bool, jitter: bool = True, seed: int = 0, epoch: int = 0,
                     index: int = 0) -> np.ndarray:
    """Offsets (fractions of an anchor step) of the anchor and the ``siamese`` sequences, ``[1 + S]``.

    Training: the anchor at ``o ~ U(-1/2, 1/2)`` (``0`` without ``jitter``), siamese sequence ``s``
    at ``o + delta_s`` with ``delta_s ~ U(-1/2 + s/S, -1/2 + (s+1)/S)`` (stratified between the
    anchor frames). Test: the anchor at ``0``, ``delta_s`` at the strata's centres. A pure function
    of ``(seed, epoch, index)``."""
    k = np.arange(siamese, dtype=np.float64)
    if not train:
        return np.concatenate([[0.0], -0.5 + (k + 0.5) / max(siamese, 1)])
    u = np.random.default_rng([SALT, int(seed), int(epoch), int(index)]).random(1 + siamese)
    anchor = u[0] - 0.5 if jitter else 0.0
    return np.concatenate([[anchor], anchor - 0.5 + (k + u[1:]) / max(siamese, 1)])


def sample_sequence(feats: np.ndarray, num_clips: int, mode: str, offset: float = 0.0):
    """``(clips [N, D], mask [N], times [N])``: the resampled sequence and the time (fraction of the
    video) each clip stands for, ``(frame index + 1/2) / T`` (``mean``: the bin's mean frame index);
    0 on padding. The positions come from resampling the frame indices with the same call."""
    t = feats.shape[0]
    x, mask = resample(feats, num_clips, mode, offset)
    pos, _ = resample(np.arange(t, dtype=np.float64)[:, None], num_clips, mode, offset)
    times = np.where(mask, (pos[:, 0] + 0.5) / t, 0.0)
    return x, mask, times.astype(np.float32)


def cell_edges(times, mask) -> tuple[np.ndarray, np.ndarray]:
    """Each valid clip's cell ``[lo, hi]`` (fractions; ``[..., N]`` arrays): the midpoints to its
    neighbours' times, ``0`` before the first clip and ``1`` after the last valid one. Padding:
    ``lo = hi = 1``."""
    t = _np(times).astype(np.float64)
    m = _np(mask).astype(bool)
    mid = (t[..., 1:] + t[..., :-1]) / 2
    lo = np.concatenate([np.zeros_like(t[..., :1]), mid], -1)
    hi = np.concatenate([mid, np.ones_like(t[..., :1])], -1)
    n = m.sum(-1, keepdims=True)
    idx = np.arange(t.shape[-1])
    hi = np.where(idx == n - 1, 1.0, hi)
    return np.where(m, lo, 1.0), np.where(m, hi, 1.0)


def grid_labels(times, mask, start: float, end: float, support: str = "point"):
    """``(first, last, inside [N])`` for the moment ``[start, end]`` (fractions) on one sequence's
    grid. ``support="point"``: a clip is inside when its time lies in the moment (a sampled frame);
    ``"cell"``: when its cell overlaps the moment (a pooled bin). No clip inside: the valid clip
    nearest the moment's centre (its one inside clip, start and end)."""
    t = _np(times).astype(np.float64)
    m = _np(mask).astype(bool)
    if support == "point":
        inside = m & (t >= start - EPS) & (t <= end + EPS)
    elif support == "cell":
        lo, hi = cell_edges(t, m)
        inside = m & (hi > start + EPS) & (lo < end - EPS)
    else:
        raise ValueError(f"support must be 'point' or 'cell', got {support!r}")
    if not inside.any():
        c = int(np.argmin(np.where(m, np.abs(t - (start + end) / 2), np.inf)))
        inside = np.zeros_like(m)
        inside[c] = True
    where = np.flatnonzero(inside)
    return int(where[0]), int(where[-1]), inside


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class SiameseDataset(Dataset):
    """Item ``i`` (query ``annotations.queries[i]``) with ``M = 1 + S`` sequences (index 0 = anchor)::

        video       FloatTensor [M, N, D]   the sampled clips of each sequence
        video_mask  BoolTensor  [M, N]      (False on padding of videos shorter than N)
        times       FloatTensor [M, N]      time of each clip, fraction of the video (sample_sequence)
        inside      BoolTensor  [M, N]      the moment's clips on each grid (grid_labels)
        label_start LongTensor  [M]         first / last inside clip on each grid
        label_end   LongTensor  [M]
        offsets     FloatTensor [M]         each sequence's offset, fractions of a step
        words, word_mask, start, end, duration, query_id, vid   as common.tsg.dataset.TSGDataset

    ``train=True`` draws offsets from ``(seed, epoch, index)`` (:meth:`set_epoch` before each epoch);
    ``train=False`` uses the fixed test offsets. Words are encoded by ``TSGDataset`` (which also
    checks that every video has features)."""

    def __init__(self, annotations: Annotations, features: FeatureStore, vocab: Vocab, num_clips: int,
                 max_words: int, mode: str = "uniform", *, siamese: int = 0, train: bool = False,
                 jitter: bool = True, seed: int = 0, feature_dim: int | None = None):
        if mode != "uniform" and (siamese > 0 or (train and jitter)):
            raise ValueError(f"siamese sampling and the anchor jitter need mode 'uniform' (got {mode!r})")
        self.base = TSGDataset(annotations, features, vocab, num_clips, max_words, mode, feature_dim)
        self.queries = self.base.queries
        self.features = features
        self.num_clips, self.mode = int(num_clips), mode
        self.siamese, self.train, self.jitter, self.seed = int(siamese), bool(train), bool(jitter), int(seed)
        self.support = "point" if mode == "uniform" else "cell"
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Offsets of the coming epoch (call before iterating; DataLoader workers copy it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.queries)

    def offsets(self, i: int) -> np.ndarray:
        return sequence_offsets(self.siamese, train=self.train, jitter=self.jitter, seed=self.seed,
                                epoch=self.epoch, index=i)

    def __getitem__(self, i: int) -> dict:
        q = self.queries[i]
        raw = self.features.get(q.vid)
        start = min(max(q.start / q.duration, 0.0), 1.0)
        end = min(max(q.end / q.duration, 0.0), 1.0)
        offs = self.offsets(i)
        xs, ms, ts, first, last, ins = [], [], [], [], [], []
        for o in offs:
            x, m, t = sample_sequence(raw, self.num_clips, self.mode, float(o))
            f, la, inside = grid_labels(t, m, start, end, self.support)
            xs.append(x), ms.append(m), ts.append(t), first.append(f), last.append(la), ins.append(inside)
        words = torch.from_numpy(self.base.words[i].copy())
        return {
            "video": torch.from_numpy(np.stack(xs)),
            "video_mask": torch.from_numpy(np.stack(ms)),
            "times": torch.from_numpy(np.stack(ts)),
            "inside": torch.from_numpy(np.stack(ins)),
            "label_start": torch.tensor(first, dtype=torch.long),
            "label_end": torch.tensor(last, dtype=torch.long),
            "offsets": torch.from_numpy(offs.astype(np.float32)),
            "words": words,
            "word_mask": words != Vocab.PAD,
            "start": torch.tensor(start, dtype=torch.float32),
            "end": torch.tensor(end, dtype=torch.float32),
            "duration": torch.tensor(q.duration, dtype=torch.float32),
            "query_id": torch.tensor(q.query_id, dtype=torch.long),
            "vid": q.vid,
        }



def grid_oracle(times, mask, start, end) -> np.ndarray:
    """The best-IoU moment any clip span of a grid can decode to, per query: ``[Q, 2]`` fractions
    (``times, mask [Q, N]``, ``start, end [Q]`` fractions). For a fixed end edge the IoU rises while
    the start edge approaches ``start`` from either side, so the best start edge is the nearest cell
    edge on either side of ``start`` (likewise for the end): 3 x 3 candidate spans around the cells
    holding ``start`` and ``end`` contain the optimum (checked against all spans in the tests)."""
    lo, hi = cell_edges(times, mask)
    m = _np(mask).astype(bool)
    s, e = np.asarray(start, np.float64), np.asarray(end, np.float64)
    n = m.sum(-1)
    i0 = np.clip(((lo <= s[:, None]) & m).sum(-1) - 1, 0, n - 1)           # cell holding the start
    j0 = np.clip(((hi < e[:, None]) & m).sum(-1), 0, n - 1)                # cell holding the end
    rows = np.arange(len(s))
    best, best_iou = np.zeros((len(s), 2)), np.full(len(s), -1.0)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            i, j = np.clip(i0 + di, 0, n - 1), np.clip(j0 + dj, 0, n - 1)
            cand = np.stack([lo[rows, i], hi[rows, j]], -1)
            inter = np.clip(np.minimum(cand[:, 1], e) - np.maximum(cand[:, 0], s), 0, None)
            hull = np.maximum(cand[:, 1], e) - np.minimum(cand[:, 0], s)
            iou = np.where((i <= j) & (hull > 0), inter / np.where(hull > 0, hull, 1), -1.0)
            better = iou > best_iou
            best[better], best_iou[better] = cand[better], iou[better]
    return best


__all__ = ["SiameseDataset", "cell_edges", "grid_labels", "grid_oracle", "sample_sequence", "sequence_offsets"]
