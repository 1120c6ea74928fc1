"""The clip grid every TSG model predicts on: moment -> clip indices, clip centres, soft targets.

A video resampled by :func:`common.tsg.features.resample` has ``n`` valid clips (``video_mask``
true on the first ``n``); valid clip ``i`` covers the fractions ``[i/n, (i+1)/n)`` of the video,
whatever the padding. A moment ``[start, end]`` (fractions of the duration) therefore covers the
clips ``first = floor(start n)`` .. ``last = ceil(end n) - 1`` (at least one clip), and the clip
span ``(i, j)`` decodes to the moment ``[i/n, (j+1)/n]``.

Boundaries are decided with a tolerance of ``EPS`` clips, so float32 noise on a moment that lies
on the grid (``end = 0.6`` stored as ``0.6000000238``) does not add a clip.
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-5  # in clips


def moment_to_clips(start, end, n) -> tuple[np.ndarray, np.ndarray]:
    """First and last clip (``int64``, same shape as the inputs) that the moment ``[start, end]``
    (fractions) overlaps on a grid of ``n`` valid clips. Scalars, arrays or tensors."""
    s = _f64(start)
    e = _f64(end)
    n = _f64(n)
    if (n < 1).any():
        raise ValueError("moment_to_clips: every video needs at least one valid clip")
    first = np.clip(np.floor(s * n + EPS), 0, n - 1).astype(np.int64)
    last = np.clip(np.ceil(e * n - EPS) - 1, first, n - 1).astype(np.int64)
    return first, last


def clips_to_moment(first, last, n) -> np.ndarray:
    """The moment ``[first/n, (last+1)/n]`` (fractions) of a clip span; ``[..., 2]`` float64."""
    n = _f64(n)
    return np.stack(np.broadcast_arrays(_f64(first) / n, (_f64(last) + 1) / n), -1)


def clip_centres(video_mask: torch.Tensor) -> torch.Tensor:
    """Centre of each valid clip as a fraction of the video, ``(i + 0.5) / n``; NaN on padding. [B, N]"""
    n = video_mask.sum(-1, keepdim=True).clamp_min(1).to(torch.float32)
    idx = torch.arange(video_mask.shape[-1], device=video_mask.device, dtype=torch.float32)
    return ((idx + 0.5) / n).masked_fill(~video_mask, float("nan"))


def gaussian_targets(centre: torch.Tensor, video_mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """A distribution over the valid clips of each video: ``exp(-(i - centre)^2 / 2 sigma^2)``
    normalised to sum 1 (``centre`` in clips, ``sigma`` in clips; a one-hot at the rounded centre
    when ``sigma == 0``). [B, N], zero on padding."""
    idx = torch.arange(video_mask.shape[-1], device=video_mask.device, dtype=torch.float32)
    c = centre.to(device=video_mask.device, dtype=torch.float32)[:, None]
    if sigma <= 0:
        t = (idx[None, :] == torch.round(c)).float()
    else:
        t = torch.exp(-((idx[None, :] - c) ** 2) / (2.0 * sigma * sigma))
    t = t * video_mask
    return t / t.sum(-1, keepdim=True).clamp_min(1e-12)


def boundary_targets(start: torch.Tensor, end: torch.Tensor, video_mask: torch.Tensor, sigma: float = 1.0):
    """Soft start and end targets (:func:`gaussian_targets` around the moment's first and last
    clip) and the inside mask (the moment's clips), for a batch of moments in fractions. [B, N] each."""
    n_valid = video_mask.sum(-1)
    first, last = moment_to_clips(start, end, n_valid)
    dev = video_mask.device
    first = torch.as_tensor(first, device=dev)
    last = torch.as_tensor(last, device=dev)
    idx = torch.arange(video_mask.shape[-1], device=dev)
    inside = (idx[None, :] >= first[:, None]) & (idx[None, :] <= last[:, None]) & video_mask
    return gaussian_targets(first, video_mask, sigma), gaussian_targets(last, video_mask, sigma), inside


def _f64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


__all__ = ["EPS", "boundary_targets", "clip_centres", "clips_to_moment", "gaussian_targets", "moment_to_clips"]
