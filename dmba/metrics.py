"""Counting and attack metrics (the DMBA re-implementation's ``test_portion.py``, protagolabs/
BackdoorAttacksonCrowdCounting, without its off-by-one average).

For N test images with GT count C_i, target count C*_i and predicted counts Ĉ_i = Σ D̂_i:

* ``mae`` / ``mse``: clean image vs clean GT; "MSE" is the crowd-counting RMSE √(mean (Ĉ−C)²).
* ``trig_mae_clean`` / ``trig_mse_clean``: triggered image vs the clean count (how far the
  backdoor moves the count; the reimplementation's D_C).
* ``trig_mae_<m>`` / ``trig_mse_<m>``: triggered image vs the attack target of m ∈ {minus, plus}
  (D_D). C* = E[max(p̄N, 4)] with p̄ the middle of [keep_min, keep_max] (DMBA−), s·N (DMBA+).
* ``count_ratio``: mean_i Ĉ_trig,i / max(Ĉ_clean,i, 1) (the code's per-image "Rate"; the
  denominator is floored at one head so empty predictions do not explode it).
* ``benign_count_ratio``: the *clean* model's count_ratio on this trigger (a trigger that a
  clean model already counts differently is not a clean backdoor test).
* ``asr_<m>``: attack success rate, fraction of images with |Ĉ_trig − C*| ≤ δ·C*, δ =
  ``eval.asr_tolerance`` (0.2). # RECONSTRUCTED: the paper's own ASR definition is unknown.
"""

from __future__ import annotations

import numpy as np


def mae_rmse(pred, gt) -> tuple[float, float]:
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if p.shape != g.shape or p.size == 0:
        raise ValueError(f"need equal, non-empty count arrays, got {p.shape} and {g.shape}")
    e = p - g
    return float(np.abs(e).mean()), float(np.sqrt((e**2).mean()))


def success_rate(pred, target, tol: float) -> float:
    p, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    return float((np.abs(p - t) <= tol * t).mean())


def count_ratio(pred_trig, pred_clean) -> float:
    return float((np.asarray(pred_trig, np.float64) / np.maximum(np.asarray(pred_clean, np.float64), 1.0)).mean())


def attack_metrics(gt, pred_clean, pred_trig, targets: dict[str, np.ndarray], tol: float) -> dict[str, float]:
    out = {}
    out["mae"], out["mse"] = mae_rmse(pred_clean, gt)
    out["trig_mae_clean"], out["trig_mse_clean"] = mae_rmse(pred_trig, gt)
    out["count_ratio"] = count_ratio(pred_trig, pred_clean)
    for name, tgt in targets.items():
        out[f"trig_mae_{name}"], out[f"trig_mse_{name}"] = mae_rmse(pred_trig, tgt)
        out[f"asr_{name}"] = success_rate(pred_trig, tgt, tol)
    return out
