"""The embedded set: a thorax phantom whose lymph-node stations are defined by organ landmarks.

Each patient is drawn on a 2.5 x 2.5 x 4 mm grid (96 x 96 x 60 voxels, a 240 mm cube) in world
RAS millimetres and written as an nnU-Net-v2 raw folder (CT in HU, a 22-organ map, a 12-station
map, ``dataset.json``). Some patients are stored with L-P-S voxel axes (same world, flipped
array and affine), so the pipeline must reorient.

The stations partition the mediastinal fat: the non-organ voxels inside a mediastinal envelope.
A station is decided by rules on landmarks of the *defining* organs (:data:`DEFINING`): sternum
top, aortic-arch top and bottom, carina, azygos lower border, left-PA upper rim, the trachea's
midline, left, anterior and posterior walls, the bronchi's span and the oesophagus. Fat no rule
claims (hilar levels; stations 9-14 are not among the 12) stays background. The other 13 organs
are distractors: they move independently of every station boundary.

Every station has one HU distribution (fat), so appearance cannot name a station; organ context
can. Per patient: scale, organ offsets (non-anchors relative to their anchor, plus their own
jitter), fat-compartment width (a fixed margin cannot follow it), HU offset and noise level.
Non-anchor organs differ from fat by only ~40 HU (low contrast); anchors are high contrast.

    python -m lns_parsing.phantom --out data/lns_phantom     # 16 development + 24 CV patients
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from lns_parsing.config import ANCHORS, NON_ANCHORS, ORGANS, STATIONS

SHAPE = (96, 96, 60)
SPACING = (2.5, 2.5, 4.0)
# organs whose landmarks the station rules read (the rest are distractors)
DEFINING = ("trachea", "sternum", "aorta_asc", "aorta_arch", "azygos", "pa_L", "bronchus_R", "bronchus_L",
            "esophagus")
FAT_HU = -90.0
ANCHOR_HU = {"lung_R": -850.0, "lung_L": -850.0, "trachea": -950.0, "heart": 45.0, "spine": 650.0,
             "sternum": 500.0, "aorta_asc": 180.0, "aorta_arch": 180.0, "aorta_desc": 180.0}
NON_ANCHOR_HU = -50.0  # low contrast: 40 HU above fat
WALL_HU = 30.0         # chest wall / body outside the mediastinum and lungs
AIR_HU = -1000.0


@dataclass
class Patient:
    ct: np.ndarray        # float32 HU, RAS voxel order
    organs: np.ndarray    # uint8, 0 = none, i + 1 = ORGANS[i]
    stations: np.ndarray  # uint8, 0 = none, j + 1 = STATIONS[j]
    params: dict


def world_grid(shape=SHAPE, spacing=SPACING) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre world coordinates (mm, RAS) of the RAS-ordered grid, centred on 0."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    return np.meshgrid(*axes, indexing="ij")


def ras_affine(shape=SHAPE, spacing=SPACING) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape, spacing)]
    return aff


def to_lps_storage(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with L-P-S voxel axes: flip i and j, and the affine with them."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = arr.shape[0] - 1
    flip[1, 3] = arr.shape[1] - 1
    return arr[::-1, ::-1, :].copy(), affine @ flip


def _capsule(X, Y, Z, p0, p1, r):
    """Voxels within r mm of the segment p0-p1 (evaluated on a bounding box only)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    lo, hi = np.minimum(p0, p1) - r, np.maximum(p0, p1) + r
    sel = tuple(slice(*np.searchsorted(ax, (lo[k], hi[k]))) for k, ax in
                enumerate((X[:, 0, 0], Y[0, :, 0], Z[0, 0, :])))
    x, y, z = X[sel], Y[sel], Z[sel]
    d = p1 - p0
    t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / max(float(d @ d), 1e-9), 0, 1)
    dist2 = (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2
    out = np.zeros(X.shape, bool)
    out[sel] = dist2 <= r * r
    return out


def _tube(X, Y, Z, pts, r):
    m = np.zeros(X.shape, bool)
    for a, b in zip(pts[:-1], pts[1:]):
        m |= _capsule(X, Y, Z, a, b, r)
    return m


def sample_params(rng: np.random.Generator) -> dict:
    u = lambda a, b: float(rng.uniform(a, b))
    return {
        "shift": [u(-12, 12), u(-10, 10), u(-20, 20)],  # where the patient lies in the field of view
        "scale": u(0.92, 1.08), "width": u(0.8, 1.3), "hu_offset": u(-25, 25), "noise": u(12, 20),
        "carina_dz": u(-10, 10), "trachea_dx": u(-3, 3), "sternum_dz": u(-8, 8),
        "aorta": [u(-4, 4), u(-4, 4), u(-8, 8)], "azygos_dz": u(-10, 10), "pa_dz": u(-8, 8),
        "bronchus_R_dz": u(-6, 6), "bronchus_L_dz": u(-6, 6), "esophagus": [u(-4, 4), u(-3, 3)],
        # distractors: independent of every station rule
        **{f"d_{n}": [u(-6, 6), u(-6, 6), u(-6, 6)] for n in
           ("heart", "pa_trunk", "pa_R", "svc", "brachio_v_R", "brachio_v_L", "brachio_trunk", "carotid_L",
            "subclavian_L")},
    }


def draw_organs(params: dict, X, Y, Z) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Organ masks (before overlap resolution) and the mediastinal envelope."""
    s = params["scale"]
    P = lambda *p: np.asarray(p, float) * s  # scaled world position
    off = lambda name: np.asarray(params[f"d_{name}"], float)
    tx, cz = params["trachea_dx"], params["carina_dz"] * 1.0
    carina = P(0, -25, 0) + [tx, 0, cz]
    ao = np.asarray(params["aorta"], float)
    asc_top, desc_top = P(8, 18, 25) + ao, P(22, -48, 25) + ao
    arch_c, half = (asc_top + desc_top) / 2, (asc_top - desc_top) / 2
    arch_pts = [arch_c + [half[0] * np.cos(a), half[1] * np.cos(a), abs(half[1]) * np.sin(a)]
                for a in np.linspace(0, np.pi, 13)]  # a half circle from the ascending to the descending aorta
    pa_root = P(20, -2, -2) + [0, 0, params["pa_dz"]]
    eso = P(6, -42, 0) + [*params["esophagus"], 0]
    m: dict[str, np.ndarray] = {}
    m["heart"] = (((X - P(5, 0, 0)[0] - off("heart")[0]) / (45 * s)) ** 2 + ((Y - 15 * s - off("heart")[1]) / (40 * s)) ** 2
                  + ((Z + 78 * s - off("heart")[2]) / (36 * s)) ** 2) <= 1
    m["spine"] = _capsule(X, Y, Z, P(0, -70, -200), P(0, -70, 200), 16 * s)
    m["sternum"] = ((np.abs(X) <= 14 * s) & (Y >= 52 * s) & (Y <= 62 * s) & (Z >= -80 * s)
                    & (Z <= 95 * s + params["sternum_dz"]))
    m["aorta_asc"] = _capsule(X, Y, Z, P(8, 18, -40) + ao, asc_top, 12 * s)
    m["aorta_arch"] = _tube(X, Y, Z, arch_pts, 10 * s) & (Z >= asc_top[2])
    m["aorta_desc"] = _capsule(X, Y, Z, desc_top, P(22, -48, -200) + ao, 10 * s)
    m["trachea"] = _capsule(X, Y, Z, carina, P(0, -25, 200) + [tx, 0, 0], 9 * s)
    m["bronchus_R"] = _capsule(X, Y, Z, carina, carina + P(-35, 0, -22) + [0, 0, params["bronchus_R_dz"]], 6 * s)
    m["bronchus_L"] = _capsule(X, Y, Z, carina, carina + P(38, 0, -30) + [0, 0, params["bronchus_L_dz"]], 6 * s)
    m["esophagus"] = _capsule(X, Y, Z, eso + [0, 0, -200], eso + [0, 0, 200], 7 * s)
    m["pa_trunk"] = _capsule(X, Y, Z, P(35, 22, -30) + off("pa_trunk") + [0, 0, params["pa_dz"]], pa_root, 9 * s)
    m["pa_L"] = _capsule(X, Y, Z, pa_root, pa_root + P(28, -12, 6), 8 * s)
    m["pa_R"] = _capsule(X, Y, Z, pa_root, P(-40, -4, -16) + off("pa_R") + [0, 0, params["pa_dz"]], 8 * s)
    svc_top = P(-22, 15, 80) + off("svc")
    m["svc"] = _capsule(X, Y, Z, svc_top, P(-22, 15, -40) + off("svc"), 9 * s)
    m["brachio_v_R"] = _capsule(X, Y, Z, P(-45, 10, 115) + off("brachio_v_R"), svc_top, 7 * s)
    m["brachio_v_L"] = _capsule(X, Y, Z, P(55, 28, 100) + off("brachio_v_L"), svc_top, 7 * s)
    az = [P(-10, -50, -60), P(-12, -48, 18), P(-16, -30, 24), P(-22, 12, 24)]
    m["azygos"] = _tube(X, Y, Z, [p + [0, 0, params["azygos_dz"]] for p in az[1:]], 5 * s)
    top = arch_pts[4]
    m["brachio_trunk"] = _capsule(X, Y, Z, arch_pts[3], top + P(-14, 8, 50) + off("brachio_trunk"), 6 * s)
    m["carotid_L"] = _capsule(X, Y, Z, arch_pts[6], arch_pts[6] + P(4, 4, 60) + off("carotid_L"), 5 * s)
    m["subclavian_L"] = _capsule(X, Y, Z, arch_pts[8], arch_pts[8] + P(30, 0, 50) + off("subclavian_L"), 5 * s)
    # the mediastinal envelope: between the lungs (its half-width is the per-patient fat-compartment
    # width), behind the sternum, in front of the spine, from 70 mm below the carina upwards
    half_w = 34 * s * params["width"]
    env = ((np.abs(X - tx) <= half_w) & (Y >= -54 * s) & (Y <= 52 * s) & (Z >= carina[2] - 70 * s)) | m["heart"]
    body = ((X / 118) ** 2 + ((Y + 5) / 100) ** 2) <= 1
    lung_core = (((np.abs(X) - 62 * s) / (48 * s)) ** 2 + ((Y + 5 * s) / (62 * s)) ** 2 + (Z / (130 * s)) ** 2) <= 1
    m["lung_R"] = lung_core & (X < 0) & ~env & body
    m["lung_L"] = lung_core & (X > 0) & ~env & body
    return m, env & body


def landmarks(organs: np.ndarray, X, Y, Z) -> dict:
    """The station-defining landmarks, read from the (overlap-resolved) organ map."""
    def sel(name):
        return organs == ORGANS.index(name) + 1
    tr, arch = sel("trachea"), sel("aorta_arch")
    bR, bL = sel("bronchus_R"), sel("bronchus_L")
    return {
        "z_sternum_top": float(Z[sel("sternum")].max()), "z_arch_top": float(Z[arch].max()),
        "z_arch_bottom": float(Z[arch].min()), "z_carina": float(Z[tr].min()),
        "z_azygos_low": float(Z[sel("azygos")].min()), "z_pa_rim": float(Z[sel("pa_L")].max()),
        "x_trachea_mid": float(X[tr].mean()), "x_trachea_left": float(X[tr].max()),
        "y_trachea_post": float(Y[tr].min()), "y_trachea_ant": float(Y[tr].max()),
        "y_aorta_ant": float(Y[sel("aorta_asc")].max()), "x_bronchus_R": float(X[bR].min()),
        "x_bronchus_L": float(X[bL].max()), "z_bronchi_low": float(min(Z[bR].min(), Z[bL].min())),
    }


def station_rules(fat: np.ndarray, lm: dict, X, Y, Z, esophagus: np.ndarray) -> np.ndarray:
    """Station index + 1 per fat voxel (0 elsewhere); the first matching rule wins. Fat no rule
    claims (the hilar levels: right between the azygos and the carina, left between the left PA and
    the carina, in front of the bronchi) belongs to stations outside the 12 and stays 0."""
    S = {n: i + 1 for i, n in enumerate(STATIONS)}
    lab = np.zeros(fat.shape, np.uint8)

    def claim(cond, value):
        m = fat & (lab == 0) & cond
        lab[m] = value[m] if isinstance(value, np.ndarray) else value

    right, above_carina = X < lm["x_trachea_left"], Z >= lm["z_carina"]
    claim(Z >= lm["z_sternum_top"], np.where(X < lm["x_trachea_mid"], S["1R"], S["1L"]))
    claim(above_carina & (Y >= lm["y_aorta_ant"]), S["3A"])                          # prevascular
    claim(above_carina & (Y < lm["y_trachea_post"]), S["3P"])                        # retrotracheal
    c = Z >= lm["z_arch_top"]
    claim(c, np.where(right, S["2R"], S["2L"]))                # upper paratracheal
    claim(above_carina & right & (Z >= lm["z_azygos_low"]), S["4R"])                 # lower paratracheal, right
    claim(above_carina & ~right & (Z >= lm["z_arch_bottom"]) & (Y > lm["y_trachea_ant"]), S["6"])  # para-aortic
    left_mid = above_carina & ~right & (Z >= lm["z_pa_rim"])
    c = left_mid & ((X < lm["x_trachea_left"] + 10) | (Z >= lm["z_arch_bottom"]))
    claim(c, S["4L"])                                                                # lower paratracheal, left
    claim(left_mid, S["5"])                                                          # subaortic (AP window)
    claim((Z < lm["z_carina"]) & (Z >= lm["z_bronchi_low"]) & (X >= lm["x_bronchus_R"]) & (X <= lm["x_bronchus_L"])
          & (Y <= lm["y_trachea_ant"] + 10), S["7"])                                 # subcarinal
    near_eso = ndimage.distance_transform_edt(~esophagus, sampling=SPACING) <= 25.0
    claim((Z < lm["z_bronchi_low"]) & near_eso, S["8"])                              # paraesophageal
    return lab


def make_patient(seed: int, index: int) -> Patient:
    rng = np.random.default_rng([seed, index])
    params = sample_params(rng)
    X, Y, Z = world_grid()
    sx, sy, sz = params["shift"]
    X, Y, Z = X - sx, Y - sy, Z - sz  # patient coordinates (the whole patient shifted in the field of view)
    masks, env = draw_organs(params, X, Y, Z)
    # paint order resolves overlaps (later wins): big organs first, thin structures last
    order = ["lung_R", "lung_L", "heart", "aorta_asc", "aorta_arch", "aorta_desc", "pa_trunk", "pa_L", "pa_R",
             "svc", "brachio_v_R", "brachio_v_L", "brachio_trunk", "carotid_L", "subclavian_L", "azygos",
             "esophagus", "bronchus_R", "bronchus_L", "trachea", "spine", "sternum"]
    assert sorted(order) == sorted(ORGANS)
    body = ((X / 118) ** 2 + ((Y + 5) / 100) ** 2) <= 1
    organs = np.zeros(X.shape, np.uint8)
    for name in order:
        organs[masks[name] & body] = ORGANS.index(name) + 1
    fat = env & (organs == 0)
    lm = landmarks(organs, X, Y, Z)
    stations = station_rules(fat, lm, X, Y, Z, organs == ORGANS.index("esophagus") + 1)
    hu = np.full(X.shape, AIR_HU, np.float32)
    hu[body] = WALL_HU
    hu[fat] = FAT_HU
    for name in ORGANS:
        hu[organs == ORGANS.index(name) + 1] = ANCHOR_HU.get(name, NON_ANCHOR_HU)
    hu[body] += params["hu_offset"]
    hu += rng.normal(0.0, params["noise"], X.shape).astype(np.float32)
    params["landmarks"] = lm
    return Patient(hu.astype(np.float32), organs, stations, params)


def dataset_json(n_cases: int) -> dict:
    return {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{s: i + 1 for i, s in enumerate(STATIONS)}},
        "organs": {"background": 0, **{o: i + 1 for i, o in enumerate(ORGANS)}},
        "anchors": list(ANCHORS), "non_anchors": list(NON_ANCHORS), "defining_organs": list(DEFINING),
        "numTraining": n_cases, "file_ending": ".nii.gz",
        "description": "lns_parsing embedded thorax phantom (synthetic; not a paper benchmark)",
    }


def case_ids(n_dev: int = 16, n_cv: int = 24) -> list[str]:
    return [f"dev_{i:03d}" for i in range(n_dev)] + [f"cv_{i:03d}" for i in range(n_cv)]


def write_case(out: Path, case: str, p: Patient, lps: bool) -> None:
    aff = ras_affine()
    for folder, arr, dtype in (("imagesTr", p.ct, np.int16), ("labelsTr", p.stations, np.uint8),
                               ("organsTr", p.organs, np.uint8)):
        data = np.round(arr).astype(dtype) if dtype == np.int16 else arr.astype(dtype)
        a = aff
        if lps:
            data, a = to_lps_storage(data, aff)
        name = f"{case}_0000.nii.gz" if folder == "imagesTr" else f"{case}.nii.gz"
        img = nib.Nifti1Image(data, a)
        img.set_qform(a, code=1)
        img.set_sform(a, code=1)
        nib.save(img, out / folder / name)


def generate(out: str | Path, seed: int = 0, n_dev: int = 16, n_cv: int = 24) -> Path:
    """Write the phantom as an nnU-Net-v2 raw folder; every third case is stored L-P-S."""
    out = Path(out)
    for d in ("imagesTr", "labelsTr", "organsTr"):
        (out / d).mkdir(parents=True, exist_ok=True)
    cases = case_ids(n_dev, n_cv)
    meta = {}
    for i, case in enumerate(cases):
        p = make_patient(seed, i)
        write_case(out, case, p, lps=(i % 3 == 2))
        meta[case] = {k: v for k, v in p.params.items()}
    ds = dataset_json(len(cases))
    ds["development"] = cases[:n_dev]
    (out / "dataset.json").write_text(json.dumps(ds, indent=2) + "\n")
    (out / "phantom_params.json").write_text(json.dumps({"seed": seed, "cases": meta}, indent=1) + "\n")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/lns_phantom")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-dev", type=int, default=16)
    ap.add_argument("--n-cv", type=int, default=24)
    a = ap.parse_args(argv)
    print(generate(a.out, a.seed, a.n_dev, a.n_cv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
