"""Data: the nnU-Net-v2 raw layout, its reliability check, preprocessing and training patches.

Layout under ``<data root>/<data.subdir>/``::

    imagesTr/<case>_0000.nii.gz   CT in HU
    labelsTr/<case>.nii.gz        stations (values from dataset.json "labels")
    organsTr/<case>.nii.gz        organs (values from dataset.json "organs")
    dataset.json                  "labels": station name -> value, "organs": organ name -> value,
                                  "anchors": [organ names]; optional "development": [cases]
    splits_final.json             optional: [{"train": [...], "val": [...]}, ...] over the CV cases

Every case is reoriented to ``data.orientation`` (MONAI Orientation), resampled to
``data.spacing`` (MONAI Spacing; labels nearest) and centre padded / cropped to ``data.grid``.

    python -m lns_parsing.data [--config CFG] [--data-root R]     # check a dataset, train nothing
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

from common.cli import base_parser, parse
from common.data import DataFormatError, data_root, require_files
from common.datacheck import DataCheck

HERE = Path(__file__).resolve().parent


def default_config() -> Path:
    return HERE / "configs" / "synthetic.yaml"


# ------------------------------------------------------------------------------------ layout

@dataclass
class Layout:
    root: Path
    stations: list[str]            # index j + 1 in our label maps
    station_values: list[int]      # the value of each station in labelsTr
    organs: list[str]
    organ_values: list[int]
    anchors: list[str]
    cases: list[str]
    development: list[str]
    folds: list[dict] = field(default_factory=list)  # [{"train": [...], "val": [...]}]

    def image(self, case: str) -> Path:
        return self.root / "imagesTr" / f"{case}_0000.nii.gz"

    def label(self, case: str) -> Path:
        return self.root / "labelsTr" / f"{case}.nii.gz"

    def organ(self, case: str) -> Path:
        return self.root / "organsTr" / f"{case}.nii.gz"


def _named_values(mapping: dict, what: str, path: Path) -> tuple[list[str], list[int]]:
    items = [(k, v) for k, v in mapping.items() if k != "background"]
    bad = [(k, v) for k, v in items if not isinstance(v, int) or v <= 0]
    if bad:
        raise DataFormatError(f"{path}: '{what}' needs positive integer values, got {bad}")
    values = [v for _, v in items]
    if len(set(values)) != len(values):
        raise DataFormatError(f"{path}: '{what}' maps two names to one value: {mapping}")
    items.sort(key=lambda kv: kv[1])
    return [k for k, _ in items], [v for _, v in items]


def kfold(cases: Sequence[str], k: int, seed: int) -> list[dict]:
    """k folds over sorted case ids, shuffled once with ``seed``.
    RECONSTRUCTED: nnU-Net uses sklearn KFold(shuffle=True, random_state=12345); same idea, numpy."""
    cases = sorted(cases)
    perm = np.random.default_rng(seed).permutation(len(cases))
    parts = np.array_split(perm, k)
    return [{"train": sorted(cases[i] for j, p in enumerate(parts) if j != f for i in p),
             "val": sorted(cases[i] for i in parts[f])} for f in range(k)]


def read_layout(cfg, root: str | Path | None = None) -> Layout:
    base = data_root(root) / cfg.data.subdir
    require_files(cfg.data.dataset, base, ["dataset.json", "imagesTr", "labelsTr", "organsTr"],
                  hint="make data-lns_parsing writes the embedded phantom; lns_parsing/prepare.py converts DICOM")
    dj_path = base / "dataset.json"
    try:
        dj = json.loads(dj_path.read_text())
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{dj_path}: invalid JSON: {e}") from e
    for key in ("labels", "organs"):
        if not isinstance(dj.get(key), dict):
            raise DataFormatError(f"{dj_path}: needs a '{key}' mapping of name -> value")
    stations, svals = _named_values(dj["labels"], "labels", dj_path)
    organs, ovals = _named_values(dj["organs"], "organs", dj_path)
    anchors = list(cfg.organs.anchors)
    unknown = [a for a in anchors if a not in organs]
    if unknown:
        raise DataFormatError(f"config organs.anchors names organs not in {dj_path}: {unknown}; organs: {organs}")
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (base / "imagesTr").glob("*_0000.nii.gz"))
    if not cases:
        raise DataFormatError(f"{base / 'imagesTr'}: no <case>_0000.nii.gz files")
    dev = list(dj.get("development") or cases[: cfg.data.n_dev])
    missing = [c for c in dev if c not in cases]
    if missing:
        raise DataFormatError(f"{dj_path}: 'development' names cases without an image: {missing}")
    cv = [c for c in cases if c not in dev]
    splits = base / "splits_final.json"
    if splits.is_file():
        folds = json.loads(splits.read_text())
        for i, f in enumerate(folds):
            extra = [c for c in f.get("train", []) + f.get("val", []) if c not in cv]
            if extra:
                raise DataFormatError(f"{splits}: fold {i} names cases that are not CV cases: {extra}")
    else:
        folds = kfold(cv, cfg.data.folds, cfg.data.split_seed)
    return Layout(base, stations, svals, organs, ovals, anchors, cases, dev, folds)


# ------------------------------------------------------------------------------------ the check

def _hu_problem(ct: np.ndarray) -> str | None:
    lo, hi = float(ct.min()), float(ct.max())
    if lo < -1100 - 1e-3 or hi > 4000:
        return f"values {lo:.1f}..{hi:.1f} outside -1100..4000: CT not in HU?"
    if hi - lo < 200 or lo > -500:
        return f"values {lo:.1f}..{hi:.1f}: no air below -500 HU; CT not in HU (rescaled or windowed)?"
    return None


def check_case(check: DataCheck, layout: Layout, case: str, full: bool = True) -> None:
    """Every problem of one case into ``check``, each naming its file and the case."""
    paths = {"image": layout.image(case), "label": layout.label(case), "organs": layout.organ(case)}
    imgs = {}
    for k, p in paths.items():
        if not p.is_file():
            check.add(p, case, f"missing ({k})")
            continue
        try:
            imgs[k] = nib.load(p)
        except Exception as e:  # noqa: BLE001 - any reader failure is a data problem to report
            check.add(p, case, f"unreadable: {type(e).__name__}: {e}")
    if "image" not in imgs:
        return
    ref = imgs["image"]
    for k in ("label", "organs"):
        if k not in imgs:
            continue
        im = imgs[k]
        if im.shape[:3] != ref.shape[:3]:
            check.add(paths[k], case, f"shape {im.shape} != CT {ref.shape} ({paths['image'].name})")
        elif not np.allclose(im.affine, ref.affine, atol=1e-3):
            check.add(paths[k], case, f"affine differs from the CT's ({paths['image'].name}):\n{im.affine}\nvs\n"
                                      f"{ref.affine}")
    if not full:
        return
    ct = np.asanyarray(ref.dataobj).astype(np.float32)
    nan = int((~np.isfinite(ct)).sum())
    if nan:
        check.add(paths["image"], case, f"{nan} NaN/Inf voxels")
    else:
        hu = _hu_problem(ct)
        if hu:
            check.add(paths["image"], case, hu)
    for k, allowed in (("label", layout.station_values), ("organs", layout.organ_values)):
        if k not in imgs:
            continue
        arr = np.asanyarray(imgs[k].dataobj)
        vals, counts = np.unique(arr, return_counts=True)
        bad = [(float(v), int(c)) for v, c in zip(vals, counts) if v != 0 and v not in allowed]
        if bad:
            check.add(paths[k], case, f"values not in dataset.json (value, voxels): {bad}")


def check_dataset(layout: Layout, mode: str = "full", log: logging.Logger | None = None) -> None:
    """Raise one :class:`~common.datacheck.DataCheckError` listing every problem of every case
    (``mode``: full reads every volume; fast reads a fixed sample and checks the headers of the
    rest; off checks that the files exist)."""
    check = DataCheck(layout.root.name, mode=mode, log=log, fast_min=4)
    content = set(check.sample(layout.cases))
    for c in layout.cases:
        if mode == "off":
            for p in (layout.image(c), layout.label(c), layout.organ(c)):
                if not p.is_file():
                    check.add(p, c, "missing")
            continue
        check_case(check, layout, c, full=c in content)
        check.checked["cases"] += 1
    check.raise_if_problems()


# ------------------------------------------------------------------------------------ preprocessing

@dataclass
class Case:
    name: str
    hu: np.ndarray        # float32 (X, Y, Z) HU on the pipeline grid
    stations: np.ndarray  # int64 0..S
    organs: np.ndarray    # int64 0..O
    spacing: tuple[float, float, float]
    affine: np.ndarray


def _remap(arr: np.ndarray, values: Sequence[int]) -> np.ndarray:
    lut = np.zeros(int(max(values)) + 1, np.int64)
    lut[list(values)] = np.arange(1, len(values) + 1)
    arr = np.asarray(arr).astype(np.int64)
    return np.where(arr <= lut.size - 1, lut[np.clip(arr, 0, lut.size - 1)], 0)


def to_grid(path: Path, cfg, label: bool) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI and bring it to the pipeline grid: Orientation -> Spacing -> centre pad/crop."""
    from monai.data import MetaTensor
    from monai.transforms import Orientation, ResizeWithPadOrCrop, Spacing

    img = nib.load(path)
    arr = np.asanyarray(img.dataobj).astype(np.float32)
    t = MetaTensor(torch.from_numpy(arr)[None], affine=torch.as_tensor(img.affine, dtype=torch.float64))
    t = Orientation(axcodes=cfg.data.orientation)(t)
    t = Spacing(pixdim=tuple(cfg.data.spacing), mode="nearest" if label else "bilinear",
                padding_mode="border")(t)
    pad = -1000.0 if not label else 0.0
    t = ResizeWithPadOrCrop(tuple(cfg.data.grid), mode="constant", value=pad)(t)
    return t[0].numpy(), t.affine.numpy()


def load_case(layout: Layout, case: str, cfg) -> Case:
    hu, aff = to_grid(layout.image(case), cfg, label=False)
    st, _ = to_grid(layout.label(case), cfg, label=True)
    og, _ = to_grid(layout.organ(case), cfg, label=True)
    return Case(case, hu.astype(np.float32), _remap(np.rint(st), layout.station_values),
                _remap(np.rint(og), layout.organ_values), tuple(float(s) for s in cfg.data.spacing), aff)


def _cache_key(layout: Layout, case: str, cfg) -> str:
    import hashlib

    h = hashlib.sha1(json.dumps([cfg.data.orientation, list(cfg.data.spacing), list(cfg.data.grid),
                                 layout.station_values, layout.organ_values]).encode())
    for p in (layout.image(case), layout.label(case), layout.organ(case)):
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_case_cached(layout: Layout, case: str, cfg) -> Case:
    """:func:`load_case` through a cache beside the raw folder (``<subdir>_preprocessed/``, like
    nnU-Net's preprocessed folder), keyed by the grid settings and the files' sizes and times."""
    cache = layout.root.parent / f"{layout.root.name}_preprocessed" / f"{case}_{_cache_key(layout, case, cfg)}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return Case(case, z["hu"], z["stations"].astype(np.int64), z["organs"].astype(np.int64),
                        tuple(float(s) for s in z["spacing"]), z["affine"])
    c = load_case(layout, case, cfg)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, hu=c.hu, stations=c.stations.astype(np.uint8), organs=c.organs.astype(np.uint8),
                 spacing=np.asarray(c.spacing), affine=c.affine)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only data folder: preprocess every time
    return c


def load_data(cfg, root=None, log: logging.Logger | None = None) -> tuple[Layout, dict[str, Case]]:
    """Read the layout, run the reliability check (before anything is built), preprocess every case."""
    layout = read_layout(cfg, root)
    check_dataset(layout, cfg.data.check, log)
    return layout, {c: load_case_cached(layout, c, cfg) for c in layout.cases}


def window(hu: np.ndarray | torch.Tensor, cfg):
    """HU window -> [0, 1] (clipped)."""
    lo, hi = cfg.data.hu_window
    if isinstance(hu, torch.Tensor):
        return ((hu - lo) / (hi - lo)).clamp(0, 1)
    return np.clip((hu - lo) / (hi - lo), 0, 1).astype(np.float32)


def one_hot(labels: np.ndarray, names: Sequence[str], selected: Sequence[str]) -> np.ndarray:
    """(K, X, Y, Z) float32 masks of the selected organ names (label j + 1 = names[j])."""
    out = np.zeros((len(selected), *labels.shape), np.float32)
    for k, n in enumerate(selected):
        out[k] = labels == names.index(n) + 1
    return out


def relabel(labels: np.ndarray, names: Sequence[str], keep: Sequence[str]) -> np.ndarray:
    """Map an organ map to 0..len(keep) over the kept names (others -> 0)."""
    out = np.zeros(labels.shape, np.int64)
    for k, n in enumerate(keep):
        out[labels == names.index(n) + 1] = k + 1
    return out


# ------------------------------------------------------------------------------------ training patches

def stage_seed(seed: int, stage: str) -> int:
    """The seed of one pipeline stage (initial weights, patch order): a pure function of (seed, stage)."""
    return int(np.random.SeedSequence([seed, *stage.encode()]).generate_state(1)[0])


def class_indices(label: np.ndarray, n_classes: int) -> list[np.ndarray]:
    """Flat voxel indices of each class 0..n_classes-1 (what MONAI's ClassesToIndices computes, in
    one stable sort instead of one scan per class)."""
    flat = label.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(n_classes + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(n_classes)]


class PatchSet(Dataset):
    """Training patches: input channels (CT window + context) and a target map per case; MONAI
    random transforms (label-class crops, small affine, intensity jitter; never left-right flips,
    which would swap R and L stations). The transforms' RNG is reseeded by :meth:`set_epoch` from
    (seed, stage, epoch, rank), so a resumed run draws the same patches."""

    def __init__(self, inputs: list[np.ndarray], targets: list[np.ndarray], n_classes: int, cfg, seed: int,
                 stage: str, rank: int = 0):
        self.per_case = int(cfg.train.samples_per_case)
        from monai.transforms import (
            Compose,
            RandAffined,
            RandCropByLabelClassesd,
            RandScaleIntensityd,
            RandShiftIntensityd,
        )

        self.inputs, self.targets, self.seed, self.stage, self.rank = inputs, targets, seed, stage, rank
        fg = cfg.train.fg_ratio
        ratios = [1.0 - fg] + [fg / (n_classes - 1)] * (n_classes - 1)
        self.indices = [class_indices(t, n_classes) for t in targets]
        ts = [RandCropByLabelClassesd(keys=["ct", "ctx", "label"], label_key="label",
                                      spatial_size=list(cfg.train.patch), ratios=ratios, num_classes=n_classes,
                                      num_samples=1, warn=False, allow_smaller=True, indices_key="indices")]
        if cfg.train.rand_affine:
            ts.append(RandAffined(keys=["ct", "ctx", "label"], prob=0.3, rotate_range=(0.15, 0.15, 0.15),
                                  scale_range=(0.1, 0.1, 0.1), mode=("bilinear", "nearest", "nearest"),
                                  padding_mode="border"))
        if cfg.train.intensity_jitter:
            ts += [RandScaleIntensityd(keys=["ct"], factors=0.1, prob=0.3),
                   RandShiftIntensityd(keys=["ct"], offsets=0.05, prob=0.3)]
        self.transform = Compose(ts)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        s = np.random.SeedSequence([self.seed, *self.stage.encode(), epoch, self.rank]).generate_state(1)[0]
        self.transform.set_random_state(seed=int(s))

    def __len__(self) -> int:
        return len(self.inputs) * self.per_case

    def __getitem__(self, i: int) -> dict:
        i = i % len(self.inputs)
        x = self.inputs[i]
        d = {"ct": torch.from_numpy(x[:1]), "ctx": torch.from_numpy(x[1:]) if x.shape[0] > 1 else
             torch.zeros((1, *x.shape[1:])), "label": torch.from_numpy(self.targets[i][None].astype(np.float32)), "indices": self.indices[i]}
        d = self.transform(d)
        d = d[0] if isinstance(d, list) else d
        img = torch.cat([d["ct"], d["ctx"]], 0) if x.shape[0] > 1 else d["ct"]
        return {"image": img.as_tensor() if hasattr(img, "as_tensor") else img,
                "label": (d["label"].as_tensor() if hasattr(d["label"], "as_tensor") else d["label"])[0].long()}


# ------------------------------------------------------------------------------------ CLI

def main(argv=None) -> int:
    from lns_parsing.config import DEFAULTS, RULES, validate

    p = base_parser("check an lns_parsing dataset (every problem at once, each naming its file and case)",
                    default_config())
    args, cfg = parse(p, argv, DEFAULTS, RULES)
    validate(cfg)
    log = logging.getLogger("lns_parsing.data")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    layout = read_layout(cfg, args.data_root)
    check_dataset(layout, cfg.data.check if cfg.data.check != "off" else "full", log)
    print(f"{len(layout.cases)} cases: {len(layout.development)} development, "
          f"{len(layout.cases) - len(layout.development)} CV in {len(layout.folds)} folds; "
          f"{len(layout.stations)} stations, {len(layout.organs)} organs ({len(layout.anchors)} anchors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
