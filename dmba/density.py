"""Density maps from head points, and their HDF5 cache.

Every map is rendered with *border-renormalised* Gaussian kernels: each head's kernel is cut to
the image and rescaled to sum to one, so a map sums exactly to its head count, also for heads
near the border. # DEVIATION: CSRNet's ``gaussian_filter(mode='constant')`` leaks mass at the
border (its maps sum to less than the count); here they sum to it exactly.

* ``fixed`` kernel: one sigma for every head (ShanghaiTech B: 15 px, leeyeehoo/CSRNet-pytorch@ed29d89
  ``make_dataset.ipynb``).
* ``adaptive`` (geometry-adaptive, same notebook): sigma_i = beta * mean distance to the k nearest
  heads (beta 0.3, k 3); a lone head gets sigma = mean(H, W) / 4 as in that notebook.

:func:`kernel_sigmas` gives the widths and :func:`render_density` draws with given widths, so a
manipulated target can keep the clean map's widths (DMBA+ copies render with the width of the
head they copy; dmba/attacks.py). Maps are then sum-pooled by the model's output stride
(:func:`pool_density`), which keeps the count exactly. # DEVIATION: CSRNet resizes by cubic
interpolation x 64, which keeps it only approximately.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from scipy.spatial import cKDTree

RENDER_VERSION = 2  # part of every cache key: bump when the renderer changes


def adaptive_sigmas(points: np.ndarray, shape: tuple[int, int], k: int = 3, beta: float = 0.3,
                    max_sigma: float | None = None) -> np.ndarray:
    """Per-head sigma: beta * mean distance to the k nearest other heads."""
    n = len(points)
    if n == 0:
        return np.zeros(0)
    if n == 1:
        sig = np.array([float(np.mean(shape)) / 4.0])
    else:
        kk = min(k, n - 1)
        tree = cKDTree(points, leafsize=2048)
        d, _ = tree.query(points, k=kk + 1)  # first hit is the point itself
        sig = beta * d[:, 1:].mean(axis=1)
        sig = np.maximum(sig, 0.5)  # coincident heads: keep the kernel well defined
    if max_sigma is not None:
        sig = np.minimum(sig, max_sigma)
    return sig


def kernel_sigmas(points: np.ndarray, shape: tuple[int, int], kernel: dict) -> np.ndarray:
    """The kernel width of every head under the dataset's kernel config: ``{"type": "fixed",
    "sigma": 15}`` or ``{"type": "adaptive", "k": 3, "beta": 0.3, "max_sigma": null}``."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    kind = kernel.get("type", "adaptive")
    if kind == "fixed":
        return np.full(len(pts), float(kernel["sigma"]))
    if kind == "adaptive":
        return adaptive_sigmas(pts, shape, int(kernel.get("k", 3)), float(kernel.get("beta", 0.3)),
                               kernel.get("max_sigma"))
    raise ValueError(f"unknown density kernel type {kind!r}; use 'fixed' or 'adaptive'")


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


def density_map(points: np.ndarray, shape: tuple[int, int], kernel: dict,
                sigmas: np.ndarray | None = None) -> np.ndarray:
    """Render with the dataset's kernel config, or with the given per-head ``sigmas``."""
    if sigmas is None:
        sigmas = kernel_sigmas(points, shape, kernel)
    return render_density(points, shape, sigmas)


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


def content_key(points: np.ndarray, shape: tuple[int, int], kernel: dict, sigmas: np.ndarray | None) -> str:
    """A hash of everything a rendered map depends on: the points, the image shape, the kernel
    settings (or explicit widths) and the renderer version."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(np.asarray(points, np.float64).reshape(-1, 2)).tobytes())
    h.update(repr((tuple(shape), sorted(dict(kernel).items()), RENDER_VERSION)).encode())
    if sigmas is not None:
        h.update(np.ascontiguousarray(np.asarray(sigmas, np.float64)).tobytes())
    return h.hexdigest()[:20]


class DensityCache:
    """HDF5 cache of rendered maps, one file per (dataset, split); an entry's key is the image name
    plus :func:`content_key`, so a regenerated set or a changed kernel never gets a stale map."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    def get_or_render(self, name: str, points: np.ndarray, shape: tuple[int, int], kernel: dict,
                      sigmas: np.ndarray | None = None) -> np.ndarray:
        if self.path is None:
            return density_map(points, shape, kernel, sigmas)
        key = f"{name}/{content_key(points, shape, kernel, sigmas)}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(600):  # another process (a second run, a DDP rank) may hold the file lock
            try:
                return self._get_or_render(key, points, shape, kernel, sigmas)
            except BlockingIOError:
                time.sleep(0.1 + 0.01 * (attempt % 10))
        raise TimeoutError(f"{self.path}: HDF5 cache stayed locked by another process for over a minute")

    def _get_or_render(self, key, points, shape, kernel, sigmas) -> np.ndarray:
        with h5py.File(self.path, "a") as f:
            if key in f:
                return f[key][()]
            m = density_map(points, shape, kernel, sigmas)
            d = f.create_dataset(key, data=m, compression="gzip", compression_opts=1)
            d.attrs["count"] = len(points)
            return m
