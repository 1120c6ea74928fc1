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


def setup_logging(name: str, run_dir: str | Path | None = None, rank: int = 0, level: int = logging.INFO) -> logging.Logger:
    """Logger ``name`` writing to stderr (rank 0; other ranks only errors) and ``run_dir/train.log``."""
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.addFilter(_RankFilter(rank))
    logger.addHandler(console)
    if run_dir is not None and rank == 0:
        fh = logging.FileHandler(Path(run_dir) / "train.log")
        fh.setFormatter(fmt)
        logger.addHandler(fh)
    return logger


def _jsonable(v):
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricWriter:
    """Append one JSON object per call to ``metrics.jsonl``; mirror scalars to TensorBoard.

    Only rank 0 writes; other ranks' calls are no-ops. Each record carries ``step``, ``split``,
    a wall-clock ``time`` and the metrics."""

    def __init__(self, run_dir: str | Path | None, rank: int = 0, tensorboard: bool = True):
        self.enabled = run_dir is not None and rank == 0
        self.path = Path(run_dir) / "metrics.jsonl" if run_dir is not None else None
        self._tb = None
        if self.enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tb"))
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


def read_metrics(path: str | Path) -> list[Mapping]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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
