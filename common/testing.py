"""Test helpers every project's tests share: run a script as a subprocess (``python -m``), run it
under torchrun (2 processes, gloo on CPU), and kill a training run with SIGKILL mid-epoch, resume
it, and compare it with an uninterrupted run tensor by tensor.

    res = kill_and_resume("ecrl.train", ["--config", cfg, "--data-root", root, "--device", "cpu"],
                          kill_at_step=7, nproc=2, workdir=tmp_path)
    assert res.identical == res.total and res.metrics_equal, res.summary()

The kill lands at a known step: with ``COMMON_TESTING_HOLD_AT_STEP=N`` set,
:func:`common.runtime.check_step` parks every rank at step ``N`` (after backward, before the
optimizer step) and this module SIGKILLs the launcher and every process below it at once; no
handler, ``finally`` or atexit code runs. Linux only (it reads ``/proc`` to find the processes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.checkpoint import safe_load
from common.log import read_jsonl
from common.projects import REPO_ROOT


def repo_env(env: Mapping[str, str] | None = None, threads: int = 1) -> dict[str, str]:
    """``os.environ`` + the repository on ``PYTHONPATH`` + ``threads`` CPU threads per process +
    ``env``."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([out["PYTHONPATH"]] if out.get("PYTHONPATH") else []))
    out.setdefault("OMP_NUM_THREADS", str(threads))
    out["PYTHONUNBUFFERED"] = "1"
    out.update({k: str(v) for k, v in (env or {}).items()})
    return out


def _cmd(module: str, args: Sequence[str], nproc: int) -> list[str]:
    args = [str(a) for a in args]
    if nproc <= 1:
        return [sys.executable, "-m", module, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *args]


def _checked(proc: subprocess.CompletedProcess, cmd: list[str], check: bool) -> subprocess.CompletedProcess:
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n"
                             f"--- stderr ---\n{proc.stderr[-8000:]}")
    return proc


def run_module(module: str, args: Sequence[str] = (), env: Mapping[str, str] | None = None, timeout: float = 600,
               check: bool = True, cwd: str | Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """``python -m module *args`` from the repository root (an argument list, no shell). Returns the
    CompletedProcess (text output); with ``check``, a non-zero exit is an AssertionError carrying
    the output."""
    cmd = _cmd(module, args, 1)
    proc = subprocess.run(cmd, cwd=cwd, env=repo_env(env), capture_output=True, text=True, timeout=timeout)
    return _checked(proc, cmd, check)


def torchrun(module: str, args: Sequence[str] = (), nproc: int = 2, env: Mapping[str, str] | None = None,
             timeout: float = 600, check: bool = True, cwd: str | Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=N -m module *args`` (gloo on
    CPU; one thread per process)."""
    cmd = _cmd(module, args, nproc)
    proc = subprocess.run(cmd, cwd=cwd, env=repo_env(env), capture_output=True, text=True, timeout=timeout)
    return _checked(proc, cmd, check)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (torchrun starts its workers in sessions of their own, so a
    process-group kill would miss them)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def kill_tree(pid: int) -> list[int]:
    """SIGSTOP ``pid`` and all its descendants, then SIGKILL them: nobody gets to react to a
    sibling's death. Returns the PIDs killed."""
    pids = [pid, *descendants(pid)]
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
    return pids


def checkpoints(root: str | Path, name: str = "last.pt") -> list[Path]:
    return sorted(Path(root).rglob(f"checkpoints/{name}"))


def _one_checkpoint(root: Path) -> Path:
    found = checkpoints(root)
    if len(found) != 1:
        raise AssertionError(f"expected one checkpoints/last.pt under {root}, found {[str(p) for p in found]}")
    return found[0]


def _tensors(state: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state.items():
        if isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
        elif isinstance(v, Mapping):
            out.update(_tensors(v, f"{prefix}{k}."))
    return out


def compare_states(a: Mapping, b: Mapping, key: str = "model") -> tuple[int, int, list[str]]:
    """``(identical, total, names that differ)`` over the tensors of ``a[key]`` and ``b[key]``
    (bitwise equality; a tensor present on one side only counts as different)."""
    ta, tb = _tensors(a.get(key) or {}), _tensors(b.get(key) or {})
    names = sorted(set(ta) | set(tb))
    diff = [n for n in names if n not in ta or n not in tb or ta[n].shape != tb[n].shape or
            ta[n].dtype != tb[n].dtype or not torch.equal(ta[n], tb[n])]
    return len(names) - len(diff), len(names), diff


def compare_metrics(a: str | Path, b: str | Path, ignore: Iterable[str] = ("time",)) -> list[str]:
    """Differences between two ``metrics.jsonl`` files, ignoring the ``ignore`` keys (wall clock)."""
    ignore = set(ignore)
    ra, rb = ([{k: v for k, v in r.items() if k not in ignore} for r in (read_jsonl(p) if Path(p).is_file() else [])]
              for p in (a, b))
    out = [f"record {i}: {x} != {y}" for i, (x, y) in enumerate(zip(ra, rb)) if x != y]
    if len(ra) != len(rb):
        out.append(f"{len(ra)} records != {len(rb)} records")
    return out


@dataclass
class KillResume:
    """What :func:`kill_and_resume` found."""

    identical: int                     # model tensors bitwise equal to the uninterrupted run's
    total: int
    differing: list[str]
    optimizer_identical: int
    optimizer_total: int
    metric_diffs: list[str]
    killed_at_step: int
    checkpoint_epoch: int              # the checkpoint the resume started from
    checkpoint_step: int
    uninterrupted: Path                # the two final checkpoints
    resumed: Path
    output: dict = field(default_factory=dict)

    @property
    def metrics_equal(self) -> bool:
        return not self.metric_diffs

    def summary(self) -> str:
        return (f"killed at step {self.killed_at_step} (checkpoint epoch {self.checkpoint_epoch}, step "
                f"{self.checkpoint_step}); model tensors identical {self.identical}/{self.total}"
                f"{' (differ: ' + ', '.join(self.differing[:8]) + ')' if self.differing else ''}; optimizer "
                f"{self.optimizer_identical}/{self.optimizer_total}; metrics "
                f"{'identical' if self.metrics_equal else 'differ: ' + '; '.join(self.metric_diffs[:4])}")


def _wait_for_hold(proc: subprocess.Popen, hold: Path, nproc: int, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((hold / f"hold.{r}").is_file() for r in range(nproc)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before reaching the kill step:\n"
                                 f"{log.read_text()[-8000:]}")
        time.sleep(0.05)
    kill_tree(proc.pid)
    raise AssertionError(f"the run did not reach the kill step within {timeout:.0f}s:\n{log.read_text()[-8000:]}")


def kill_and_resume(module: str, args: Sequence[str], *, kill_at_step: int, workdir: str | Path, nproc: int = 1,
                    env: Mapping[str, str] | None = None, resume: str = "path", timeout: float = 600,
                    ignore_metrics: Iterable[str] = ("time",)) -> KillResume:
    """Train uninterrupted; train again and SIGKILL every process once all ranks reach step
    ``kill_at_step`` (it must come after the first checkpoint and should not be an epoch's
    first step, so the kill is mid-epoch); resume (``--resume <last.pt>``, or ``--resume auto``
    with ``resume="auto"``) and compare the final checkpoints and ``metrics.jsonl``.

    Runs go to ``workdir/uninterrupted`` and ``workdir/interrupted`` (via ``RUNS_ROOT``; ``args``
    must not name ``--run-dir``/``--runs-root``)."""
    workdir = Path(workdir)
    runs_a, runs_b, hold = workdir / "uninterrupted", workdir / "interrupted", workdir / "hold"
    hold.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def run(root: Path, extra: Sequence[str] = ()) -> None:
        cmd = _cmd(module, [*args, *extra], nproc)
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=repo_env({**(env or {}), "RUNS_ROOT": str(root)}),
                              capture_output=True, text=True, timeout=timeout)
        out[f"{root.name}{' resumed' if extra else ''}"] = proc.stderr[-4000:]
        _checked(proc, cmd, True)

    run(runs_a)
    log = workdir / "interrupted.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(_cmd(module, args, nproc), cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env=repo_env({**(env or {}), "RUNS_ROOT": str(runs_b),
                                              "COMMON_TESTING_HOLD_AT_STEP": str(kill_at_step),
                                              "COMMON_TESTING_HOLD_DIR": str(hold)}))
        try:
            _wait_for_hold(proc, hold, nproc, timeout, log)
            found = checkpoints(runs_b)
            if not found:
                raise AssertionError(f"step {kill_at_step} comes before the first checkpoint: nothing to resume")
        finally:
            if proc.poll() is None:
                kill_tree(proc.pid)
            proc.wait(timeout=60)
    out["interrupted"] = log.read_text()[-4000:]
    ckpt = _one_checkpoint(runs_b)
    st = safe_load(ckpt)
    run(runs_b, ["--resume", "auto" if resume == "auto" else str(ckpt)])
    a_path, b_path = _one_checkpoint(runs_a), _one_checkpoint(runs_b)
    a, b = safe_load(a_path), safe_load(b_path)
    same, total, diff = compare_states(a, b, "model")
    osame, ototal, _ = compare_states(a, b, "optimizer")
    mdiff = compare_metrics(a_path.parent.parent / "metrics.jsonl", b_path.parent.parent / "metrics.jsonl",
                            ignore_metrics)
    return KillResume(same, total, diff, osame, ototal, mdiff, kill_at_step, int(st["epoch"]), int(st["step"]),
                      a_path, b_path, out)
