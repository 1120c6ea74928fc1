"""Data helpers several papers need: the data root, a clear "dataset missing" error, and a
DataLoader whose order is a pure function of (seed, epoch) so that resume is exact and
DDP ranks see disjoint shards.

Data root precedence: ``--data-root`` > ``$DATA_ROOT`` > ``<repo>/data``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from common.projects import REPO_ROOT
from common.runtime import DistInfo, seed_worker


class DatasetNotFoundError(FileNotFoundError):
    """A dataset (or one of its files) is not where the config says it is."""


class DataFormatError(ValueError):
    """A data file exists but its content is malformed; the message names file and record."""


def data_root(cli_value: str | Path | None = None) -> Path:
    return Path(cli_value or os.environ.get("DATA_ROOT") or REPO_ROOT / "data")


def require_files(dataset: str, root: str | Path, expected: Sequence[str], hint: str = "") -> list[Path]:
    """Return ``root/<each expected>``; if any is missing raise one error listing all of them,
    marking which exist, so a user sees the whole expected layout at once."""
    root = Path(root)
    paths = [root / e for e in expected]
    missing = [p for p in paths if not p.exists()]
    if missing:
        lines = [f"  {'ok     ' if p.exists() else 'MISSING'} {p}" for p in paths]
        msg = f"dataset {dataset!r} not found under {root}. Expected:\n" + "\n".join(lines)
        if hint:
            msg += f"\n{hint}"
        raise DatasetNotFoundError(msg)
    return paths


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    dist: DistInfo | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader with a DistributedSampler (also for one process, so shuffling is seeded per
    epoch by :func:`set_epoch`), seeded workers and a seeded generator. ``batch_size`` is per
    process; the global batch is ``batch_size * world_size``."""
    dist = dist or DistInfo()
    sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=shuffle, seed=seed, drop_last=drop_last)
    g = torch.Generator()
    g.manual_seed(int(seed))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=collate_fn, pin_memory=pin_memory, drop_last=drop_last,
                        worker_init_fn=seed_worker, generator=g,
                        persistent_workers=persistent_workers and num_workers > 0)
    loader.base_seed = int(seed)  # type: ignore[attr-defined]
    return loader


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Make this epoch's order and worker seeds depend only on (seed, epoch)."""
    if isinstance(loader.sampler, DistributedSampler):
        loader.sampler.set_epoch(epoch)
    if loader.generator is not None:
        loader.generator.manual_seed(getattr(loader, "base_seed", 0) * 100_003 + epoch)

