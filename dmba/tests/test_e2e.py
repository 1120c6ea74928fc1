"""End to end on a tiny generated set: train -> eval (results.json), exact resume, torchrun DDP."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.checkpoint import safe_load
from dmba import eval as dmba_eval
from dmba import train as dmba_train
from dmba.synthetic import generate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate(root / "tiny", seed=1, n_train=8, n_test=4, size=32, min_count=3, max_count=12, r_far=1.0, r_near=2.0)
    return root


def _args(root, runs, *extra):
    return ["--data-root", str(root), "--runs-root", str(runs), "--no-tb", "--device", "cpu",
            "--set", "dataset.root=tiny", "--set", "model.width=0.125", "--set", "train.batch_size=4",
            "--set", "train.eval_batch_size=4", "--set", "data.cache=false", *extra]


def test_train_eval_writes_results(tiny_root, tmp_path):
    extra = ["--set", "train.epochs=2", "--set", "attack.mode=dmba_plus", "--set", "model.bn=true"]
    run_dir = dmba_train.main(_args(tiny_root, tmp_path, *extra))
    assert run_dir.parent.name == "synthetic-dmba_plus"
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    m = dmba_eval.main(_args(tiny_root, tmp_path, *extra))
    res = json.loads((run_dir / "results.json").read_text())
    assert res["config"] == "synthetic-dmba_plus" and res["dataset"] == "synthetic" and res["n_images"] == 4
    for k in ("mae", "mse", "trig_mae_clean", "count_ratio", "asr_minus", "asr_plus", "trig_mae_plus"):
        assert k in res["metrics"] and res["metrics"][k] == pytest.approx(m[k])
    preds = json.loads((run_dir / "predictions.json").read_text())
    assert preds["target_plus"] == [2 * g for g in preds["gt"]]


def test_resume_after_kill_gives_identical_model_and_metrics(tiny_root, tmp_path):
    extra = ["--set", "train.epochs=3", "--set", "attack.mode=dmba_minus", "--set", "data.crop=16",
             "--set", "data.flip=true", "--seed", "5"]
    full = dmba_train.main(_args(tiny_root, tmp_path / "a", *extra))
    part = dmba_train.main(_args(tiny_root, tmp_path / "b", *extra, "--stop-after-epoch", "1"))
    assert safe_load(part / "checkpoints/last.pt")["epoch"] == 1
    resumed = dmba_train.main(_args(tiny_root, tmp_path / "b", *extra, "--resume", "auto"))
    assert resumed == part
    a, b = safe_load(full / "checkpoints/last.pt"), safe_load(resumed / "checkpoints/last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ma = dmba_eval.main(_args(tiny_root, tmp_path / "a", *extra))
    mb = dmba_eval.main(_args(tiny_root, tmp_path / "b", *extra))
    assert ma == mb


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ddp_two_processes_matches_one(tiny_root, tmp_path):
    extra = ["--set", "train.epochs=1", "--set", "loss.reduction=mean", "--set", "optim.name=sgd",
             "--set", "optim.lr=0.01", "--set", "optim.momentum=0.0", "--set", "data.flip=false",
             "--set", "model.bn=false"]  # per-rank flips and BatchNorm statistics would differ
    single = dmba_train.main(_args(tiny_root, tmp_path / "one", *extra))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(REPO / "dmba/train.py"),
           *_args(tiny_root, tmp_path / "two", *extra, "--set", "train.batch_size=2")]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    two = sorted((tmp_path / "two").glob("dmba/*/*/checkpoints/last.pt"))
    assert len(two) == 1
    env_json = json.loads((two[0].parent.parent / "env.json").read_text())
    assert env_json["world_size"] == 2
    a, b = safe_load(single / "checkpoints/last.pt")["model"], safe_load(two[0])["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_bench_smoke_counts_flops_and_writes_record(tmp_path):
    from dmba import bench

    rec = bench.main(["--models", "csrnet", "kdmg", "--size", "32", "--width", "0.125", "--iters", "1",
                      "--device", "cpu", "--runs-root", str(tmp_path)])
    assert [r["model"] for r in rec["results"]] == ["csrnet", "kdmg"]
    for r in rec["results"]:
        assert r["train_flops_per_step"] > 0 and r["train_images_per_s"] > 0 and r["fraction_of_matmul_peak"] > 0
    assert len(list((tmp_path / "dmba" / "bench").glob("*.json"))) == 1


def test_amp_bf16_training_runs_and_divergence_stops_with_clear_error(tiny_root, tmp_path):
    run_dir = dmba_train.main(_args(tiny_root, tmp_path, "--set", "train.epochs=1", "--amp"))
    rec = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["epoch"] == 1 and rec["loss"] == pytest.approx(rec["loss"])  # finite, not NaN
    from common.runtime import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        dmba_train.main(_args(tiny_root, tmp_path, "--set", "train.epochs=1", "--set", "optim.lr=1e30",
                              "--set", "train.batch_size=1", "--set", "model.bn=false"))


@pytest.mark.parametrize("model", ["can", "sfanet", "bayesian", "kdmg"])
def test_every_victim_trains_backdoored_and_evaluates(tiny_root, tmp_path, model):
    extra = ["--set", f"model.name={model}", "--set", "train.epochs=1", "--set", "attack.mode=dmba_minus"]
    run_dir = dmba_train.main(_args(tiny_root, tmp_path, *extra))
    m = dmba_eval.main(_args(tiny_root, tmp_path, *extra))
    res = json.loads((run_dir / "results.json").read_text())
    assert res["model"] == model and res["attack"] == "dmba_minus"
    assert all(v == v for v in m.values())  # no NaN metric
