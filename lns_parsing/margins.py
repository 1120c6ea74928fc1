"""The "previous representative approach": stations from (predicted) organs with fixed margins.

Written from IASLC-style text definitions (Rusch et al. 2009, the lymph node map), not from the
phantom: this module must never import :mod:`lns_parsing.phantom` (a test checks the import
graph). Each station is the non-organ, non-lung tissue within ``margin_mm`` of its reference
organs, between the levels the text names:

  1R/1L  above the sternum's upper border, beside the trachea; split at the trachea's midline
  2R/2L  from the arch's upper border to the sternum's upper border, beside the trachea; split at
         the trachea's left wall
  3A     above the carina, in front of the ascending aorta, behind the sternum (prevascular)
  3P     above the carina, behind the trachea (retrotracheal)
  4R     right of the trachea's left wall, from the azygos vein's lower border to the arch top
  4L     left of the trachea's left wall, from the left PA's upper rim to the arch top, beside the trachea
  5      below the arch, above the left PA, beside the arch or the left PA (subaortic)
  6      beside the ascending aorta and arch, in front of the trachea, left (para-aortic)
  7      below the carina, between the main bronchi (subcarinal)
  8      below the bronchi, beside the oesophagus (paraesophageal)

RECONSTRUCTED: the abstract says prior work derived stations from organs "with predefined ad-hoc
margins"; its exact rules are not available, so these are this text's reading of IASLC.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def world_coords(shape, affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0).reshape(3, -1)
    xyz = (np.asarray(affine)[:3, :3] @ ijk + np.asarray(affine)[:3, 3:4]).reshape(3, *shape)
    return xyz[0], xyz[1], xyz[2]


def margin_stations(organs: np.ndarray, organ_names: Sequence[str], station_names: Sequence[str],
                    affine, spacing, margin_mm: float = 10.0) -> np.ndarray:
    """Station map (j + 1 = station_names[j]) from an organ map (k + 1 = organ_names[k]) on a RAS grid."""
    X, Y, Z = world_coords(organs.shape, affine)

    def m(name):
        return organs == organ_names.index(name) + 1 if name in organ_names else np.zeros(organs.shape, bool)

    def near(*names):
        mask = np.zeros(organs.shape, bool)
        for n in names:
            mask |= m(n)
        if not mask.any():
            return mask
        return ndimage.distance_transform_edt(~mask, sampling=spacing) <= margin_mm

    def ext(name, arr, fn, default):
        sel = m(name)
        return float(fn(arr[sel])) if sel.any() else default

    tr = m("trachea")
    z_carina = ext("trachea", Z, np.min, 0.0)
    lm = {"z_st": ext("sternum", Z, np.max, 1e9), "z_at": ext("aorta_arch", Z, np.max, z_carina),
          "z_ab": ext("aorta_arch", Z, np.min, z_carina), "z_c": z_carina,
          "z_az": ext("azygos", Z, np.min, z_carina), "z_pa": ext("pa_L", Z, np.max, z_carina),
          "x_tm": float(X[tr].mean()) if tr.any() else 0.0, "x_tl": ext("trachea", X, np.max, 0.0),
          "y_tp": ext("trachea", Y, np.min, 0.0), "y_ta": ext("trachea", Y, np.max, 0.0),
          "y_aa": ext("aorta_asc", Y, np.max, 1e9),
          "z_bl": min(ext("bronchus_R", Z, np.min, z_carina), ext("bronchus_L", Z, np.min, z_carina))}
    free = organs == 0
    for lung in ("lung_R", "lung_L"):
        free &= ~m(lung)
    lab = np.zeros(organs.shape, np.uint8)
    S = {n: i + 1 for i, n in enumerate(station_names)}

    def claim(name, cond):
        if name not in S:
            return
        sel = free & (lab == 0) & cond
        lab[sel] = S[name]

    above = Z >= lm["z_c"]
    right = X < lm["x_tl"]
    near_tr = near("trachea")
    claim("1R", (Z >= lm["z_st"]) & near_tr & (X < lm["x_tm"]))
    claim("1L", (Z >= lm["z_st"]) & near_tr & (X >= lm["x_tm"]))
    claim("3A", above & (Z < lm["z_st"]) & (Y >= lm["y_aa"]) & near("aorta_asc", "aorta_arch", "sternum"))
    claim("3P", above & (Z < lm["z_st"]) & (Y < lm["y_tp"]) & near("trachea", "esophagus"))
    upper = (Z >= lm["z_at"]) & (Z < lm["z_st"]) & near_tr
    claim("2R", upper & right)
    claim("2L", upper & ~right)
    claim("4R", above & right & (Z >= lm["z_az"]) & (Z < lm["z_at"]) & near_tr)
    claim("6", above & ~right & (Z >= lm["z_ab"]) & (Z < lm["z_at"]) & (Y > lm["y_ta"]) & near("aorta_asc", "aorta_arch"))
    claim("4L", above & ~right & (Z >= lm["z_pa"]) & (Z < lm["z_at"]) & near_tr)
    claim("5", above & ~right & (Z >= lm["z_pa"]) & (Z < lm["z_ab"]) & near("aorta_arch", "pa_L"))
    claim("7", (Z < lm["z_c"]) & (Z >= lm["z_bl"]) & near("bronchus_R", "bronchus_L")
          & (X >= ext("bronchus_R", X, np.min, -1e9)) & (X <= ext("bronchus_L", X, np.max, 1e9)))
    claim("8", (Z < lm["z_bl"]) & near("esophagus"))
    return lab
