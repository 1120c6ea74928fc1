"""5-point face alignment: a least-squares similarity (Umeyama 1991) onto a canonical template and a
bilinear warp-crop at any size. Points are continuous pixel coordinates (pixel centres at +0.5,
the renderer's convention); MTCNN's points use the same continuous frame to within its accuracy."""

from __future__ import annotations

import numpy as np

# ArcFace 112x112 template (deepinsight/insightface, python-package/insightface/utils/face_align.py,
# `arcface_dst`), moved to pixel-centre-at-0.5 coordinates and divided by 112: image-left eye,
# other eye, nose tip, image-left mouth corner, image-right mouth corner.
TEMPLATE_5 = (np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]]) + 0.5) / 112.0


def similarity(src, dst) -> np.ndarray:
    """(2, 3) matrix M of the rotation + uniform scale + shift (no reflection) taking ``src`` points
    (N, 2) closest to ``dst`` in least squares: dst ~ src @ M[:, :2].T + M[:, 2]."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity: need two (N>=2, 2) point sets of one shape, got {src.shape} and {dst.shape}")
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    u, sv, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sv) @ sign) / (s**2).sum(1).mean()
    return np.hstack([scale * rot, (md - scale * rot @ ms)[:, None]])


def transform(points, m) -> np.ndarray:
    """Apply a (2, 3) matrix to (N, 2) points."""
    return np.asarray(points, float) @ m[:, :2].T + m[:, 2]


def warp(image: np.ndarray, m: np.ndarray, size: int, fill: float = 0) -> np.ndarray:
    """The ``size`` x ``size`` image whose pixel p shows ``image`` at m^-1(p) (bilinear; ``fill`` outside)."""
    a_inv = np.linalg.inv(m[:, :2])
    g = np.arange(size) + 0.5
    q = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    src = (q - m[:, 2]) @ a_inv.T - 0.5  # source positions in index units
    h, w = image.shape[:2]
    x0, y0 = np.floor(src[:, 0]).astype(int), np.floor(src[:, 1]).astype(int)
    fx, fy = src[:, 0] - x0, src[:, 1] - y0
    img = image.astype(np.float64).reshape(h, w, -1)
    out = 0
    for dy, dx, wt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        out = out + wt[:, None] * np.where(ok[:, None], img[yi.clip(0, h - 1), xi.clip(0, w - 1)], fill)
    out = out.reshape(size, size, -1)
    out = out[..., 0] if image.ndim == 2 else out
    return np.clip(np.round(out), 0, 255).astype(np.uint8) if image.dtype == np.uint8 else out.astype(image.dtype)


def align(image: np.ndarray, points5, size: int = 112, template=TEMPLATE_5) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``image`` so that its 5 points land on ``template`` (unit-square coordinates) x ``size``.
    Returns (crop, M) with M the (2, 3) image -> crop matrix (use :func:`transform` for points)."""
    m = similarity(np.asarray(points5, float).reshape(-1, 2), np.asarray(template, float) * size)
    return warp(image, m, size), m
