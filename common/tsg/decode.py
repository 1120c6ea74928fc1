"""Turn per-clip scores into ranked moments: the three decoders TSG models need.

* :func:`decode_boundaries` (proposal-free boundary heads: VSLNet, ECRL): every clip span
  ``(i, j)``, ``i <= j``, scores ``log p_start(i) + log p_end(j)`` (+ ``inside_weight`` x the mean
  ``log sigmoid(inside)`` over the span, :func:`span_scores`); the best ``pool`` spans go through
  greedy NMS and the first ``k`` survivors are returned.
* :func:`decode_windows` (one score per clip: foreground / attention / saliency heads): candidate
  windows at several scales (widths a fraction of the video) slide over every start clip, each
  scored by its mean clip score (minus ``contrast`` x the mean score outside it), then NMS, top-k.
* :func:`decode_regression` (per-clip span regression: DRN, MGSL-Net): every valid clip ``t``
  regresses its distances to the start and end, its span ``[c_t - l_t, c_t + r_t]``
  (:func:`clip_spans`) is ranked by the clip's confidence, then NMS, top-k.

Both return, per query, a ``[<= k, 2]`` float64 array of moments in fractions of the video
(clip span ``(i, j)`` of ``n`` valid clips -> ``[i/n, (j+1)/n]``, :mod:`common.tsg.grid`; or the
clips' own cells on a non-uniform grid, ``edges=``), best
first; multiply by the duration for seconds (:func:`to_seconds`). NMS is the evaluator's
(:func:`common.tsg.evaluate.nms_topk`: a candidate is dropped when its IoU with a kept one is > T).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from common.tsg.evaluate import nms_topk
from common.tsg.grid import clip_centres


def span_scores(start_logits: torch.Tensor, end_logits: torch.Tensor, inside_logits: torch.Tensor | None = None,
                max_len: int | None = None, inside_weight: float = 0.0) -> torch.Tensor:
    """Log-score of every clip span ``(i, j)``, ``i <= j < i + max_len``:
    ``log_softmax(start)[i] + log_softmax(end)[j] (+ inside_weight * mean_{i..j} log sigmoid(inside))``.
    Invalid spans are ``-inf``. Padding clips must carry a very negative start/end logit. [B, N, N]"""
    ls = F.log_softmax(start_logits.float(), -1)
    le = F.log_softmax(end_logits.float(), -1)
    sc = ls.unsqueeze(2) + le.unsqueeze(1)
    n = sc.shape[-1]
    idx = torch.arange(n, device=sc.device)
    valid = idx[None, :] >= idx[:, None]
    if max_len is not None:
        valid &= (idx[None, :] - idx[:, None]) < max_len
    if inside_logits is not None and inside_weight > 0:
        lp = F.logsigmoid(inside_logits.float())
        cs = torch.cat([lp.new_zeros(lp.shape[0], 1), lp.cumsum(-1)], -1)
        length = (idx[None, :] - idx[:, None] + 1).clamp_min(1).to(lp.dtype)
        mean_in = (cs[:, None, 1:] - cs[:, :-1, None]) / length
        sc = sc + inside_weight * mean_in
    return sc.masked_fill(~valid, float("-inf"))


def decode_boundaries(start_logits: torch.Tensor, end_logits: torch.Tensor, video_mask: torch.Tensor, *,
                      inside_logits: torch.Tensor | None = None, inside_weight: float = 0.0, k: int = 5,
                      nms: float = 0.5, max_len_frac: float = 1.0, pool: int = 100,
                      edges: tuple[np.ndarray, np.ndarray] | None = None) -> list[np.ndarray]:
    """Top-``k`` moments per query (fractions, best first) from boundary logits [B, N] (module doc).

    ``edges``: a clip grid that is not uniform (sampled frames, shifted sequences: SSRN), as
    ``(lo, hi)`` ``[B, N]`` arrays, each clip's cell in fractions of the video; span ``(i, j)`` then
    decodes to ``[lo_i, hi_j]`` instead of ``[i/n, (j+1)/n]``, and a span that touches a padding
    clip (its start or end logit ``finfo.min / 4``, a score below -1e30) is never returned."""
    n = video_mask.shape[1]
    max_len = max(1, int(math.ceil(max_len_frac * n)))
    sc = span_scores(start_logits.detach(), end_logits.detach(),
                     None if inside_logits is None else inside_logits.detach(), max_len, inside_weight)
    b = sc.shape[0]
    flat = sc.reshape(b, -1)
    top = torch.topk(flat, min(pool, flat.shape[1]), dim=-1)
    vals = top.values.cpu().numpy()
    idx = top.indices.cpu().numpy()
    if edges is None:
        nv = video_mask.sum(-1).cpu().numpy().astype(np.float64)[:, None]
        spans = np.stack([(idx // n) / nv, (idx % n + 1) / nv], -1).clip(0.0, 1.0)  # ranked [B, pool, 2]
        ok = np.isfinite(vals)
    else:
        lo, hi = (np.asarray(e, dtype=np.float64) for e in edges)
        rows = np.arange(b)[:, None]
        spans = np.stack([lo[rows, idx // n], hi[rows, idx % n]], -1)               # ranked [B, pool, 2]
        ok = np.isfinite(vals) & (vals > -1e30)                                      # padding logits: ~-8e37
    kept, valid = nms_topk(spans, ok, nms, keep=k)
    return [kept[q][valid[q]] for q in range(b)]


def window_spans(n: int, scales: Sequence[float]) -> np.ndarray:
    """Every window of ``n`` clips whose width is ``round(s * n)`` (at least 1) for a scale ``s``
    in ``scales``, at every start clip: ``[W, 2]`` int64 (first, last), widths ascending."""
    if n < 1:
        raise ValueError("window_spans: n >= 1 required")
    widths = sorted({min(max(int(round(s * n)), 1), n) for s in scales})
    if not widths:
        raise ValueError("window_spans: no scale given")
    out = [np.stack([np.arange(n - w + 1), np.arange(n - w + 1) + w - 1], -1) for w in widths]
    return np.concatenate(out).astype(np.int64)


def decode_windows(clip_scores, video_mask, *, scales: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7),
                   k: int = 5, nms: float = 0.5, contrast: float = 0.0) -> list[np.ndarray]:
    """Top-``k`` moments per query (fractions, best first) from one score per clip ``[B, N]``
    (probabilities or logits; padding ignored): every window of :func:`window_spans` scores
    ``mean(scores inside) - contrast * mean(scores outside)`` (outside mean 0 for a window covering
    the video). Ties keep the wider window first, then the earlier one. ``contrast=0`` is the plain
    mean, which on a flat plateau ranks every window inside it equally (the widest first)."""
    s = clip_scores.detach().float().cpu().numpy() if isinstance(clip_scores, torch.Tensor) else np.asarray(clip_scores)
    m = video_mask.cpu().numpy() if isinstance(video_mask, torch.Tensor) else np.asarray(video_mask)
    out = []
    for b in range(s.shape[0]):
        n = int(m[b].sum())
        x = s[b, :n].astype(np.float64)
        cs = np.concatenate([[0.0], np.cumsum(x)])
        w = window_spans(n, scales)
        width = w[:, 1] - w[:, 0] + 1
        inside = cs[w[:, 1] + 1] - cs[w[:, 0]]
        rest = n - width
        score = inside / width - contrast * np.where(rest > 0, (cs[n] - inside) / np.maximum(rest, 1), 0.0)
        order = np.lexsort((w[:, 0], -width, -np.round(score, 9)))  # cumsum noise must not break a tie
        spans = np.stack([w[order, 0] / n, (w[order, 1] + 1) / n], -1)[None]
        kept, valid = nms_topk(spans, np.ones(spans.shape[:2], dtype=bool), nms, keep=k)
        out.append(kept[0][valid[0]])
    return out


def clip_spans(dist: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """Each clip's regressed span ``[c_t - l_t, c_t + r_t]`` from distances ``dist [B, N, 2]``
    (fractions of the video; ``c_t`` = :func:`common.tsg.grid.clip_centres`), not clipped
    ``[B, N, 2]``; NaN on padding."""
    c = clip_centres(video_mask)
    return torch.stack([c - dist[..., 0], c + dist[..., 1]], -1)


def decode_regression(conf: torch.Tensor, dist: torch.Tensor, video_mask: torch.Tensor, *, k: int = 5,
                      nms: float = 0.5, min_len: float = 1e-3) -> list[np.ndarray]:
    """Top-``k`` moments per query (fractions of the video, best first) from per-clip confidence
    logits ``conf [B, N]`` and distances ``dist [B, N, 2]``: every valid clip's span
    (:func:`clip_spans`, clipped to [0, 1]; a span shorter than ``min_len`` is widened to it
    around its centre) ranked by its confidence (ties: the earlier clip), then greedy NMS (a
    candidate is dropped when its IoU with a kept one is > ``nms``). Padding clips are never returned."""
    spans = clip_spans(dist.detach().float(), video_mask).cpu().numpy().astype(np.float64)
    score = conf.detach().float().cpu().numpy()
    valid = video_mask.cpu().numpy()
    s, e = np.minimum(spans[..., 0], spans[..., 1]), np.maximum(spans[..., 0], spans[..., 1])
    mid, half = (s + e) / 2, np.maximum((e - s) / 2, min_len / 2)
    s, e = np.clip(mid - half, 0.0, 1.0), np.clip(mid + half, 0.0, 1.0)
    # a span pushed against a video end keeps at least min_len inside the video
    s = np.where(e - s < min_len, np.maximum(0.0, e - min_len), s)
    e = np.where(e - s < min_len, np.minimum(1.0, s + min_len), e)
    order = np.argsort(-np.where(valid, score, -np.inf), axis=1, kind="stable")
    ranked = np.take_along_axis(np.stack([s, e], -1), order[..., None], axis=1)
    ok = np.take_along_axis(valid, order, axis=1)
    kept, kvalid = nms_topk(np.nan_to_num(ranked), ok, nms, keep=k)
    return [kept[b][kvalid[b]] for b in range(len(kept))]


def to_seconds(moments: Sequence[np.ndarray], durations) -> list[np.ndarray]:
    """Fractions -> seconds, one duration per query."""
    d = durations.detach().cpu().numpy() if isinstance(durations, torch.Tensor) else np.asarray(durations)
    return [np.asarray(m, dtype=np.float64) * float(t) for m, t in zip(moments, d)]


__all__ = ["clip_spans", "decode_boundaries", "decode_regression", "decode_windows", "span_scores", "to_seconds",
           "window_spans"]
