"""Logging: a rank-0 console/file logger, ``metrics.jsonl`` (the source of truth) mirrored to
TensorBoard, and tqdm progress bars shown on rank 0 only."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from tqdm import tqdm


class _RankFilter(logging.Filter):
    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.ERROR


FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")


class BufferHandler(logging.Handler):
    """Keeps records until a run directory exists (messages from the data check, the resume
    check...), then :func:`attach_file` replays them into ``train.log``."""

    def __init__(self, capacity: int = 100_000):
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.capacity = capacity

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.capacity:
            self.records.append(record)


def setup_logging(name: str, run_dir: str | Path | None = None, rank: int = 0, level: int = logging.INFO,
                  buffer: bool = False) -> logging.Logger:
    """Logger ``name`` writing to stderr (rank 0; other ranks only errors) and ``run_dir/train.log``
    (appended to, so a resumed run continues its log). ``buffer=True`` without a ``run_dir`` keeps
    the records for :func:`attach_file`."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(FORMAT)
    console.addFilter(_RankFilter(rank))
    logger.addHandler(console)
    if run_dir is not None and rank == 0:
        attach_file(logger, run_dir)
    elif buffer and rank == 0:
        logger.addHandler(BufferHandler())
    return logger


def attach_file(logger: logging.Logger, run_dir: str | Path, name: str = "train.log") -> logging.FileHandler:
    """Add ``run_dir/<name>`` to ``logger`` and replay whatever a :class:`BufferHandler` kept."""
    fh = logging.FileHandler(Path(run_dir) / name)
    fh.setFormatter(FORMAT)
    for h in list(logger.handlers):
        if isinstance(h, BufferHandler):
            logger.removeHandler(h)
            for rec in h.records:
                fh.handle(rec)
    logger.addHandler(fh)
    return fh


def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricWriter:
    """Append one JSON object per call to ``metrics.jsonl``; mirror scalars to TensorBoard.

    Only rank 0 writes; other ranks' calls are no-ops. Each record carries ``step``, ``split``,
    a wall-clock ``time`` and the metrics.

    ``resume_step``: the run continues from a checkpoint at that step, so records a killed run
    wrote after it (``step > resume_step``) are dropped from ``metrics.jsonl`` (they are logged
    again by the resumed run) and TensorBoard purges them (``purge_step``)."""

    def __init__(self, run_dir: str | Path | None, rank: int = 0, tensorboard: bool = True,
                 resume_step: int | None = None):
        self.enabled = run_dir is not None and rank == 0
        self.path = Path(run_dir) / "metrics.jsonl" if run_dir is not None else None
        self.dropped = 0
        self._tb = None
        if self.enabled and resume_step is not None and self.path.is_file():
            self.dropped = truncate_metrics(self.path, resume_step)
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge = None if resume_step is None else int(resume_step) + 1
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"), purge_step=purge)
            except ImportError:  # tensorboard is pinned; keep jsonl working if it is absent
                self._tb = None

    def log(self, step: int, split: str = "train", **metrics) -> None:
        if not self.enabled:
            return
        rec = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        rec.update({k: _jsonable(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            for k, v in rec.items():
                if k in ("step", "split", "time"):
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep the records of ``metrics.jsonl`` with ``step <= step`` (atomically); return how many
    were dropped. A half-written last line (a kill mid-write) is dropped too."""
    path = Path(path)
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if int(rec.get("step", 0)) <= step:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(x + "\n" for x in keep))
        tmp.replace(path)
    return dropped


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSON-lines file. A last line cut short (a process killed mid-write: no final
    newline) is dropped with a warning; a malformed line elsewhere is a ``ValueError`` naming the
    file and the line."""
    path = Path(path)
    text = path.read_text()
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) and not text.endswith("\n"):
                logging.getLogger("common.log").warning("%s: line %d is cut short (an interrupted write); "
                                                        "ignored", path, i)
                continue
            raise ValueError(f"{path}: line {i} is not valid JSON ({e.msg}): {line[:120]!r}") from e
    return out


def read_metrics(path: str | Path) -> list[Mapping]:
    return read_jsonl(path)


def progress(iterable: Iterable, rank: int = 0, **kw):
    """tqdm on rank 0 (``disable`` elsewhere). On a non-TTY stream it updates at most every 30 s,
    so CI and log files are not flooded."""
    if rank != 0:
        kw["disable"] = True
    elif not sys.stderr.isatty():
        kw.setdefault("mininterval", 30.0)
    kw.setdefault("dynamic_ncols", True)
    kw.setdefault("leave", False)
    return tqdm(iterable, **kw)
