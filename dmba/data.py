"""Crowd-counting data: annotation readers (ShanghaiTech A/B, UCF-QNRF, JHU-Crowd++), their checks,
and the (optionally poisoned) dataset; ``python -m dmba.data --config CFG [--data-root R]`` checks a
dataset without training and fills the density-map cache.

Layouts under the data root (``dataset.root`` is relative to it):

* ShanghaiTech: ``{train,test}_data/images/IMG_n.jpg`` + ``{train,test}_data/ground-truth/GT_IMG_n.mat``
  (``ground_truth/`` also accepted); points in ``image_info{1}.location`` (N x 2, x = column).
* UCF-QNRF: ``{Train,Test}/img_XXXX.jpg`` + ``img_XXXX_ann.mat`` with key ``annPoints``.
* JHU-Crowd++: ``{train,val,test}/images/NNNN.jpg`` + ``{train,val,test}/gt/NNNN.txt``, one head per
  line ``x y w h occlusion blur``.

Image files are ``.jpg``, ``.jpeg`` or ``.png`` in any letter case; any other file in an image
folder is listed in a warning. A malformed annotation raises :class:`common.data.DataFormatError`
naming the file and the record. Heads outside their image follow ``data.out_of_bounds``: ``clip``
(to the border), ``drop`` or ``error``; clipped and dropped heads are counted and logged.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial import cKDTree
from torch.utils.data import Dataset

from common.data import DataFormatError, DatasetNotFoundError, data_root, require_files
from common.datacheck import DataCheck
from dmba.attacks import Trigger, poison_indices, target_points
from dmba.density import DensityCache, kernel_sigmas, pool_density

log = logging.getLogger("dmba")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
FORMATS = ("shanghaitech", "qnrf", "jhu")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
PAD = 16  # images are zero-padded to a multiple of 16 (VGG's four poolings)


@dataclass
class Sample:
    name: str
    image: Path
    ann: Path
    points: np.ndarray      # (N, 2) float64, x = column, y = row, in original image pixels
    size: tuple[int, int]   # (H, W) of the original image
    n_outside: int = 0      # heads outside the image that were clipped or dropped


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
    return as_points(pts, path)


def read_qnrf_mat(path: Path) -> np.ndarray:
    m = _load_mat(path)
    if "annPoints" not in m:
        raise DataFormatError(f"{path}: no 'annPoints' key (keys: {sorted(k for k in m if not k.startswith('__'))})")
    return as_points(m["annPoints"], path)


def read_jhu_txt(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError(f"{path}: line {line}: not UTF-8 text (byte {raw[e.start:e.start + 1]!r} at offset "
                              f"{e.start}); JHU-Crowd++ annotations are ASCII 'x y w h occlusion blur' lines") from e
    pts = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        f = line.split()
        if len(f) != 6:
            raise DataFormatError(f"{path}: line {i}: expected 6 fields 'x y w h occlusion blur', got {line!r}")
        try:
            pts.append([float(f[0]), float(f[1])])
        except ValueError as e:
            raise DataFormatError(f"{path}: line {i}: non-numeric coordinates in {line!r}") from e
    return as_points(np.array(pts, np.float64).reshape(-1, 2), path)


def as_points(pts, path: Path) -> np.ndarray:
    """An (N, 2) float64 array of (x, y); a 2 x N array (N > 2) is transposed."""
    a = np.asarray(pts)
    if a.size == 0:
        return np.zeros((0, 2), np.float64)
    if a.ndim == 2 and a.shape[0] == 2 and a.shape[1] > 2:
        log.info("%s: head points stored as 2 x %d; read as %d heads", path, a.shape[1], a.shape[1])
        a = a.T
    if a.ndim != 2 or a.shape[1] < 2 or not np.issubdtype(a.dtype, np.number):
        raise DataFormatError(f"{path}: head points must be an N x 2 numeric array, got shape {a.shape} {a.dtype}")
    a = a[:, :2].astype(np.float64)
    bad = np.where(~np.isfinite(a).all(axis=1))[0]
    if len(bad):
        raise DataFormatError(f"{path}: head {int(bad[0])} has a non-finite coordinate {a[bad[0]].tolist()}")
    return a


def check_points(points: np.ndarray, size: tuple[int, int], where: Path, policy: str = "clip"
                 ) -> tuple[np.ndarray, int]:
    """Points must lie in [0, W) x [0, H). ``policy``: clip them to the border, drop them, or raise.
    Returns the points and how many were outside."""
    h, w = size
    out = (points[:, 0] < 0) | (points[:, 0] >= w) | (points[:, 1] < 0) | (points[:, 1] >= h)
    n = int(out.sum())
    if not n:
        return points, 0
    i = int(np.where(out)[0][0])
    msg = (f"{where}: {n} head point(s) outside the {w}x{h} image, first: head {i} at "
           f"(x={points[i, 0]:.1f}, y={points[i, 1]:.1f})")
    if policy == "error":
        raise DataFormatError(msg + " (data.out_of_bounds=clip moves them to the border, drop removes them)")
    if policy == "drop":
        return points[~out], n
    if policy == "clip":
        p = points.copy()
        p[:, 0] = np.clip(p[:, 0], 0, w - 1e-3)
        p[:, 1] = np.clip(p[:, 1], 0, h - 1e-3)
        return p, n
    raise ValueError(f"data.out_of_bounds must be error, drop or clip, got {policy!r}")


# --------------------------------------------------------------------------- dataset readers

def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:
        raise DataFormatError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
    return h, w


def _natural(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _images(folder: Path, allowed_other=lambda p: False) -> list[Path]:
    """Image files of a folder (any letter case); anything else is listed in a warning."""
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=_natural)
    imgs = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    other = [p.name for p in files if p.suffix.lower() not in IMAGE_SUFFIXES and not allowed_other(p)]
    if other:
        log.warning("%s: ignored %d file(s) that are not images (%s): %s", folder, len(other),
                    "/".join(IMAGE_SUFFIXES), ", ".join(other[:5]) + (" ..." if len(other) > 5 else ""))
    return imgs


def _problem(e: Exception, path: Path) -> str:
    """A reader's message without the leading ``<path>: `` (the data check names the file)."""
    msg = str(e)
    return msg[len(str(path)) + 2:] if msg.startswith(f"{path}: ") else msg


def list_samples(fmt: str, root: str | Path, split: str, out_of_bounds: str = "clip",
                 check: DataCheck | None = None) -> list[Sample]:
    """All annotated images of one split. Every problem (missing annotation, unreadable image or
    annotation, malformed record, a head outside its image under ``error``) goes to ``check``
    naming the file and the record; without a ``check`` they are raised together here, with one.
    ``check.mode`` ``full`` decodes every image, ``fast`` a fixed sample, ``off`` none (the image
    sizes and every annotation are read in every mode: the dataset needs them)."""
    own = check is None
    check = check or DataCheck(f"{fmt}/{split}", log=log)
    root = Path(root)
    if fmt == "shanghaitech":
        d = root / f"{split}_data"
        gt = "ground_truth" if (d / "ground_truth").is_dir() else "ground-truth"
        require_files(f"shanghaitech/{split}", root, [f"{split}_data/images", f"{split}_data/{gt}"],
                      hint="ShanghaiTech layout: part_X_final/{train,test}_data/images/IMG_n.jpg and "
                           "ground-truth/GT_IMG_n.mat")
        pairs = [(p, d / gt / f"GT_{p.stem}.mat", read_shanghaitech_mat) for p in _images(d / "images")]
    elif fmt == "qnrf":
        sd = {"train": "Train", "test": "Test"}.get(split, split)
        require_files(f"qnrf/{split}", root, [sd], hint="UCF-QNRF layout: Train/img_XXXX.jpg + img_XXXX_ann.mat")
        imgs = _images(root / sd, allowed_other=lambda p: p.name.endswith("_ann.mat"))
        pairs = [(p, p.with_name(p.stem + "_ann.mat"), read_qnrf_mat) for p in imgs]
    elif fmt == "jhu":
        require_files(f"jhu/{split}", root, [f"{split}/images", f"{split}/gt"],
                      hint="JHU-Crowd++ layout: {train,val,test}/images/NNNN.jpg + gt/NNNN.txt")
        pairs = [(p, root / split / "gt" / f"{p.stem}.txt", read_jhu_txt) for p in _images(root / split / "images")]
    else:
        raise ValueError(f"unknown dataset format {fmt!r}; choose from {FORMATS}")
    if not pairs:
        raise DatasetNotFoundError(f"no images ({'/'.join(IMAGE_SUFFIXES)}) found for {fmt}/{split} under {root}")
    n_before = len(check.problems)
    check.images([(f"{split} image {p.name}", p) for p, _, _ in pairs])  # decodable (full / fast sample)
    out = []
    for img, ann, reader in pairs:  # every problem of the split at once
        if not ann.is_file():
            check.add(ann, f"annotation of {img.name}", "missing annotation file")
            continue
        try:
            size = _image_size(img)
        except DataFormatError as e:
            if not any(p.file == str(img) for p in check.problems[n_before:]):
                check.add(img, f"{split} image {img.name}", _problem(e, img))
            continue
        try:
            pts, n_out = check_points(reader(ann), size, ann, out_of_bounds)
        except DataFormatError as e:
            check.add(ann, f"annotation of {img.name}", _problem(e, ann))
            continue
        if n_out and out_of_bounds == "drop":
            for _ in range(n_out):
                check.skip(ann, img.name, "head outside the image (data.out_of_bounds=drop)")
        out.append(Sample(img.stem, img, ann, pts, size, n_out))
    n_bad = len(check.problems) - n_before
    if n_bad:
        log.error("%s/%s: %d problem(s) in %d files", fmt, split, n_bad, len(pairs))
    n_out = [s for s in out if s.n_outside]
    if n_out:
        verb = "clipped to the border" if out_of_bounds == "clip" else "dropped"
        log.warning("%s/%s: %d head(s) outside their image in %d of %d files, %s (data.out_of_bounds=%s); e.g. %s",
                    fmt, split, sum(s.n_outside for s in n_out), len(n_out), len(out), verb, out_of_bounds,
                    ", ".join(f"{s.ann.name} ({s.n_outside})" for s in n_out[:3]))
    if own:
        check.raise_if_problems()
    return out


def dataset_root(cfg, cli_root=None) -> Path:
    return data_root(cli_root) / cfg.dataset.root


def density_cache(cfg, cli_root, split: str) -> DensityCache:
    if not cfg.data.cache:
        return DensityCache(None)
    return DensityCache(data_root(cli_root) / ".cache" / "dmba" / f"{cfg.dataset.name}-{split}.h5")


def load_split(cfg, cli_root, split: str, check: DataCheck | None = None) -> list[Sample]:
    return list_samples(cfg.dataset.format, dataset_root(cfg, cli_root), split, cfg.data.out_of_bounds, check)


def load_splits(cfg, cli_root, splits, log_=None) -> dict[str, list[Sample]]:
    """The data check train and ``python -m dmba.data`` run before anything else: every split
    read (``data.check`` decides how many images are decoded), every problem of every split
    raised together (:class:`common.datacheck.DataCheckError`, by file and record)."""
    check = DataCheck(cfg.dataset.name, cfg.data.check, log=log_ or log)
    out = {}
    for split in dict.fromkeys(splits):  # a missing folder raises DatasetNotFoundError with the layout
        out[split] = load_split(cfg, cli_root, split, check)
    check.raise_if_problems()
    return out


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


def nearest_distance(points: np.ndarray, k: int = 3) -> np.ndarray:
    """Mean distance to the k nearest other heads (Bayesian CC ``preprocess_dataset.py find_dis``);
    inf for a lone head."""
    n = len(points)
    if n < 2:
        return np.full(n, np.inf)
    d, _ = cKDTree(points).query(points, k=min(k, n - 1) + 1)
    return d[:, 1:].mean(axis=1)


def head_box_ratios(points: np.ndarray, window: tuple[float, float, float, float], dist: np.ndarray) -> np.ndarray:
    """Share of each head's box (side = its nearest-head distance clipped to [4, 128] px) that lies
    inside ``window`` = (x0, y0, x1, y1) (Bayesian CC ``datasets/crowd.py``, per-head targets).

    # DEVIATION: the Bayesian CC repository trains ShanghaiTech with another loader
    # (``datasets/crowd_sh.py``: box 0.8 d clipped to [4, 40] px, heads kept at >= 50 %, unit
    # targets); here every dataset uses the ``datasets/crowd.py`` rule above."""
    side = np.clip(dist, 4.0, 128.0)
    x0, y0, x1, y1 = window
    ix = np.clip(np.minimum(points[:, 0] + side / 2, x1) - np.maximum(points[:, 0] - side / 2, x0), 0, None)
    iy = np.clip(np.minimum(points[:, 1] + side / 2, y1) - np.maximum(points[:, 1] - side / 2, y0), 0, None)
    return np.clip(ix * iy / side**2, 0.0, 1.0)


class CrowdDataset(Dataset):
    """Images, density maps (sum-pooled to the model's stride) and head points, clean or poisoned.

    ``role``: ``train`` (clean images + poisoned copies for ``mode``), ``clean`` (test images, clean
    maps) or ``triggered`` (test images with the trigger, clean maps: eval compares counts with
    the attack's target counts). Items are dicts (see :func:`collate`). Random crops and flips are
    a function of (``seed``, epoch, index) only (:meth:`set_epoch`), so a resumed run and any
    number of workers see the same augmentation.
    """

    def __init__(self, samples: list[Sample], cfg, role: str, stride: int, mode: str = "none",
                 cache: DensityCache | None = None, seed: int = 0):
        if role not in ("train", "clean", "triggered"):
            raise ValueError(f"role must be train|clean|triggered, got {role!r}")
        self.samples, self.cfg, self.role, self.stride, self.mode = samples, cfg, role, int(stride), mode
        self.cache = cache or DensityCache(None)
        self.seed, self.epoch = int(seed), 0
        a = cfg.attack
        self.trigger = Trigger.from_config(a) if (mode != "none" or role == "triggered") else None
        n = len(samples)
        if role == "train" and mode != "none":
            pidx = poison_indices(n, a.poison_rate, a.poison_seed).tolist()
            if a.poison_how == "append":
                self.entries = [(i, False) for i in range(n)] + [(i, True) for i in pidx]
            else:
                ps = set(pidx)
                self.entries = [(i, i in ps) for i in range(n)]
        else:
            self.entries = [(i, role == "triggered") for i in range(n)]
        self.scales = [resize_for(s.size, cfg.data.min_side, cfg.data.max_side) for s in samples]
        self._memo: dict | None = {} if cfg.data.memo else None

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def n_poisoned(self) -> int:
        return sum(p for _, p in self.entries) if self.role == "train" else 0

    def geometry(self, i: int) -> tuple[tuple[int, int], np.ndarray]:
        """(H, W) after the configured resize, and the clean points in those pixels."""
        s, sc = self.samples[i], self.scales[i]
        if sc == 1.0:
            return s.size, s.points
        h, w = int(round(s.size[0] * sc)), int(round(s.size[1] * sc))
        return (h, w), s.points * np.array([w / s.size[1], h / s.size[0]])

    def target(self, i: int, poisoned: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Head points of sample i's training target and their kernel widths (None: the dataset's
        kernel on these points). Poisoned copies carry the attack's manipulated heads."""
        shape, pts = self.geometry(i)
        if self.role != "train" or not poisoned or self.mode == "none" or not self.cfg.attack.manipulate_gt:
            return pts, None
        rng = np.random.default_rng([self.cfg.attack.poison_seed, i])
        tgt, src = target_points(pts, self.mode, rng, self.cfg.attack, shape)
        if self.mode == "dmba_plus":  # each copy keeps the width of the head it copies
            return tgt, kernel_sigmas(pts, shape, self.cfg.dataset.kernel)[src]
        return tgt, None  # DMBA-: the kept heads are re-rendered with the dataset's kernel (DMBA code)

    def density(self, i: int, poisoned: bool) -> np.ndarray:
        shape, _ = self.geometry(i)
        pts, sig = self.target(i, poisoned)
        return self.cache.get_or_render(self.samples[i].name, pts, shape, self.cfg.dataset.kernel, sig)

    def precompute(self) -> None:
        for i, p in self.entries:
            self.density(i, p)

    def image(self, i: int, poisoned: bool) -> np.ndarray:
        """The uint8 image at the configured size, with the trigger when poisoned."""
        img = load_rgb(self.samples[i].image)
        shape, _ = self.geometry(i)
        if img.shape[:2] != shape:
            img = np.asarray(Image.fromarray(img).resize((shape[1], shape[0]), Image.BILINEAR))
        if poisoned and self.trigger is not None:
            img = self.trigger(img)
        return img

    def image_and_map(self, i: int, poisoned: bool) -> tuple[np.ndarray, np.ndarray]:
        """The (triggered when poisoned) uint8 image and its full-resolution target map."""
        if self._memo is not None and (i, poisoned) in self._memo:
            return self._memo[(i, poisoned)]
        out = (self.image(i, poisoned), self.density(i, poisoned))
        if self._memo is not None:
            self._memo[(i, poisoned)] = out
        return out

    def __getitem__(self, k: int) -> dict:
        i, poisoned = self.entries[k]
        img, dmap = self.image_and_map(i, poisoned)
        pts = self.target(i, poisoned)[0].copy()
        h, w = img.shape[:2]
        dist = nearest_distance(pts)
        x = torch.from_numpy((img.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).permute(2, 0, 1)
        d = torch.from_numpy(np.ascontiguousarray(dmap))[None]
        window = (0.0, 0.0, float(w), float(h))
        if self.role == "train":
            rng = np.random.default_rng([self.seed, self.epoch, k])
            if self.cfg.data.crop:
                x, d, window = self._random_crop(x, d, int(self.cfg.data.crop), rng)
            if self.cfg.data.flip and rng.random() < 0.5:
                x, d = x.flip(-1), d.flip(-1)
                pts[:, 0] = 2 * window[0] + (window[2] - window[0]) - pts[:, 0]
        ratio = head_box_ratios(pts, window, dist)
        keep = ratio >= self.cfg.loss.bl_min_ratio
        pts, ratio = pts[keep] - np.array(window[:2]), ratio[keep]
        support = (d > self.cfg.loss.att_threshold).float()
        x, d, support = self._pad(x), self._pad(d), self._pad(support)
        return {"image": x, "density": pool_density(d, self.stride).float(),
                "support": pool_density(support, self.stride).float() / self.stride**2,
                "points": torch.from_numpy(pts).float(), "head_targets": torch.from_numpy(ratio).float(),
                "st_size": float(min(h, w)), "count": float(len(self.samples[i].points)), "index": i}

    @staticmethod
    def _random_crop(x, d, c, rng):
        h, w = x.shape[-2:]
        if h < c or w < c:  # pad small images (SHA has some below 512 px)
            x = torch.nn.functional.pad(x, (0, max(c - w, 0), 0, max(c - h, 0)))
            d = torch.nn.functional.pad(d, (0, max(c - w, 0), 0, max(c - h, 0)))
            h, w = x.shape[-2:]
        y0 = int(rng.integers(0, h - c + 1))
        x0 = int(rng.integers(0, w - c + 1))
        return x[:, y0:y0 + c, x0:x0 + c], d[:, y0:y0 + c, x0:x0 + c], (float(x0), float(y0), float(x0 + c),
                                                                          float(y0 + c))

    @staticmethod
    def _pad(t):
        """Zero-pad right/bottom to a multiple of 16 (count-preserving; no head is cut).
        # DEVIATION: SFANet's test loader resizes to a multiple of 16 instead (changing the scale)."""
        h, w = t.shape[-2:]
        ph, pw = (-h) % PAD, (-w) % PAD
        return torch.nn.functional.pad(t, (0, pw, 0, ph)) if (ph or pw) else t


def collate(items: list[dict]) -> dict:
    """Stack images and maps; keep per-image point lists; ``st_size``/``count`` as tensors."""
    if len({tuple(it["image"].shape) for it in items}) > 1:
        raise ValueError("images in a batch differ in size; use data.crop or batch_size 1 for full images")
    out = {k: torch.stack([it[k] for it in items]) for k in ("image", "density", "support")}
    out["points"] = [it["points"] for it in items]
    out["head_targets"] = [it["head_targets"] for it in items]
    out["st_size"] = torch.tensor([it["st_size"] for it in items], dtype=torch.float32)
    out["count"] = torch.tensor([it["count"] for it in items], dtype=torch.float64)
    out["index"] = [it["index"] for it in items]
    return out


def to_device(batch: dict, device) -> dict:
    """Tensors (and lists of tensors) of a batch on ``device``."""
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device)
        elif isinstance(v, list) and v and torch.is_tensor(v[0]):
            out[k] = [t.to(device) for t in v]
        else:
            out[k] = v
    return out


def eval_sets(samples: list[Sample], cfg, stride: int, cache: DensityCache | None = None
              ) -> tuple[CrowdDataset, CrowdDataset]:
    """The clean test set and its triggered twin (every image carries the trigger)."""
    return (CrowdDataset(samples, cfg, "clean", stride, cfg.attack.mode, cache),
            CrowdDataset(samples, cfg, "triggered", stride, cfg.attack.mode, cache))


# --------------------------------------------------------------------------- the data check

def main(argv=None) -> int:
    """Check both splits of a dataset (every problem of both at once) and fill the map cache."""
    from common.cli import base_parser, default_config, parse
    from dmba.config import DEFAULTS, RULES, validate
    from dmba.model import STRIDES

    args, cfg = parse(base_parser(__doc__, default_config("dmba")), argv, DEFAULTS, RULES)
    validate(cfg)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    splits = load_splits(cfg, args.data_root, (cfg.dataset.train_split, cfg.dataset.test_split))
    for split, samples in splits.items():
        ds = CrowdDataset(samples, cfg, "clean", STRIDES[cfg.model.name], "none",
                          density_cache(cfg, args.data_root, split))
        ds.precompute()
        n = [len(s.points) for s in samples]
        print(f"{cfg.dataset.name}/{split}: {len(samples)} images, {sum(n)} heads (min {min(n)}, mean "
              f"{sum(n) / len(n):.1f}, max {max(n)}), {sum(s.n_outside for s in samples)} outside their image "
              f"({cfg.data.out_of_bounds}); data check {cfg.data.check}; density maps cached")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
