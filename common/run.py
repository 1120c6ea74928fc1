"""Run directories: ``runs/<project>/<config-name>/<UTC timestamp>-s<seed>/`` holding
``config.yaml``, ``overrides.txt``, ``env.json``, ``metrics.jsonl`` (+ ``tb/``), ``train.log``,
``checkpoints/`` and, after evaluation, ``results.json``.

:func:`start_run` does the per-process set-up a ``train.py`` needs, in order: torchrun DDP,
device, seeds, determinism, run dir (made on rank 0 and broadcast), resolved config and
environment dump, logger, metric writer, and the checkpoint to resume from.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from common.config import Config, save_config
from common.log import MetricWriter, setup_logging
from common.runtime import DistInfo, broadcast_object, init_distributed, seed_everything, set_deterministic

REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pyyaml", "h5py", "einops", "tqdm",
                "tensorboard", "nvidia-ml-py", "nibabel", "matplotlib")


def runs_root(override: str | Path | None = None) -> Path:
    return Path(override or os.environ.get("RUNS_ROOT") or REPO_ROOT / "runs")


def git_sha(short: bool = False) -> str:
    """HEAD's sha (+ ``-dirty`` when tracked files differ), or ``unknown`` outside a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short" if short else "HEAD"], cwd=REPO_ROOT,
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return sha  # e.g. a busy index; the sha alone is still right
    return sha + ("-dirty" if dirty else "")


def environment(device: torch.device | str | None = None, world_size: int = 1) -> dict:
    versions = {}
    for pkg in ENV_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    env = {
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "device": str(device) if device is not None else None,
        "world_size": world_size,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "argv": sys.argv,
    }
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


def new_run_dir(project: str, config_name: str, seed: int, root: str | Path | None = None) -> Path:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    base = runs_root(root) / project / config_name
    d = base / f"{stamp}-s{seed}"
    i = 1
    while d.exists():  # two runs in the same second
        d = base / f"{stamp}-{i}-s{seed}"
        i += 1
    d.mkdir(parents=True)
    return d


def latest_checkpoint(project: str, config_name: str, seed: int, root: str | Path | None = None) -> Path | None:
    """The newest ``checkpoints/last.pt`` among runs of this project, config and seed."""
    base = runs_root(root) / project / config_name
    if not base.is_dir():
        return None
    cands = sorted(p for p in base.glob(f"*-s{seed}/checkpoints/last.pt"))
    return cands[-1] if cands else None


@dataclass
class Run:
    project: str
    config_name: str
    cfg: Config
    args: argparse.Namespace
    dist: DistInfo
    device: torch.device
    run_dir: Path
    log: logging.Logger
    metrics: MetricWriter
    resume_from: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def close(self) -> None:
        self.metrics.close()
        for h in list(self.log.handlers):
            h.flush()


def start_run(project: str, args: argparse.Namespace, cfg: Config, config_name: str | None = None) -> Run:
    """Set up one training process (see module docstring). ``args`` comes from
    :func:`common.cli.base_parser`."""
    from common.cli import config_name as _cfg_name

    cname = config_name or _cfg_name(args)
    info, device = init_distributed(args.device)
    seed_everything(args.seed, info.rank)
    if args.deterministic:
        set_deterministic(True)

    resume_from: Path | None = None
    if args.resume == "auto":
        resume_from = latest_checkpoint(project, cname, args.seed, args.runs_root)
    elif args.resume:
        resume_from = Path(args.resume)
        if not resume_from.is_file():
            raise FileNotFoundError(f"--resume {args.resume}: no such checkpoint")

    run_dir = None
    if info.is_main:
        if args.run_dir:
            run_dir = Path(args.run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
        elif resume_from is not None and resume_from.parent.name == "checkpoints":
            run_dir = resume_from.parent.parent  # continue writing into the run we resume
        else:
            run_dir = new_run_dir(project, cname, args.seed, args.runs_root)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "overrides.txt").write_text("\n".join(args.overrides) + ("\n" if args.overrides else ""))
        env = environment(device, info.world_size)
        env["cli"] = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        (run_dir / "env.json").write_text(json.dumps(env, indent=2) + "\n")
    run_dir = Path(broadcast_object(str(run_dir) if run_dir else None))

    log = setup_logging(project, run_dir, info.rank)
    metrics = MetricWriter(run_dir, info.rank, tensorboard=getattr(args, "tensorboard", True))
    log.info("run dir %s | device %s | world %d | seed %d | git %s", run_dir, device, info.world_size,
             args.seed, git_sha(short=True))
    if resume_from is not None:
        log.info("resuming from %s", resume_from)
    elif args.resume == "auto":
        log.info("--resume auto: no earlier checkpoint for %s/%s seed %d; starting fresh", project, cname, args.seed)
    return Run(project, cname, cfg, args, info, device, run_dir, log, metrics, resume_from)
