"""Crowd-counting data: annotation readers (ShanghaiTech A/B, UCF-QNRF, JHU-Crowd++), validation,
and the (optionally poisoned) dataset that yields image, density map and head points.

Layouts under the data root (``dataset.root`` is relative to it):

* ShanghaiTech: ``{train,test}_data/images/IMG_n.jpg`` + ``{train,test}_data/ground-truth/GT_IMG_n.mat``
  (``ground_truth/`` also accepted); points in ``image_info{1}.location`` (N x 2, x = column).
* UCF-QNRF: ``{Train,Test}/img_XXXX.jpg`` + ``img_XXXX_ann.mat`` with key ``annPoints``.
* JHU-Crowd++: ``{train,val,test}/images/NNNN.jpg`` + ``{train,val,test}/gt/NNNN.txt``, one head per
  line ``x y w h occlusion blur``.

Malformed annotations raise :class:`common.data.DataFormatError` naming the file and the record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.data import DataFormatError, DatasetNotFoundError, require_files
from dmba.attacks import Trigger, poison_indices, target_points
from dmba.density import DensityCache, pool_density

log = logging.getLogger("dmba")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
FORMATS = ("shanghaitech", "qnrf", "jhu")


@dataclass
class Sample:
    name: str
    image: Path
    ann: Path
    points: np.ndarray  # (N, 2) float64, x = column, y = row, in original image pixels
    size: tuple[int, int]  # (H, W) of the original image


# --------------------------------------------------------------------------- annotation files

def _load_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(str(path))
    except Exception as e:  # scipy raises several types for corrupt files
        raise DataFormatError(f"{path}: cannot read .mat file ({type(e).__name__}: {e})") from e


def read_shanghaitech_mat(path: Path) -> np.ndarray:
    m = _load_mat(path)
    if "image_info" not in m:
        raise DataFormatError(f"{path}: no 'image_info' key (keys: {sorted(k for k in m if not k.startswith('__'))}); "
                              "expected a ShanghaiTech GT_IMG_n.mat")
    try:
        pts = m["image_info"][0, 0][0, 0][0]
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise DataFormatError(f"{path}: 'image_info' is not the ShanghaiTech struct image_info{{1}}.location") from e
    return _as_points(pts, path)


def read_qnrf_mat(path: Path) -> np.ndarray:
    m = _load_mat(path)
    if "annPoints" not in m:
        raise DataFormatError(f"{path}: no 'annPoints' key (keys: {sorted(k for k in m if not k.startswith('__'))})")
    return _as_points(m["annPoints"], path)


def read_jhu_txt(path: Path) -> np.ndarray:
    pts = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        f = line.split()
        if len(f) != 6:
            raise DataFormatError(f"{path}: line {i}: expected 6 fields 'x y w h occlusion blur', got {line!r}")
        try:
            pts.append([float(f[0]), float(f[1])])
        except ValueError as e:
            raise DataFormatError(f"{path}: line {i}: non-numeric coordinates in {line!r}") from e
    return _as_points(np.array(pts, np.float64).reshape(-1, 2), path)


def _as_points(pts, path: Path) -> np.ndarray:
    a = np.asarray(pts)
    if a.size == 0:
        return np.zeros((0, 2), np.float64)
    if a.ndim != 2 or a.shape[1] < 2 or not np.issubdtype(a.dtype, np.number):
        raise DataFormatError(f"{path}: head points must be an N x 2 numeric array, got shape {a.shape} {a.dtype}")
    a = a[:, :2].astype(np.float64)
    bad = np.where(~np.isfinite(a).all(axis=1))[0]
    if len(bad):
        raise DataFormatError(f"{path}: head {int(bad[0])} has a non-finite coordinate {a[bad[0]].tolist()}")
    return a


def check_points(points: np.ndarray, size: tuple[int, int], where: Path, policy: str = "error") -> np.ndarray:
    """Points must lie in [0, W) x [0, H). ``policy``: ``error`` (default) or ``drop`` (logged)."""
    h, w = size
    out = (points[:, 0] < 0) | (points[:, 0] >= w) | (points[:, 1] < 0) | (points[:, 1] >= h)
    if out.any():
        i = int(np.where(out)[0][0])
        msg = (f"{where}: {int(out.sum())} head point(s) outside the {w}x{h} image, first: head {i} at "
               f"(x={points[i, 0]:.1f}, y={points[i, 1]:.1f})")
        if policy == "error":
            raise DataFormatError(msg + " (set data.out_of_bounds=drop to drop them with a warning)")
        if policy != "drop":
            raise ValueError(f"data.out_of_bounds must be 'error' or 'drop', got {policy!r}")
        log.warning("%s; dropped", msg)
        points = points[~out]
    return points


# --------------------------------------------------------------------------- dataset readers

def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:
        raise DataFormatError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    return h, w


def list_samples(fmt: str, root: str | Path, split: str, out_of_bounds: str = "error") -> list[Sample]:
    """All annotated images of one split, validated (every problem names its file)."""
    root = Path(root)
    if fmt == "shanghaitech":
        d = root / f"{split}_data"
        gt_dir = d / "ground-truth" if (d / "ground-truth").is_dir() else d / "ground_truth"
        require_files(f"shanghaitech/{split}", root, [f"{split}_data/images", f"{split}_data/ground-truth"
                      if not (d / "ground_truth").is_dir() else f"{split}_data/ground_truth"],
                      hint="ShanghaiTech layout: part_X_final/{train,test}_data/images/IMG_n.jpg and "
                           "ground-truth/GT_IMG_n.mat")
        imgs = sorted((d / "images").glob("*.jpg"), key=_natural)
        pairs = [(p, gt_dir / f"GT_{p.stem}.mat", read_shanghaitech_mat) for p in imgs]
    elif fmt == "qnrf":
        sd = {"train": "Train", "test": "Test"}.get(split, split)
        require_files(f"qnrf/{split}", root, [sd], hint="UCF-QNRF layout: Train/img_XXXX.jpg + img_XXXX_ann.mat")
        imgs = sorted((root / sd).glob("*.jpg"), key=_natural)
        pairs = [(p, p.with_name(p.stem + "_ann.mat"), read_qnrf_mat) for p in imgs]
    elif fmt == "jhu":
        require_files(f"jhu/{split}", root, [f"{split}/images", f"{split}/gt"],
                      hint="JHU-Crowd++ layout: {train,val,test}/images/NNNN.jpg + gt/NNNN.txt")
        imgs = sorted((root / split / "images").glob("*.jpg"), key=_natural)
        pairs = [(p, root / split / "gt" / f"{p.stem}.txt", read_jhu_txt) for p in imgs]
    else:
        raise ValueError(f"unknown dataset format {fmt!r}; choose from {FORMATS}")
    if not pairs:
        raise DatasetNotFoundError(f"no .jpg images found for {fmt}/{split} under {root}")
    missing = [str(a) for _, a, _ in pairs if not a.is_file()]
    if missing:
        raise DatasetNotFoundError(f"{len(missing)} annotation file(s) missing for {fmt}/{split}, e.g. "
                                   + ", ".join(missing[:5]))
    out = []
    for img, ann, reader in pairs:
        pts = reader(ann)
        size = _image_size(img)
        out.append(Sample(img.stem, img, ann, check_points(pts, size, ann, out_of_bounds), size))
    return out


def _natural(p: Path):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


# --------------------------------------------------------------------------- the dataset

def load_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except Exception as e:
        raise DataFormatError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e


def resize_for(size: tuple[int, int], min_side: int | None, max_side: int | None) -> float:
    """Scale factor that brings min(H, W) >= min_side and max(H, W) <= max_side (1.0 if none)."""
    h, w = size
    s = 1.0
    if max_side and max(h, w) * s > max_side:
        s = max_side / max(h, w)
    if min_side and min(h, w) * s < min_side:
        s = min_side / min(h, w)
    return s


class CrowdDataset(Dataset):
    """Images, density maps (sum-pooled to the model's stride) and head points.

    ``role``: ``train`` (clean images + poisoned copies), ``clean`` (test images, clean GT) or
    ``triggered`` (test images with the trigger; GT = the attack target for ``mode``).
    Items: ``(image (3,H,W) float, density (1,H/s,W/s), points (M,2) float, clean_count)``.
    """

    def __init__(self, samples: list[Sample], cfg, role: str, stride: int, mode: str = "none",
                 cache: DensityCache | None = None, dataset_seed: int = 0):
        if role not in ("train", "clean", "triggered"):
            raise ValueError(f"role must be train|clean|triggered, got {role!r}")
        self.samples, self.cfg, self.role, self.stride, self.mode = samples, cfg, role, int(stride), mode
        self.cache = cache or DensityCache(None)
        a = cfg.attack
        self.trigger = Trigger(a.trigger, a.alpha, a.trigger_seed, patch_frac=a.patch_frac) \
            if (mode != "none" or role == "triggered") else None
        self.seed = int(dataset_seed)
        # entries: (sample index, poisoned?)
        n = len(samples)
        if role == "train" and mode != "none":
            pidx = set(poison_indices(n, a.poison_rate, a.poison_seed).tolist())
            if a.poison_how == "append":
                self.entries = [(i, False) for i in range(n)] + [(i, True) for i in sorted(pidx)]
            elif a.poison_how == "replace":
                self.entries = [(i, i in pidx) for i in range(n)]
            else:
                raise ValueError(f"attack.poison_how must be 'append' or 'replace', got {a.poison_how!r}")
        else:
            self.entries = [(i, role == "triggered") for i in range(n)]
        self.scales = [resize_for(s.size, cfg.data.min_side, cfg.data.max_side) for s in samples]
        self._memo: dict | None = {} if cfg.data.memo else None  # in-RAM (image, map) per entry

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def n_poisoned(self) -> int:
        return sum(p for _, p in self.entries)

    def _geometry(self, i: int) -> tuple[tuple[int, int], np.ndarray]:
        s, sc = self.samples[i], self.scales[i]
        h, w = (int(round(s.size[0] * sc)), int(round(s.size[1] * sc))) if sc != 1.0 else s.size
        pts = s.points * np.array([w / s.size[1], h / s.size[0]]) if sc != 1.0 else s.points
        return (h, w), pts

    def target(self, i: int, poisoned: bool) -> np.ndarray:
        """Head points of the training/eval target of sample i (manipulated when poisoned)."""
        shape, pts = self._geometry(i)
        if not poisoned or self.mode == "none" or not self.cfg.attack.manipulate_gt:
            return pts
        rng = np.random.default_rng([self.cfg.attack.poison_seed, self.seed, i])
        return target_points(pts, self.mode, rng, self.cfg.attack, shape)

    def density(self, i: int, poisoned: bool) -> np.ndarray:
        shape, _ = self._geometry(i)
        pts = self.target(i, poisoned)
        tag = self.mode if (poisoned and self.mode != "none" and self.cfg.attack.manipulate_gt) else "clean"
        if tag != "clean":
            a = self.cfg.attack
            tag += f"-{a.poison_seed}-{self.seed}-" + (f"{a.keep_min}-{a.keep_max}-{a.min_keep}"
                                                      if self.mode == "dmba_minus" else f"{a.plus_factor}-{a.plus_jitter}")
        return self.cache.get_or_render(f"{self.samples[i].name}/{tag}", pts, shape, self.cfg.dataset.kernel)

    def precompute(self) -> None:
        for i, p in self.entries:
            self.density(i, p)

    def _image_and_map(self, i: int, poisoned: bool) -> tuple[np.ndarray, np.ndarray]:
        if self._memo is not None and (i, poisoned) in self._memo:
            return self._memo[(i, poisoned)]
        img = load_rgb(self.samples[i].image)
        shape, _ = self._geometry(i)
        if img.shape[:2] != shape:
            img = np.asarray(Image.fromarray(img).resize((shape[1], shape[0]), Image.BILINEAR))
        if poisoned and self.trigger is not None:
            img = self.trigger(img)
        out = (img, self.density(i, poisoned))
        if self._memo is not None:
            self._memo[(i, poisoned)] = out
        return out

    def __getitem__(self, k: int):
        i, poisoned = self.entries[k]
        s = self.samples[i]
        img, dmap = self._image_and_map(i, poisoned)
        pts = self.target(i, poisoned).copy()
        clean_count = float(len(s.points))
        x = (img.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        x = torch.from_numpy(x).permute(2, 0, 1)
        d = torch.from_numpy(np.ascontiguousarray(dmap))[None]
        crop = self.cfg.data.crop if self.role == "train" else None
        if crop:
            x, d, pts = self._random_crop(x, d, pts, int(crop))
        if self.role == "train" and self.cfg.data.flip and np.random.rand() < 0.5:
            x, d = x.flip(-1), d.flip(-1)
            pts[:, 0] = x.shape[-1] - pts[:, 0]
        x, d = self._pad(x, d)
        return x, pool_density(d, self.stride).float(), torch.from_numpy(pts).float(), clean_count

    def _random_crop(self, x, d, pts, c):
        h, w = x.shape[-2:]
        if h < c or w < c:
            x = torch.nn.functional.pad(x, (0, max(c - w, 0), 0, max(c - h, 0)))
            d = torch.nn.functional.pad(d, (0, max(c - w, 0), 0, max(c - h, 0)))
            h, w = x.shape[-2:]
        y0 = np.random.randint(0, h - c + 1)
        x0 = np.random.randint(0, w - c + 1)
        keep = (pts[:, 0] >= x0) & (pts[:, 0] < x0 + c) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + c)
        return x[:, y0:y0 + c, x0:x0 + c], d[:, y0:y0 + c, x0:x0 + c], pts[keep] - [x0, y0]

    def _pad(self, x, d):
        """Zero-pad right/bottom to a multiple of 16 (count-preserving; no head is cut)."""
        m = max(16, self.stride)
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = torch.nn.functional.pad(x, (0, pw, 0, ph))
            d = torch.nn.functional.pad(d, (0, pw, 0, ph))
        return x, d


def collate(batch):
    xs, ds, pts, cc = zip(*batch)
    if len({tuple(x.shape) for x in xs}) > 1:
        raise ValueError("images in a batch differ in size; use data.crop or batch_size 1 for full images")
    return torch.stack(xs), torch.stack(ds), list(pts), torch.tensor(cc, dtype=torch.float64)
