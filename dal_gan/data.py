"""Readers (ARL-VTF, Tufts manifest), the embedded set's generator, the tensors the model reads, and
the data check.

    python -m dal_gan.data                                  # check the embedded set (configs/synthetic.yaml)
    python -m dal_gan.data --generate                       # write it first (data/dal_gan_synthetic), then check
    python -m dal_gan.data --config dal_gan/configs/arl_vtf.yaml --data-root /data   # check a real copy
    python -m dal_gan.data --config dal_gan/configs/tufts.yaml --build-manifest      # Tufts: globs -> manifest.csv

ARL-VTF (Poster et al., WACV 2021), as the same lab's Axial-GAN reads it (sam575/axial-gan@2fb1551,
data/aligned_arl_dataset.py and face_verf_arl.ipynb):

    <root>/metadata.csv        index column, timestamp, camera, condition, eyewear, subid, filepath,
                               top_leftX, top_leftY, bottom_rightX, bottom_rightY (+ optional yaw)
    <root>/<dev|test>/<subid>/<seq>/<CAMERA>_<suffix>.png     filepath, relative to the root
    <root>/splits/dev/{train,val}{k}.txt                     one subject id per line
    <root>/splits/test/gallery_{0010,0011}.txt               one metadata row index (positional) per line
    <root>/splits/test/probes_{0010_baseline,0010_expression,0010_pose,0011_baseline}.txt

Thermal ``FLIR_USB`` and visible ``BAS_RGB2`` frames pair by subject folder, sequence folder and the
filename suffix after the camera name. The embedded set is written in exactly this layout and read
only through :func:`read_arl_vtf`; it adds the optional ``yaw`` column (per-|yaw|-bin metrics) and
``extras/colourblind/<subid>.png`` (each test subject's frontal target re-rendered with the
population's mean colours: what a thermal-only method could at best know).
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data import DatasetNotFoundError, data_root, require_files
from common.datacheck import DataCheck

THERMAL, VISIBLE = "FLIR_USB", "BAS_RGB2"
META_COLUMNS = ("timestamp", "camera", "condition", "eyewear", "subid", "filepath",
                "top_leftX", "top_leftY", "bottom_rightX", "bottom_rightY")
BOX_COLUMNS = META_COLUMNS[6:]
GALLERIES = ("0010", "0011")
PROBES = ("0010_baseline", "0010_expression", "0010_pose", "0011_baseline")
# RECONSTRUCTED (ARL-VTF's sequence folder names are not in any source read): <session>_<condition>;
# session 0010 without eyewear, 0011 with eyewear, as the probe list names suggest.
SEQUENCES = ("0010_baseline", "0010_expression", "0010_pose", "0011_baseline")
_PATH = re.compile(r"^(dev|test)/([^/]+)/([^/]+)/(.+)$")
log = logging.getLogger("dal_gan.data")


# =============================================================================== records

@dataclass(frozen=True)
class Image:
    """One image on disk and the face box to crop (None: the whole image)."""

    path: Path
    box: tuple | None = None  # the crop (data.crop: box), None for the whole image
    record: str = ""          # where it came from, for messages (file: row N)
    meta_box: tuple | None = None   # the dataset's face box, checked against the image size in any crop mode


@dataclass(frozen=True)
class Sample:
    """One thermal frame with what training or evaluation needs beside it."""

    thermal: Image
    visible: Image | None     # the synchronous visible frame (same pose and instant)
    subject: str
    yaw: float = math.nan     # degrees; NaN when the dataset gives none
    condition: str = ""
    eyewear: str = ""
    name: str = ""            # a short id (subject/sequence/suffix)


@dataclass
class FaceData:
    """What either reader returns. Subjects of train, val and test are disjoint."""

    name: str
    train: list[Sample]
    val: list[Sample]
    probes: dict[str, list[Sample]]              # probe list name -> thermal probes (test subjects)
    galleries: dict[str, dict[str, Image]]       # gallery name -> {subject: visible frontal}
    targets: dict[str, Image]                    # subject -> the visible frontal target
    frontals: dict[str, list[Image]]             # subject -> other visible frontals (path V's frontal input, upper bound)
    colourblind: dict[str, Image] = field(default_factory=dict)   # embedded set only
    train_subjects: list[str] = field(default_factory=list)
    visible_train: list[tuple[str, Image]] = field(default_factory=list)  # (subject, visible image) for the embedders

    @property
    def label(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.train_subjects)}

    def summary(self) -> str:
        n_probe = sum(len(v) for v in self.probes.values())
        return (f"{self.name}: {len(self.train_subjects)} training subjects, {len(self.train)} training frames, "
                f"{len(self.val)} validation frames, {n_probe} probes in {len(self.probes)} list(s), "
                f"galleries {', '.join(f'{k} ({len(v)})' for k, v in self.galleries.items())}")


# =============================================================================== ARL-VTF reader

@dataclass(frozen=True)
class _Row:
    index: int                # positional row (the test lists' line values)
    line: int                 # line in metadata.csv
    camera: str
    condition: str
    eyewear: str
    subid: str
    filepath: str
    split: str                # dev | test (from the path)
    seq: str
    suffix: str
    box: tuple
    yaw: float


def _read_lines(path: Path) -> list[tuple[int, str]]:
    return [(i, s.strip()) for i, s in enumerate(path.read_text().splitlines(), 1) if s.strip()]


def _parse_metadata(path: Path, check: DataCheck) -> list[_Row | None]:
    """Every row of metadata.csv (None for a malformed one, recorded in ``check``)."""
    rows: list[_Row | None] = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            check.add(path, None, "empty file (no header)")
            return rows
        cols = {c.strip(): i for i, c in enumerate(header)}
        missing = [c for c in META_COLUMNS if c not in cols]
        if missing:
            check.add(path, "header", f"missing column(s) {missing}; expected {list(META_COLUMNS)} (+ an index column)")
            return rows
        has_yaw = "yaw" in cols
        for n, rec in enumerate(reader):
            line = n + 2
            where = f"row {n} (line {line})"
            if len(rec) != len(header):
                check.add(path, where, f"{len(rec)} fields, header has {len(header)}")
                rows.append(None)
                continue
            get = lambda c, rec=rec: rec[cols[c]].strip()  # noqa: E731
            fp = get("filepath")
            m = _PATH.match(fp)
            problems = []
            if not m:
                problems.append(f"filepath {fp!r} is not <dev|test>/<subid>/<seq>/<CAMERA>_<suffix>.png")
            else:
                split, sub, seq, fname = m.groups()
                if sub != get("subid"):
                    problems.append(f"filepath {fp!r} is in folder {sub!r} but subid is {get('subid')!r}")
                stem = fname.rsplit(".", 1)[0]
                if not stem.startswith(get("camera") + "_"):
                    problems.append(f"file name {fname!r} does not start with its camera {get('camera')!r}_")
            try:
                box = tuple(float(get(c)) for c in BOX_COLUMNS)
                if not all(math.isfinite(b) for b in box):
                    raise ValueError("non-finite")
                if not (box[0] < box[2] and box[1] < box[3]):
                    problems.append(f"box {box} is empty (need top_left < bottom_right)")
            except ValueError:
                problems.append(f"box {[get(c) for c in BOX_COLUMNS]} is not four finite numbers")
                box = None
            yaw = math.nan
            if has_yaw and get("yaw"):
                try:
                    yaw = float(get("yaw"))
                except ValueError:
                    problems.append(f"yaw {get('yaw')!r} is not a number")
            if problems:
                for p in problems:
                    check.add(path, where, p)
                rows.append(None)
                continue
            rows.append(_Row(n, line, get("camera"), get("condition"), get("eyewear"), get("subid"), fp, split, seq,
                             stem[len(get("camera")) + 1:], box, yaw))
    return rows


def _image_size(path: Path) -> tuple[int, int] | None:
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - reported by DataCheck.images
        return None


def read_arl_vtf(root: str | Path, cfg, check: DataCheck) -> FaceData:
    """Read an ARL-VTF copy (the layout in the module doc) into :class:`FaceData`; every problem
    (unpaired frame, missing image, box outside the image, subject in two splits, a list line that
    is not a row of the right camera) is recorded in ``check`` naming the file and row."""
    root = Path(root)
    k = cfg.data.split
    lists = {"train": f"splits/dev/train{k}.txt", "val": f"splits/dev/val{k}.txt",
             **{f"gallery_{g}": f"splits/test/gallery_{g}.txt" for g in GALLERIES},
             **{f"probes_{p}": f"splits/test/probes_{p}.txt" for p in PROBES}}
    require_files("arl_vtf", root, ["metadata.csv", *lists.values()],
                  hint="ARL-VTF layout: see dal_gan/README.md (Data layout); the embedded set: make data-dal_gan")
    meta = root / "metadata.csv"
    rows = _parse_metadata(meta, check)
    by_key: dict[tuple, dict[str, _Row]] = defaultdict(dict)
    by_subject: dict[str, list[_Row]] = defaultdict(list)
    for r in rows:
        if r is None:
            continue
        if r.camera not in (THERMAL, VISIBLE):
            check.skip(meta, f"row {r.index}", f"camera {r.camera} (only {THERMAL} and {VISIBLE} are read)")
            continue
        key = (r.subid, r.seq, r.suffix)
        if r.camera in by_key[key]:
            check.add(meta, f"row {r.index} (line {r.line})", f"duplicate {r.camera} frame {r.filepath} "
                                                               f"(also row {by_key[key][r.camera].index})")
        by_key[key][r.camera] = r
        by_subject[r.subid].append(r)

    # ---- splits: subject lists (dev) and row lists (test)
    split_of: dict[str, tuple[str, str]] = {}      # subject -> (list file, where)
    subjects = {}
    for name in ("train", "val"):
        path = root / lists[name]
        subjects[name] = []
        for line, sub in _read_lines(path):
            if sub in split_of and split_of[sub][0] != lists[name]:
                check.add(path, f"line {line}", f"subject {sub} is in two splits (also {split_of[sub][0]}: "
                                                f"{split_of[sub][1]})")
                continue
            split_of[sub] = (lists[name], f"line {line}")
            if sub not in by_subject:
                check.add(path, f"line {line}", f"subject {sub} has no {THERMAL}/{VISIBLE} rows in metadata.csv")
                continue
            subjects[name].append(sub)

    def list_rows(name: str, camera: str) -> list[_Row]:
        path, out = root / lists[name], []
        for line, s in _read_lines(path):
            try:
                i = int(s)
            except ValueError:
                check.add(path, f"line {line}", f"{s!r} is not a metadata row index")
                continue
            r = rows[i] if 0 <= i < len(rows) else None
            if not 0 <= i < len(rows):
                check.add(path, f"line {line}", f"row {i} is not in metadata.csv ({len(rows)} rows)")
            elif r is None:
                check.add(path, f"line {line}", f"row {i} of metadata.csv is malformed (see its problem)")
            elif r.camera != camera:
                check.add(path, f"line {line}", f"row {i} ({r.filepath}) is camera {r.camera}, expected {camera}")
            elif r.subid in split_of:
                check.add(path, f"line {line}", f"row {i}: subject {r.subid} is in two splits (also "
                                                f"{split_of[r.subid][0]}: {split_of[r.subid][1]})")
            else:
                out.append(r)
        return out

    galleries_rows = {g: list_rows(f"gallery_{g}", VISIBLE) for g in GALLERIES}
    probe_rows = {p: list_rows(f"probes_{p}", THERMAL) for p in PROBES if p in cfg.data.probes}
    in_gallery = {r.filepath for rs in galleries_rows.values() for r in rs}
    for sub, (lst, where) in split_of.items():
        for r in by_subject.get(sub, []):
            if r.split != "dev":
                check.add(meta, f"row {r.index} (line {r.line})", f"subject {sub} of {lst} ({where}) has a frame "
                                                                  f"under {r.split}/ ({r.filepath}): in two splits")
                break

    def img(r: _Row) -> Image:
        return Image(root / r.filepath, r.box if cfg.data.crop == "box" else None, f"metadata.csv row {r.index}", r.box)

    def sample(r: _Row, need_pair: bool) -> Sample | None:
        v = by_key[(r.subid, r.seq, r.suffix)].get(VISIBLE)
        if v is None and need_pair:
            check.add(meta, f"row {r.index} (line {r.line})", f"unpaired frame: {r.filepath} has no {VISIBLE} row "
                                                              f"with suffix {r.suffix!r} in {r.subid}/{r.seq}")
            return None
        return Sample(img(r), img(v) if v else None, r.subid, r.yaw, r.condition, r.eyewear,
                      f"{r.subid}/{r.seq}/{r.suffix}")

    def frontals(sub: str) -> list[_Row]:
        return sorted((r for r in by_subject.get(sub, []) if r.camera == VISIBLE and
                       r.condition == cfg.data.target_condition and r.eyewear == cfg.data.target_eyewear),
                      key=lambda r: r.filepath)

    targets, others = {}, {}
    test_subjects = sorted({r.subid for rs in (*galleries_rows.values(), *probe_rows.values()) for r in rs})
    for sub in subjects["train"] + subjects["val"] + test_subjects:
        fr = frontals(sub)
        free = [r for r in fr if r.filepath not in in_gallery]
        if not free:
            where = split_of.get(sub, ("splits/test", "a test list"))
            check.add(root / where[0], where[1], f"subject {sub}: no {VISIBLE} frame with condition "
                                                 f"{cfg.data.target_condition!r} and eyewear {cfg.data.target_eyewear!r} "
                                                 f"outside the gallery lists, so no frontal target")
            continue
        targets[sub] = img(free[0])
        others[sub] = [img(r) for r in free[1:]]

    train_set = set(cfg.data.train_conditions)
    def frames(subs):  # noqa: E306
        out = []
        for sub in subs:
            for r in sorted(by_subject[sub], key=lambda r: r.filepath):
                if r.camera == THERMAL and r.condition in train_set and sub in targets:
                    s = sample(r, need_pair=True)
                    if s is not None:
                        out.append(s)
        return out

    data = FaceData(
        name=f"arl_vtf:{root.name}", train=frames(subjects["train"]), val=frames(subjects["val"]),
        probes={p: [s for r in rs if r.subid in targets and (s := sample(r, need_pair=False))]
                for p, rs in probe_rows.items()},
        galleries={g: {r.subid: img(r) for r in rs} for g, rs in galleries_rows.items()},
        targets=targets, frontals=others, train_subjects=sorted(subjects["train"]),
        visible_train=[(r.subid, img(r)) for sub in sorted(subjects["train"]) for r in
                       sorted(by_subject[sub], key=lambda r: r.filepath) if r.camera == VISIBLE],
    )
    cb = root / "extras" / "colourblind"
    if cb.is_dir():
        data.colourblind = {s: Image(cb / f"{s}.png", None, f"extras/colourblind/{s}.png")
                            for s in test_subjects if (cb / f"{s}.png").is_file()}
    for p, rs in probe_rows.items():
        for r in rs:
            if r.subid not in targets:
                check.skip(root / lists[f"probes_{p}"], f"row {r.index}", "subject without a frontal target")
    _check_images(data, check)
    return data


def _all_images(data: FaceData) -> list[Image]:
    seen, out = set(), []
    for s in (*data.train, *data.val, *(x for v in data.probes.values() for x in v)):
        for im in (s.thermal, s.visible):
            if im is not None and im.path not in seen:
                seen.add(im.path)
                out.append(im)
    for im in (*(x for g in data.galleries.values() for x in g.values()), *data.targets.values(),
               *(x for v in data.frontals.values() for x in v), *data.colourblind.values(),
               *(im for _, im in data.visible_train)):
        if im.path not in seen:
            seen.add(im.path)
            out.append(im)
    return out


def _check_images(data: FaceData, check: DataCheck) -> None:
    """Images present and decodable (common.datacheck), boxes inside them."""
    ims = _all_images(data)
    check.images([(im.record or str(im.path), im.path) for im in ims], min_size=8)
    for im in check.sample([im for im in ims if im.meta_box is not None and im.path.is_file()]):
        size = _image_size(im.path)
        if size is None:
            continue
        x0, y0, x1, y1 = im.meta_box
        w, h = size
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            check.add(im.path, im.record, f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {w}x{h} image")


# =============================================================================== Tufts reader

MANIFEST_COLUMNS = ("subject", "modality", "pose", "path")


def build_tufts_manifest(root: str | Path, cfg) -> Path:
    """Write ``<root>/<tufts.manifest>`` from the thermal and visible globs and the path pattern
    (named groups ``subject`` and ``pose``); a path the pattern does not match is an error naming it."""
    root = Path(root)
    pat = re.compile(cfg.tufts.pattern)
    rows, bad = [], []
    for modality, g in (("thermal", cfg.tufts.thermal_glob), ("visible", cfg.tufts.visible_glob)):
        hits = sorted(glob.glob(str(root / g), recursive=True))
        if not hits:
            raise DatasetNotFoundError(f"tufts: no file matches {root / g} ({modality}); set tufts.{modality}_glob")
        for p in hits:
            rel = Path(p).relative_to(root).as_posix()
            m = pat.search(rel)
            if not m:
                bad.append(rel)
                continue
            rows.append((m.group("subject"), modality, m.group("pose"), rel))
    if bad:
        raise ValueError(f"tufts: {len(bad)} path(s) do not match tufts.pattern {cfg.tufts.pattern!r}, e.g. "
                         + ", ".join(bad[:5]))
    out = root / cfg.tufts.manifest
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(MANIFEST_COLUMNS)
        w.writerows(rows)
    return out


def read_tufts(root: str | Path, cfg, check: DataCheck) -> FaceData:
    """Read a Tufts copy through its manifest (subject, modality, pose, path): thermal and visible
    frames pair by (subject, pose); the visible frame at ``tufts.frontal_pose`` is the target and
    gallery image. RECONSTRUCTED: Tufts' own layout and protocol were not available."""
    root = Path(root)
    man = require_files("tufts", root, [cfg.tufts.manifest],
                        hint="build it with: python -m dal_gan.data --config dal_gan/configs/tufts.yaml --build-manifest")[0]
    pairs: dict[tuple, dict[str, tuple]] = defaultdict(dict)
    with open(man, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            check.add(man, "header", f"missing column(s) {missing}; expected {list(MANIFEST_COLUMNS)}")
            return FaceData("tufts", [], [], {}, {}, {}, {})
        for n, rec in enumerate(reader):
            where = f"row {n} (line {n + 2})"
            sub, mod, pose, rel = (rec[c].strip() for c in MANIFEST_COLUMNS)
            if mod not in ("thermal", "visible"):
                check.add(man, where, f"modality {mod!r} is not thermal | visible")
                continue
            if not sub or not pose or not rel:
                check.add(man, where, "empty subject, pose or path")
                continue
            if mod in pairs[(sub, pose)]:
                check.add(man, where, f"second {mod} image of subject {sub} pose {pose} (also "
                                      f"{pairs[(sub, pose)][mod][1]})")
                continue
            pairs[(sub, pose)][mod] = (Image(root / rel, None, f"{cfg.tufts.manifest} {where}"), where)
    poses = sorted({p for _, p in pairs})
    frontal = cfg.tufts.frontal_pose or (poses[0] if poses else "")
    subjects = sorted({s for s, _ in pairs})
    n = len(subjects)
    n_test = max(1, round(cfg.tufts.test_fraction * n)) if n else 0
    n_val = round(cfg.tufts.val_fraction * n)
    test, val, train = subjects[n - n_test:], subjects[n - n_test - n_val:n - n_test], subjects[:n - n_test - n_val]
    targets = {}
    for s in subjects:
        v = pairs.get((s, frontal), {}).get("visible")
        if v is None:
            check.add(man, None, f"subject {s}: no visible image at the frontal pose {frontal!r} (tufts.frontal_pose)")
        else:
            targets[s] = v[0]

    def samples(subs):
        out = []
        for (s, p), d in sorted(pairs.items()):
            if s not in subs or "thermal" not in d or s not in targets:
                continue
            if "visible" not in d:
                check.add(man, d["thermal"][1], f"unpaired frame: subject {s} pose {p} has no visible image")
                continue
            out.append(Sample(d["thermal"][0], d["visible"][0], s, math.nan, p, "", f"{s}/{p}"))
        return out

    data = FaceData("tufts", samples(set(train)), samples(set(val)), {"all": samples(set(test))},
                    {"frontal": {s: targets[s] for s in test if s in targets}}, targets, {s: [] for s in subjects},
                    train_subjects=train,
                    visible_train=[(s, d["visible"][0]) for (s, _), d in sorted(pairs.items())
                                   if s in set(train) and "visible" in d])
    _check_images(data, check)
    return data


# =============================================================================== the embedded set

WORLD_VERSION = 2   # 2: identities fixed per split (test subjects do not move with n_train); world.json
# Identity index of each split's j-th subject: a pure function of (seed, split, j), so the test identities
# (and their images) are the same whatever n_train and n_val are, and worlds of different sizes compare.
IDENTITY_BASE = {"dev_train": 0, "dev_val": 50_000, "test": 100_000}


def subject_plan(n_train: int, n_val: int, n_test: int) -> list[tuple[str, int, str]]:
    """(subject name, identity index, split folder) of every embedded subject. Names are positional
    (S0000 ... in train, val, test order); identity indices are per split (``IDENTITY_BASE``)."""
    plan = [("dev_train", j) for j in range(n_train)] + [("dev_val", j) for j in range(n_val)] + \
           [("test", j) for j in range(n_test)]
    return [(f"S{k:04d}", IDENTITY_BASE[part] + j, "test" if part == "test" else "dev")
            for k, (part, j) in enumerate(plan)]


def world_manifest(cfg) -> dict:
    """What the embedded set is a function of (``world.json``): the version and ``cfg.synthetic``
    (less ``workers``) and the split index the lists are written under."""
    syn = {k: v for k, v in dict(cfg.synthetic).items() if k != "workers"}
    return {"version": WORLD_VERSION, "split": int(cfg.data.split), "synthetic": syn}


def world_is_current(d: str | Path, cfg) -> bool:
    """True when ``d`` holds the embedded set ``cfg`` describes (its world.json matches)."""
    w = Path(d) / "world.json"
    return (Path(d) / "metadata.csv").is_file() and w.is_file() and json.loads(w.read_text()) == \
        json.loads(json.dumps(world_manifest(cfg)))


def ensure_generated(cfg, root: str | Path | None = None, force: bool = False) -> Path:
    """Write the embedded set under the data root unless it is there and current; a stale one (another
    world version or settings, e.g. written before version 2) is rewritten, with a log line."""
    import shutil
    import time

    d = dataset_dir(cfg, root)
    if not force and world_is_current(d, cfg):
        log.info("%s is up to date (world.json matches; --force rewrites it)", d)
        return d
    if d.exists():
        log.info("%s: %s, rewriting it", d, "--force" if force else "stale (world.json differs from the config)")
        shutil.rmtree(d)
    t0 = time.perf_counter()
    generate(d, cfg)
    log.info("wrote %s in %.1f s", d, time.perf_counter() - t0)
    return d


def _render_subject(args) -> list[dict]:
    """Render one subject's four sequences (thermal + visible per frame) and, for test subjects, the
    colour-blind target. Returns metadata rows; writes the PNGs."""
    from PIL import Image as PILImage

    from common.faces import Identity, Nuisance, render

    out, sub, idx, split, syn = args
    out = Path(out)
    idn = Identity.sample(syn["seed"], idx)
    rng = np.random.default_rng([syn["seed"], idx, 77])
    size, scale = syn["render_size"], syn["face_scale"]
    # RECONSTRUCTED lab capture: one backdrop, one camera; light and small head motion vary per frame
    base = dict(scale=scale, background="gradient", bg_rgb=(0.55, 0.58, 0.62), offset=(0.0, -0.02))

    def nu(**kw) -> Nuisance:
        return Nuisance(**{**base, "light_az": float(rng.uniform(-30, 30)), "light_el": float(rng.uniform(15, 45)),
                           "ambient": float(rng.uniform(0.4, 0.55)), "pitch": float(rng.uniform(-4, 4)),
                           "roll": float(rng.uniform(-3, 3)), "t_ambient": float(rng.uniform(19.0, 23.0)),
                           "seed": int(rng.integers(2**31)), **kw})

    seqs = []
    for _ in range(syn["baseline_frames"]):
        seqs.append(("0010_baseline", "baseline", "none", nu(yaw=float(rng.uniform(-3, 3)))))
    exprs = ("surprise", "fear", "disgust", "happy", "sad", "anger")
    for _ in range(syn["expression_frames"]):
        seqs.append(("0010_expression", "expression", "none",
                     nu(yaw=float(rng.uniform(-5, 5)), expression=str(rng.choice(exprs)),
                        intensity=float(rng.uniform(0.6, 1.0)))))
    n = syn["pose_frames"]
    yaws = np.linspace(-syn["yaw_max"], syn["yaw_max"], n) if n > 1 else np.zeros(1)
    for y in yaws:
        y = float(np.clip(y + rng.uniform(-4, 4), -90, 90))
        seqs.append(("0010_pose", "pose", "none", nu(yaw=y)))
    for _ in range(syn["eyewear_frames"]):
        ew = str(rng.choice(("clear", "sunglasses")))
        seqs.append(("0011_baseline", "baseline", {"clear": "glasses", "sunglasses": "sunglasses"}[ew],
                     nu(yaw=float(rng.uniform(-3, 3)), eyewear=ew)))
    rows, counters = [], Counter()
    for seq, condition, eyewear, n_ in seqs:
        k = counters[seq]
        counters[seq] += 1
        folder = out / split / sub / seq
        folder.mkdir(parents=True, exist_ok=True)
        for camera, modality in ((THERMAL, "thermal"), (VISIBLE, "visible")):
            r = render(idn, n_, size, modality)
            name = f"{camera}_{k:04d}.png"
            PILImage.fromarray(r.image).save(folder / name)
            x0, y0, x1, y1 = (float(v) for v in r.box)
            rows.append({"camera": camera, "condition": condition, "eyewear": eyewear, "subid": sub,
                         "filepath": f"{split}/{sub}/{seq}/{name}", "top_leftX": x0, "top_leftY": y0,
                         "bottom_rightX": x1, "bottom_rightY": y1, "yaw": round(n_.yaw, 3)})
        if split == "test" and seq == "0010_baseline" and k == 0:   # the frontal target (first baseline frame)
            grey = replace(idn, skin_tone=0.5, hair_colour="dark_brown", iris=0)
            cb = out / "extras" / "colourblind"
            cb.mkdir(parents=True, exist_ok=True)
            PILImage.fromarray(render(grey, n_, size, "visible").image).save(cb / f"{sub}.png")
    return rows


def generate(out: str | Path, cfg) -> Path:
    """Write the embedded set (ARL-VTF layout) under ``out``: disjoint train / val / test
    identities (``subject_plan``), each with sessions 0010 (baseline, expression, yaw sweep) and 0011
    (eyewear), thermal + visible per frame, and ``world.json``. A pure function of ``cfg.synthetic``."""
    import concurrent.futures as cf

    out = Path(out)
    syn = dict(cfg.synthetic)
    n_tr, n_va, n_te = syn["n_train"], syn["n_val"], syn["n_test"]
    subs = subject_plan(n_tr, n_va, n_te)
    jobs = [(str(out), s, i, sp, syn) for s, i, sp in subs]
    if syn["workers"] > 1:
        with cf.ProcessPoolExecutor(syn["workers"]) as ex:
            per = list(ex.map(_render_subject, jobs))
    else:
        per = [_render_subject(j) for j in jobs]
    rows = [r for rs in per for r in rs]
    t0 = np.datetime64("2020-01-01T00:00:00")
    with open(out / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", *META_COLUMNS, "yaw"])
        for i, r in enumerate(rows):
            w.writerow([i, str(t0 + np.timedelta64(i * 100, "ms")), *(r[c] for c in META_COLUMNS[1:]), r["yaw"]])
    (out / "splits" / "dev").mkdir(parents=True, exist_ok=True)
    (out / "splits" / "test").mkdir(parents=True, exist_ok=True)
    names = [s for s, _, _ in subs]
    k = cfg.data.split
    (out / "splits" / "dev" / f"train{k}.txt").write_text("".join(s + "\n" for s in names[:n_tr]))
    (out / "splits" / "dev" / f"val{k}.txt").write_text("".join(s + "\n" for s in names[n_tr:n_tr + n_va]))
    test = set(names[n_tr + n_va:])
    for g, seq in (("0010", "0010_baseline"), ("0011", "0011_baseline")):   # the last frame of the session
        last = {}
        for i, r in enumerate(rows):
            if r["subid"] in test and r["camera"] == VISIBLE and f"/{seq}/" in r["filepath"]:
                last[r["subid"]] = i
        (out / "splits" / "test" / f"gallery_{g}.txt").write_text("".join(f"{last[s]}\n" for s in sorted(last)))
    for p in PROBES:
        idx = [i for i, r in enumerate(rows) if r["subid"] in test and r["camera"] == THERMAL and f"/{p}/" in r["filepath"]]
        (out / "splits" / "test" / f"probes_{p}.txt").write_text("".join(f"{i}\n" for i in idx))
    (out / "world.json").write_text(json.dumps(world_manifest(cfg), indent=1, sort_keys=True) + "\n")
    return out


# =============================================================================== loading

def dataset_dir(cfg, root: str | Path | None = None) -> Path:
    return data_root(root) / cfg.data.dir


def load_data(cfg, root: str | Path | None = None, check: str | None = None,
              log_: logging.Logger | None = None) -> FaceData:
    """Read and check the configured dataset; every problem at once, before anything is written."""
    d = dataset_dir(cfg, root)
    if cfg.data.embedded and not d.exists():
        raise DatasetNotFoundError(f"the embedded set is not at {d}: write it with `python -m dal_gan.data --generate` "
                                   f"(make data-dal_gan)")
    if cfg.data.embedded and not world_is_current(d, cfg):
        raise DatasetNotFoundError(f"the embedded set at {d} is stale: its world.json does not match this config's "
                                   f"`synthetic` settings (world version {WORLD_VERSION}); rewrite it with `python -m "
                                   f"dal_gan.data --generate` and the same --config/--set (make data-dal_gan)")
    chk = DataCheck(cfg.data.dir, mode=check or cfg.data.check, log=log_ or log)
    data = (read_arl_vtf if cfg.data.format == "arl_vtf" else read_tufts)(d, cfg, chk)
    if not data.train_subjects and not chk.problems:
        chk.add(d, None, "no training subjects")
    chk.raise_if_problems()
    (log_ or log).info("%s", data.summary())
    return data


class ImageStore:
    """Decoded images at the model size, uint8 (H, W, 3), cached: every image is read once."""

    def __init__(self, size: int, box_margin: float = 0.0):
        self.size, self.margin = size, box_margin
        self._cache: dict[tuple, np.ndarray] = {}

    def get(self, im: Image) -> np.ndarray:
        key = (im.path, im.box)
        if key not in self._cache:
            self._cache[key] = load_image(im, self.size, self.margin)
        return self._cache[key]

    def tensor(self, ims: list[Image]) -> torch.Tensor:
        """(N, 3, H, W) float in [0, 1]."""
        return to_tensor(np.stack([self.get(i) for i in ims]))


def load_image(im: Image, size: int, margin: float = 0.0) -> np.ndarray:
    """An image as RGB uint8 (size, size, 3): grey images (thermal) are repeated to 3 channels so one
    encoder serves both domains; with a box, a square crop of side max(w, h) * (1 + margin) around
    its centre (zero outside the image)."""
    from PIL import Image as PILImage

    with PILImage.open(im.path) as p:
        p = p.convert("RGB")
        if im.box is not None:
            x0, y0, x1, y1 = im.box
            cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * (1 + margin)
            p = p.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
        if p.size != (size, size):
            p = p.resize((size, size), PILImage.BILINEAR)
        return np.asarray(p, dtype=np.uint8).copy()


def to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255.0


class PairSet(Dataset):
    """Training frames: thermal, the synchronous visible frame, a visible frontal of the subject,
    the frontal target, the subject's label and the yaw. Everything decoded once into memory."""

    def __init__(self, samples: list[Sample], data: FaceData, store: ImageStore, labels: dict[str, int]):
        self.samples = samples
        self.thermal = store.tensor([s.thermal for s in samples])
        self.visible = store.tensor([s.visible for s in samples])
        self.target = store.tensor([data.targets[s.subject] for s in samples])
        # path V's frontal input: another visible frontal of the subject, cycling through them (the target when none)
        count: Counter = Counter()
        fr = []
        for s in samples:
            pool = data.frontals.get(s.subject) or [data.targets[s.subject]]
            fr.append(pool[count[s.subject] % len(pool)])
            count[s.subject] += 1
        self.frontal = store.tensor(fr)
        self.label = torch.tensor([labels.get(s.subject, -1) for s in samples], dtype=torch.long)
        self.yaw = torch.tensor([s.yaw for s in samples], dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        return {"thermal": self.thermal[i], "visible": self.visible[i], "frontal": self.frontal[i],
                "target": self.target[i], "label": self.label[i], "yaw": self.yaw[i], "index": i}


# =============================================================================== CLI

def main(argv=None) -> int:
    from common.cli import tool_parser
    from common.config import load_config
    from dal_gan.config import DEFAULTS, RULES

    ap = tool_parser(__doc__, "dal_gan")
    ap.add_argument("--generate", action="store_true", help="write the embedded set first if absent (data.embedded configs)")
    ap.add_argument("--force", action="store_true", help="with --generate: rewrite an existing embedded set")
    ap.add_argument("--build-manifest", action="store_true", help="tufts: write the manifest from the globs first")
    a = ap.parse_args(argv)
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    d = dataset_dir(cfg, a.data_root)
    if a.generate and not cfg.data.embedded:
        print(f"{a.config}: data.embedded is false ({d} is a real dataset): nothing to generate, checking it")
    elif a.generate:
        ensure_generated(cfg, a.data_root, a.force)
    if a.build_manifest:
        print(f"wrote {build_tufts_manifest(d, cfg)}")
    data = load_data(cfg, a.data_root)
    print(data.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
