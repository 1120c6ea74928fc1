"""Spatio-temporal augmentations of a batch of clip-feature videos with exactly known labels.

Every augmented clip j is a linear blend of two source clips of one source video (``src``,
``i0``, ``i1``, ``w``), so the transform is bookkept exactly:

* ``tau[b, j]``: the position in the *original* video (fraction of its valid clips, clip
  centre) that augmented clip j shows, or NaN for clips taken from another video;
* ``start``/``end``: the transformed ground truth, i.e. the original moment mapped through the
  same piecewise-linear map the foreground clips went through.

Temporal transforms (foreground and background): background crop (drop a random share of the
leading and trailing background), foreign background (a chunk of the background replaced by
clips of another video in the batch), foreground speed change (resample the moment to
``speed`` times its length), and relocation (the foreground re-placed at a uniformly random
position of the re-sampled background). Feature-level "spatial" transforms: Gaussian noise and
clip dropout (whole clips zeroed), the self-refine module's job to repair.

The abstract names "spatio-temporal augmentations on foreground and background segments" only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from common.tsg.grid import moment_to_clips


# RECONSTRUCTED: the set of transforms and their ranges (ecrl/config.py ecrl.aug) are this
# reconstruction's choice. DEVIATION: features are pre-extracted (I3D/C3D), so the "spatial"
# transforms act on features (noise, clip dropout), not on frames.
@dataclass
class AugConfig:
    p_temporal: float = 1.0        # probability that a sample gets the temporal transform
    speed_min: float = 0.5         # foreground length factor range
    speed_max: float = 2.0
    crop_max: float = 0.3          # at most this share of the background is cropped away (each side)
    p_foreign: float = 0.5         # probability of splicing in another video's clips
    foreign_max: float = 0.4       # at most this share of the background becomes foreign
    relocate: bool = True          # re-place the foreground uniformly; False keeps its relative position
    noise_std: float = 0.1         # Gaussian noise, in units of each clip's feature std
    clip_dropout: float = 0.1      # probability that a clip's features are zeroed


@dataclass
class AugPlan:
    src: np.ndarray      # [B, N] int  source video (batch index) of each augmented clip
    i0: np.ndarray       # [B, N] int  source clips blended with weight (1-w, w)
    i1: np.ndarray
    w: np.ndarray        # [B, N] float
    tau: np.ndarray      # [B, N] float original position (fraction) or NaN (foreign / padding)
    start: np.ndarray    # [B] transformed ground truth (fraction of valid clips)
    end: np.ndarray
    fg: np.ndarray       # [B, 2] int  first and last augmented clip of the moved foreground
    splice: np.ndarray   # [B, N] bool clip adjacent to a discontinuity
    dropped: np.ndarray  # [B, N] bool clip zeroed by clip dropout


def plan_one(b: int, n: int, start: float, end: float, other: int | None, n_other: int,
             cfg: AugConfig, rng: np.random.Generator):
    """The augmentation plan of one sample with n valid clips (see module docstring)."""
    fs, fe = (int(c) for c in moment_to_clips(start, end, n))  # the foreground's first and last clip
    lf = fe - fs + 1
    bg = [(b, float(i)) for i in range(fs)] + [(b, float(i)) for i in range(fe + 1, n)]
    temporal = rng.random() < cfg.p_temporal and len(bg) > 0
    if temporal:
        # background crop: drop up to crop_max of the pre- and of the post-background
        pre, post = bg[:fs], bg[fs:]
        cp = int(rng.integers(0, int(cfg.crop_max * len(pre)) + 1)) if pre else 0
        cq = int(rng.integers(0, int(cfg.crop_max * len(post)) + 1)) if post else 0
        bg = pre[cp:] + post[: len(post) - cq]
        # foreign background: a contiguous chunk replaced by another video's clips
        if other is not None and n_other > 0 and rng.random() < cfg.p_foreign and len(bg) > 1:
            m = int(rng.integers(1, max(1, int(cfg.foreign_max * len(bg))) + 1))
            at = int(rng.integers(0, len(bg) - m + 1))
            o0 = int(rng.integers(0, max(1, n_other - m + 1)))
            bg[at:at + m] = [(other, float(min(o0 + k, n_other - 1))) for k in range(m)]
        speed = math.exp(rng.uniform(math.log(cfg.speed_min), math.log(cfg.speed_max)))
        lf2 = int(min(max(round(speed * lf), 1), n - 1))
    else:
        lf2 = lf
    nb = n - lf2
    # background resampled (nearest) to nb clips, keeping its order
    bg_out = [bg[min(int((k + 0.5) * len(bg) / nb), len(bg) - 1)] for k in range(nb)] if nb > 0 else []
    if temporal and cfg.relocate:
        p = int(rng.integers(0, nb + 1))
    else:  # keep the foreground's relative position
        n_pre = sum(1 for s, i in bg if s == b and i < fs)
        p = int(round(n_pre * nb / max(len(bg), 1))) if temporal else fs
    r = lf2 / lf  # output clips per source clip inside the foreground
    src, i0, i1, w, tau = [], [], [], [], []
    for s, i in bg_out[:p]:
        src.append(s), i0.append(int(i)), i1.append(int(i)), w.append(0.0)
        tau.append((i + 0.5) / n if s == b else math.nan)
    for k in range(lf2):
        pos = fs + (k + 0.5) / r - 0.5               # continuous source clip index (centre)
        a = min(max(int(math.floor(pos)), fs), fe)
        c = min(a + 1, fe)
        frac = min(max(pos - a, 0.0), 1.0) if c > a else 0.0
        src.append(b), i0.append(a), i1.append(c), w.append(frac)
        tau.append((fs + (k + 0.5) / r) / n)
    for s, i in bg_out[p:]:
        src.append(s), i0.append(int(i)), i1.append(int(i)), w.append(0.0)
        tau.append((i + 0.5) / n if s == b else math.nan)
    # exact label transform: source clip units [fs, fe+1] -> output [p, p+lf2], linearly
    s2 = (p + (start * n - fs) * r) / n
    e2 = (p + (end * n - fs) * r) / n
    return src, i0, i1, w, tau, s2, e2, (p, p + lf2 - 1)


def make_plan(video_mask: torch.Tensor, start: torch.Tensor, end: torch.Tensor, cfg: AugConfig,
              rng: np.random.Generator) -> AugPlan:
    """Plan the augmentation of a batch (CPU/numpy bookkeeping; the gather runs on the device)."""
    mask = video_mask.cpu().numpy()
    st, en = start.detach().cpu().double().numpy(), end.detach().cpu().double().numpy()
    bsz, n_max = mask.shape
    n_valid = mask.sum(1).astype(int)
    P = AugPlan(src=np.tile(np.arange(bsz)[:, None], (1, n_max)), i0=np.zeros((bsz, n_max), np.int64),
                i1=np.zeros((bsz, n_max), np.int64), w=np.zeros((bsz, n_max), np.float32),
                tau=np.full((bsz, n_max), np.nan), start=np.zeros(bsz), end=np.zeros(bsz),
                fg=np.zeros((bsz, 2), np.int64), splice=np.zeros((bsz, n_max), bool),
                dropped=np.zeros((bsz, n_max), bool))
    for b in range(bsz):
        n = int(n_valid[b])
        if n == 0:
            raise ValueError(f"batch item {b} has no valid clips")
        other = (b + 1) % bsz if bsz > 1 else None
        src, i0, i1, w, tau, s2, e2, fg = plan_one(b, n, float(st[b]), float(en[b]), other,
                                                   int(n_valid[other]) if other is not None else 0, cfg, rng)
        P.src[b, :n], P.i0[b, :n], P.i1[b, :n], P.w[b, :n], P.tau[b, :n] = src, i0, i1, w, tau
        P.start[b], P.end[b], P.fg[b] = s2, e2, fg
        # splice points: neighbours that are not neighbours (or the same clip) in the source
        t = np.asarray(tau, float)
        s_arr = np.asarray(src)
        jump = (s_arr[1:] != s_arr[:-1]) | ~(np.abs(np.nan_to_num(t[1:], nan=-9) - np.nan_to_num(t[:-1], nan=9))
                                              <= 1.5 / n)
        P.splice[b, :n - 1] |= jump
        P.splice[b, 1:n] |= jump
        if cfg.clip_dropout > 0:
            P.dropped[b, :n] = rng.random(n) < cfg.clip_dropout
    return P


def apply_plan(video: torch.Tensor, video_mask: torch.Tensor, plan: AugPlan, cfg: AugConfig,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Gather the augmented videos [B, N, D] following ``plan``; adds noise and clip dropout."""
    dev = video.device
    src = torch.as_tensor(plan.src, device=dev)
    w = torch.as_tensor(plan.w, device=dev, dtype=video.dtype).unsqueeze(-1)
    x = (1 - w) * video[src, torch.as_tensor(plan.i0, device=dev)] + w * video[src, torch.as_tensor(plan.i1, device=dev)]
    if cfg.noise_std > 0:
        std = video.std(-1, keepdim=True).mean(1, keepdim=True)  # [B, 1, 1] per-video feature scale
        noise = torch.randn(x.shape, generator=generator, device="cpu").to(dev, x.dtype)
        x = x + cfg.noise_std * std * noise
    if plan.dropped.any():
        x = x.masked_fill(torch.as_tensor(plan.dropped, device=dev).unsqueeze(-1), 0.0)
    return x * video_mask.unsqueeze(-1).to(x.dtype)


def augment(batch: dict, cfg: AugConfig, rng: np.random.Generator, generator: torch.Generator | None = None):
    """Augmented copy of a collated batch: returns (video, start, end, plan)."""
    plan = make_plan(batch["video_mask"], batch["start"], batch["end"], cfg, rng)
    video = apply_plan(batch["video"], batch["video_mask"], plan, cfg, generator)
    dev = batch["video"].device
    return (video, torch.as_tensor(plan.start, dtype=torch.float32, device=dev),
            torch.as_tensor(plan.end, dtype=torch.float32, device=dev), plan)


def augment_step(batch: dict, aug_cfg, seed: int, rank: int, step: int) -> dict:
    """The augmentation of one training step, as ``ECRL.forward`` and ``Objective`` take it:
    ``video`` [B, N, D], the transformed ``start``/``end``, ``tau`` (each clip's original
    position), ``splice``/``dropped`` (the self-refine module's indicator channels) and
    ``fg_rows`` (the moved foreground's clips). Its randomness is a pure function of (seed, rank,
    step), so a resumed run draws the same augmentations without saving any state."""
    rng = np.random.default_rng([seed, rank, step])
    gen = torch.Generator().manual_seed(seed * 1_000_003 + rank * 7919 + step)
    cfg = AugConfig(**(aug_cfg.to_dict() if hasattr(aug_cfg, "to_dict") else dict(aug_cfg)))
    video, start, end, plan = augment(batch, cfg, rng, gen)
    dev = video.device
    idx = np.arange(batch["video_mask"].shape[1])[None, :]
    fg_rows = (idx >= plan.fg[:, :1]) & (idx <= plan.fg[:, 1:])
    return {"video": video, "start": start, "end": end,
            "tau": torch.as_tensor(plan.tau, dtype=torch.float32, device=dev),
            "splice": torch.as_tensor(plan.splice, device=dev), "dropped": torch.as_tensor(plan.dropped, device=dev),
            "fg_rows": torch.as_tensor(fg_rows, device=dev)}
