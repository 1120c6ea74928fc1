"""End to end on a tiny embedded set: train + eval beats the trivial baselines and writes results,
predictions and figures; a SIGKILL mid-epoch + --resume ends with identical weights and metrics;
2-process DDP (gloo); the NaN guard keeps the last good checkpoint; bad data fails before anything
is written."""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from common.checkpoint import safe_load
from common.data import DatasetNotFoundError
from common.datacheck import DataCheckError
from common.runtime import NonFiniteError
from common.testing import kill_and_resume, torchrun
from common.tsg.synthetic import generate
from ssrn import data as ssrn_data
from ssrn import eval as ssrn_eval
from ssrn import train as ssrn_train

# The first world (linear, so a tiny model learns it in seconds) with dense raw frames (4 per second,
# ~120 per video) of which 16 are sampled: two queried events per video, no shared concepts.
TINY = {"preset": "v1", "train_videos": 64, "test_videos": 30, "queries_per_video": 2, "distractors": 0,
        "hard_negative": 0.0, "noise": 0.3, "feature_dim": 16, "feature_rate": 4.0, "loc_bias": 0.0, "zipf": 1.5}
SETS = ["model.d=32", "model.heads=2", "model.word_dim=50", "train.batch_size=8", "train.warmup_steps=5",
        "train.lr=3e-3", "train.num_workers=0", "data.subdir=tsg_synthetic", "data.dataset=tsg_tiny"]
SUBSETS = {"first_ten": list(range(10))}
E2E_EPOCHS = 5   # 8 steps of 16 per epoch: the fast end-to-end test stays within its CPU budget


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tsg")
    out = generate(root / "tsg_synthetic", seed=3, **TINY)
    meta = json.loads((out / "meta.json").read_text())
    meta["test_subsets"] = SUBSETS  # what the v2 generator writes
    (out / "meta.json").write_text(json.dumps(meta))
    return root


def _args(root, epochs, extra=(), run_dir=None):
    a = ["--data-root", str(root), "--no-tb", "--device", "cpu", "--set", f"train.epochs={epochs}"]
    a += ["--run-dir", str(run_dir)] if run_dir else []
    for s in (*SETS, *extra):
        a += ["--set", s]
    return a


def _eval(root, run_dir, *extra):
    assert ssrn_eval.main(["--data-root", str(root), "--run-dir", str(run_dir), "--device", "cpu", *extra]) == 0
    return json.loads((Path(run_dir) / "results.json").read_text())


def test_train_eval_beats_the_baselines_and_writes_everything(tiny_root, tmp_path):
    run_dir = tmp_path / "run"
    assert ssrn_train.main(_args(tiny_root, E2E_EPOCHS, ["train.batch_size=16", "train.lr=5e-3"], run_dir=run_dir)) == 0
    res = _eval(tiny_root, run_dir)
    m, base = res["metrics"], res["baselines"]
    assert res["project"] == "ssrn" and res["dataset"] == "tsg_tiny" and res["num_queries"] == 60
    assert set(base) == {"bow", "prior", "random", "grid_oracle"}
    assert m["R1@0.5"] >= base["random"]["R1@0.5"] + 20 and m["mIoU"] >= base["random"]["mIoU"] + 15, (m, base)
    assert m["mIoU"] > base["prior"]["mIoU"] + 10 and m["mIoU"] <= base["grid_oracle"]["mIoU"] + 1e-9, (m, base)
    assert set(res["subsets"]) == {"first_ten", "below_2_steps"} and res["subsets"]["first_ten"]["n"] == 10
    assert set(res["subsets"]["first_ten"]["baselines"]) == set(base)
    assert res["ablation"]["siamese"] == 2 and sum(res["recall_by_length"]["counts"]) == 60
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 60 and len(json.loads(lines[0])["pred"]) == 5
    for name in ("predictions", "siamese_reasoning", "recall_by_length"):
        png = run_dir / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, name
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, E2E_EPOCHS + 1))
    assert all(k in records[0] for k in ("ground", "ground_siamese", "reason", "loss"))
    assert res["eval_overrides"] == [] and _eval(tiny_root, run_dir, "--set", "eval.figures=0")["eval_overrides"] == [
        "eval.figures=0"]


@pytest.mark.slow
def test_kill_mid_epoch_and_resume_gives_identical_weights_and_metrics(tiny_root, tmp_path):
    """Offsets are a pure function of (seed, epoch, index): SIGKILL at step 11 (epoch 2 of 3, after
    the epoch-1 checkpoint) and --resume end exactly where the uninterrupted run ends."""
    args = _args(tiny_root, 3, ["data.train_fraction=0.5"])  # 64 queries: 8 steps per epoch
    res = kill_and_resume("ssrn.train", args, kill_at_step=11, workdir=tmp_path, ignore_metrics=("time", "samples_per_s"))
    assert res.checkpoint_epoch == 1 and res.identical == res.total and res.metrics_equal, res.summary()
    assert res.optimizer_identical == res.optimizer_total, res.summary()
    a = _eval(tiny_root, res.uninterrupted.parent.parent, "--set", "eval.figures=0")
    b = _eval(tiny_root, res.resumed.parent.parent, "--set", "eval.figures=0")
    assert a["metrics"] == b["metrics"] and a["subsets"] == b["subsets"]


@pytest.mark.slow
def test_two_process_ddp_gloo(tiny_root, tmp_path):
    run_dir = tmp_path / "ddp"
    torchrun("ssrn.train", _args(tiny_root, 1, ["data.train_fraction=0.5"], run_dir=run_dir), nproc=2)
    assert json.loads((run_dir / "env.json").read_text())["world_size"] == 2
    st = safe_load(run_dir / "checkpoints" / "last.pt")
    assert st["epoch"] == 1 and st["step"] == 4 and len(st["rng"]) == 2  # 64 queries / (8 per rank x 2 ranks)
    assert all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    from ssrn.losses import Objective

    real = Objective.forward
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        parts = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] > 8:  # epoch 1 has 8 steps
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(Objective, "forward", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(NonFiniteError, match="epoch 1 step 8"):
        ssrn_train.main(_args(tiny_root, 3, ["data.train_fraction=0.5"], run_dir=run_dir))
    st = safe_load(run_dir / "checkpoints" / "last.pt")
    assert st["epoch"] == 1 and all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())


def test_bad_data_fails_before_anything_is_written(tiny_root, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(tiny_root / "tsg_synthetic", root / "tsg_synthetic")
    base = root / "tsg_synthetic"
    with h5py.File(base / "features.h5", "a") as f:
        del f["SYN00003"]
    with pytest.raises(DataCheckError, match="features.h5: SYN00003: no features"):
        ssrn_train.main(_args(root, 1, run_dir=tmp_path / "r1"))
    assert not (tmp_path / "r1").exists()
    assert ssrn_data.main(["--data-root", str(root), "--set", "data.subdir=tsg_synthetic"]) == 2
    assert "SYN00003" in capsys.readouterr().err
    with h5py.File(base / "features.h5", "a") as f:   # back, but with a NaN: the full check names it
        x = np.ones((40, 16), np.float32)
        x[7, 2] = np.nan
        f["SYN00003"] = x
    with pytest.raises(Exception, match="SYN00003.*NaN"):
        ssrn_train.main(_args(root, 1, ["data.check=full"], run_dir=tmp_path / "r2"))
    assert not (tmp_path / "r2").exists()
    with h5py.File(base / "features.h5", "a") as f:
        f["SYN00003"][7, 2] = 0.0
    lines = (base / "charades_sta_train.txt").read_text().splitlines()
    head, sentence = lines[4].split("##", 1)
    lines[4] = f"{head.split()[0]} 9.0 3.0##{sentence}"   # end before start
    (base / "charades_sta_train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataCheckError, match="charades_sta_train.txt.*line 5"):
        ssrn_train.main(_args(root, 1, run_dir=tmp_path / "r3"))
    assert not (tmp_path / "r3").exists()
    (base / "glove.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"MISSING .*glove\.txt"):
        ssrn_train.main(_args(root, 1, run_dir=tmp_path / "r4"))
    assert not (tmp_path / "r4").exists()
