"""Image quality (SSIM, PSNR) and verification (ROC AUC, EER, TAR at a FAR) metrics.

SSIM is Wang et al. 2004 with an 11-px Gaussian window of sigma 1.5, K = (0.01, 0.03) and population
(co)variances, averaged over the valid window positions and the channels: pytorch-msssim's ``ssim``,
which equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)`` (tests: to 1e-6; skimage's *defaults* differ: a 7-px
uniform window with sample covariance). The verification metrics follow the same lab's ARL-VTF
notebooks (sam575/axial-gan@2b2275d, face_verf_arl.ipynb): every probe x gallery cosine score,
genuine = same subject, ROC; AUC, EER, TAR at FAR 1 % and 5 % (here in %, as the notebooks print).
"""

from __future__ import annotations

import math

import numpy as np
import torch


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM (N,) of (N, C, H, W) images (H, W >= 11)."""
    from pytorch_msssim import ssim as _ssim

    if x.shape[-1] < 11 or x.shape[-2] < 11:
        raise ValueError(f"SSIM's 11-px window needs images of at least 11 x 11, got {tuple(x.shape[-2:])}")
    return _ssim(x.double(), y.double(), data_range=data_range, size_average=False).float()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB (N,); +inf for identical images."""
    mse = ((x.double() - y.double()) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).float()


def roc(scores: np.ndarray, genuine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FPR, TPR, thresholds) at every distinct score, from the highest (tied scores move together),
    starting at (0, 0): sklearn.metrics.roc_curve's points without its drop_intermediate."""
    s, g = np.asarray(scores, float).ravel(), np.asarray(genuine, bool).ravel()
    n_pos, n_neg = int(g.sum()), int((~g).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC needs genuine and impostor pairs (got {n_pos} genuine, {n_neg} impostor)")
    order = np.argsort(-s, kind="mergesort")
    s, g = s[order], g[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]       # last index of each distinct score
    tp, fp = np.cumsum(g)[last], np.cumsum(~g)[last]
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos], np.r_[np.inf, s[last]]


def auc(scores, genuine) -> float:
    """Area under the ROC (trapezoids: ties count one half), in [0, 1]."""
    fpr, tpr, _ = roc(scores, genuine)
    return float(np.trapezoid(tpr, fpr))


def eer(scores, genuine) -> float:
    """Equal error rate: the FPR where FPR = 1 - TPR on the piecewise-linear ROC (the notebooks'
    brentq root of 1 - x - TPR(x)), in [0, 1]."""
    fpr, tpr, _ = roc(scores, genuine)
    d = 1 - fpr - tpr                        # decreasing along the curve: > 0 at (0, 0), < 0 at (1, 1)
    i = int(np.argmax(d <= 0))
    if d[i] == 0:
        return float(fpr[i])
    x0, x1, d0, d1 = fpr[i - 1], fpr[i], d[i - 1], d[i]
    return float(x0 + (x1 - x0) * d0 / (d0 - d1))


def tar_at_far(scores, genuine, far: float) -> float:
    """TPR of the piecewise-linear ROC at FPR = ``far`` (the notebooks' interp1d(fpr, tpr)(far))."""
    fpr, tpr, _ = roc(scores, genuine)
    return float(np.interp(far, fpr, tpr))


def verification(scores: np.ndarray, genuine: np.ndarray) -> dict[str, float]:
    """AUC, EER, TAR@FAR=1 %, TAR@FAR=5 %, all in % (the notebooks' x 100)."""
    return {"AUC": 100 * auc(scores, genuine), "EER": 100 * eer(scores, genuine),
            "TAR@FAR1": 100 * tar_at_far(scores, genuine, 0.01), "TAR@FAR5": 100 * tar_at_far(scores, genuine, 0.05)}


def cosine_scores(probe: torch.Tensor, probe_subjects: list[str], gallery: torch.Tensor,
                  gallery_subjects: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All probe x gallery cosine similarities and the genuine mask (same subject)."""
    p = torch.nn.functional.normalize(probe.double(), dim=1)
    g = torch.nn.functional.normalize(gallery.double(), dim=1)
    scores = (p @ g.t()).numpy()
    genuine = np.array([[a == b for b in gallery_subjects] for a in probe_subjects], bool)
    return scores, genuine


def quality(fake: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Mean SSIM and mean PSNR (dB; images identical to their target are left out of the PSNR mean
    and counted in ``n_identical``) of images in [0, 1]."""
    s, p = ssim(fake, target), psnr(fake, target)
    finite = torch.isfinite(p)
    return {"SSIM": float(s.mean()), "PSNR": float(p[finite].mean()) if bool(finite.any()) else math.inf,
            "n_identical": int((~finite).sum())}
