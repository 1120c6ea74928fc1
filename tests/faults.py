"""Bad-input and fault cases across the workspace (issue 10's table), each run as a user would.

Every case breaks one thing (a feature array, an annotation line, a config value, a checkpoint, a
run directory), runs the real entry point (``python -m <project>.<script>``) and classifies what
happened:

* ``clear error``: exit status ≠ 0, no traceback, the message names what the case says it must
  (the file and the record), and no run directory was left behind;
* ``handled``: the case expects the command to succeed and its check of the outcome holds (e.g. a
  resumable key changed on resume, a lock of a dead process taken over);
* ``silent``: exit status 0 where an error was due, or a check of the outcome that fails;
* ``crash, no file named``: exit status ≠ 0 with a traceback or without the names;
* ``left a run dir``: a correct error that still left a run directory behind.

``python -m tests.faults [--only SUBSTR] [--markdown OUT] [--keep DIR]`` prints the table (it
takes several minutes: each case starts a Python process); ``tests/test_faults.py`` (slow) asserts
that no case ends as ``silent`` or ``crash``. Cases of projects that are not in the checkout are
skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.projects import discover
from common.testing import repo_env

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
TSG_ARGS = ["--train-videos", "40", "--test-videos", "20"]


@dataclass
class Outcome:
    cmd: list[str]
    rc: int
    out: str
    seconds: float


@dataclass
class Case:
    project: str
    what: str                                  # what was done to the input
    run: Callable[[World], Outcome]           # builds the broken input, runs the command
    names: tuple[str, ...] = ()                # the message must contain each (file, record, key)
    check: Callable[[World, Outcome], str | None] | None = None  # success cases: None = ok, else why not
    leaves_run_dir: bool = False               # True where the failure comes after the run dir exists


@dataclass
class Row:
    case: Case
    verdict: str
    printed: str
    seconds: float


@dataclass
class World:
    """A scratch directory with a small valid grounding set and (lazily) one trained ECRL run."""

    root: Path
    _trained: Path | None = field(default=None, init=False)

    # ---- processes -----------------------------------------------------------------------------
    def module(self, module: str, *args: str, env: dict | None = None, timeout: float = 900) -> Outcome:
        cmd = [PY, "-m", module, *map(str, args)]
        e = repo_env(env)
        e.pop("REPRO_TRACEBACK", None)
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)
        return Outcome(cmd, p.returncode, p.stdout + p.stderr, time.perf_counter() - t)

    # ---- grounding data ------------------------------------------------------------------------
    def tsg_clean(self) -> Path:
        d = self.root / "tsg_clean" / "tsg_synthetic"
        if not d.exists():
            r = self.module("common.tsg.synthetic", "--out", d, "--seed", "0", *TSG_ARGS)
            assert r.rc == 0, r.out
        return d

    def tsg_copy(self, name: str) -> Path:
        """A fresh copy of the valid set as ``<root>/<name>/tsg_synthetic``; returns the data root."""
        dst = self.root / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(self.tsg_clean(), dst / "tsg_synthetic")
        return dst

    def runs(self, name: str) -> Path:
        return self.root / "runs" / name

    def ecrl_train(self, data_root: Path, runs: Path, *extra: str) -> Outcome:
        return self.module("ecrl.train", "--config", "ecrl/configs/synthetic.yaml", "--data-root", data_root,
                           "--runs-root", runs, "--no-tb", "--set", "train.epochs=1", *extra)

    def trained(self) -> Path:
        """One finished 1-epoch ECRL run on the valid set; returns its checkpoint."""
        if self._trained is None:
            runs = self.runs("trained")
            r = self.ecrl_train(self.tsg_clean().parent, runs)
            assert r.rc == 0, r.out
            self._trained = next(runs.rglob("last.pt"))
        return self._trained

    def trained_copy(self, name: str) -> Path:
        """A copy of the trained run directory under runs/<name>; returns its checkpoint."""
        src = self.trained().parent.parent
        dst = self.runs(name) / "ecrl" / "synthetic" / src.name
        shutil.rmtree(self.runs(name), ignore_errors=True)
        shutil.copytree(src, dst)
        return dst / "checkpoints" / "last.pt"


# ============================ grounding data (ecrl, via common.tsg.data) ============================

def _h5_edit(path: Path, fn) -> str:
    import h5py
    import numpy as np
    with h5py.File(path, "r+") as f:
        vid = sorted(f.keys())[3]
        a = f[vid][...]
        a = fn(a, np)
        del f[vid]
        f[vid] = a
    return vid


def _tsg_feature_case(name: str, fn, what: str, extra_names: tuple[str, ...] = ()) -> Case:
    def run(w: World) -> Outcome:
        root = w.tsg_copy(name)
        vid = _h5_edit(root / "tsg_synthetic" / "features.h5", fn)
        assert vid == "SYN00003"
        return w.ecrl_train(root, w.runs(name))
    return Case("ecrl", what, run, names=("features.h5", "SYN00003", *extra_names))


def _nan(a, np):
    a[2, 5] = np.nan
    return a


def _inf(a, np):
    a[0, 0] = np.inf
    return a


def _wider(a, np):
    return np.concatenate([a, a[:, :3]], axis=1)


def _one_d(a, np):
    return a.reshape(-1)


def _empty(a, np):
    return a[:0]


def _truncated_h5(w: World) -> Outcome:
    root = w.tsg_copy("trunc_h5")
    p = root / "tsg_synthetic" / "features.h5"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return w.ecrl_train(root, w.runs("trunc_h5"))


def _missing_video(w: World) -> Outcome:
    import h5py
    root = w.tsg_copy("missing_vid")
    with h5py.File(root / "tsg_synthetic" / "features.h5", "r+") as f:
        del f["SYN00005"]
    return w.ecrl_train(root, w.runs("missing_vid"))


def _glove_nan(w: World) -> Outcome:
    root = w.tsg_copy("glove_nan")
    p = root / "tsg_synthetic" / "glove.txt"
    lines = p.read_text().splitlines()
    word = lines[1].split(" ")[0]
    lines[1] = word + " " + " ".join(["nan"] * (len(lines[1].split(" ")) - 1))
    p.write_text("\n".join(lines) + "\n")
    (w.root / "glove_nan.word").write_text(word)
    return w.ecrl_train(root, w.runs("glove_nan"))


def _annotation_case(name: str, edit, what: str, names: tuple[str, ...]) -> Case:
    def run(w: World) -> Outcome:
        root = w.tsg_copy(name)
        p = root / "tsg_synthetic" / "charades_sta_train.txt"
        lines = p.read_text().splitlines()
        lines[6] = edit(lines[6])
        p.write_text("\n".join(lines) + "\n")
        return w.ecrl_train(root, w.runs(name))
    return Case("ecrl", what, run, names=names)


def _two_problems(w: World) -> Outcome:
    import h5py
    root = w.tsg_copy("two_problems")
    _h5_edit(root / "tsg_synthetic" / "features.h5", _nan)
    with h5py.File(root / "tsg_synthetic" / "features.h5", "r+") as f:
        del f["SYN00007"]
    return w.ecrl_train(root, w.runs("two_problems"))


def _missing_file(w: World) -> Outcome:
    root = w.tsg_copy("missing_test")
    (root / "tsg_synthetic" / "charades_sta_test.txt").unlink()
    return w.ecrl_train(root, w.runs("missing_test"))


def _durations_missing(w: World) -> Outcome:
    root = w.tsg_copy("no_duration")
    p = root / "tsg_synthetic" / "charades.json"
    d = json.loads(p.read_text())
    d.pop("SYN00002")
    p.write_text(json.dumps(d))
    return w.ecrl_train(root, w.runs("no_duration"))


def _data_checker(w: World) -> Outcome:
    root = w.tsg_copy("checker")
    _h5_edit(root / "tsg_synthetic" / "features.h5", _inf)
    return w.module("ecrl.data", "--config", "ecrl/configs/synthetic.yaml", "--data-root", root)


def _no_run_dir_left(w: World, name: str) -> str | None:
    runs = w.runs(name)
    left = [p for p in runs.rglob("*") if p.is_dir() and (p / "config.yaml").exists()] if runs.exists() else []
    return f"left {left[0]}" if left else None


def _project_case(project: str, subdir: str, name: str, what: str, break_fn, names: tuple[str, ...]) -> Case:
    """The same broken grounding set under another TSG project's folder name, through its train.py."""
    def run(w: World) -> Outcome:
        root = w.root / name
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(w.tsg_clean(), root / subdir)
        break_fn(root / subdir)
        return w.module(f"{project}.train", "--config", f"{project}/configs/synthetic.yaml", "--data-root", root,
                        "--runs-root", w.runs(name), "--no-tb")
    return Case(project, what, run, names=names)


def _break_nan(d: Path) -> None:
    _h5_edit(d / "features.h5", _nan)


def _break_line(d: Path, train: str = "charades_sta_train.txt") -> None:
    p = d / train
    lines = p.read_text().splitlines()
    lines[6] = "garbage line without separator"
    p.write_text("\n".join(lines) + "\n")


# project: (its data folder, the train file it reads: mhst trains from the glance file)
TSG_PROJECTS = {"ssrn": ("tsg_boundary", "charades_sta_train.txt"),
                "mgslnet": ("tsg_longtail", "charades_sta_train.txt"),
                "mhst": ("tsg_synthetic", "glance/charades_sta_train.txt"),
                "dscnet": ("tsg_synthetic", "charades_sta_train.txt")}
PROJECT_CASES = [c for p, (sub, train) in TSG_PROJECTS.items() for c in (
    _project_case(p, sub, f"{p}_nan", "NaN in one video's features", _break_nan, ("features.h5", "SYN00003")),
    _project_case(p, sub, f"{p}_line", f"a line of {train} without the '##' separator",
                  lambda d, t=train: _break_line(d, t), (Path(train).name, "line 7")))]


# ============================ config ============================

def _config_case(item: str, names: tuple[str, ...], what: str) -> Case:
    def run(w: World) -> Outcome:
        return w.ecrl_train(w.tsg_clean().parent, w.runs("cfg"), "--set", item)
    return Case("ecrl", what, run, names=names)


def _yaml_unknown_key(w: World) -> Outcome:
    p = w.root / "bad.yaml"
    p.write_text("base: " + str(REPO / "ecrl/configs/synthetic.yaml") + "\ntrain:\n  lrr: 0.1\n")
    return w.module("ecrl.train", "--config", p, "--data-root", w.tsg_clean().parent, "--runs-root",
                    w.runs("cfg"), "--no-tb")


# ============================ checkpoints, resume, run directory ============================

def _truncated_ckpt(w: World) -> Outcome:
    ck = w.trained_copy("trunc_ckpt")
    ck.write_bytes(ck.read_bytes()[:4096])
    return w.ecrl_train(w.tsg_clean().parent, w.runs("trunc_ckpt"), "--resume", ck)


def _resume_with(name: str, *sets: str) -> Callable[[World], Outcome]:
    def run(w: World) -> Outcome:
        ck = w.trained_copy(name)
        extra = [x for s in sets for x in ("--set", s)]
        return w.ecrl_train(w.tsg_clean().parent, w.runs(name), "--resume", ck, *extra)
    return run


def _resume_more_epochs_ok(w: World, o: Outcome) -> str | None:
    if o.rc != 0:
        return f"exit {o.rc}"
    run = w.runs("more_epochs")
    log = next(run.rglob("train.log")).read_text()
    return None if "resum" in log.lower() and "train.epochs" in log else "train.log does not say what changed"


def _resume_auto(name: str, *sets: str) -> Callable[[World], Outcome]:
    def run(w: World) -> Outcome:
        w.trained_copy(name)
        extra = [x for s in sets for x in ("--set", s)]
        return w.ecrl_train(w.tsg_clean().parent, w.runs(name), "--resume", "auto", *extra)
    return run


def _auto_started_fresh(w: World, o: Outcome) -> str | None:
    dirs = list((w.runs("auto_ablation") / "ecrl" / "synthetic").iterdir())
    if o.rc != 0 or len(dirs) != 2 or "starting fresh" not in o.out:
        return f"exit {o.rc}, {len(dirs)} run dir(s): the ablation did not start its own run"
    return None


def _auto_continued(w: World, o: Outcome) -> str | None:
    dirs = list((w.runs("auto_same") / "ecrl" / "synthetic").iterdir())
    if o.rc != 0 or len(dirs) != 1:
        return f"exit {o.rc}, {len(dirs)} run dir(s): the main run was not continued"
    log = (dirs[0] / "train.log").read_text()
    return None if "epoch 2/2" in log else "train.log has no epoch 2"


def _live_lock(w: World) -> Outcome:
    import fcntl
    import socket
    ck = w.trained_copy("live_lock")
    fd = os.open(ck.parent.parent / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:  # this process holds the run's lock, as a surviving trainer would
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} now\n".encode())
        return w.ecrl_train(w.tsg_clean().parent, w.runs("live_lock"), "--resume", ck, "--set", "train.epochs=2")
    finally:
        os.close(fd)


def _stale_lock(w: World) -> Outcome:
    import socket
    ck = w.trained_copy("stale_lock")
    (ck.parent.parent / "run.lock").write_text(f"999999 {socket.gethostname()} then\n")  # a dead trainer's
    return w.ecrl_train(w.tsg_clean().parent, w.runs("stale_lock"), "--resume", ck, "--set", "train.epochs=2")


def _stale_lock_ok(w: World, o: Outcome) -> str | None:
    if o.rc != 0:
        return f"exit {o.rc}: {printed(o)}"
    return None if "stale lock" in o.out and "999999" in o.out else "no warning about the stale lock"


def _tampered_ckpt(w: World) -> Outcome:
    import pickle
    ck = w.trained_copy("tampered")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with open(ck, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    return w.module("ecrl.eval", "--checkpoint", ck, "--data-root", w.tsg_clean().parent)


def _eval_outside_run_dir(w: World) -> Outcome:
    ck = w.trained()
    loose = w.root / "Downloads" / "last.pt"
    loose.parent.mkdir(exist_ok=True)
    shutil.copy(ck, loose)
    return w.module("ecrl.eval", "--checkpoint", loose, "--data-root", w.tsg_clean().parent)


def _eval_bad_set(w: World) -> Outcome:
    return w.module("ecrl.eval", "--checkpoint", w.trained(), "--data-root", w.tsg_clean().parent,
                    "--set", "model.d=32")


def _eval_truncated(w: World) -> Outcome:
    ck = w.trained_copy("eval_trunc")
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 3])
    return w.module("ecrl.eval", "--checkpoint", ck, "--data-root", w.tsg_clean().parent)


def _ckpt_mode(w: World, o: Outcome) -> str | None:
    mode = w.trained().stat().st_mode & 0o777
    return None if mode == 0o644 else f"mode {oct(mode)}"


def _noop(w: World) -> Outcome:
    w.trained()
    return Outcome(["(the trained run's checkpoint)"], 0, "", 0.0)


# ============================ migperf ============================

TINY_SPEC = """defaults:
  warmup_iters: 1
  image_size: 32
  num_classes: 10
  stop: {min_iters: 3, min_time_s: 0.1, window_iters: 3, tolerance: 0.5, percentile: 90.0, max_time_s: 1.0}
experiments:
  - name: one_cell
    workloads: [resnet18]
    devices: [cpu:0]
    batch_sizes: [%s]
    modes: [inference]
"""


def _migperf_cut_results(w: World) -> Outcome:
    d = w.root / "mig_cut"
    d.mkdir(exist_ok=True)
    (d / "results.jsonl").write_text('{"schema": "migperf.cell/1", "spec": {"cel')  # killed while writing
    spec = w.root / "tiny_spec.yaml"
    spec.write_text(TINY_SPEC % 1)
    return w.module("migperf", "run", spec, "--resume", d)


def _migperf_cut_ok(w: World, o: Outcome) -> str | None:
    if o.rc != 0:
        return f"exit {o.rc}"
    return None if "cut off" in o.out and "1 ok" in o.out else "the cut line was not reported or the cell not rerun"


def _migperf_bad_record(w: World) -> Outcome:
    d = w.root / "mig_bad"
    d.mkdir(exist_ok=True)
    (d / "results.jsonl").write_text('{"schema": "migperf.cell/1", "spec": {"cell": 0}, "status": "ok"}\nnot json\n')
    spec = w.root / "tiny_spec.yaml"
    spec.write_text(TINY_SPEC % 1)
    return w.module("migperf", "run", spec, "--resume", d)


def _migperf_bad_layout(w: World) -> Outcome:
    return w.module("migperf", "plan", "--gpu", "A100-40GB", "--layout", "7g.40gb,1g.5gb")


def _migperf_apply_without_yes(w: World) -> Outcome:
    return w.module("migperf", "apply", "--gpu-index", "0", "--layout", "1g.5gb")


def _migperf_bad_spec(w: World) -> Outcome:
    p = w.root / "spec_bs0.yaml"
    p.write_text(TINY_SPEC % 0)
    return w.module("migperf", "run", p)


def _migperf_unknown_key(w: World) -> Outcome:
    p = w.root / "spec_key.yaml"
    p.write_text("workloads:\n  - model: resnet50\n")
    return w.module("migperf", "run", p)


CASES: list[Case] = [
    _tsg_feature_case("nan", _nan, "NaN in one training video's features"),
    _tsg_feature_case("inf", _inf, "+Inf in one video's features"),
    _tsg_feature_case("wide", _wider, "one video with 67 instead of 64 feature columns", ("67",)),
    _tsg_feature_case("one_d", _one_d, "one video's features stored 1-D"),
    _tsg_feature_case("empty", _empty, "one video with zero feature rows"),
    Case("ecrl", "features.h5 truncated to half its size", _truncated_h5, names=("features.h5",)),
    Case("ecrl", "a video of the annotations missing from features.h5", _missing_video,
         names=("features.h5", "SYN00005")),
    Case("ecrl", "NaN GloVe vector for a vocabulary word", _glove_nan, names=("glove.txt",)),
    _annotation_case("ann_garbled", lambda s: "garbage line without separator", "a train annotation line without "
                     "the '##' separator", ("charades_sta_train.txt", "7")),
    _annotation_case("ann_order", lambda s: s.split(" ")[0] + " 9.0 3.0##" + s.split("##")[1],
                     "a train moment with end < start", ("charades_sta_train.txt", "7")),
    _annotation_case("ann_past_end", lambda s: s.split(" ")[0] + " 1.0 999.0##" + s.split("##")[1],
                     "a train moment ending after the video", ("charades_sta_train.txt", "7")),
    _annotation_case("ann_empty_query", lambda s: s.split("##")[0] + "##", "a train record with an empty sentence",
                     ("charades_sta_train.txt", "7")),
    Case("ecrl", "NaN in one video and another video missing: both reported at once", _two_problems,
         names=("SYN00003", "SYN00007")),
    Case("ecrl", "test annotation file missing", _missing_file, names=("charades_sta_test.txt",)),
    Case("ecrl", "a video's duration missing from charades.json", _durations_missing,
         names=("charades.json", "SYN00002", "charades_sta_train.txt")),
    Case("ecrl", "`python -m ecrl.data` on a set with an Inf", _data_checker, names=("features.h5", "SYN00003")),
    _config_case("train.schedule=linear", ("train.schedule", "cosine"), "--set train.schedule=linear"),
    _config_case("train.epochs=-1", ("train.epochs",), "--set train.epochs=-1"),
    _config_case("train.batch_size=0", ("train.batch_size",), "--set train.batch_size=0"),
    _config_case("train.lr=null", ("train.lr", "null"), "--set train.lr=null"),
    _config_case("train.lrr=0.1", ("train.lrr", "train.lr"), "--set train.lrr=0.1 (typo)"),
    _config_case("train.lr=abc", ("train.lr",), "--set train.lr=abc (not a number)"),
    _config_case("data.check=sometimes", ("data.check", "full"), "--set data.check=sometimes"),
    Case("ecrl", "config file with an unknown key", _yaml_unknown_key, names=("bad.yaml", "lrr")),
    Case("ecrl", "--resume from a checkpoint truncated to 4 KiB", _truncated_ckpt, names=("last.pt",)),
    Case("ecrl", "--resume with a different model width (model.d=32)", _resume_with("width", "model.d=32"),
         names=("model.d", "64", "32")),
    Case("ecrl", "--resume with a new learning rate", _resume_with("new_lr", "train.lr=0.01"), names=("train.lr",)),
    Case("ecrl", "--resume with more epochs (a resumable key)", _resume_with("more_epochs", "train.epochs=2"),
         check=_resume_more_epochs_ok),
    Case("ecrl", "--resume auto with an ablation's --set when only the main run exists (must not pick it)",
         _resume_auto("auto_ablation", "ecrl.w_sscl=0"), check=_auto_started_fresh),
    Case("ecrl", "--resume auto with the main run's overrides and more epochs (continues it)",
         _resume_auto("auto_same", "train.epochs=2"), check=_auto_continued),
    Case("ecrl", "--resume into a run dir whose run.lock a live process holds", _live_lock,
         names=("run.lock", str(os.getpid()))),
    Case("ecrl", "--resume into a run dir with the run.lock of a dead process", _stale_lock, check=_stale_lock_ok),
    Case("ecrl", "eval of a checkpoint replaced by a pickle that runs code", _tampered_ckpt, names=("last.pt",)),
    Case("ecrl", "eval of a checkpoint outside any run dir, no --out", _eval_outside_run_dir,
         names=("Downloads", "--out")),
    Case("ecrl", "eval --set model.d=32 against a d=64 checkpoint", _eval_bad_set, names=("model.d",)),
    Case("ecrl", "eval of a truncated checkpoint", _eval_truncated, names=("last.pt",)),
    Case("common", "checkpoints are written 0644", _noop, check=_ckpt_mode),
    Case("migperf", "run --resume on a results.jsonl whose last line is cut (a killed run)", _migperf_cut_results,
         check=_migperf_cut_ok),
    Case("migperf", "run --resume on a results.jsonl with a damaged line in the middle", _migperf_bad_record,
         names=("results.jsonl:2",)),
    Case("migperf", "plan of a layout that does not fit the GPU", _migperf_bad_layout, names=("7g.40gb",)),
    Case("migperf", "apply without --yes", _migperf_apply_without_yes, names=("--yes",)),
    Case("migperf", "benchmark spec with batch size 0", _migperf_bad_spec, names=("spec_bs0.yaml", "batch_sizes")),
    Case("migperf", "benchmark spec with an unknown key", _migperf_unknown_key, names=("spec_key.yaml", "workloads")),
    *PROJECT_CASES,
]


# ============================ running and classifying ============================

def classify(case: Case, w: World, o: Outcome, new_runs: set[Path] = frozenset()) -> str:
    """``new_runs``: the run records (config.yaml) the case's command created."""
    if case.check is not None:
        why = case.check(w, o)
        return "handled" if why is None else f"silent ({why})"
    if o.rc == 0:
        return "silent"
    if "Traceback (most recent call last)" in o.out or not all(n in o.out for n in case.names):
        return "crash, no file named"
    if not case.leaves_run_dir and new_runs:
        return f"left a run dir ({sorted(new_runs)[0].parent})"
    return "clear error"


def run_records(root: Path) -> set[Path]:
    runs = root / "runs"
    return set(runs.rglob("config.yaml")) if runs.exists() else set()


def new_run_records(w: World, before: set[Path]) -> set[Path]:
    """Run records that appeared while a case ran, other than copies of the trained run (a case's
    set-up copies that run directory, keeping its name)."""
    trained = w._trained.parent.parent.name if w._trained is not None else None
    return {p for p in run_records(w.root) - before if p.parent.name != trained}


def printed(o: Outcome, names: tuple[str, ...] = (), limit: int = 220) -> str:
    """The lines a user reads first: the error line(s), else those naming what the case names."""
    lines = [ln.strip() for ln in o.out.splitlines() if ln.strip() and "it/s]" not in ln]
    errs = [ln for ln in lines if ln.startswith("error:") or "Error" in ln or "error" in ln]
    named = [ln for ln in lines if any(n in ln for n in names)]
    text = " / ".join(errs[:2] or named[:2] or lines[-2:])
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_cases(cases: list[Case], root: Path, log=print) -> list[Row]:
    w = World(root)
    present = set(discover()) | {"common"}
    rows = []
    for i, case in enumerate(cases, 1):
        if case.project not in present:
            continue
        shutil.rmtree(root / "runs" / "cfg", ignore_errors=True)
        before = run_records(root)
        o = case.run(w)
        row = Row(case, classify(case, w, o, new_run_records(w, before)), printed(o, case.names), o.seconds)
        log(f"[{i}/{len(cases)}] {case.project}: {case.what}: {row.verdict} ({o.seconds:.0f}s)")
        rows.append(row)
    return rows


def markdown(rows: list[Row]) -> str:
    out = ["| # | project | what was done | what it printed | verdict |", "|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        text = r.printed.replace("|", "\\|") or "(exit 0)"
        out.append(f"| {i} | {r.case.project} | {r.case.what} | `{text}` | {r.verdict} |")
    counts = {}
    for r in rows:
        key = r.verdict.split(" (")[0]
        counts[key] = counts.get(key, 0) + 1
    out.append("")
    out.append("verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="run the cases whose project or text contains this")
    ap.add_argument("--markdown", default=None, help="write the table here too")
    ap.add_argument("--keep", default=None, help="work in this directory and keep it")
    a = ap.parse_args(argv)
    cases = [c for c in CASES if a.only is None or a.only in c.project or a.only in c.what]
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="faults-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        rows = run_cases(cases, root)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    table = markdown(rows)
    print(table)
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(a.markdown).write_text(table + "\n")
    bad = [r for r in rows if r.verdict.startswith(("silent", "crash", "left"))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
