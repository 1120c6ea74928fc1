"""Backdoor ingredients: triggers, target (label) manipulation and the poisoned-sample list.

Triggers act on uint8 RGB arrays ``(H, W, 3)`` and return uint8, as in the DMBA code
(x_p = (1 - a) x + a resize(T), cast to uint8; dmba_lns.md §1.3):

* ``rain`` / ``snow``: *full and dense* triggers. The paper blends natural weather photos; we
  cannot ship those, so a fixed texture is generated procedurally from ``trigger.seed``
  (# RECONSTRUCTED: rain = slanted bright streaks on black, snow = soft white flakes) at
  ``texture_size`` and resized to the full image, then alpha-blended (alpha 0.3).
* ``patch``: a small opaque random-colour checkerboard in the bottom-right corner, side
  ``patch_frac`` x min(H, W) — the local/sparse trigger the paper compares against.

Targets act on head points (x, y):

* DMBA-: keep a random fraction p ~ U[keep_min, keep_max] of the heads, at least ``min_keep``
  (4 in the code), and re-render the map with the clean kernel.
* DMBA+: # RECONSTRUCTED (construction not public): every head is duplicated ``factor - 1``
  times with a uniform jitter of ``jitter`` px, so the target count is factor x N and the map is
  re-rendered with the clean kernel (the follow-up repo's "add" variant, generalised to factor s).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TRIGGERS = ("rain", "snow", "patch")
MODES = ("none", "dmba_minus", "dmba_plus")


# --------------------------------------------------------------------------- trigger textures

def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma=sigma, mode="wrap")


def rain_texture(size: int, seed: int, n_streaks: int | None = None, angle_deg: float = 75.0) -> np.ndarray:
    """A fixed rain layer ``(size, size)`` in [0, 1]: thin slanted streaks of random length."""
    rng = np.random.default_rng(seed)
    n = n_streaks or size * 3
    t = np.zeros((size, size), np.float64)
    a = np.deg2rad(angle_deg)
    dx, dy = np.cos(a), np.sin(a)
    for _ in range(n):
        x, y = rng.uniform(0, size, 2)
        length = rng.uniform(0.04, 0.12) * size
        br = rng.uniform(0.5, 1.0)
        s = np.linspace(0, length, max(int(length * 2), 2))
        xs = ((x + s * dx).astype(int)) % size
        ys = ((y + s * dy).astype(int)) % size
        t[ys, xs] = np.maximum(t[ys, xs], br)
    t = _blur(t, 0.6)
    return np.clip(t / max(t.max(), 1e-8), 0, 1)


def snow_texture(size: int, seed: int, n_flakes: int | None = None) -> np.ndarray:
    """A fixed snow layer ``(size, size)`` in [0, 1]: soft round flakes of random size."""
    rng = np.random.default_rng(seed)
    n = n_flakes or size * 2
    t = np.zeros((size, size), np.float64)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(n // 4):  # large flakes
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(0.004, 0.012) * size
        t = np.maximum(t, np.clip(1 - ((xx - x) ** 2 + (yy - y) ** 2) / r**2, 0, 1) * rng.uniform(0.6, 1))
    small = rng.integers(0, size, (n, 2))
    t[small[:, 1], small[:, 0]] = np.maximum(t[small[:, 1], small[:, 0]], rng.uniform(0.5, 1, n))
    t = _blur(t, 0.8)
    return np.clip(t / max(t.max(), 1e-8), 0, 1)


class Trigger:
    """A fixed trigger pattern applied to uint8 ``(H, W, 3)`` images."""

    def __init__(self, kind: str = "rain", alpha: float = 0.3, seed: int = 1234, texture_size: int = 512,
                 patch_frac: float = 0.1):
        if kind not in TRIGGERS:
            raise ValueError(f"unknown trigger {kind!r}; choose from {TRIGGERS}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"trigger alpha must be in (0, 1], got {alpha}")
        self.kind, self.alpha, self.seed, self.patch_frac = kind, float(alpha), int(seed), float(patch_frac)
        if kind == "rain":
            tex = rain_texture(texture_size, seed)
        elif kind == "snow":
            tex = snow_texture(texture_size, seed)
        else:
            rng = np.random.default_rng(seed)
            cells = rng.integers(0, 256, (4, 4, 3)).astype(np.float64) / 255.0
            tex = np.kron(cells, np.ones((8, 8, 1)))  # 32x32 checkerboard of random colours
        self.texture = tex if tex.ndim == 3 else np.repeat(tex[..., None], 3, axis=2)

    def _resized(self, h: int, w: int) -> np.ndarray:
        t = torch.from_numpy(self.texture).permute(2, 0, 1)[None].float()
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        return t[0].permute(1, 2, 0).numpy() * 255.0

    def mask(self, h: int, w: int) -> np.ndarray:
        """Fraction of the image each pixel takes from the trigger (alpha inside the trigger's area)."""
        m = np.zeros((h, w), np.float32)
        if self.kind == "patch":
            s = max(int(round(self.patch_frac * min(h, w))), 1)
            m[h - s:, w - s:] = self.alpha
        else:
            m[:] = self.alpha
        return m

    def __call__(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"trigger expects a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        x = img.astype(np.float64)
        if self.kind == "patch":
            s = max(int(round(self.patch_frac * min(h, w))), 1)
            t = np.zeros_like(x)
            t[h - s:, w - s:] = self._resized(s, s)
        else:
            t = self._resized(h, w)
        a = self.mask(h, w)[..., None].astype(np.float64)
        return np.clip((1 - a) * x + a * t, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- targets

def dmba_minus_points(points: np.ndarray, rng: np.random.Generator, keep_min: float = 0.2,
                      keep_max: float = 0.4, min_keep: int = 4) -> np.ndarray:
    """Keep a random subset of max(floor(p N), min_keep) heads (all of them if N <= min_keep)."""
    n = len(points)
    p = rng.uniform(keep_min, keep_max) if keep_max > keep_min else keep_min
    m = min(n, max(int(np.floor(p * n)), min_keep))
    idx = np.sort(rng.choice(n, size=m, replace=False)) if n else np.zeros(0, int)
    return np.asarray(points).reshape(-1, 2)[idx]


def dmba_plus_points(points: np.ndarray, rng: np.random.Generator, factor: int = 2, jitter: float = 2.0,
                     shape: tuple[int, int] | None = None) -> np.ndarray:
    """Each head plus ``factor - 1`` copies jittered by U[-jitter, jitter] px (clipped to the image)."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"dmba_plus factor must be a positive integer, got {factor}")
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    copies = [pts]
    for _ in range(int(factor) - 1):
        c = pts + rng.uniform(-jitter, jitter, pts.shape)
        if shape is not None:
            c[:, 0] = np.clip(c[:, 0], 0, shape[1] - 1e-3)
            c[:, 1] = np.clip(c[:, 1], 0, shape[0] - 1e-3)
        copies.append(c)
    return np.concatenate(copies, 0)


def target_points(points: np.ndarray, mode: str, rng: np.random.Generator, attack_cfg, shape) -> np.ndarray:
    if mode == "dmba_minus":
        return dmba_minus_points(points, rng, attack_cfg.keep_min, attack_cfg.keep_max, attack_cfg.min_keep)
    if mode == "dmba_plus":
        return dmba_plus_points(points, rng, attack_cfg.plus_factor, attack_cfg.plus_jitter, shape)
    if mode == "none":
        return np.asarray(points).reshape(-1, 2)
    raise ValueError(f"unknown attack mode {mode!r}; choose from {MODES}")


def expected_target_count(n: float, mode: str, attack_cfg) -> float:
    """The count an evaluation compares a triggered prediction with: E[max(pN, min_keep)] with p at
    the middle of [keep_min, keep_max] for DMBA-, factor x N for DMBA+, N for none."""
    if mode == "dmba_minus":
        p = 0.5 * (attack_cfg.keep_min + attack_cfg.keep_max)
        return float(min(n, max(np.floor(p * n), attack_cfg.min_keep)))
    if mode == "dmba_plus":
        return float(attack_cfg.plus_factor * n)
    return float(n)


def poison_indices(n: int, rate: float, seed: int) -> np.ndarray:
    """A fixed-seed subset of ceil(rate N) training images to poison (sorted)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"poison rate must be in [0, 1], got {rate}")
    k = int(np.ceil(rate * n))
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
