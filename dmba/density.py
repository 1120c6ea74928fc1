"""Density maps from head points.

Every map is rendered with *border-renormalised* Gaussian kernels: each head's kernel is cut to
the image and rescaled to sum to one, so a map sums exactly to its head count, also for heads
near the border (the CSRNet/MCNN code leaks mass there; dmba_lns.md §1.3, Awesome-CC #78).

* ``fixed`` kernel: one sigma for every head (ShanghaiTech B: 15 px).
* ``adaptive`` (geometry-adaptive, MCNN/CSRNet): sigma_i = beta * mean distance to the k nearest
  heads (beta 0.3, k 3); a lone head gets sigma = mean(H, W) / 4 as in the CSRNet notebook.

Maps are then sum-pooled by the model's output stride (:func:`pool_density`), which keeps the
count exactly, instead of CSRNet's cubic resize x 64 (only approximately count-preserving).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.spatial import cKDTree


def adaptive_sigmas(points: np.ndarray, shape: tuple[int, int], k: int = 3, beta: float = 0.3,
                    max_sigma: float | None = None) -> np.ndarray:
    """Per-head sigma: beta * mean distance to the k nearest other heads."""
    n = len(points)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        return np.array([float(np.mean(shape)) / 4.0])
    kk = min(k, n - 1)
    tree = cKDTree(points, leafsize=2048)
    d, _ = tree.query(points, k=kk + 1)  # first hit is the point itself
    sig = beta * d[:, 1:].mean(axis=1)
    sig = np.maximum(sig, 0.5)  # coincident heads: keep the kernel well defined
    if max_sigma is not None:
        sig = np.minimum(sig, max_sigma)
    return sig


def render_density(points: np.ndarray, shape: tuple[int, int], sigmas: np.ndarray | float,
                   truncate: float = 3.0) -> np.ndarray:
    """Sum of per-head Gaussians on an ``(H, W)`` grid; each kernel is clipped to the image and
    renormalised, so ``map.sum() == len(points)`` (to float precision). Points are (x=col, y=row)."""
    h, w = shape
    out = np.zeros((h, w), dtype=np.float64)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    sig = np.broadcast_to(np.asarray(sigmas, dtype=np.float64), (len(points),))
    for (x, y), s in zip(points, sig):
        cx, cy = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
        r = max(int(np.ceil(truncate * s)), 1)
        x0, x1 = max(cx - r, 0), min(cx + r + 1, w)
        y0, y1 = max(cy - r, 0), min(cy + r + 1, h)
        gx = np.exp(-0.5 * ((np.arange(x0, x1) - cx) / s) ** 2)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) - cy) / s) ** 2)
        k = np.outer(gy, gx)
        out[y0:y1, x0:x1] += k / k.sum()
    return out.astype(np.float32)


def density_map(points: np.ndarray, shape: tuple[int, int], kernel: dict) -> np.ndarray:
    """Render with the dataset's kernel config: ``{"type": "fixed", "sigma": 15}`` or
    ``{"type": "adaptive", "k": 3, "beta": 0.3, "max_sigma": null}``."""
    kind = kernel.get("type", "adaptive")
    if kind == "fixed":
        sig = float(kernel["sigma"])
    elif kind == "adaptive":
        sig = adaptive_sigmas(np.asarray(points).reshape(-1, 2), shape, int(kernel.get("k", 3)),
                              float(kernel.get("beta", 0.3)), kernel.get("max_sigma"))
    else:
        raise ValueError(f"unknown density kernel type {kind!r}; use 'fixed' or 'adaptive'")
    return render_density(points, shape, sig)


def pool_density(dmap: torch.Tensor | np.ndarray, stride: int) -> torch.Tensor:
    """Sum-pool a ``(..., H, W)`` map by ``stride`` (H, W multiples of stride); keeps the sum."""
    t = torch.as_tensor(dmap)
    if stride == 1:
        return t
    h, w = t.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(f"map size {h}x{w} is not a multiple of the output stride {stride}")
    lead = t.shape[:-2]
    t = t.reshape(*lead, h // stride, stride, w // stride, stride)
    return t.sum(dim=(-3, -1))


class DensityCache:
    """HDF5 cache of rendered clean maps, one file per (dataset, split, kernel); keyed by image
    name and validated by the point count and shape stored with each entry."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    @staticmethod
    def file_name(dataset: str, split: str, kernel: dict) -> str:
        h = hashlib.sha1(repr(sorted(kernel.items())).encode()).hexdigest()[:10]
        return f"{dataset}-{split}-{h}.h5"

    def get_or_render(self, key: str, points: np.ndarray, shape: tuple[int, int], kernel: dict) -> np.ndarray:
        if self.path is None:
            return density_map(points, shape, kernel)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(600):  # another process (a second run, a DDP rank) may hold the file lock
            try:
                return self._get_or_render(key, points, shape, kernel)
            except BlockingIOError:
                time.sleep(0.1 + 0.01 * (attempt % 10))
        raise TimeoutError(f"{self.path}: HDF5 cache stayed locked by another process for over a minute")

    def _get_or_render(self, key, points, shape, kernel) -> np.ndarray:
        with h5py.File(self.path, "a") as f:
            if key in f:
                d = f[key]
                if tuple(d.shape) == tuple(shape) and int(d.attrs["count"]) == len(points):
                    return d[()]
                del f[key]
            m = density_map(points, shape, kernel)
            d = f.create_dataset(key, data=m, compression="gzip", compression_opts=1)
            d.attrs["count"] = len(points)
            return m
