"""Run directories and the life cycle of a training or evaluation process.

A run lives in ``runs/<project>/<config-name>/<UTC stamp>-s<seed>/``::

    config.yaml     the resolved config (a resume that changes a resumable key rewrites it;
                    env.json keeps the old value)
    overrides.txt   the --set items the run was started with
    env.json        git sha, packages, device, world size, CLI; "resumes": one entry per resume
    train.log       everything the run logged, including what happened before the directory
                    existed (data check, resume check) and the error that stopped it
    metrics.jsonl   one JSON record per log call (+ tb/ for TensorBoard)
    checkpoints/last.pt
    run.lock        the PID of the process writing here (while it runs)
    results.json    written by eval (plus its figures)

Training (the order matters: nothing is written until everything has been checked)::

    run = start_run(project, args, cfg, resumable=RESUMABLE)  # DDP, device, seeds; checks a resume; writes nothing
    data = load_data(...)                                     # the project validates its data
    run.open()                                                # run dir, lock, record, train.log
    start_epoch, step = run.resume(model=m, optimizer=o, scheduler=s, scaler=sc)   # (0, 0) when fresh
    for epoch in range(start_epoch, cfg.train.epochs):
        ...                                                   # check_step(parts, model, step, epoch) each step
        run.metrics.log(step, "train", epoch=epoch + 1, ...)  # log an epoch's metrics before saving it
        run.save(model=m, optimizer=o, scheduler=s, scaler=sc, epoch=epoch + 1, step=step)  # every rank
    run.close()

Exact resume: a checkpoint is taken at an epoch boundary and holds every rank's RNG states
(python, numpy, torch CPU, the rank's CUDA device); the data order and DataLoader worker seeds
are a function of (seed, epoch) (:func:`common.data.set_epoch`). A run killed at any point
resumes from its last checkpoint and continues exactly as the uninterrupted run would (records
the killed run logged after that checkpoint are dropped from metrics.jsonl). A checkpoint
written by N processes resumes with N processes; ``--allow-world-size-change`` resumes it with
another number (weights and optimizer restored; the per-rank RNG streams restart: not exact).

Evaluation::

    ev = start_eval(project, args, DEFAULTS, RULES)   # --checkpoint | --run-dir | latest run of config+seed
    model = build_model(ev.cfg, ...); ev.load_weights(model)
    ev.write_results(dataset=..., split=..., metrics=..., baselines=...)   # into the run dir or --out
"""

from __future__ import annotations

import argparse
import datetime as _dt
import errno
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from common.checkpoint import (
    RUN_SCHEMA_VERSION,
    CheckpointError,
    atomic_save,
    capture_rng,
    load_state_into,
    restore_training_state,
    safe_load,
    to_plain,
    training_state,
)
from common.config import Config, ConfigError, Rule, diff_configs, parse_override, read_yaml, resolve_onto, save_config
from common.log import MetricWriter, attach_file, setup_logging
from common.projects import REPO_ROOT
from common.runtime import (
    DistInfo,
    NonFiniteError,
    all_gather_objects,
    broadcast_object,
    cleanup_distributed,
    first_nonfinite,
    init_distributed,
    resolve_device,
    seed_everything,
    set_deterministic,
    unwrap,
)

ENV_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pyyaml", "h5py", "einops", "tqdm",
                "tensorboard", "nvidia-ml-py", "nibabel", "matplotlib")
LOCK_NAME = "run.lock"


class RunError(RuntimeError):
    """The run cannot start or continue as asked (run dir in use, no checkpoint, ...)."""


class RunInUseError(RunError):
    """Another live process holds the run directory's lock."""


class ResumeError(ValueError):
    """A ``--resume`` that would not continue the same experiment (config, seed, world size)."""


# --------------------------------------------------------------------------- paths and record

def runs_root(override: str | Path | None = None) -> Path:
    return Path(override or os.environ.get("RUNS_ROOT") or REPO_ROOT / "runs")


def git_sha(short: bool = False) -> str:
    """HEAD's sha (+ ``-dirty`` when tracked files differ), or ``unknown`` outside a checkout."""
    cmd = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
    try:
        sha = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30,
                             check=True).stdout.strip()
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


def check_name(name: str, what: str = "config name") -> str:
    """A run-path component must be one plain folder name: no separators, no ``..``."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise ConfigError(f"{what} {name!r} is not a plain folder name (it would leave runs/<project>/): "
                          f"use letters, digits, '-', '_' and '.'")
    return name


def _stamp() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")


def _fresh_path(project: str, config_name: str, seed: int, root: str | Path | None = None) -> Path:
    base = runs_root(root) / project / config_name
    stamp = _stamp()
    d, i = base / f"{stamp}-s{seed}", 1
    while d.exists():  # two runs in the same second
        d = base / f"{stamp}-{i}-s{seed}"
        i += 1
    return d


def new_run_dir(project: str, config_name: str, seed: int, root: str | Path | None = None) -> Path:
    """Create and return a fresh ``runs/<project>/<config_name>/<stamp>-s<seed>`` (for tools that
    keep their own record, e.g. migperf)."""
    for _ in range(100):
        d = _fresh_path(project, check_name(config_name), seed, root)
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise RunError(f"could not create a fresh run directory under {d.parent}")


_RUN_NAME = re.compile(r"^(\d{8}T\d{6})(?:-(\d+))?-s(-?\d+)$")


def _age_key(d: Path) -> tuple:
    m = _RUN_NAME.match(d.name)
    return (m.group(1), int(m.group(2) or 0)) if m else ("", 0)


def read_overrides(run_dir: Path) -> list[str]:
    p = Path(run_dir) / "overrides.txt"
    return [x for x in p.read_text().splitlines() if x.strip()] if p.is_file() else []


def _prefix_match(key: str, keys: Iterable[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in keys)


def normalize_overrides(overrides: Iterable[str], ignore: Iterable[str] = ()) -> dict:
    """``--set`` items as ``{key: parsed value}`` (the last one wins), without the ``ignore`` keys:
    ``lr=1e-3`` and ``lr=0.001`` are the same override."""
    ignore = tuple(ignore)
    out = {}
    for item in overrides:
        k, v = parse_override(item)
        if not _prefix_match(k, ignore):
            out[k] = v
    return out


def find_runs(project: str, config_name: str, seed: int, root: str | Path | None = None,
              overrides: Iterable[str] | None = None, ignore: Iterable[str] = ()) -> list[Path]:
    """Run directories of this project, config and seed holding ``checkpoints/last.pt``, newest
    first; with ``overrides``, only those started with the same ``--set`` items (``ignore``: keys
    left out of the comparison, e.g. the resumable ones)."""
    base = runs_root(root) / project / config_name
    if not base.is_dir():
        return []
    runs = [d for d in base.glob(f"*-s{seed}") if (d / "checkpoints" / "last.pt").is_file()]
    if overrides is not None:
        want = normalize_overrides(overrides, ignore)
        runs = [d for d in runs if normalize_overrides(read_overrides(d), ignore) == want]
    return sorted(runs, key=_age_key, reverse=True)


def latest_checkpoint(project: str, config_name: str, seed: int, root: str | Path | None = None,
                      overrides: Iterable[str] | None = None, ignore: Iterable[str] = ()) -> Path | None:
    """The newest ``checkpoints/last.pt`` among runs of this project, config and seed (and
    ``overrides``, when given: see :func:`find_runs`)."""
    runs = find_runs(project, config_name, seed, root, overrides, ignore)
    return runs[0] / "checkpoints" / "last.pt" if runs else None


def is_run_dir(d: Path) -> bool:
    return (d / "env.json").is_file() or (d / "config.yaml").is_file()


def _run_dir_of(ckpt: Path) -> Path | None:
    d = ckpt.parent.parent
    return d if ckpt.parent.name == "checkpoints" and is_run_dir(d) else None


def _load_checkpoint(path: Path) -> dict:
    """Read a checkpoint lazily (memory-mapped when possible): validating a resume costs little and
    the tensors are read when :meth:`Run.resume` loads them."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - fall back to the plain reader, which names the file on errors
        state = safe_load(path)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (no 'model' entry)")
    return state


# --------------------------------------------------------------------------- lock

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(text: str) -> tuple[int | None, str]:
    parts = text.split()
    try:
        return int(parts[0]), (parts[1] if len(parts) > 1 else "?")
    except (IndexError, ValueError):
        return None, "?"


_HELD: dict[str, RunLock] = {}  # locks this process holds, by path (see RunLock.acquire)


class RunLock:
    """``run.lock`` in a run directory: an ``flock`` held for the process's lifetime (the kernel
    drops it when the process dies, even by SIGKILL) and the owner's PID and host written inside
    for messages. Where ``flock`` is unavailable (some network file systems) the PID alone decides."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def holder(self) -> str | None:
        """``"PID n on host h"`` when a live process holds the lock, else ``None`` (nothing taken)."""
        if not self.path.exists():
            return None
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            except BlockingIOError:
                pass
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                pid, host = _owner(self.path.read_text())
                if pid is None or host != socket.gethostname() or not _pid_alive(pid):
                    return None
            pid, host = _owner(self.path.read_text())
            if str(self.path) in _HELD and pid == os.getpid():
                return None  # our own unclosed run object: acquire() takes it over
            return f"PID {pid} on host {host}"
        finally:
            os.close(fd)

    def acquire(self, log: logging.Logger) -> None:
        import fcntl

        stale = _HELD.get(str(self.path))
        if stale is not None:  # a Run object of this process that never closed (an exception in a notebook/test)
            log.warning("%s was held by an earlier run object of this process that did not close; taking it over",
                        self.path)
            stale.release()
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunInUseError(self._in_use(self.holder() or "another process")) from None
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                pid, host = _owner(os.pread(fd, 200, 0).decode(errors="replace"))
                if pid not in (None, os.getpid()) and host == socket.gethostname() and _pid_alive(pid):
                    os.close(fd)
                    raise RunInUseError(self._in_use(f"PID {pid} on host {host}")) from None
            try:  # the file we locked must still be the one at the path (a releasing owner unlinks it)
                if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                    os.close(fd)
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            old = os.pread(fd, 200, 0).decode(errors="replace").strip()
            pid, host = _owner(old)
            if old and pid != os.getpid():
                state = "no longer running" if (host == socket.gethostname() and pid and not _pid_alive(pid)) \
                    else "holding no lock"
                log.warning("taking over the stale lock %s of PID %s on host %s (%s)", self.path, pid, host, state)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {_stamp()}\n".encode(), 0)
            self.fd = fd
            _HELD[str(self.path)] = self
            return
        raise RunError(f"could not take the lock {self.path}")

    def _in_use(self, who: str) -> str:
        return (f"run directory {self.path.parent} is in use by {who} (lock file {self.path}): a second "
                f"writer would interleave checkpoints and logs. Wait for it to finish or stop it; a lock "
                f"left by a process that died is taken over automatically.")

    def release(self) -> None:
        if self.fd is None:
            return
        _HELD.pop(str(self.path), None)
        try:
            if os.fstat(self.fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None


# --------------------------------------------------------------------------- collective helper

def _on_main(info: DistInfo, fn, collective: bool = True):
    """Run ``fn()`` on rank 0 and give every rank its result; an error on rank 0 is raised on
    every rank (rank 0 raises the original)."""
    result, error = None, None
    if info.is_main:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    if info.distributed and collective:
        msg = None if error is None else f"{type(error).__name__}: {error}"
        result, msg = broadcast_object((result, msg))
        if msg is not None and error is None:
            raise RunError(f"rank 0 failed: {msg}")
    if error is not None:
        raise error
    return result


def _nonfinite_state(model: torch.nn.Module | None, optimizer: Any, more: Mapping[str, Any]) -> str | None:
    named: list[tuple[str, torch.Tensor]] = []
    names: dict[int, str] = {}

    def module(prefix: str, m: torch.nn.Module) -> None:
        m = unwrap(m)
        for n, p in m.named_parameters():
            names.setdefault(id(p), prefix + n)
            named.append((f"parameter {prefix}{n}", p))
        named.extend((f"buffer {prefix}{n}", b) for n, b in m.named_buffers())

    def optim(label: str, o: Any) -> None:
        for p, st in getattr(o, "state", {}).items():
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    named.append((f"{label} state {k!r} of {names.get(id(p), 'a parameter')}", v))

    if model is not None:
        module("", model)
    for k, v in more.items():
        if isinstance(v, torch.nn.Module):
            module(f"{k}.", v)
    if optimizer is not None:
        optim("optimizer", optimizer)
    for k, v in more.items():
        if isinstance(v, torch.optim.Optimizer):
            optim(k, v)
    return first_nonfinite(named)


# --------------------------------------------------------------------------- training run

class Run:
    """One training process's run: see the module docstring. Attributes: ``project``,
    ``config_name``, ``cfg``, ``args``, ``dist``, ``device``, ``log``, ``resume_from`` (the
    checkpoint being resumed, or None), ``resume_changed`` (resumable keys a resume changes:
    ``{key: (checkpoint value, requested value)}``), ``run_dir``, ``ckpt_dir``, ``metrics``."""

    def __init__(self, *, project: str, config_name: str, cfg: Config, args: argparse.Namespace,
                 dist: DistInfo, device: torch.device, log: logging.Logger, run_dir: Path,
                 resume_from: Path | None, resume_state: dict | None, resume_changed: dict,
                 resumable: tuple[str, ...]):
        self.project, self.config_name, self.cfg, self.args = project, config_name, cfg, args
        self.dist, self.device, self.log = dist, device, log
        self.resume_from, self.resume_changed, self.resumable = resume_from, resume_changed, resumable
        self.resume_info: dict | None = None
        self._resume_state = resume_state
        self._run_dir = run_dir
        self._opened = False
        self._lock: RunLock | None = None
        self._metrics: MetricWriter | None = None
        self._prev_hook = None
        self._last_good: tuple[Path, int, int] | None = None
        if resume_state is not None:
            self._last_good = (resume_from, int(resume_state.get("epoch", 0)), int(resume_state.get("step", 0)))
        self._git = None

    def _require_open(self, what: str) -> None:
        if not self._opened:
            raise RunError(f"run.{what} is used before run.open(): nothing of the run exists yet. Call run.open() "
                           f"(on every rank) once the data is checked; run.planned_dir names the directory before "
                           f"then ({self._run_dir})")

    @property
    def run_dir(self) -> Path:
        self._require_open("run_dir")
        return self._run_dir

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def metrics(self) -> MetricWriter:
        self._require_open("metrics")
        return self._metrics

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    @property
    def planned_dir(self) -> Path:
        """Where the run will be written (nothing exists there before :meth:`open`)."""
        return self._run_dir

    # ---- open ----------------------------------------------------------------------------------
    def open(self) -> Run:
        """Create (or continue) the run directory, take its lock, write the record and start
        ``train.log`` (replaying what was logged so far). Call it on every rank, after the data
        has been checked. Returns the run."""
        if not self._opened:
            self._open()
        return self

    def _open(self) -> None:
        self._run_dir = Path(_on_main(self.dist, self._open_main))
        self._opened = True
        step = None if self._resume_state is None else int(self._resume_state.get("step", 0))
        self._metrics = MetricWriter(self._run_dir, self.dist.rank, tensorboard=getattr(self.args, "tensorboard", True),
                                     resume_step=step)
        self._prev_hook = sys.excepthook
        sys.excepthook = self._excepthook
        self.log.info("run dir %s | device %s | world %d | seed %d | git %s", self._run_dir, self.device,
                      self.dist.world_size, self.args.seed, self._git_short())
        if self.resume_from is not None:
            self.log.info("resuming from %s (epoch %s, step %s)%s", self.resume_from, self._resume_state.get("epoch"),
                          step, "; changed: " + _fmt_changes(self.resume_changed) if self.resume_changed else "")
            if self._metrics.dropped:
                self.log.info("dropped %d metric record(s) the interrupted run logged after step %d",
                              self._metrics.dropped, step)

    def _git_short(self) -> str:
        if self._git is None:
            self._git = git_sha(short=True)
        return self._git

    def _open_main(self) -> str:
        d = self._run_dir
        created = False
        if not d.exists():
            try:
                d.mkdir(parents=True)
            except FileExistsError:  # another run took the same name in the same second
                d = _fresh_path(self.project, self.config_name, self.args.seed, self.args.runs_root)
                d.mkdir(parents=True)
            created = True
        lock = RunLock(d)
        try:
            lock.acquire(self.log)
            self._write_record(d)
            attach_file(self.log, d)
        except BaseException:
            lock.release()
            if created:
                shutil.rmtree(d, ignore_errors=True)
            raise
        self._lock = lock
        return str(d)

    def _write_record(self, d: Path) -> None:
        env_path = d / "env.json"
        cli = {k: v for k, v in vars(self.args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        if self.resume_from is not None and env_path.is_file():
            env = json.loads(env_path.read_text())
        else:
            env = environment(self.device, self.dist.world_size)
            env["cli"] = cli
            env["run"] = {"project": self.project, "config_name": self.config_name, "seed": self.args.seed}
            (d / "overrides.txt").write_text("".join(x + "\n" for x in self.args.overrides))
        if self.resume_from is not None:
            env.setdefault("resumes", []).append({
                "time": _stamp(), "checkpoint": str(self.resume_from),
                "epoch": int(self._resume_state.get("epoch", 0)), "step": int(self._resume_state.get("step", 0)),
                "changed": {k: list(v) for k, v in self.resume_changed.items()},
                "overrides": list(self.args.overrides), "argv": sys.argv, "git_sha": git_sha(),
                "world_size": self.dist.world_size, "pid": os.getpid(), "cli": cli,
            })
        if self.resume_from is None or self.resume_changed or not (d / "config.yaml").is_file():
            save_config(self.cfg, d / "config.yaml")
        tmp = env_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(env, indent=2) + "\n")
        tmp.replace(env_path)

    # ---- resume --------------------------------------------------------------------------------
    def resume(self, model: torch.nn.Module | None = None, optimizer: Any = None, scheduler: Any = None,
               scaler: Any = None, **more_modules: Any) -> tuple[int, int]:
        """Load the checkpoint being resumed into the objects given and restore this rank's RNG
        states; returns ``(start_epoch, step)``, ``(0, 0)`` for a fresh run. Call it after every
        object it restores has been built (model construction draws from the RNG)."""
        state = self._resume_state
        if state is None:
            return 0, 0
        world = self.dist.world_size
        rng = state.get("rng")
        per_rank = isinstance(rng, list)
        saved_world = len(rng) if per_rank else 1
        rank = self.dist.rank
        restore = True
        if per_rank and rank >= saved_world:
            restore = False  # --allow-world-size-change: this rank keeps its fresh seed
        if saved_world != world:
            self.log.warning("resuming a checkpoint of %d process(es) with %d: weights and optimizer are restored, "
                             "RNG streams %s; the continuation is not exact", saved_world, world,
                             "are shared by every rank (single RNG state)" if not per_rank else "restart on new ranks")
        restore_training_state(state, self.resume_from, model=model, optimizer=optimizer, scheduler=scheduler,
                               scaler=scaler, restore_rng_state=restore, rank=min(rank, saved_world - 1),
                               **more_modules)
        epoch, step = int(state["epoch"]), int(state["step"])
        self.resume_info = {"checkpoint": str(self.resume_from), "epoch": epoch, "step": step,
                            "extra": state.get("extra") or {}}
        self._resume_state = None  # release the mapping
        self.log.info("resumed %s at epoch %d step %d", self.resume_from, epoch, step)
        return epoch, step

    # ---- save ----------------------------------------------------------------------------------
    def save(self, *, model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None, scaler: Any = None,
             epoch: int, step: int, extra: dict | None = None, name: str = "last.pt", **more_modules: Any) -> Path:
        """Write ``checkpoints/<name>``: collective, call it on every rank. Every rank's RNG states
        are gathered and rank 0 writes the file atomically (readable, ``0644`` under umask 022).
        A NaN/Inf parameter, buffer or optimizer state is refused with :class:`NonFiniteError`
        naming the tensor; the previous checkpoint stays. ``epoch`` = completed epochs."""
        self._require_open("save()")
        bad = _nonfinite_state(model, optimizer, more_modules)
        cuda = self.device if self.device.type == "cuda" else None
        gathered = all_gather_objects((capture_rng(cuda), bad))
        bads = [(r, b) for r, (_, b) in enumerate(gathered) if b]
        if bads:
            r, b = bads[0]
            raise NonFiniteError(f"refusing to save a non-finite state at epoch {epoch} step {step} "
                                 f"(rank {r}): {b}. {self._kept()}")
        path = self._run_dir / "checkpoints" / name

        def write() -> str:
            state = training_state(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                   epoch=epoch, step=step, **more_modules)
            state.update({
                "schema_version": RUN_SCHEMA_VERSION,
                "rng": [g[0] for g in gathered], "world_size": self.dist.world_size,
                "config": self.cfg.to_dict(), "config_name": self.config_name, "project": self.project,
                "seed": int(self.args.seed), "overrides": list(self.args.overrides),
                "git_sha": self._git_short(), "extra": extra or {},
            })
            model_sd = state.pop("model")  # tensors only; keeps its _metadata (module versions)
            return str(atomic_save({"model": model_sd, **to_plain(state)}, path))

        _on_main(self.dist, write)
        self._last_good = (path, int(epoch), int(step))
        return path

    def _kept(self) -> str:
        if self._last_good is None:
            return "No checkpoint has been written by this run yet."
        p, e, s = self._last_good
        return f"The last good checkpoint is kept: {p} (epoch {e}, step {s}); resume with --resume {p}."

    # ---- close and failures --------------------------------------------------------------------
    def _log_failure(self, exc: BaseException) -> None:
        """The error that ends training, into train.log (the console already shows it)."""
        files = [h for h in self.log.handlers if isinstance(h, logging.FileHandler)]
        if not files:
            return
        msg = f"training stopped: {type(exc).__name__}: {exc}"
        if isinstance(exc, NonFiniteError):
            msg += f"\n{self._kept()}"
        rec = self.log.makeRecord(self.log.name, logging.ERROR, __file__, 0, msg, (),
                                  (type(exc), exc, exc.__traceback__))
        for h in files:
            h.handle(rec)
            h.flush()

    def _excepthook(self, exc_type, exc, tb) -> None:
        try:
            self._log_failure(exc)
            self._release()
        finally:
            (self._prev_hook or sys.__excepthook__)(exc_type, exc, tb)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self._log_failure(exc)
            self._release()

    def _release(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
        for h in self.log.handlers:
            h.flush()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._prev_hook or sys.__excepthook__

    def close(self) -> None:
        """Flush the metric writer and the log, release the lock, leave the process group."""
        self._release()
        cleanup_distributed()


def _fmt_changes(changes: Mapping[str, tuple]) -> str:
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())


def _checkpoint_seed(state: dict, run_dir: Path | None) -> int | None:
    if state.get("seed") is not None:
        return int(state["seed"])
    extra = state.get("extra") or {}
    if extra.get("seed") is not None:
        return int(extra["seed"])
    if run_dir is not None and (run_dir / "env.json").is_file():
        try:
            env = json.loads((run_dir / "env.json").read_text())
            return int(env.get("run", {}).get("seed", env.get("cli", {}).get("seed")))
        except (ValueError, TypeError, json.JSONDecodeError):
            return None
    return None


def _validate_resume(state: dict, path: Path, cfg: Config, args: argparse.Namespace, resumable: tuple[str, ...],
                     world: int, log: logging.Logger) -> dict:
    """Refuse a resume that would not continue the same experiment; return the resumable changes."""
    if state.get("schema_version") not in (1, RUN_SCHEMA_VERSION):
        raise CheckpointError(f"{path}: not a training checkpoint (schema {state.get('schema_version')!r})")
    problems = []
    changed: dict[str, tuple] = {}
    saved = state.get("config")
    if saved is None:
        log.warning("%s holds no config: cannot check that --resume continues the same experiment", path)
    else:
        for k, (old, new) in diff_configs(saved, cfg.to_dict()).items():
            if _prefix_match(k, resumable):
                changed[k] = (old, new)
            else:
                problems.append(f"  {k}: {old!r} (checkpoint) -> {new!r} (requested)")
    seed = _checkpoint_seed(state, _run_dir_of(path))
    if seed is not None and seed != int(args.seed):
        problems.append(f"  --seed: {seed} (checkpoint) -> {args.seed} (requested)")
    if problems:
        allowed = ", ".join(resumable) if resumable else "none"
        raise ResumeError(f"--resume {path}: the requested run differs from the checkpoint's, which a resume "
                          f"cannot change:\n" + "\n".join(problems) +
                          f"\nKeys a resume may change: {allowed}. Resume with the checkpoint's values "
                          f"(drop those --set items), or start a new run.")
    saved_world = len(state["rng"]) if isinstance(state.get("rng"), list) else None
    if saved_world is not None and saved_world != world and not getattr(args, "allow_world_size_change", False):
        raise ResumeError(f"--resume {path}: the checkpoint was written by {saved_world} process(es), this run has "
                          f"{world}. Each rank's RNG stream and data shard continue only with the same number: "
                          f"resume with torchrun --nproc_per_node={saved_world} (or pass "
                          f"--allow-world-size-change to continue inexactly).")
    return changed


def start_run(project: str, args: argparse.Namespace, cfg: Config, resumable: Iterable[str] = (),
              config_name: str | None = None) -> Run:
    """Set up one training process: torchrun DDP, device, seeds, determinism; find and check the
    checkpoint to resume (readable; same config outside ``resumable``, same seed, same world size).
    Writes nothing: :meth:`Run.open` creates the run directory. ``args`` comes from
    :func:`common.cli.base_parser`; ``config_name`` names the run folder (default: the config
    file's stem)."""
    from common.cli import config_name as _cfg_name

    cname = check_name(_cfg_name(args) if config_name is None else config_name)
    resumable = tuple(resumable)
    info, device = init_distributed(args.device)
    seed_everything(args.seed, info.rank)
    if args.deterministic:
        set_deterministic(True)
    log = setup_logging(project, None, info.rank, buffer=True)

    def plan() -> tuple[str, str | None]:
        resume_from = None
        if args.resume == "auto":
            ck = latest_checkpoint(project, cname, args.seed, args.runs_root, args.overrides, ignore=resumable)
            if ck is None:
                log.info("--resume auto: no earlier run of %s/%s with seed %d and these overrides; starting fresh",
                         project, cname, args.seed)
            resume_from = ck
        elif args.resume:
            resume_from = Path(args.resume)
            if not resume_from.is_file():
                raise FileNotFoundError(f"--resume {args.resume}: no such checkpoint")
        if args.run_dir:
            d = Path(args.run_dir)
            continuing = resume_from is not None and d.resolve() == resume_from.parent.parent.resolve()
            if is_run_dir(d) and not continuing:
                raise RunError(f"--run-dir {d} already holds a run (env.json/config.yaml): continue it with "
                               f"--resume {d / 'checkpoints' / 'last.pt'} or choose a new directory")
        elif resume_from is not None and _run_dir_of(resume_from) is not None:
            d = _run_dir_of(resume_from)  # continue writing into the run we resume
        else:
            d = _fresh_path(project, cname, args.seed, args.runs_root)
        held = RunLock(d).holder()
        if held:
            raise RunInUseError(RunLock(d)._in_use(held))
        return str(d), (str(resume_from) if resume_from is not None else None)

    run_dir, resume_from = _on_main(info, plan)
    state, changed = None, {}
    if resume_from is not None:
        resume_from = Path(resume_from)
        state = _load_checkpoint(resume_from)
        changed = _validate_resume(state, resume_from, cfg, args, resumable, info.world_size, log)
    return Run(project=project, config_name=cname, cfg=cfg, args=args, dist=info, device=device, log=log,
               run_dir=Path(run_dir), resume_from=resume_from, resume_state=state, resume_changed=changed,
               resumable=resumable)


# --------------------------------------------------------------------------- evaluation

class Eval:
    """One evaluation: the checkpoint, the config it was trained with (plus eval's ``--set``), the
    seed, the device, and where outputs go (``out_dir``: the run directory, or ``--out``)."""

    def __init__(self, *, project: str, args: argparse.Namespace, cfg: Config, checkpoint: Path, state: dict,
                 run_dir: Path | None, out_dir: Path, seed: int, config_name: str, device: torch.device,
                 log: logging.Logger, train_overrides: list[str], eval_changed: dict):
        self.project, self.args, self.cfg, self.checkpoint, self.state = project, args, cfg, checkpoint, state
        self.run_dir, self.out_dir, self.seed, self.config_name = run_dir, out_dir, seed, config_name
        self.device, self.log = device, log
        self.train_overrides, self.eval_overrides, self.eval_changed = train_overrides, list(args.overrides), eval_changed
        self.epoch = int(state.get("epoch", 0)) if isinstance(state, dict) else 0
        self.extra = (state.get("extra") or {}) if isinstance(state, dict) else {}
        self._t0 = time.perf_counter()

    def load_weights(self, model: torch.nn.Module) -> torch.nn.Module:
        """Load the checkpoint's weights into ``model`` (a mismatch names the checkpoint)."""
        sd = self.state["model"] if isinstance(self.state, dict) and "model" in self.state else self.state
        load_state_into(unwrap(model), sd, self.checkpoint, "model")
        return model

    def path(self, name: str) -> Path:
        """``out_dir / name``: where a figure or prediction file goes."""
        return self.out_dir / name

    def write_results(self, *, dataset: str, split: str, metrics: Mapping[str, float],
                      baselines: Mapping[str, Mapping[str, float]] | None = None, wall_time_s: float | None = None,
                      **extra: Any) -> Path:
        """``results.json`` in ``out_dir`` (:func:`common.results.write_results`) with the run's
        config name and seed, the checkpoint and its epoch, and both sets of overrides."""
        from common.results import write_results

        return write_results(self.out_dir, project=self.project, config=self.config_name, dataset=dataset,
                             split=split, seed=self.seed, metrics=metrics,
                             wall_time_s=time.perf_counter() - self._t0 if wall_time_s is None else wall_time_s,
                             baselines=baselines, checkpoint=str(self.checkpoint), epoch=self.epoch,
                             train_overrides=self.train_overrides, eval_overrides=self.eval_overrides,
                             eval_changed={k: list(v) for k, v in self.eval_changed.items()}, **extra)


def find_eval_checkpoint(project: str, args: argparse.Namespace, config_name: str) -> Path:
    """``--checkpoint``, else ``--run-dir``'s ``checkpoints/last.pt``, else the newest run of this
    config and seed, preferring one started with the same ``--set`` items as this eval."""
    if getattr(args, "checkpoint", None):
        ck = Path(args.checkpoint)
        if not ck.is_file():
            raise FileNotFoundError(f"--checkpoint {ck}: no such file")
        return ck
    if args.run_dir:
        ck = Path(args.run_dir) / "checkpoints" / "last.pt"
        if not ck.is_file():
            raise FileNotFoundError(f"--run-dir {args.run_dir}: no checkpoints/last.pt (did training save an epoch?)")
        return ck
    ck = latest_checkpoint(project, config_name, args.seed, args.runs_root, args.overrides) \
        or latest_checkpoint(project, config_name, args.seed, args.runs_root)
    if ck is None:
        raise FileNotFoundError(f"no trained run of {project}/{config_name} with seed {args.seed} under "
                                f"{runs_root(args.runs_root)}: train first (python -m {project}.train --config "
                                f"{args.config} --seed {args.seed}) or pass --checkpoint / --run-dir")
    return ck


def start_eval(project: str, args: argparse.Namespace, defaults: Mapping, rules: Mapping[str, Rule] | None = None,
               config_name: str | None = None) -> Eval:
    """Set up an evaluation (see :class:`Eval`). The config is the one the checkpoint was trained
    with (checked against today's schema ``defaults`` and ``rules``) with eval's ``--set`` applied;
    the seed is the run's. ``args`` comes from :func:`common.cli.eval_parser`."""
    from common.cli import config_name as _cfg_name

    cname = check_name(_cfg_name(args) if config_name is None else config_name)
    log = setup_logging(f"{project}.eval", None, 0, buffer=True)
    ckpt = find_eval_checkpoint(project, args, cname)
    state = safe_load(ckpt)
    if not isinstance(state, dict) or "model" not in state:
        state = {"model": state}  # a bare state dict
    run_dir = _run_dir_of(ckpt)
    if getattr(args, "out", None):
        out = Path(args.out)
    elif run_dir is not None:
        out = run_dir
    else:
        raise RunError(f"--checkpoint {ckpt} is not inside a run directory (no {ckpt.parent.parent}/env.json), so "
                       f"there is no run to write results into: name an output folder with --out DIR")
    saved = state.get("config")
    where = f"{ckpt} (the config it was trained with)"
    if saved is None and run_dir is not None and (run_dir / "config.yaml").is_file():
        saved, where = read_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml")
    if saved is None:
        raise RunError(f"{ckpt} holds no config and has no run record: evaluate it through its run directory "
                       f"(--run-dir) or a checkpoint written by training")
    cfg = resolve_onto(saved, where, args.overrides, defaults, rules)
    changed = diff_configs(resolve_onto(saved, where, (), defaults, rules).to_dict(), cfg.to_dict())
    seed = _checkpoint_seed(state, run_dir)
    seed = int(args.seed) if seed is None else seed
    seed_everything(seed)
    if getattr(args, "deterministic", False):
        set_deterministic(True)
    train_overrides = list(state.get("overrides") or (read_overrides(run_dir) if run_dir else []))
    cname = state.get("config_name") or (run_dir.parent.name if run_dir is not None else cname)
    out.mkdir(parents=True, exist_ok=True)
    attach_file(log, out, "eval.log")
    log.info("eval %s (epoch %s, seed %d) -> %s%s", ckpt, state.get("epoch"), seed, out,
             "; eval overrides: " + _fmt_changes(changed) if changed else "")
    return Eval(project=project, args=args, cfg=cfg, checkpoint=ckpt, state=state, run_dir=run_dir, out_dir=out,
                seed=seed, config_name=cname, device=resolve_device(args.device), log=log,
                train_overrides=train_overrides, eval_changed=changed)
