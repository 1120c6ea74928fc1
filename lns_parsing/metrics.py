"""Per-station Dice, HD95 and ASD in millimetres at the voxel spacing (MONAI's surface distances).

A station missing from the prediction scores Dice 0 and has no distances (NaN, left out of the
distance means); a station absent from the ground truth is skipped."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    a, b = int(pred.sum()), int(true.sum())
    if a + b == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(pred, true).sum()) / (a + b)


def surface_distances(pred: np.ndarray, true: np.ndarray, spacing: Sequence[float]) -> tuple[float, float]:
    """(HD95, ASD) in mm between two non-empty binary masks, from one call of MONAI's symmetric edge
    surface distances (what ``compute_hausdorff_distance(percentile=95)`` and
    ``compute_average_surface_distance(symmetric=True)`` compute, each of which would find the
    edges and distances again): HD95 = max of the two directed 95th percentiles; ASD = mean over
    both surfaces' points."""
    from monai.metrics.utils import get_edge_surface_distance

    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=bool))
    t = torch.from_numpy(np.ascontiguousarray(true, dtype=bool))
    _, (d_pt, d_tp), _ = get_edge_surface_distance(p, t, spacing=[float(s) for s in spacing], symmetric=True)
    d_pt, d_tp = d_pt.double(), d_tp.double()
    hd = max(float(torch.quantile(d_pt, 0.95)), float(torch.quantile(d_tp, 0.95)))
    asd = float(torch.cat([d_pt, d_tp]).mean())
    return hd, asd


def case_metrics(pred: np.ndarray, true: np.ndarray, names: Sequence[str], spacing) -> dict[str, dict]:
    """{name: {"dice", "hd95", "asd"}} for each class j + 1 = names[j] present in ``true``."""
    out = {}
    for j, n in enumerate(names):
        t = true == j + 1
        if not t.any():
            continue
        p = pred == j + 1
        d = dice(p, t)
        hd, asd = surface_distances(p, t, spacing) if p.any() else (math.nan, math.nan)
        out[n] = {"dice": d, "hd95": hd, "asd": asd}
    return out


def _ms(v: list[float]) -> tuple[float, float, int]:
    v = [x for x in v if not math.isnan(x)]
    if not v:
        return math.nan, math.nan, 0
    m = float(np.mean(v))
    return m, float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)


def summarize(per_case: dict[str, dict[str, dict]], names: Sequence[str]) -> dict[str, float]:
    """Mean ± std over patients: overall (each patient's mean over its stations) and per station.
    Dice in %, distances in mm."""
    out: dict[str, float] = {}
    for key, scale in (("dice", 100.0), ("hd95", 1.0), ("asd", 1.0)):
        label = {"dice": "Dice", "hd95": "HD95", "asd": "ASD"}[key]
        per_patient = [_ms([m[key] for m in c.values()])[0] for c in per_case.values()]
        m, s, _ = _ms(per_patient)
        out[label], out[f"{label}_std"] = m * scale, s * scale
        for n in names:
            m, s, k = _ms([c[n][key] for c in per_case.values() if n in c])
            out[f"{label}/{n}"], out[f"{label}_std/{n}"] = m * scale, s * scale
    missed = sum(1 for c in per_case.values() for m in c.values() if math.isnan(m["hd95"]))
    out["missed_stations"] = float(missed)
    return out
