import json

import pytest

from common.checkpoint import save_training_state
from common.cli import base_parser
from common.config import load_config
from common.run import latest_checkpoint, start_run


def _args(tmp_path, *extra):
    p = base_parser("t")
    return p.parse_args(["--device", "cpu", "--runs-root", str(tmp_path), "--set", "lr=0.5", *extra])


def test_start_run_writes_layout(tmp_path):
    args = _args(tmp_path, "--seed", "3")
    cfg = load_config(None, args.overrides, {"lr": 0.1})
    run = start_run("demo", args, cfg)
    assert run.run_dir.parent == tmp_path / "demo" / "default"
    assert run.run_dir.name.endswith("-s3")
    assert (run.run_dir / "config.yaml").read_text().strip() == "lr: 0.5"
    assert (run.run_dir / "overrides.txt").read_text() == "lr=0.5\n"
    env = json.loads((run.run_dir / "env.json").read_text())
    assert env["world_size"] == 1 and env["device"] == "cpu" and "torch" in env["packages"]
    run.metrics.log(1, "train", loss=0.25)
    run.log.info("hello")
    run.close()
    assert json.loads((run.run_dir / "metrics.jsonl").read_text())["loss"] == 0.25
    assert "hello" in (run.run_dir / "train.log").read_text()
    assert (run.run_dir / "tb").is_dir()


def test_resume_auto_continues_latest_run(tmp_path):
    import torch

    args = _args(tmp_path)
    cfg = load_config(None, args.overrides, {"lr": 0.1})
    first = start_run("demo", args, cfg)
    assert latest_checkpoint("demo", "default", 0, tmp_path) is None
    save_training_state(first.ckpt_dir / "last.pt", model=torch.nn.Linear(1, 1), epoch=2)
    again = start_run("demo", _args(tmp_path, "--resume", "auto"), cfg)
    assert again.resume_from == first.ckpt_dir / "last.pt" and again.run_dir == first.run_dir
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        start_run("demo", _args(tmp_path, "--resume", str(tmp_path / "x.pt")), cfg)
