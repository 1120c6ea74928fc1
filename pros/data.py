"""ProS data: readers for the real formats (CelebA, RAF-DB, AffectNet, 300W, WFLW, any image
folder), the embedded face world written in those formats, the datasets, and the data check.

    python -m pros.data --generate                 # write the embedded set under data/pros_synthetic
    python -m pros.data --config pros/configs/synthetic.yaml [--data-root R]   # check, train nothing

Every reader collects every problem of a file (line numbers included) into one
:class:`common.datacheck.DataCheckError` before anything trains; records a format defines as
unusable (AffectNet's "none/uncertain/no-face" labels) are skipped with a count in the log.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from common.data import data_root
from common.datacheck import DataCheck
from common.faces import FLIP as FLIP_27
from common.faces import LANDMARKS as LANDMARKS_27

log = logging.getLogger("pros.data")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

# RAF-DB basic emotions, label 1..7 (general knowledge; confirm against the dataset's README)
RAFDB_CLASSES = ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral")
# AffectNet expression ids 0..10 (general knowledge): 8 none, 9 uncertain, 10 no-face are not expressions
AFFECTNET_CLASSES = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
AFFECTNET_SKIP = {8: "label 8 (none)", 9: "label 9 (uncertain)", 10: "label 10 (no face)"}


def _flip_68() -> np.ndarray:
    """The iBUG 68-point mirror permutation (jaw, brows, nose, eyes, outer and inner lips)."""
    pairs = [(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)] + \
            [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)] + \
            [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)]
    f = np.arange(68)
    for a, b in pairs:
        f[a], f[b] = b, a
    return f


# mirror permutations and the two points the NME normalises by (outer eye corners; eye centres for 5 points)
FLIP_MAPS = {5: np.array([1, 0, 2, 4, 3]), 27: np.asarray(FLIP_27), 68: _flip_68()}
OCULAR = {5: (0, 1), 27: (LANDMARKS_27.index("l_eye_out"), LANDMARKS_27.index("r_eye_out")), 68: (36, 45),
          98: (60, 72)}


def flip_landmarks(points: np.ndarray, width: float, flip_map: np.ndarray) -> np.ndarray:
    """The landmarks of the mirrored image (pixel centres at +0.5): x -> width - x, and each point
    takes its mirror partner's place."""
    p = np.asarray(points, dtype=np.float64)[..., flip_map, :].copy()
    p[..., 0] = width - p[..., 0]
    return p


def nme(pred, true, ocular: tuple[int, int]) -> np.ndarray:
    """Per-image normalised mean error: mean over points of |pred - true| / |true[a] - true[b]|
    (inter-ocular: outer eye corners for 27/68/98 points, eye centres for 5)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    d = np.linalg.norm(true[:, ocular[0]] - true[:, ocular[1]], axis=-1)
    return np.linalg.norm(pred - true, axis=-1).mean(-1) / np.maximum(d, 1e-9)


# --------------------------------------------------------------------------- readers


def _lines(path: Path, check: DataCheck) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of the non-empty lines, or [] with a problem."""
    if not path.is_file():
        check.add(path, None, "missing file")
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                out.append((i, line.split()))
    return out


def _floats(fields: Sequence[str], path, lineno, check: DataCheck, what: str) -> np.ndarray | None:
    try:
        v = np.asarray([float(x) for x in fields], dtype=np.float64)
    except ValueError as e:
        check.add(path, f"line {lineno}", f"{what} do not parse as numbers ({e})")
        return None
    if not np.isfinite(v).all():
        check.add(path, f"line {lineno}", f"{what}: {int((~np.isfinite(v)).sum())} NaN/Inf value(s)")
        return None
    return v


def read_celeba_attributes(path: Path, check: DataCheck) -> tuple[list[str], dict[str, np.ndarray]]:
    """``list_attr_celeba.txt``: a count, the attribute names, then ``name v1 ... vA`` with values
    -1/1 (0/1 accepted). Returns (attribute names, {image name: (A,) 0/1 int})."""
    rows = _lines(path, check)
    if len(rows) < 2:
        if rows:
            check.add(path, None, "needs a count line and a header line of attribute names")
        return [], {}
    (ln0, first), (_, names) = rows[0], rows[1]
    out: dict[str, np.ndarray] = {}
    try:
        count = int(first[0])
    except ValueError:
        check.add(path, f"line {ln0}", f"first line must be the image count, got {' '.join(first)!r}")
        count = None
    for lineno, f in rows[2:]:
        if len(f) != len(names) + 1:
            check.add(path, f"line {lineno}", f"{len(f) - 1} attribute values, expected {len(names)}")
            continue
        v = _floats(f[1:], path, lineno, check, "attribute values")
        if v is None:
            continue
        if not np.isin(v, (-1, 0, 1)).all():
            check.add(path, f"line {lineno}", "attribute values must be -1/1 (or 0/1)")
            continue
        if f[0] in out:
            check.add(path, f"line {lineno}", f"duplicate image {f[0]!r}")
            continue
        out[f[0]] = (v > 0).astype(np.int64)
    if count is not None and count != len(rows) - 2:
        check.add(path, f"line {ln0}", f"the count says {count} images, the file lists {len(rows) - 2}")
    return list(names), out


def read_celeba_partition(path: Path, check: DataCheck) -> dict[str, int]:
    """``list_eval_partition.txt``: ``name split`` with split 0 train, 1 val, 2 test."""
    out = {}
    for lineno, f in _lines(path, check):
        if len(f) != 2 or f[1] not in ("0", "1", "2"):
            check.add(path, f"line {lineno}", f"expected 'image 0|1|2', got {' '.join(f)!r}")
            continue
        out[f[0]] = int(f[1])
    return out


def read_celeba_landmarks(path: Path, check: DataCheck) -> dict[str, np.ndarray]:
    """``list_landmarks_align_celeba.txt``: a count, a header of 10 names, then ``name`` and 5
    (x, y) points (left eye, right eye, nose, left mouth, right mouth: image-left first)."""
    rows = _lines(path, check)
    out = {}
    for lineno, f in rows[2:]:
        if len(f) != 11:
            check.add(path, f"line {lineno}", f"{len(f) - 1} coordinates, expected 10 (5 points)")
            continue
        v = _floats(f[1:], path, lineno, check, "coordinates")
        if v is not None:
            out[f[0]] = v.reshape(5, 2)
    return out


def read_rafdb(path: Path, check: DataCheck) -> list[tuple[str, int, str]]:
    """RAF-DB ``EmoLabel/list_patition_label.txt``: ``train_00001.jpg 5`` (labels 1..7, RAF-DB basic
    order). Returns (name, label 0..6, split) with split from the name's prefix."""
    out = []
    for lineno, f in _lines(path, check):
        if len(f) != 2:
            check.add(path, f"line {lineno}", f"expected 'image label', got {' '.join(f)!r}")
            continue
        name, lab = f
        split = name.split("_")[0]
        if split not in ("train", "test"):
            check.add(path, f"line {lineno}", f"image name {name!r} does not start with train_ or test_")
            continue
        if lab not in {str(i) for i in range(1, 8)}:
            check.add(path, f"line {lineno}", f"label {lab!r} outside 1..7")
            continue
        out.append((name, int(lab) - 1, split))
    return out


def rafdb_image(root: Path, name: str) -> Path:
    """``train_00001.jpg`` -> ``Image/aligned/train_00001_aligned.jpg``."""
    p = Path(name)
    return root / "Image" / "aligned" / f"{p.stem}_aligned{p.suffix}"


def read_affectnet(path: Path, check: DataCheck, n_classes: int = 7) -> list[tuple[str, int, np.ndarray]]:
    """AffectNet ``training.csv`` / ``validation.csv``: header ``subDirectory_filePath, face_x,
    face_y, face_width, face_height, facial_landmarks, expression, valence, arousal``. Keeps
    expressions 0..n_classes-1 (7: the basic set without contempt; 8: with it); the others are
    skipped and counted (never silently). Returns (relative path, label, face box x, y, w, h)."""
    out = []
    if not path.is_file():
        check.add(path, None, "missing file")
        return out
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        need = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")
        if header is None or any(h not in header for h in need):
            check.add(path, "line 1", f"header must name {list(need)}, got {header}")
            return out
        col = {h: header.index(h) for h in need}
        for lineno, row in enumerate(reader, 2):
            if not row:
                continue
            if len(row) < len(header):
                check.add(path, f"line {lineno}", f"{len(row)} fields, the header has {len(header)}")
                continue
            try:
                lab = int(row[col["expression"]])
                box = np.array([float(row[col[k]]) for k in need[1:5]])
            except ValueError as e:
                check.add(path, f"line {lineno}", f"expression/face box do not parse ({e})")
                continue
            if lab in AFFECTNET_SKIP or lab >= n_classes:
                if 0 <= lab <= 10:
                    check.skip(path, f"line {lineno}", AFFECTNET_SKIP.get(lab, f"label {lab} outside the {n_classes}-class set"))
                else:
                    check.add(path, f"line {lineno}", f"expression {lab} outside 0..10")
                continue
            if lab < 0:
                check.add(path, f"line {lineno}", f"expression {lab} outside 0..10")
                continue
            out.append((row[col["subDirectory_filePath"]], lab, box))
    return out


def read_pts(path: Path, check: DataCheck) -> np.ndarray | None:
    """A 300W ``.pts`` file (``version: 1``, ``n_points: N``, ``{``, N lines ``x y``, ``}``), in
    1-based pixel coordinates (Matlab convention: general knowledge) -> (N, 2) with pixel centres
    at +0.5 (this workspace's convention)."""
    if not path.is_file():
        check.add(path, None, "missing .pts file")
        return None
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    try:
        n_line = next(i for i, ln in enumerate(lines) if ln.startswith("n_points"))
        n = int(lines[n_line].split(":")[1])
        start = lines.index("{", n_line) + 1
        end = lines.index("}", start)
    except (StopIteration, ValueError, IndexError):
        check.add(path, None, "not a .pts file (needs 'n_points: N', '{', the points, '}')")
        return None
    if end - start != n:
        check.add(path, f"line {n_line + 1}", f"n_points says {n}, the braces hold {end - start} lines")
        return None
    pts = []
    for i in range(start, end):
        v = _floats(lines[i].split(), path, i + 1, check, "point")
        if v is None:
            return None
        if len(v) != 2:
            check.add(path, f"line {i + 1}", f"{len(v)} numbers, expected 'x y'")
            return None
        pts.append(v)
    return np.stack(pts) - 0.5


def write_pts(path: Path, points: np.ndarray) -> None:
    body = "\n".join(f"{x + 0.5:.3f} {y + 0.5:.3f}" for x, y in np.asarray(points, float))
    path.write_text(f"version: 1\nn_points:  {len(points)}\n{{\n{body}\n}}\n")


def read_w300(root: Path, split: str, check: DataCheck) -> list[tuple[Path, np.ndarray]]:
    """300W-style folder ``<root>/<split>/``: every image with a ``.pts`` beside it (recursive)."""
    folder = root / split
    if not folder.is_dir():
        check.add(folder, None, "missing folder (300W layout: train/ and test/ holding image + .pts pairs)")
        return []
    out = []
    for img in list_images(folder):
        pts = read_pts(img.with_suffix(".pts"), check)
        if pts is not None:
            out.append((img, pts))
    if not out:
        check.add(folder, None, "no image with a .pts file")
    return out


def read_wflw(path: Path, check: DataCheck) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """WFLW ``list_98pt_rect_attr_{train,test}.txt``: 196 coordinates (98 points), a box (x_min
    y_min x_max y_max), 6 attribute flags (pose, expression, illumination, make-up, occlusion,
    blur), the image path under ``WFLW_images/``. Returns (path, (98, 2), box)."""
    out = []
    for lineno, f in _lines(path, check):
        if len(f) != 207:
            check.add(path, f"line {lineno}", f"{len(f)} fields, expected 207 (196 coordinates, 4 box, 6 flags, path)")
            continue
        v = _floats(f[:206], path, lineno, check, "coordinates/box/flags")
        if v is not None:
            out.append((f[206], v[:196].reshape(98, 2), v[196:200]))
    return out


def list_images(folder: Path) -> list[Path]:
    """Every image below ``folder`` (recursive), sorted by relative path."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXT and p.is_file())


CURATED_FIELDS = ("file", "kept", "reason", "prob", "face_area", "side", "sim", "dup_of", "crop", "x0", "y0", "x1", "y1")


def read_curated(path: Path, check: DataCheck) -> list[Path]:
    """The crops kept by ``pros.curate`` (``curated.csv``: one row per pool image, ``kept`` 0/1,
    ``crop`` relative to the csv's folder)."""
    out = []
    if not path.is_file():
        check.add(path, None, "missing curated.csv: run `python -m pros.curate --config ...` (make data-pros does), "
                              "or set data.curated=null to pretrain on the raw pool")
        return out
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or any(k not in reader.fieldnames for k in ("file", "kept", "crop")):
            check.add(path, "line 1", f"header must name file, kept, crop; got {reader.fieldnames}")
            return out
        for lineno, row in enumerate(reader, 2):
            if row["kept"] not in ("0", "1"):
                check.add(path, f"line {lineno}", f"kept must be 0 or 1, got {row['kept']!r}")
            elif row["kept"] == "1":
                if not row["crop"]:
                    check.add(path, f"line {lineno}", "a kept row without a crop file")
                else:
                    out.append(path.parent / row["crop"])
    if not out and not check.problems:
        check.add(path, None, "curation kept no image")
    return out


# --------------------------------------------------------------------------- images


def load_image(path: Path, size: int, box: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 (size, size, 3): the whole image, or the region ``box`` (x0, y0, x1, y1; outside
    the image: black), resized bilinearly."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if box is None:
            return np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8)
        return np.asarray(im.transform((size, size), Image.EXTENT, tuple(float(v) for v in box), Image.BILINEAR),
                          dtype=np.uint8)


def image_map(path: Path, size: int, box: np.ndarray | None = None) -> np.ndarray:
    """The (2, 3) map from source pixels to the pixels of ``load_image(path, size, box)`` (reads
    the header only)."""
    if box is None:
        with Image.open(path) as im:
            box = (0.0, 0.0, float(im.width), float(im.height))
    x0, y0, x1, y1 = (float(v) for v in box)
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    return np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]])


def square_box(points_or_box: np.ndarray, margin: float) -> np.ndarray:
    """A square (x0, y0, x1, y1) centred on the points' bounding box (or a box), side = margin x
    its longer side."""
    a = np.asarray(points_or_box, float)
    lo, hi = (a[:2], a[2:]) if a.ndim == 1 else (a.min(0), a.max(0))
    c, half = (lo + hi) / 2, margin * float(max(hi - lo)) / 2
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half])


MAX_IN_MEMORY = 2 * 2**30  # bytes of decoded pixels held in memory; larger sets decode on demand


class ImageStore:
    """Images of one split at one size: decoded once into memory when they fit
    (``MAX_IN_MEMORY``), else decoded on every access. ``store[idx]`` -> (n, S, S, 3) uint8."""

    def __init__(self, paths: Sequence[Path], size: int, boxes: Sequence | None = None,
                 check: DataCheck | None = None):
        self.paths, self.size = [Path(p) for p in paths], int(size)
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.paths)
        self.cached: np.ndarray | None = None
        if len(self.paths) * self.size**2 * 3 <= MAX_IN_MEMORY:
            self.cached = np.zeros((len(self.paths), self.size, self.size, 3), np.uint8)
            for i, p in enumerate(self.paths):
                try:
                    self.cached[i] = load_image(p, self.size, self.boxes[i])
                except Exception as e:  # noqa: BLE001 - PIL raises several types for damaged files
                    if check is None:
                        raise
                    check.add(p, None, f"unreadable image: {type(e).__name__}: {e}")
            if check is not None:
                check.checked["images"] += len(self.paths)
        elif check is not None:
            check.images([(str(p), p) for p in self.paths])

    @classmethod
    def from_array(cls, images: np.ndarray) -> ImageStore:
        st = cls([], images.shape[1])
        st.cached, st.paths, st.boxes = np.asarray(images, np.uint8), [Path(f"<array {i}>") for i in range(len(images))], \
            [None] * len(images)
        return st

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        if self.cached is not None:
            return self.cached[idx]
        return np.stack([load_image(self.paths[i], self.size, self.boxes[i]) for i in idx])

    def subset(self, idx) -> ImageStore:
        idx = np.asarray(idx, dtype=np.int64)
        st = ImageStore([], self.size)
        st.paths, st.boxes = [self.paths[i] for i in idx], [self.boxes[i] for i in idx]
        st.cached = None if self.cached is None else self.cached[idx]
        return st


def _present(check: DataCheck, items) -> bool:
    """Every (record, path) exists (each missing one is a problem); True when all do."""
    ok = True
    for rec, p in items:
        if not Path(p).is_file():
            check.add(p, rec, "missing image")
            ok = False
    return ok


class Images(Dataset):
    """The pretraining pool as a dataset of uint8 (3, S, S) tensors (from an :class:`ImageStore`)."""

    def __init__(self, store: ImageStore):
        self.store = store
        self.tensor = None if store.cached is None else torch.from_numpy(store.cached).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.tensor is not None:
            return self.tensor[i]
        return torch.from_numpy(self.store[i][0]).permute(2, 0, 1).contiguous()


def _resolve(root: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else root / q


def pretrain_paths(cfg, root: Path, check: DataCheck) -> list[Path]:
    """The pretraining images: the curated crops (``data.curated``) or the raw pool folder."""
    d = cfg.data
    if d.curation:
        paths = read_curated(_resolve(root, d.curated), check)
    else:
        folder = _resolve(root, d.pretrain)
        if not folder.is_dir():
            check.add(folder, None, "pretraining pool folder not found (data.pretrain)")
            return []
        paths = list_images(folder)
        if not paths:
            check.add(folder, None, "no images in the pretraining pool folder")
    if d.pretrain_size is not None:
        paths = paths[: int(d.pretrain_size)]
    return paths


def load_pretrain(cfg, root: str | Path | None, check: DataCheck) -> Images:
    """The pretraining dataset (uint8 (3, S, S) per item), problems into ``check``."""
    root = data_root(root)
    paths = pretrain_paths(cfg, root, check)
    if not _present(check, [(None, p) for p in paths]):
        paths = []
    return Images(ImageStore(paths, int(cfg.data.image_size), check=check))


# --------------------------------------------------------------------------- downstream sets


@dataclass
class TaskSet:
    """One downstream task's split: images (an :class:`ImageStore`) and targets (attributes:
    (N, A) 0/1; expression: (N,) class index; landmarks: (N, L, 2) pixels of the resized image)."""

    task: str
    split: str
    names: list[str]
    images: ImageStore
    targets: np.ndarray
    classes: list[str] = field(default_factory=list)     # attribute / expression names
    flip_map: np.ndarray | None = None                   # landmarks: mirror permutation (None: unknown)
    ocular: tuple[int, int] | None = None                # landmarks: NME normaliser points

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx) -> TaskSet:
        idx = np.asarray(idx, dtype=np.int64)
        return TaskSet(self.task, self.split, [self.names[i] for i in idx], self.images.subset(idx),
                       self.targets[idx], self.classes, self.flip_map, self.ocular)


def _taskset(task, split, check, names, paths, targets, size, classes, boxes=None, **kw) -> TaskSet:
    ok = _present(check, list(zip(names, paths)))
    store = ImageStore(paths if ok else [], size, boxes if ok else None, check)
    return TaskSet(task, split, list(names) if ok else [], store, targets if ok else targets[:0], classes, **kw)


def _attributes(cfg, root: Path, check: DataCheck) -> dict[str, TaskSet]:
    r = _resolve(root, cfg.data.attributes.root)
    names, attrs = read_celeba_attributes(r / "list_attr_celeba.txt", check)
    part = read_celeba_partition(r / "list_eval_partition.txt", check)
    for n in attrs:
        if n not in part:
            check.add(r / "list_eval_partition.txt", n, "image has attributes but no partition line")
    out = {}
    for split, code in (("train", 0), ("test", 2)):
        keys = [n for n in attrs if part.get(n) == code]
        targets = np.stack([attrs[n] for n in keys]) if keys else np.zeros((0, len(names)), np.int64)
        out[split] = _taskset("attributes", split, check, keys, [r / "img_align_celeba" / n for n in keys], targets,
                              cfg.data.downstream_size, names)
    return out


def _expression(cfg, root: Path, check: DataCheck) -> dict[str, TaskSet]:
    e = cfg.data.expression
    r = _resolve(root, e.root)
    size = cfg.data.downstream_size
    out = {}
    if e.format == "rafdb":
        recs = read_rafdb(r / "EmoLabel" / "list_patition_label.txt", check)
        for split in ("train", "test"):
            rs = [x for x in recs if x[2] == split]
            out[split] = _taskset("expression", split, check, [n for n, _, _ in rs], [rafdb_image(r, n) for n, _, _ in rs],
                                  np.array([lab for _, lab, _ in rs], np.int64), size, list(RAFDB_CLASSES))
        return out
    n_cls = 7 if e.format == "affectnet7" else 8
    for split, fname in (("train", "training.csv"), ("test", "validation.csv")):
        recs = read_affectnet(r / fname, check, n_cls)
        boxes = [np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]]) for _, _, b in recs]
        out[split] = _taskset("expression", split, check, [p for p, _, _ in recs],
                              [r / "Manually_Annotated_Images" / p for p, _, _ in recs],
                              np.array([lab for _, lab, _ in recs], np.int64), size, list(AFFECTNET_CLASSES[:n_cls]),
                              boxes)
    return out


def _landmarks(cfg, root: Path, check: DataCheck) -> dict[str, TaskSet]:
    lm = cfg.data.landmarks
    r = _resolve(root, lm.root)
    size = cfg.data.downstream_size
    out = {}
    for split in ("train", "test"):
        if lm.format == "w300":
            recs = [(str(p.relative_to(r)), p, pts, None) for p, pts in read_w300(r, split, check)]
        elif lm.format == "wflw":
            recs = [(p, r / "WFLW_images" / p, pts, box) for p, pts, box in
                    read_wflw(r / f"list_98pt_rect_attr_{split}.txt", check)]
        else:  # celeba5
            pts5 = read_celeba_landmarks(r / "list_landmarks_align_celeba.txt", check)
            part = read_celeba_partition(r / "list_eval_partition.txt", check)
            code = 0 if split == "train" else 2
            recs = [(n, r / "img_align_celeba" / n, p, None) for n, p in pts5.items() if part.get(n) == code]
        n_pts = recs[0][2].shape[0] if recs else 0
        for n, _, p, _ in recs:
            if p.shape[0] != n_pts:
                check.add(r, n, f"{p.shape[0]} landmarks, the first record of {split} has {n_pts}")
        if recs and n_pts not in OCULAR:
            check.add(r, split, f"{n_pts}-point landmarks: no inter-ocular definition (known: {sorted(OCULAR)})")
        boxes = None
        if lm.crop_margin:                           # 0: the whole image
            boxes = [square_box(box if box is not None else pts, float(lm.crop_margin)) for _, _, pts, box in recs]
        ok = not check.problems and _present(check, [(n, p) for n, p, _, _ in recs])
        pts = np.zeros((0, n_pts, 2), np.float32)
        if ok and recs:
            maps = [image_map(p, size, None if boxes is None else boxes[i]) for i, (_, p, _, _) in enumerate(recs)]
            pts = np.stack([q @ m[:, :2].T + m[:, 2] for m, (_, _, q, _) in zip(maps, recs)]).astype(np.float32)
        store = ImageStore([p for _, p, _, _ in recs] if ok else [], size, boxes if ok else None, check)
        out[split] = TaskSet("landmarks", split, [n for n, _, _, _ in recs] if ok else [], store, pts,
                             [str(i) for i in range(n_pts)], FLIP_MAPS.get(n_pts) if lm.format != "wflw" else None,
                             OCULAR.get(n_pts))
    return out


READERS = {"attributes": _attributes, "expression": _expression, "landmarks": _landmarks}


def load_downstream(cfg, root: str | Path | None, check: DataCheck, tasks: Sequence[str] | None = None
                    ) -> dict[str, dict[str, TaskSet]]:
    """{task: {"train": TaskSet, "test": TaskSet}} for the configured downstream tasks."""
    root = data_root(root)
    out = {}
    for task in tasks if tasks is not None else cfg.downstream.tasks:
        out[task] = READERS[task](cfg, root, check)
        for split, ts in out[task].items():
            if not check.problems and len(ts) == 0:
                check.add(_resolve(root, cfg.data[task].root), split, f"no {task} records in the {split} split")
    return out


# RECONSTRUCTED: few-shot = k images per expression class, a fraction of the others (the paper's protocol is not public)
def fewshot_indices(ts: TaskSet, cfg, seed: int) -> np.ndarray:
    """The few-shot subset of a training split, fixed per (seed, task): ``downstream.shots``
    images per class for expression, ``downstream.fraction`` of the images (at least 2) for
    attributes and landmarks."""
    rng = np.random.default_rng([int(seed), {"attributes": 1, "expression": 2, "landmarks": 3}[ts.task], 17])
    n = len(ts)
    if ts.task == "expression":
        idx = []
        for c in np.unique(ts.targets):
            members = np.flatnonzero(ts.targets == c)
            idx.extend(rng.choice(members, size=min(int(cfg.downstream.shots), len(members)), replace=False))
        return np.sort(np.asarray(idx, dtype=np.int64))
    k = max(2, int(math.ceil(float(cfg.downstream.fraction) * n)))
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


# --------------------------------------------------------------------------- the embedded face world

SYNTHETIC_VERSION = 2  # 2: expression intensity and labelled face scale are settings (synthetic.expression_intensity, face_scale)


def _style_nuisance(rng, kind: str, yaw: float, s: dict, scale: tuple | None = None):
    """A nuisance of the default or the flat render style; expression intensity from
    ``synthetic.expression_intensity``, face scale ``scale`` (None: common.faces' default)."""
    from common.faces import sample_nuisance

    kw = {"intensity": tuple(s["expression_intensity"])}
    if scale is not None:
        kw["scale"] = tuple(scale)
    if kind == "flat":  # the second render style: flat light, no camera blur or noise, flat background
        return sample_nuisance(rng, yaw=(-yaw, yaw), ambient=1.0, blur=0.0, noise=0.0, backgrounds=("flat",), **kw)
    return sample_nuisance(rng, yaw=(-yaw, yaw), **kw)


def _render_job(job: tuple) -> tuple[np.ndarray, dict]:
    """One embedded image: a pure function of the job tuple (world seed, kind, index, settings)."""
    from dataclasses import replace

    from common.faces import ATTRIBUTES, EXPRESSIONS, FIVE, Identity, Nuisance, attributes, non_face, render, scene

    seed, kind, i, s = job
    rng = np.random.default_rng([seed, ("face", "scene", "clutter", "blank", "dup", "seed", "flat", "train",
                                        "test").index(kind), i])
    size = s["size"]
    if kind in ("face", "dup", "flat"):
        src = i if kind != "dup" else s["dup_src"][i]
        r2 = np.random.default_rng([seed, 6 if kind == "flat" else 0, src])  # a duplicate replays its source face
        ident = Identity.sample(seed, 10_000 + int(r2.integers(s["pool_ids"]))).jitter(0.2, [seed, 5, src])
        nu = _style_nuisance(r2, "flat" if kind == "flat" else "default", s["pool_yaw"], s)
        if kind == "dup":  # the same face again: new sensor noise, shifted by about a pixel
            nu = replace(nu, seed=nu.seed + 1, offset=(nu.offset[0] + 1.0 / size, nu.offset[1]))
        r = render(ident, nu, size)
        return r.image, {"kind": kind, "yaw": nu.yaw, "pitch": nu.pitch, "box": r.box.tolist(),
                         "face_area": _area(r.box, size), "dup_of": int(src) if kind == "dup" else -1}
    if kind == "scene":
        ident = Identity.sample(seed, 10_000 + int(rng.integers(s["pool_ids"]))).jitter(0.2, [seed, 6, i])
        nu = _style_nuisance(rng, "default", s["pool_yaw"], s)
        img, box, _ = scene(ident, nu, 2 * size, (0.2, 0.6), seed=int(rng.integers(2**31)))
        return img, {"kind": kind, "yaw": nu.yaw, "pitch": nu.pitch, "box": box.tolist(),
                     "face_area": _area(box, 2 * size), "dup_of": -1}
    if kind == "clutter":
        return non_face("clutter", 2 * size, seed=int(rng.integers(2**31))), {"kind": kind, "dup_of": -1}
    if kind == "blank":
        ident = Identity.sample(seed, 20_000 + i)
        return non_face("blank_head", size, seed=int(rng.integers(2**31)), identity=ident,
                        nuisance=_style_nuisance(rng, "default", 30.0, s)), {"kind": kind, "dup_of": -1}
    if kind == "seed":  # a clean frontal face of an identity seen nowhere else
        ident = Identity.sample(seed, 30_000 + i)
        return render(ident, Nuisance(expression="neutral", seed=i, background="flat"), size).image, {"kind": kind}
    # labelled train / test image: identities disjoint between the splits
    lo, n_ids = (0, s["train_ids"]) if kind == "train" else (s["train_ids"], s["test_ids"])
    ident = Identity.sample(seed, lo + int(rng.integers(n_ids))).jitter(0.2, [seed, 7, kind == "test", i])
    nu = _style_nuisance(rng, "default", s["yaw"], s, s["face_scale"])
    r = render(ident, nu, size)
    return r.image, {"expression": EXPRESSIONS.index(nu.expression), "attributes": attributes(ident, nu).tolist(),
                     "landmarks": r.landmarks.tolist(), "five": r.landmarks[FIVE].tolist(),
                     "names": list(ATTRIBUTES), "yaw": nu.yaw}


def _area(box, size: int) -> float:
    x0, y0, x1, y1 = np.clip(np.asarray(box, float), 0, size)
    return float(max(0.0, x1 - x0) * max(0.0, y1 - y0) / size**2)


def _render_all(jobs: list[tuple], workers: int) -> list[tuple[np.ndarray, dict]]:
    if workers <= 1 or len(jobs) < 50:
        return [_render_job(j) for j in jobs]
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(_render_job, jobs, chunksize=16)


def _save_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, optimize=False, compress_level=1)


def synthetic_manifest(cfg) -> dict:
    return {"version": SYNTHETIC_VERSION, **{k: v for k, v in cfg.synthetic.items() if k not in ("root", "workers")}}


# DEVIATION: an embedded rendered face world (common.faces) stands in for LAION-Face, CelebA, RAF-DB and 300W
def generate(cfg, root: str | Path | None = None, force: bool = False) -> Path:
    """Write the embedded face world under ``<data root>/<synthetic.root>`` (skipped when its
    manifest matches, unless ``force``):

    * ``pool/`` unlabelled images: face crops, small faces in 128-px clutter scenes, non-faces
      (clutter, featureless heads) and near-duplicates, shuffled; ``pool_truth.csv`` beside it
      (kind, pose, face box, duplicate source) scores the curation and is never read by it;
    * ``seeds/`` clean frontal faces (the retrieval seed set); ``pool_flat/`` the second style;
    * ``celeba/`` attributes + 5 points, ``rafdb/`` expressions, ``300w/`` 27-point landmarks,
      the same labelled images in the three real formats, disjoint identities per split.
    """
    s = cfg.synthetic
    out = data_root(root) / s.root
    manifest = synthetic_manifest(cfg)
    mpath = out / "manifest.json"
    if not force and mpath.is_file() and json.loads(mpath.read_text()) == manifest:
        log.info("%s is up to date (manifest matches); --force regenerates", out)
        return out
    settings = {k: (float(v) if isinstance(v, float) else v) for k, v in s.items()}
    n_face = int(s.pool_faces)
    dup_rng = np.random.default_rng([s.seed, 99])
    settings["dup_src"] = [int(x) for x in dup_rng.choice(n_face, size=min(int(s.pool_duplicates), n_face), replace=False)]
    counts = {"face": n_face, "scene": s.pool_scenes, "clutter": s.pool_clutter, "blank": s.pool_blank,
              "dup": len(settings["dup_src"]), "seed": s.seed_faces, "flat": s.other_style, "train": s.train,
              "test": s.test}
    jobs = [(int(s.seed), k, i, settings) for k, n in counts.items() for i in range(int(n))]
    log.info("rendering %d images with %d process(es) into %s", len(jobs), s.workers, out)
    results = _render_all(jobs, int(s.workers))
    by_kind: dict[str, list] = {k: [] for k in counts}
    for (_, k, _, _), res in zip(jobs, results):
        by_kind[k].append(res)
    import shutil

    for sub in ("pool", "seeds", "pool_flat", "celeba", "rafdb", "300w"):
        shutil.rmtree(out / sub, ignore_errors=True)
    # the unlabelled pool, shuffled, truth kept apart
    pool = [(k, i, res) for k in ("face", "scene", "clutter", "blank", "dup") for i, res in enumerate(by_kind[k])]
    order = np.random.default_rng([s.seed, 98]).permutation(len(pool))
    face_file = {}
    rows = []
    for j, o in enumerate(order):
        k, i, (img, meta) = pool[o]
        name = f"p{j:05d}.png"
        _save_png(out / "pool" / name, img)
        if k == "face":
            face_file[i] = name
        rows.append((name, k, i, img.shape[0], meta))
    with open(out / "pool_truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "kind", "size", "yaw", "pitch", "x0", "y0", "x1", "y1", "face_area", "dup_of"])
        for name, k, _, size, m in rows:
            box = m.get("box", [""] * 4)
            dup = face_file[m["dup_of"]] if m.get("dup_of", -1) >= 0 else ""
            w.writerow([name, k, size, _fmt(m.get("yaw")), _fmt(m.get("pitch")), *[_fmt(b) for b in box],
                        _fmt(m.get("face_area")), dup])
    for i, (img, _) in enumerate(by_kind["seed"]):
        _save_png(out / "seeds" / f"seed_{i:03d}.png", img)
    for i, (img, _) in enumerate(by_kind["flat"]):
        _save_png(out / "pool_flat" / f"f{i:05d}.png", img)
    _write_labelled(out, by_kind["train"], by_kind["test"])
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("wrote %s", out)
    return out


def _fmt(v) -> str:
    return "" if v is None or v == "" else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _write_labelled(out: Path, train: list, test: list) -> None:
    """The labelled images in the CelebA, RAF-DB and 300W layouts."""
    names = train[0][1]["names"]
    items = [("train", i, r) for i, r in enumerate(train)] + [("test", i, r) for i, r in enumerate(test)]
    cel = out / "celeba"
    attr_lines, lm_lines, part_lines, raf_lines = [], [], [], []
    for n, (split, i, (img, m)) in enumerate(items, 1):
        cname = f"{n:06d}.png"
        _save_png(cel / "img_align_celeba" / cname, img)
        attr_lines.append(cname + " " + " ".join("1" if a else "-1" for a in m["attributes"]))
        lm_lines.append(cname + " " + " ".join(f"{v:.2f}" for p in m["five"] for v in p))
        part_lines.append(f"{cname} {0 if split == 'train' else 2}")
        rname = f"{split}_{i + 1:05d}.png" if split == "train" else f"{split}_{i + 1:04d}.png"
        _save_png(rafdb_image(out / "rafdb", rname), img)
        raf_lines.append(f"{rname} {m['expression'] + 1}")
        w = out / "300w" / split / f"{split}_{i + 1:05d}.png"
        _save_png(w, img)
        write_pts(w.with_suffix(".pts"), np.asarray(m["landmarks"]))
    (cel / "list_attr_celeba.txt").write_text(f"{len(items)}\n" + " ".join(names) + "\n" + "\n".join(attr_lines) + "\n")
    (cel / "list_landmarks_align_celeba.txt").write_text(
        f"{len(items)}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
        f"rightmouth_x rightmouth_y\n" + "\n".join(lm_lines) + "\n")
    (cel / "list_eval_partition.txt").write_text("\n".join(part_lines) + "\n")
    (out / "rafdb" / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (out / "rafdb" / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(raf_lines) + "\n")


# --------------------------------------------------------------------------- the data check


def check_all(cfg, root: str | Path | None, *, pretrain: bool = True, downstream: bool = True,
              log_: logging.Logger | None = None) -> tuple[Dataset | None, dict | None]:
    """Read and check what training (``pretrain``) and eval (``downstream``) need; every problem at
    once, by file and record (:class:`common.datacheck.DataCheckError`)."""
    check = DataCheck("pros", mode=cfg.data.check, log=log_ or log)
    ds = load_pretrain(cfg, root, check) if pretrain else None
    sets = load_downstream(cfg, root, check) if downstream else None
    check.raise_if_problems()
    return ds, sets


def main(argv=None) -> int:
    from common.cli import parse, tool_parser
    from pros.config import DEFAULTS, RULES

    ap = tool_parser(__doc__, "pros")
    ap.add_argument("--generate", action="store_true", help="write the embedded set (synthetic.*) first")
    ap.add_argument("--force", action="store_true", help="with --generate: rewrite even when up to date")
    ap.add_argument("--no-pretrain", action="store_true", help="check the downstream sets only (before curation)")
    args, cfg = parse(ap, argv, DEFAULTS, RULES)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    if args.generate:
        generate(cfg, args.data_root, force=args.force)
    ds, sets = check_all(cfg, args.data_root, pretrain=not args.no_pretrain)
    if ds is not None:
        print(f"pretraining pool: {len(ds)} images")
    for task, splits in (sets or {}).items():
        print(f"{task}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
