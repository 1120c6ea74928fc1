"""One data checker for every project: read each array once, collect *every* problem (NaN/Inf,
wrong rank or dimension, empty, unreadable or truncated files, bad word vectors), each naming its
file and record, and raise them together before a run directory exists.

    check = DataCheck("charades_sta", mode=cfg.data.check, log=run.log)   # full | fast | off
    check.features(root / "features.h5", ids=needed_video_ids, dim=cfg.data.feature_dim or None)
    check.word_vectors(root / "glove.840B.300d.txt", words=vocab.itos[2:], dim=300)
    check.images([(s.name, s.image) for s in samples])                # dmba
    check.arrays([(case, path) for case, path in volumes], rank=3)   # lns: .npy/.nii volumes
    check.add(path, "line 17", "end before start")                    # what only the project knows
    check.skip(path, "line 18", "zero-length moment")                 # a skip policy: counted + logged
    check.raise_if_problems()                                         # DataCheckError listing them all

Modes (``--set data.check=...``): ``full`` reads every record; ``fast`` reads a deterministic
sample (:meth:`DataCheck.sample`: 2% of the records, at least 64, the same ones every time);
``off`` reads no content. Presence (every needed id has features, every listed file exists) is
checked in every mode: it costs a key listing.

Cost of ``full`` (measured; README of ``common``): reading is bound by the disk for large
feature files, and ``np.isfinite`` by memory bandwidth.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.data import DataFormatError

MODES = ("full", "fast", "off")
CHUNK_BYTES = 256 * 2**20  # arrays larger than this are checked slab by slab (bounded memory)


class DataCheckError(DataFormatError):
    """Every problem a :class:`DataCheck` found (``.problems``), one per line in the message."""

    def __init__(self, message: str, problems: list[Problem]):
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class Problem:
    file: str
    record: str | None
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.record}: {self.what}" if self.record is not None else f"{self.file}: {self.what}"


def _id(record) -> str:
    return record if isinstance(record, str) else str(record)


class DataCheck:
    """Collects problems; :meth:`raise_if_problems` raises them all at once (see module doc)."""

    def __init__(self, name: str = "dataset", mode: str = "full", *, fast_fraction: float = 0.02,
                 fast_min: int = 64, seed: int = 0, log: logging.Logger | None = None, show: int = 200):
        if mode not in MODES:
            raise ValueError(f"data check mode {mode!r}: valid: {' | '.join(MODES)}")
        self.name, self.mode, self.seed, self.show = name, mode, seed, show
        self.fast_fraction, self.fast_min = fast_fraction, fast_min
        self.log = log or logging.getLogger("common.datacheck")
        self.problems: list[Problem] = []
        self.skipped: Counter = Counter()          # (file, reason) -> count
        self.checked: Counter = Counter()          # what -> records read

    # ---------------------------------------------------------------- bookkeeping
    def add(self, file, record, what: str) -> None:
        """Record a problem (``record``: an id, a line, an index; None for the whole file)."""
        self.problems.append(Problem(str(file), None if record is None else _id(record), what))

    def skip(self, file, record, reason: str) -> None:
        """A record a skip policy drops: counted by reason and logged (never silent)."""
        self.skipped[(str(file), reason)] += 1
        self.log.debug("skipped %s: %s: %s", file, record, reason)

    def sample(self, ids: Sequence) -> list:
        """The records to read in this mode: all (``full``), a deterministic sample (``fast``: the
        same for the same ids and seed, whatever their order), or none (``off``)."""
        ids = list(ids)
        if self.mode == "full":
            return ids
        if self.mode == "off" or not ids:
            return []
        k = min(len(ids), max(self.fast_min, math.ceil(self.fast_fraction * len(ids))))
        order = sorted(range(len(ids)), key=lambda i: _id(ids[i]))
        pick = np.random.default_rng(self.seed).choice(len(ids), size=k, replace=False)
        return [ids[order[i]] for i in sorted(pick)]

    def summary(self) -> str:
        read = ", ".join(f"{n} {w}" for w, n in sorted(self.checked.items())) or "no content read"
        s = f"{self.name}: data check {self.mode}: {read}; {len(self.problems)} problem(s)"
        if self.skipped:
            s += f"; {sum(self.skipped.values())} record(s) skipped"
        return s

    def log_skips(self) -> None:
        for (file, reason), n in sorted(self.skipped.items()):
            self.log.warning("%s: skipped %d record(s): %s", file, n, reason)

    def raise_if_problems(self) -> None:
        """Log the skip counts; raise :class:`DataCheckError` listing every problem, if any."""
        self.log_skips()
        if not self.problems:
            self.log.info("%s", self.summary())
            return
        lines = [f"  {p}" for p in self.problems[: self.show]]
        if len(self.problems) > self.show:
            lines.append(f"  ... and {len(self.problems) - self.show} more (DataCheckError.problems holds all)")
        raise DataCheckError(f"{self.summary()}:\n" + "\n".join(lines), list(self.problems))

    # ---------------------------------------------------------------- arrays
    def array(self, x, file, record, *, rank: int | None = None, dim: int | None = None,
              min_len: int | None = None, finite: bool = True) -> bool:
        """Check one array (numpy, memmap or h5py dataset: read in slabs when large); records
        problems and returns whether it passed."""
        shape = tuple(x.shape)
        ok = True
        if rank is not None and len(shape) != rank:
            self.add(file, record, f"shape {shape}: rank {len(shape)}, expected rank {rank}")
            return False
        if dim is not None and (not shape or shape[-1] != dim):
            self.add(file, record, f"shape {shape}: last dimension {shape[-1] if shape else None}, expected {dim}")
            ok = False
        if min_len is not None and (not shape or shape[0] < min_len):
            self.add(file, record, f"shape {shape}: {shape[0] if shape else 0} row(s), expected at least {min_len}")
            ok = False
        dtype = np.dtype(x.dtype)
        if finite and dtype.kind in "fc" and shape and np.prod(shape) > 0:
            n_nan, n_inf, rows = _nonfinite(x)
            if n_nan or n_inf:
                where = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
                self.add(file, record, f"{n_nan} NaN and {n_inf} Inf value(s) in {len(rows)} of {shape[0]} "
                                       f"row(s) (rows {where})")
                ok = False
        elif finite and dtype.kind not in "fcbiu":
            self.add(file, record, f"dtype {dtype} is not numeric")
            ok = False
        return ok

    def load(self, file, record, fn: Callable, **checks):
        """``fn()`` reads one record; an exception is recorded as unreadable (with its message)
        and the array checks run on what it returns. Returns the array or None."""
        try:
            x = fn()
            self.array(x, file, record, **checks)  # reads the content (slab by slab)
        except Exception as e:  # noqa: BLE001 - every reader's failure is a problem to report
            self.add(file, record, f"unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return None
        return x

    def arrays(self, items: Iterable[tuple], *, rank: int | None = None, dim: int | None = None,
               min_len: int | None = None, loader: Callable | None = None) -> None:
        """Check ``(record, path)`` items: ``.npy`` files memory-mapped (a truncated file is
        reported, not crashed on), anything else through ``loader(path)`` (nibabel for volumes)."""
        items = list(items)
        for record, path in items:
            if not Path(path).is_file():
                self.add(path, record, "missing file")
        todo = [(r, p) for r, p in items if Path(p).is_file()]
        for record, path in self.sample(todo):
            fn = (lambda p=path: loader(p)) if loader is not None else (lambda p=path: _read_npy(p))
            self.load(path, record, fn, rank=rank, dim=dim, min_len=min_len)
            self.checked["arrays"] += 1

    # ---------------------------------------------------------------- feature stores
    def features(self, path, ids: Iterable[str] | None = None, *, rank: int = 2, dim: int | None = None,
                 min_len: int = 1) -> dict[str, tuple]:
        """A feature store keyed by record id: an HDF5 file (a dataset, or a group holding one
        dataset, per id) or a folder of ``<id>.npy``. ``ids``: the ids the annotations need
        (missing ones are problems; None: every id in the store). ``dim``: the expected last
        dimension; None: the most common one, and every record that differs is reported.
        Returns ``{id: shape}`` of the records read."""
        path = Path(path)
        if not path.exists():
            self.add(path, None, "feature store not found (an .h5/.hdf5 file or a folder of <id>.npy)")
            return {}
        if path.is_dir():
            keys = {p.stem for p in path.glob("*.npy")}
            reader = _NpyStore(path)
        else:
            try:
                reader = _H5Store(path)
                keys = reader.keys()
            except Exception as e:  # noqa: BLE001 - h5py raises OSError/ValueError/KeyError for damaged files
                self.add(path, None, f"unreadable HDF5 file (truncated or not HDF5): {str(e).splitlines()[0]}")
                return {}
        try:
            want = sorted(keys) if ids is None else sorted(set(ids))
            missing = [i for i in want if i not in keys]
            for i in missing:
                self.add(path, i, "no features for this id")
            shapes: dict[str, tuple] = {}
            for rid in self.sample([i for i in want if i in keys]):
                x = self.load(path, rid, lambda r=rid: reader.get(r), rank=rank, min_len=min_len, finite=True)
                self.checked["feature records"] += 1
                if x is not None:
                    shapes[rid] = tuple(x.shape)
            self._dims(path, shapes, rank, dim)
            return shapes
        finally:
            reader.close()

    def _dims(self, path: Path, shapes: dict[str, tuple], rank: int, dim: int | None) -> None:
        dims = Counter(s[-1] for s in shapes.values() if len(s) == rank and s)
        if not dims:
            return
        expected = dim if dim is not None else dims.most_common(1)[0][0]
        why = "the config's" if dim is not None else f"the {dims[expected]} other records'"
        for rid, s in shapes.items():
            if len(s) == rank and s and s[-1] != expected:
                self.add(path, rid, f"shape {s}: {s[-1]}-d features, expected {expected}-d ({why})")

    # ---------------------------------------------------------------- word vectors
    def word_vectors(self, path, words: Iterable[str] | None = None, dim: int | None = None) -> int:
        """A GloVe-format text file (``word v1 ... vd`` per line): for the lines of ``words`` (all
        lines when None), the number of values, that they parse, and that they are finite, naming
        the line and the word. Returns the number of vectors read."""
        path = Path(path)
        if not path.is_file():
            self.add(path, None, "word-vector file not found")
            return 0
        want = None if words is None else set(words)
        if want is not None and self.mode == "fast":
            want = set(self.sample(sorted(want)))
        if self.mode == "off":
            return 0
        n = 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\n").rstrip(" ")
                if not line:
                    continue
                word = line.split(" ", 1)[0]
                if dim is None:
                    dim = len(line.split(" ")) - 1
                if want is not None and word not in want and word.lower() not in want:
                    continue
                parts = line.split(" ")[1:]
                where = f"line {lineno} ({word!r})"
                if len(parts) != dim:
                    self.add(path, where, f"{len(parts)} values, expected {dim}")
                    continue
                try:
                    vec = np.asarray(parts, dtype=np.float64)
                except ValueError as e:
                    self.add(path, where, f"values do not parse as numbers ({e})")
                    continue
                if not np.isfinite(vec).all():
                    self.add(path, where, f"{int(np.isnan(vec).sum())} NaN and {int(np.isinf(vec).sum())} Inf value(s)")
                n += 1
        self.checked["word vectors"] += n
        return n

    # ---------------------------------------------------------------- images
    def images(self, items: Iterable[tuple], *, min_size: int = 1, modes: Sequence[str] | None = None) -> None:
        """``(record, path)`` images: present, decodable (a truncated JPEG/PNG is reported), at
        least ``min_size`` pixels a side, one of ``modes`` (PIL modes) when given."""
        from PIL import Image

        items = list(items)
        for record, path in items:
            if not Path(path).is_file():
                self.add(path, record, "missing image")
        for record, path in self.sample([(r, p) for r, p in items if Path(p).is_file()]):
            self.checked["images"] += 1
            try:
                with Image.open(path) as im:
                    im.load()
                    size, mode = im.size, im.mode
            except Exception as e:  # noqa: BLE001 - PIL raises several types for damaged files
                self.add(path, record, f"unreadable image: {type(e).__name__}: {e}")
                continue
            if min(size) < min_size:
                self.add(path, record, f"image is {size[0]}x{size[1]}, smaller than {min_size} px")
            if modes is not None and mode not in modes:
                self.add(path, record, f"image mode {mode}, expected one of {list(modes)}")


def _nonfinite(x) -> tuple[int, int, list[int]]:
    """NaN count, Inf count and the indices (along the first axis) holding any, slab by slab."""
    n0 = int(x.shape[0])
    row_bytes = max(1, int(np.prod(x.shape[1:], dtype=np.int64)) * np.dtype(x.dtype).itemsize)
    step = max(1, CHUNK_BYTES // row_bytes)
    n_nan = n_inf = 0
    rows: list[int] = []
    for a in range(0, n0, step):
        chunk = np.asarray(x[a:a + step])
        fin = np.isfinite(chunk)
        if fin.all():
            continue
        nan = np.isnan(chunk)
        n_nan += int(nan.sum())
        n_inf += int((~fin & ~nan).sum())
        bad = ~fin.reshape(chunk.shape[0], -1).all(axis=1) if chunk.ndim > 1 else ~fin
        rows.extend((np.flatnonzero(bad) + a).tolist())
    return n_nan, n_inf, rows


def _read_npy(path):
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{e} (file size {Path(path).stat().st_size} bytes: truncated?)") from e


class _NpyStore:
    def __init__(self, path: Path):
        self.path = path

    def get(self, rid: str):
        return _read_npy(self.path / f"{rid}.npy")

    def close(self) -> None:
        pass


class _H5Store:
    def __init__(self, path: Path):
        import h5py

        self.path = path
        self.f = h5py.File(path, "r")

    def keys(self) -> set[str]:
        return set(self.f.keys())

    def get(self, rid: str):
        import h5py

        item = self.f[rid]
        if isinstance(item, h5py.Group):
            dsets = [k for k in item if isinstance(item[k], h5py.Dataset)]
            if len(dsets) != 1:
                raise ValueError(f"group holds {len(dsets)} datasets {dsets}; expected one")
            item = item[dsets[0]]
        return item  # a Dataset: read slab by slab

    def close(self) -> None:
        self.f.close()


def bench(videos: int, clips: int = 200, dim: int = 500, folder: str | Path | None = None) -> dict:
    """Time ``features()`` in each mode on a synthetic HDF5 store of ``videos`` x [clips, dim]
    float32, from a cold page cache (``posix_fadvise(DONTNEED)``; Linux) and again warm."""
    import tempfile
    import time

    import h5py

    tmp = tempfile.TemporaryDirectory(dir=folder)
    path = Path(tmp.name) / "features.h5"
    rng = np.random.default_rng(0)
    block = rng.standard_normal((clips, dim)).astype(np.float32)
    with h5py.File(path, "w") as f:
        for i in range(videos):
            f.create_dataset(f"v_{i:06d}", data=block + np.float32(i))
    size = path.stat().st_size
    out = {"videos": videos, "clips": clips, "dim": dim, "bytes": size}

    def drop_cache() -> bool:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            return True
        except (AttributeError, OSError):
            return False
        finally:
            os.close(fd)

    for label, mode, cold in (("full_cold", "full", True), ("full_warm", "full", False), ("fast_cold", "fast", True)):
        if cold:
            out["cache_dropped"] = drop_cache()
        t0, c0 = time.perf_counter(), time.process_time()
        check = DataCheck("bench", mode)
        check.features(path, dim=dim)
        out[label] = {"wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3),
                      "records": check.checked["feature records"], "problems": len(check.problems)}
    t0 = time.perf_counter()
    for _ in range(20):
        np.isfinite(block).all()
    out["isfinite_GBps"] = round(20 * block.nbytes / (time.perf_counter() - t0) / 1e9, 2)
    tmp.cleanup()
    return out


def main(argv=None) -> int:
    """``python -m common.datacheck STORE [--dim D] [--mode full|fast|off]``: check a feature store
    (HDF5 keyed by id, or a folder of <id>.npy); ``--bench N``: time the check on N synthetic videos."""
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("store", nargs="?")
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--mode", default="full", choices=MODES)
    ap.add_argument("--bench", type=int, default=None, metavar="N")
    ap.add_argument("--bench-dir", default=None, help="where the synthetic file is written (default: $TMPDIR)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if a.bench:
        print(json.dumps(bench(a.bench, folder=a.bench_dir), indent=2))
        return 0
    if not a.store:
        ap.error("give a feature store or --bench N")
    check = DataCheck(a.store, a.mode)
    check.features(a.store, dim=a.dim)
    try:
        check.raise_if_problems()
    except DataCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"ok: {check.summary()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
