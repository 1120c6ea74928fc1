"""End to end on a tiny embedded world (aligned space): train + eval write results.json with the
reference baselines, subsets, diagnostics, predictions and figures; the paired ceiling (the same
network with pairs) beats `random` and `prior`; DSCNet itself does not beat `random` on the default set
(slow, strict xfail: the README's null result); `--resume` equals the uninterrupted run; a
2-process DDP run (gloo) killed mid-epoch resumes exactly (slow); NaN guard; bad data fails before
anything is written."""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from common.checkpoint import safe_load
from common.config import ConfigError
from common.data import DatasetNotFoundError
from common.datacheck import DataCheckError
from common.runtime import NonFiniteLossError
from common.testing import kill_and_resume, torchrun
from common.tsg.synthetic import generate
from dscnet import data as dsc_data
from dscnet import eval as dsc_eval
from dscnet import train as dsc_train

TINY = {"train_videos": 48, "test_videos": 24, "feature_dim": 16, "aligned_space": True, "distractors": 0,
        "hard_negative": 0.0, "max_queries": 2}
SETS = ["data.num_clips=16", "model.query_hidden=16", "model.z_dim=16", "model.d=16", "model.video_layers=1",
        "model.head_layers=1", "dscnet.clusters=6", "train.batch_size=16", "train.query_batch_size=32",
        "train.warmup_steps=2", "train.lr=3e-3", "dscnet.ae_epochs=1", "dscnet.kmeans_iters=10"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tsg")
    generate(root / "tsg_synthetic", seed=3, **TINY)
    return root


def _args(root, run_dir, epochs, seed=0, extra=()):
    a = ["--data-root", str(root), "--run-dir", str(run_dir), "--no-tb", "--seed", str(seed), "--device", "cpu",
         "--set", f"train.epochs={epochs}"]
    for s in (*SETS, *extra):
        a += ["--set", s]
    return a


def _eval(root, run_dir, *extra):
    assert dsc_eval.main(["--data-root", str(root), "--run-dir", str(run_dir), "--device", "cpu", *extra]) == 0
    return json.loads((Path(run_dir) / "results.json").read_text())


def _eval_out(root, run_dir, out, *extra):
    assert dsc_eval.main(["--data-root", str(root), "--run-dir", str(run_dir), "--out", str(out), "--device", "cpu",
                          *extra]) == 0
    return json.loads((Path(out) / "results.json").read_text())


def test_train_eval_writes_results_baselines_diagnostics_and_figures(tiny_root, tmp_path):
    run_dir = tmp_path / "run"
    assert dsc_train.main(_args(tiny_root, run_dir, epochs=3)) == 0
    res = _eval(tiny_root, run_dir, "--set", "eval.figures=3")
    m, base = res["metrics"], res["baselines"]
    assert res["project"] == "dscnet" and res["dataset"] == "tsg_synthetic"
    assert set(base) == {"random", "prior", "bow", "query_agnostic", "foreground_only"}
    assert all(0 <= m[k] <= 100 for k in ("R1@0.5", "R1@0.7", "mIoU", "diag_purity", "diag_selected_true",
                                          "diag_event_hit", "diag_event_hit_chance"))
    meta = json.loads((tiny_root / "tsg_synthetic" / "meta.json").read_text())
    assert set(res["subsets"]) == set(meta["test_subsets"])
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == res["num_queries"] and len(json.loads(lines[0])["pred"]) == 5
    for fig in ("predictions.png", "aggregation.png"):
        png = run_dir / "figures" / fig
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    log = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log[0]["head"] == 0 and log[1]["head"] > 0 and log[1]["pull"] > 0 and log[1]["fg"] > 0   # stage 1 = AE only
    st = safe_load(run_dir / "checkpoints" / "last.pt")   # centres, shares and assignments are in the checkpoint
    assert st["model"]["ready"] and st["model"]["centres"].abs().sum() > 0 and (st["modules"]["clusters"]["assign"] >= 0).all()
    assert res["eval_overrides"] == ["eval.figures=3"]   # eval may change eval.* / dscnet.infer / dscnet.foreground
    # the foreground branch switched off at inference on a run trained with it: the checkpoint still loads
    off = _eval_out(tiny_root, run_dir, tmp_path / "no_fg", "--set", "dscnet.foreground=false", "--set",
                    "eval.figures=0")
    assert off["ablation"]["foreground"] is False and "foreground_only" in off["baselines"]
    with pytest.raises(ConfigError, match="eval may only change"):
        dsc_eval.main(["--data-root", str(tiny_root), "--run-dir", str(run_dir), "--set", "dscnet.size_prior=false"])


@pytest.mark.slow
def test_paired_ceiling_beats_random_and_prior(tiny_root, tmp_path):
    """The network works when given the pairs DSCNet does without (not DSCNet's own standing)."""
    run_dir = tmp_path / "paired"
    assert dsc_train.main(_args(tiny_root, run_dir, epochs=25, extra=["dscnet.paired=true", "dscnet.ae_epochs=0",
                                                                     "train.batch_size=8"])) == 0
    res = _eval(tiny_root, run_dir, "--set", "eval.figures=0")
    m, base = res["metrics"], res["baselines"]
    # measured: R1@0.5 32.5 / mIoU 34.8 vs random 7.5 / 18.3 and prior 25.0 / 23.1 (40 test queries)
    assert m["R1@0.5"] > base["random"]["R1@0.5"] + 15 and m["mIoU"] > base["random"]["mIoU"] + 10, (m, base)
    assert m["R1@0.5"] > base["prior"]["R1@0.5"] and m["mIoU"] > base["prior"]["mIoU"] + 5, (m, base)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, raises=AssertionError, reason="null result (README, Results): on the default embedded set DSCNet's top-1 "
                   "spans sit at chance positions (diag_event_hit ~ diag_event_hit_chance, diag_selected_true ~ "
                   "chance) and are shorter than random's, so it scores below `random`; strict: once the method "
                   "beats `random` this passes, fails as XPASS, and the marker and the README must change")
def test_dscnet_beats_random_on_the_default_embedded_set(tmp_path):
    """The issue's "end-to-end beats `random`", on the default set and schedule (configs/synthetic.yaml,
    seed 0; about 45 CPU-s). The tiny world is too small to tell (40 test queries: one seed's R1@0.5
    moves by 2.5 points per query), hence this slow test rather than a fast one."""
    generate(tmp_path / "tsg_synthetic", seed=0)
    run_dir = tmp_path / "run"
    assert dsc_train.main(["--data-root", str(tmp_path), "--run-dir", str(run_dir), "--no-tb", "--seed", "0",
                           "--device", "cpu"]) == 0
    res = _eval(tmp_path, run_dir, "--set", "eval.figures=0")
    m, rnd = res["metrics"], res["baselines"]["random"]
    assert m["R1@0.5"] > rnd["R1@0.5"] and m["mIoU"] > rnd["mIoU"], (m, rnd)


def test_resume_after_a_stop_equals_the_uninterrupted_run(tiny_root, tmp_path):
    """In-process (the SIGKILL + 2-process version is `slow`); the clustering state is restored."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    dsc_train.main(_args(tiny_root, full, epochs=3))
    dsc_train.main(_args(tiny_root, cut, epochs=3) + ["--stop-after-epoch", "2"])
    assert safe_load(cut / "checkpoints" / "last.pt")["epoch"] == 2
    dsc_train.main(_args(tiny_root, cut, epochs=3) + ["--resume", str(cut / "checkpoints" / "last.pt")])
    a, b = safe_load(full / "checkpoints" / "last.pt"), safe_load(cut / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["modules"]["clusters"]["assign"], b["modules"]["clusters"]["assign"])
    ra, rb = (json.loads(x) for x in ((full / "metrics.jsonl").read_text().splitlines()[-1],
                                      (cut / "metrics.jsonl").read_text().splitlines()[-1]))
    assert {k: v for k, v in ra.items() if k != "time"} == {k: v for k, v in rb.items() if k != "time"}


@pytest.mark.slow
def test_ddp_run_killed_mid_epoch_resumes_exactly(tiny_root, tmp_path):
    """2 processes (gloo): 48 videos / (16 x 2) = 2 video steps per epoch after 1 AE epoch (2 steps).
    SIGKILL at step 5 (mid-epoch 3), resume: weights, optimizer state and metrics are identical."""
    args = ["--data-root", str(tiny_root), "--no-tb", "--device", "cpu", "--set", "train.epochs=4",
            *[x for s in SETS for x in ("--set", s)]]
    res = kill_and_resume("dscnet.train", args, kill_at_step=5, workdir=tmp_path, nproc=2,
                          ignore_metrics=("time",))
    assert res.checkpoint_epoch == 2, res.summary()
    assert res.identical == res.total and res.optimizer_identical == res.optimizer_total, res.summary()
    assert res.metrics_equal, res.summary()
    assert safe_load(res.resumed)["world_size"] == 2


@pytest.mark.slow
def test_two_process_ddp_trains_and_ranks_agree(tiny_root, tmp_path):
    run_dir = tmp_path / "ddp"
    torchrun("dscnet.train", _args(tiny_root, run_dir, epochs=2), nproc=2)
    st = safe_load(run_dir / "checkpoints" / "last.pt")
    assert st["world_size"] == 2 and st["epoch"] == 2 and st["model"]["ready"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    from dscnet.losses import Objective

    real = Objective.forward
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        parts = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] > 3:   # epoch 1 (the autoencoder alone) has 3 steps (87 sentences / 32)
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(Objective, "forward", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="epoch 1 step 3"):
        dsc_train.main(_args(tiny_root, run_dir, epochs=3))
    st = safe_load(run_dir / "checkpoints" / "last.pt")
    assert st["epoch"] == 1 and all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())


def test_bad_data_fails_before_anything_is_written(tiny_root, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(tiny_root / "tsg_synthetic", root / "tsg_synthetic")
    with h5py.File(root / "tsg_synthetic" / "features.h5", "a") as f:
        del f["SYN00003"]
        x = f["SYN00005"][()]
        x[1, 0] = np.nan
        del f["SYN00005"]
        f["SYN00005"] = x
    train_file = root / "tsg_synthetic" / "charades_sta_train.txt"
    lines = train_file.read_text().splitlines()
    lines[2] = lines[2].split("##")[0].split(" ")[0] + " 9.0 3.0##a reversed moment"
    train_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataCheckError) as e:   # every problem at once, each with its file and record
        dsc_train.main(_args(root, tmp_path / "r1", epochs=1, extra=["data.check=full"]))
    msg = str(e.value)
    assert "SYN00003: no features for this id" in msg and "SYN00005" in msg and "charades_sta_train.txt" in msg
    assert not (tmp_path / "r1").exists()
    assert dsc_data.main(["--data-root", str(root)]) == 2   # the checker: the same message
    err = capsys.readouterr().err
    assert "SYN00003" in err and "SYN00005" in err and "NaN" in err
    (root / "tsg_synthetic" / "glove.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"MISSING .*glove\.txt"):
        dsc_train.main(_args(root, tmp_path / "r2", epochs=1))
    assert not (tmp_path / "r2").exists()
