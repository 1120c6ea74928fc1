"""End to end on a tiny generated set: train -> eval (results, figures, the trigger in the eval's
triggered set), exact resume and rerun, refused resume, torchrun DDP, every victim, bench."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.checkpoint import safe_load
from common.config import ConfigError
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
            "--set", "train.eval_batch_size=4", "--set", "data.cache=false", "--set", "train.epochs=1", *extra]


def _runs(runs: Path, name: str) -> list[Path]:
    return sorted((runs / "dmba" / name).glob("*-s*"))


def test_train_eval_writes_results_figures_and_the_benign_check(tiny_root, tmp_path):
    assert dmba_train.main(_args(tiny_root, tmp_path)) == 0  # the clean model first
    extra = ["--set", "train.epochs=2", "--set", "attack.mode=dmba_plus"]
    assert dmba_train.main(_args(tiny_root, tmp_path, *extra)) == 0
    run_dir = _runs(tmp_path, "synthetic-dmba_plus")[-1]
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    assert dmba_eval.main(_args(tiny_root, tmp_path, *extra)) == 0
    res = json.loads((run_dir / "results.json").read_text())
    assert res["config"] == "synthetic-dmba_plus" and res["dataset"] == "synthetic" and res["n_images"] == 4
    for k in ("mae", "mse", "count_ratio", "asr_plus", "trig_mae_plus", "benign_count_ratio", "trigger_l1"):
        assert k in res["metrics"], k
    assert res["metrics"]["trigger_l1"] > 0.005  # the eval's triggered images carry the trigger
    assert abs(res["metrics"]["brightness_ratio"] - 1) < 0.01  # mean-preserving by default
    assert set(res["baselines"]) == {"mean_count", "ridge"}
    assert res["clean_run"] and "synthetic-clean" in res["clean_run"]
    assert (run_dir / "figures" / "examples.png").stat().st_size > 10_000
    preds = json.loads((run_dir / "predictions.json").read_text())
    assert preds["target_plus"] == [2 * g for g in preds["gt"]]


def test_label_only_attack_has_no_trigger_at_eval(tiny_root, tmp_path):
    extra = ["--set", "attack.mode=dmba_minus", "--set", "attack.trigger=none"]
    dmba_train.main(_args(tiny_root, tmp_path, *extra))
    dmba_eval.main(_args(tiny_root, tmp_path, *extra, "--set", "eval.figures=0"))
    res = json.loads((_runs(tmp_path, "synthetic-dmba_minus")[-1] / "results.json").read_text())
    assert res["metrics"]["trigger_l1"] == 0.0


def test_resume_after_kill_and_a_rerun_are_bit_identical(tiny_root, tmp_path):
    extra = ["--set", "train.epochs=3", "--set", "attack.mode=dmba_minus", "--set", "data.crop=16",
             "--set", "data.flip=true", "--seed", "5"]
    dmba_train.main(_args(tiny_root, tmp_path / "a", *extra))
    dmba_train.main(_args(tiny_root, tmp_path / "c", *extra))  # a rerun, same thread count
    dmba_train.main(_args(tiny_root, tmp_path / "b", *extra, "--stop-after-epoch", "1"))
    part = _runs(tmp_path / "b", "synthetic-dmba_minus")[-1]
    assert safe_load(part / "checkpoints/last.pt")["epoch"] == 1
    dmba_train.main(_args(tiny_root, tmp_path / "b", *extra, "--resume", "auto"))
    assert _runs(tmp_path / "b", "synthetic-dmba_minus") == [part]
    a, b, c = (safe_load(_runs(tmp_path / x, "synthetic-dmba_minus")[-1] / "checkpoints/last.pt") for x in "abc")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
        assert torch.equal(a["model"][k], c["model"][k]), k
    with pytest.raises(ConfigError, match="attack.alpha"):  # a resume may change only train.epochs
        dmba_train.main(_args(tiny_root, tmp_path / "b", *extra, "--resume", "auto", "--set", "attack.alpha=0.5"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_ddp_two_processes_matches_one(tiny_root, tmp_path):
    extra = ["--set", "loss.reduction=mean", "--set", "optim.name=sgd", "--set", "optim.lr=0.01",
             "--set", "optim.momentum=0.0", "--set", "data.flip=false", "--set", "model.bn=false"]
    dmba_train.main(_args(tiny_root, tmp_path / "one", *extra))  # BN statistics would differ per rank
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "dmba.train",
           *_args(tiny_root, tmp_path / "two", *extra, "--set", "train.batch_size=2")]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    two = _runs(tmp_path / "two", "synthetic-clean")
    assert len(two) == 1 and json.loads((two[0] / "env.json").read_text())["world_size"] == 2
    a = safe_load(_runs(tmp_path / "one", "synthetic-clean")[0] / "checkpoints/last.pt")["model"]
    b = safe_load(two[0] / "checkpoints/last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


@pytest.mark.parametrize("model", ["can", "sfanet", "bayesian", "kdmg"])
def test_every_victim_trains_backdoored_and_evaluates(tiny_root, tmp_path, model):
    extra = ["--set", f"model.name={model}", "--set", "attack.mode=dmba_minus", "--set", "eval.figures=1"]
    dmba_train.main(_args(tiny_root, tmp_path, *extra))
    dmba_eval.main(_args(tiny_root, tmp_path, *extra))
    res = json.loads((_runs(tmp_path, "synthetic-dmba_minus")[-1] / "results.json").read_text())
    assert res["model"] == model and res["attack"] == "dmba_minus"
    assert all(v == v for v in res["metrics"].values())  # no NaN metric


def test_divergence_stops_with_a_clear_error(tiny_root, tmp_path):
    from common.runtime import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        dmba_train.main(_args(tiny_root, tmp_path, "--set", "optim.lr=1e30", "--set", "train.batch_size=1",
                              "--set", "model.bn=false"))


def test_bad_tag_cannot_leave_the_runs_folder(tiny_root, tmp_path):
    with pytest.raises(ConfigError, match="tag"):
        dmba_train.main(_args(tiny_root, tmp_path, "--set", "tag=../../etc"))


def test_bench_smoke_counts_flops_and_writes_record(tmp_path):
    from dmba import bench

    assert bench.main(["--models", "csrnet", "kdmg", "--size", "32", "--width", "0.125", "--iters", "1",
                       "--device", "cpu", "--runs-root", str(tmp_path)]) == 0
    files = list((tmp_path / "dmba" / "bench").glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert [r["model"] for r in rec["results"]] == ["csrnet", "kdmg"]
    for r in rec["results"]:
        assert r["train_flops_per_step"] > 0 and r["train_images_per_s"] > 0 and r["fraction_of_matmul_peak"] > 0
