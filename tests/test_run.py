"""The run record (issue 10, items 1, 6, 7): nothing is written before open(), a resume is checked
against its checkpoint, --resume auto matches overrides, the lock, failed starts leave nothing."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from common.checkpoint import CheckpointError, safe_load
from common.cli import base_parser
from common.config import ConfigError, Range, load_config
from common.run import (
    LOCK_NAME,
    ResumeError,
    RunError,
    RunInUseError,
    git_sha,
    latest_checkpoint,
    start_run,
)
from common.runtime import NonFiniteError

DEFAULTS = {"lr": 0.1, "train": {"epochs": 3, "schedule": "cosine"}}
RULES = {"lr": Range(min=0, open_min=True), "train.epochs": Range(min=1), "train.schedule": ("cosine", "step")}
RESUMABLE = ("train.epochs",)


def _start(tmp_path, *extra, resumable=RESUMABLE, **kw):
    args = base_parser("t").parse_args(["--device", "cpu", "--runs-root", str(tmp_path), "--no-tb", *extra])
    cfg = load_config(None, args.overrides, DEFAULTS, RULES)
    return start_run("demo", args, cfg, resumable=resumable, **kw)


def _model(width=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, width), torch.nn.Linear(width, 1))


def _trained(tmp_path, *extra, epochs=2):
    """A run that saved a checkpoint at epoch `epochs`; returns its last.pt."""
    run = _start(tmp_path, *extra).open()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for e in range(epochs):
        run.metrics.log(e + 1, "train", loss=1.0 / (e + 1))
        path = run.save(model=model, optimizer=opt, epoch=e + 1, step=e + 1)
    run.close()
    return path


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_start_run_writes_nothing_until_open(tmp_path):
    run = _start(tmp_path, "--set", "lr=0.5", "--seed", "3")
    run.log.info("checked 10 records, skipped 2 (zero-length moment)")
    assert not tmp_path.exists() or _files(tmp_path) == []
    assert run.planned_dir.parent == tmp_path / "demo" / "default" and run.planned_dir.name.endswith("-s3")
    run.open()
    d = run.run_dir
    assert yaml.safe_load((d / "config.yaml").read_text()) == {"lr": 0.5, "train": {"epochs": 3, "schedule": "cosine"}}
    assert (d / "overrides.txt").read_text() == "lr=0.5\n"
    env = json.loads((d / "env.json").read_text())
    assert env["world_size"] == 1 and env["device"] == "cpu" and env["run"]["seed"] == 3 and "torch" in env["packages"]
    assert (d / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    run.metrics.log(1, "train", loss=0.25)
    run.close()
    log = (d / "train.log").read_text()
    assert log.index("skipped 2 (zero-length moment)") < log.index("run dir")  # replayed from before open()
    assert json.loads((d / "metrics.jsonl").read_text())["loss"] == 0.25
    assert not (d / LOCK_NAME).exists()


def test_failed_start_leaves_no_run_dir(tmp_path):
    run = _start(tmp_path)
    with pytest.raises(ValueError):
        raise ValueError("the data check failed")  # a project's data check, before run.open()
    assert run.resume() == (0, 0)
    assert not tmp_path.exists() or _files(tmp_path) == []


def test_resume_refuses_a_changed_config_and_leaves_the_record_alone(tmp_path):
    ckpt = _trained(tmp_path)
    d = ckpt.parent.parent
    before = {f: (d / f).read_text() for f in ("config.yaml", "overrides.txt", "env.json")}
    with pytest.raises(ResumeError) as e:
        _start(tmp_path, "--resume", str(ckpt), "--set", "lr=0.7", "--set", "train.schedule=step")
    msg = str(e.value)
    assert str(ckpt) in msg and "lr: 0.1 (checkpoint) -> 0.7 (requested)" in msg
    assert "train.schedule: 'cosine' (checkpoint) -> 'step' (requested)" in msg and "may change: train.epochs" in msg
    with pytest.raises(ResumeError, match=r"--seed: 0 \(checkpoint\) -> 1 \(requested\)"):
        _start(tmp_path, "--resume", str(ckpt), "--seed", "1")
    assert {f: (d / f).read_text() for f in before} == before  # a refused resume rewrites nothing


def test_resume_of_a_resumable_key_is_recorded_without_losing_the_original(tmp_path):
    ckpt = _trained(tmp_path)
    d = ckpt.parent.parent
    run = _start(tmp_path, "--resume", str(ckpt), "--set", "train.epochs=5")
    assert run.resume_changed == {"train.epochs": (3, 5)}
    model, opt = _model(), None
    torch.nn.init.zeros_(model[0].weight)
    run.open()
    assert run.run_dir == d
    assert run.resume(model=model) == (2, 2)
    assert torch.equal(model[0].weight, safe_load(ckpt)["model"]["0.weight"])
    run.close()
    env = json.loads((d / "env.json").read_text())
    (r,) = env["resumes"]
    assert r["checkpoint"] == str(ckpt) and (r["epoch"], r["step"]) == (2, 2)
    assert r["changed"] == {"train.epochs": [3, 5]} and r["overrides"] == ["train.epochs=5"]
    assert env["run"]["seed"] == 0 and "cli" in env  # the original record is still there
    assert yaml.safe_load((d / "config.yaml").read_text())["train"]["epochs"] == 5
    assert (d / "overrides.txt").read_text() == ""
    assert "changed: train.epochs: 3 -> 5" in (d / "train.log").read_text()
    del opt


def test_resume_auto_picks_the_run_with_the_same_overrides(tmp_path):
    main = _trained(tmp_path)
    time.sleep(1.1)  # run directories are stamped to the second
    ablation = _trained(tmp_path, "--set", "train.schedule=step")
    assert latest_checkpoint("demo", "default", 0, tmp_path) == ablation
    assert _start(tmp_path, "--resume", "auto").resume_from == main
    assert _start(tmp_path, "--resume", "auto", "--set", "train.schedule=step").resume_from == ablation
    # a resumable key may differ; a value written differently is the same override
    assert _start(tmp_path, "--resume", "auto", "--set", "train.epochs=9").resume_from == main
    fresh = _start(tmp_path, "--resume", "auto", "--set", "lr=0.3")
    assert fresh.resume_from is None and fresh.resume() == (0, 0)
    assert _start(tmp_path, "--resume", "auto", "--seed", "4").resume_from is None


def test_truncated_checkpoint_is_an_error_naming_the_file(tmp_path):
    ckpt = _trained(tmp_path)
    data = ckpt.read_bytes()
    for n in (0, 100, len(data) // 2, len(data) - 8):
        ckpt.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=rf"{ckpt}: not a readable checkpoint \({n} bytes"):
            _start(tmp_path, "--resume", str(ckpt))
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        _start(tmp_path, "--resume", str(tmp_path / "x.pt"))


def test_resume_into_a_model_of_another_width_names_the_checkpoint(tmp_path):
    ckpt = _trained(tmp_path)
    run = _start(tmp_path, "--resume", str(ckpt))
    with pytest.raises(CheckpointError, match=rf"(?s){ckpt}: the checkpoint.s model does not fit.*size mismatch"):
        run.resume(model=_model(width=8))
    run.close()


def test_world_size_change_is_refused_unless_allowed(tmp_path):
    ckpt = _trained(tmp_path)
    st = safe_load(ckpt)
    st["rng"], st["world_size"] = st["rng"] * 2, 2
    torch.save(st, ckpt)
    with pytest.raises(ResumeError, match=r"written by 2 process\(es\), this run has 1.*--nproc_per_node=2"):
        _start(tmp_path, "--resume", str(ckpt))
    run = _start(tmp_path, "--resume", str(ckpt), "--allow-world-size-change")
    assert run.resume(model=_model()) == (2, 2)
    run.close()


def test_save_refuses_non_finite_state_and_keeps_the_previous_checkpoint(tmp_path):
    run = _start(tmp_path).open()
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    path = run.save(model=model, optimizer=opt, epoch=1, step=1, extra={"lr": np.float64(0.1)})
    good = safe_load(path)  # numpy scalars were stored as plain numbers: weights_only loads it
    assert good["extra"]["lr"] == 0.1 and oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with torch.no_grad():
        model[1].bias[0] = float("inf")
    with pytest.raises(NonFiniteError, match=rf"parameter 1.bias .*The last good checkpoint is kept: {path} \(epoch 1"):
        run.save(model=model, optimizer=opt, epoch=2, step=2)
    with torch.no_grad():
        model[1].bias[0] = 0.0
    next(iter(opt.state.values()))["exp_avg_sq"][0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"optimizer state 'exp_avg_sq' of 0.weight"):
        run.save(model=model, optimizer=opt, epoch=2, step=2)
    kept = safe_load(path)
    assert kept["epoch"] == 1 and all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])
    run.close()


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_checkpoint_is_world_readable_under_umask_022(tmp_path):
    old = os.umask(0o022)
    try:
        ckpt = _trained(tmp_path, epochs=1)
    finally:
        os.umask(old)
    assert ckpt.stat().st_mode & 0o777 == 0o644


def test_second_live_writer_is_refused_naming_the_pid(tmp_path):
    ckpt = _trained(tmp_path, epochs=1)
    d = ckpt.parent.parent
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(d / LOCK_NAME)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()} {os.uname().nodename} now'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=rf"{d} is in use by PID {holder.pid} "):
            _start(tmp_path, "--resume", str(ckpt))
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is stale and taken over, with a warning
    assert (d / LOCK_NAME).read_text().split()[0] == str(holder.pid)
    run = _start(tmp_path, "--resume", str(ckpt)).open()
    assert (d / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    run.close()
    assert f"taking over the stale lock {d / LOCK_NAME} of PID {holder.pid}" in (d / "train.log").read_text()


def test_run_dir_holding_a_run_is_not_overwritten(tmp_path):
    ckpt = _trained(tmp_path, epochs=1)
    d = ckpt.parent.parent
    with pytest.raises(RunError, match="already holds a run.*--resume"):
        _start(tmp_path, "--run-dir", str(d))
    run = _start(tmp_path, "--run-dir", str(d), "--resume", str(ckpt))
    assert run.open().run_dir == d
    run.close()


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", ""])
def test_config_name_cannot_leave_the_runs_tree(tmp_path, name):
    with pytest.raises(ConfigError, match="not a plain folder name"):
        _start(tmp_path, config_name=name)


def test_metrics_logged_after_the_checkpoint_by_a_killed_run_are_dropped(tmp_path):
    ckpt = _trained(tmp_path, epochs=2)
    d = ckpt.parent.parent
    with open(d / "metrics.jsonl", "a") as f:  # what a run killed during epoch 3 had logged
        f.write(json.dumps({"step": 3, "split": "train", "loss": 9.0}) + "\n" + '{"step": 3, "spl')
    run = _start(tmp_path, "--resume", str(ckpt)).open()
    run.metrics.log(3, "train", loss=0.3)
    run.close()
    recs = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in recs] == [(1, 1.0), (2, 0.5), (3, 0.3)]
    assert "dropped 2 metric record(s) the interrupted run logged after step 2" in (d / "train.log").read_text()


def test_run_dir_metrics_and_save_before_open_are_a_clear_error(tmp_path):
    """The first API's open-on-first-use is gone: touching the run before open() names the fix and
    writes nothing; after open() the same calls work."""
    run = _start(tmp_path)
    for what, touch in (("run_dir", lambda: run.run_dir), ("run_dir", lambda: run.ckpt_dir),
                        ("metrics", lambda: run.metrics),
                        ("save()", lambda: run.save(model=_model(), epoch=1, step=1))):
        with pytest.raises(RunError, match=rf"run\.{re.escape(what)} is used before run\.open\(\).*"
                                           rf"{re.escape(str(run.planned_dir))}"):
            touch()
    assert _files(tmp_path) == []
    run.open()
    assert run.run_dir == run.planned_dir and run.ckpt_dir == run.planned_dir / "checkpoints"
    run.metrics.log(1, "train", loss=0.5)
    assert run.save(model=_model(), epoch=1, step=1).is_file()
    run.close()


def test_git_sha_short_form_names_head():
    full, short = git_sha(), git_sha(short=True)
    if full == "unknown":
        pytest.skip("not a git checkout")
    assert short != "unknown" and 4 <= len(short.removesuffix("-dirty")) < 40
    assert full.startswith(short.removesuffix("-dirty"))


def test_an_unclosed_run_object_of_this_process_does_not_block_a_resume(tmp_path):
    ckpt = _trained(tmp_path, epochs=1)
    crashed = _start(tmp_path, "--resume", str(ckpt)).open()  # an exception left it open (a notebook, a test)
    run = _start(tmp_path, "--resume", str(ckpt)).open()
    assert "earlier run object of this process" in (ckpt.parent.parent / "train.log").read_text()
    run.close()
    crashed.close()


def test_jsonl_reader_names_the_line_and_forgives_a_cut_last_line(tmp_path):
    from common.log import read_jsonl

    p = tmp_path / "results.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\n{"a" 2}\n{"a": 3}\n')
    with pytest.raises(ValueError, match=rf"{p}: line 2 is not valid JSON"):
        read_jsonl(p)
