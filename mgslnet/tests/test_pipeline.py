"""End to end on a tiny embedded set: train + eval beats the baselines and writes results (with
all / rare / common), predictions and figures; exact resume (in-process stop, and SIGKILL mid-epoch
with 1 and 2 processes); 2-process DDP (gloo); NaN guard; bad data fails before anything is written."""

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
from common.runtime import NonFiniteLossError
from common.testing import kill_and_resume, torchrun
from common.tsg.synthetic import generate
from mgslnet import data as mgsl_data
from mgslnet import eval as mgsl_eval
from mgslnet import train as mgsl_train

# Two queried events per video, no shared concepts (the v1 world): a model that reads the sentence
# and the clips beats random and the location prior by far on 64 training videos.
TINY = {"preset": "v1", "train_videos": 64, "test_videos": 40, "queries_per_video": 2, "distractors": 0,
        "hard_negative": 0.0, "noise": 0.3, "feature_dim": 16, "glove_dim": 50, "loc_bias": 0.0, "zipf": 1.5}
SETS = ["data.num_clips=16", "model.d=32", "model.heads=2", "mgsl.slots=16", "train.batch_size=8",
        "train.warmup_steps=5", "train.lr=3e-3", "eval.figures=4"]
FEW = ["data.train_fraction=0.25"]  # 32 queries: 4 steps per epoch


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tsg")
    out = generate(root / "tsg_longtail", seed=3, **TINY)
    meta = json.loads((out / "meta.json").read_text())
    # what the v2 generator writes: the rare subset (a concept seen < 10 times in train) and others
    meta["test_subsets"] = {"rare": meta["test_rare_query_ids"], "first_ten": list(range(10))}
    (out / "meta.json").write_text(json.dumps(meta))
    return root


def _args(root, epochs, run_dir=None, seed=0, extra=()):
    a = ["--data-root", str(root), "--no-tb", "--seed", str(seed), "--device", "cpu", "--set", f"train.epochs={epochs}"]
    a += ["--run-dir", str(run_dir)] if run_dir else []
    for s in (*SETS, *extra):
        a += ["--set", s]
    return a


def _eval(root, run_dir, *extra):
    assert mgsl_eval.main(["--data-root", str(root), "--run-dir", str(run_dir), "--device", "cpu", *extra]) == 0
    return json.loads((Path(run_dir) / "results.json").read_text())


def test_train_eval_beats_the_baselines_with_rare_and_common(tiny_root, tmp_path):
    run_dir = tmp_path / "run"
    assert mgsl_train.main(_args(tiny_root, 10, run_dir)) == 0
    res = _eval(tiny_root, run_dir)
    m, base = res["metrics"], res["baselines"]
    assert res["project"] == "mgslnet" and res["num_queries"] == 80 and set(base) == {"bow", "prior", "random"}
    # measured (seed 0, 10 epochs): R1@0.5 37-46, mIoU 32-37; random 5.0 / 14.4, prior 13.8 / 17.3
    assert m["R1@0.5"] > base["random"]["R1@0.5"] + 20 and m["mIoU"] > base["random"]["mIoU"] + 12, (m, base)
    assert m["R1@0.5"] > base["prior"]["R1@0.5"] + 15 and m["mIoU"] > base["prior"]["mIoU"] + 10, (m, base)
    # all / rare / common: meta.json's rare subset and its complement, with the baselines on the same queries
    meta = json.loads((tiny_root / "tsg_longtail" / "meta.json").read_text())
    subs = res["subsets"]
    assert res["rare_source"] == "meta" and subs["rare"]["n"] == len(meta["test_rare_query_ids"])
    assert subs["rare"]["n"] + subs["common"]["n"] == 80 and subs["first_ten"]["n"] == 10
    assert set(subs["rare"]["baselines"]) == {"bow", "prior", "random"}
    assert res["ablation"] == {"interaction": "gcn", "memory": "both", "w_align": 0.1, "hetero": True}
    # ranking vs regression, test vs the first training queries (all 128 here)
    diag = res["diagnostics"]
    # the v1 meta.json records no per-query concepts, so no seen_* bins (test_components covers them)
    assert set(diag) == {"all", "rare", "common", "train_probe"} and diag["train_probe"]["n"] == 128
    assert not any(name.startswith("seen_") for name in subs)
    assert diag["all"]["best_clip_R1@0.5"] >= m["R1@0.5"] and 0 <= diag["all"]["top1_clip_in_moment"] <= 100
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 80 and len(json.loads(lines[0])["pred"]) == 5
    for fig in ("predictions", "memory", "subsets"):
        png = run_dir / "figures" / f"{fig}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, fig
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == list(range(1, 11))
    assert all(k in recs[0] for k in ("reg", "iou", "conf", "align", "loss", "video_slots_used"))
    # the content-word rule instead of meta.json; eval's --set is recorded
    res = _eval(tiny_root, run_dir, "--set", "eval.rare=words", "--set", "eval.figures=0")
    assert res["rare_source"] == "words" and res["eval_overrides"] == ["eval.rare=words", "eval.figures=0"]


def test_stop_and_resume_equals_the_uninterrupted_run(tiny_root, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    mgsl_train.main(_args(tiny_root, 3, full, extra=FEW))
    mgsl_train.main(_args(tiny_root, 3, cut, extra=FEW) + ["--stop-after-epoch", "1"])
    assert safe_load(cut / "checkpoints" / "last.pt")["epoch"] == 1
    mgsl_train.main(_args(tiny_root, 3, cut, extra=FEW) + ["--resume", str(cut / "checkpoints" / "last.pt")])
    a, b = safe_load(full / "checkpoints" / "last.pt"), safe_load(cut / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"] == 12
    assert "video_memory.usage" in a["model"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ea = _eval(tiny_root, full, "--set", "eval.figures=0")
    eb = _eval(tiny_root, cut, "--set", "eval.figures=0")
    assert ea["metrics"] == eb["metrics"] and ea["subsets"] == eb["subsets"]


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_sigkill_mid_epoch_then_resume_is_exact(tiny_root, tmp_path, nproc):
    res = kill_and_resume("mgslnet.train", _args(tiny_root, 3, extra=FEW), kill_at_step=6 if nproc == 1 else 3,
                          nproc=nproc, workdir=tmp_path)
    assert res.identical == res.total and res.optimizer_identical == res.optimizer_total, res.summary()
    assert res.metrics_equal and res.checkpoint_epoch == 1, res.summary()
    ea = _eval(tiny_root, res.uninterrupted.parent.parent, "--set", "eval.figures=0")
    eb = _eval(tiny_root, res.resumed.parent.parent, "--set", "eval.figures=0")
    assert ea["metrics"] == eb["metrics"]


@pytest.mark.slow
def test_two_process_ddp_gloo(tiny_root, tmp_path):
    run_dir = tmp_path / "ddp"
    torchrun("mgslnet.train", _args(tiny_root, 1, run_dir, extra=FEW), nproc=2)
    assert json.loads((run_dir / "env.json").read_text())["world_size"] == 2
    st = safe_load(run_dir / "checkpoints" / "last.pt")
    assert st["epoch"] == 1 and st["step"] == 2 and len(st["rng"]) == 2  # 32 queries / (8 per rank x 2 ranks)
    assert all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    from mgslnet.losses import Objective

    real = Objective.forward
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        parts = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] > 4:  # epoch 1 has 4 steps (32 queries / 8)
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(Objective, "forward", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="epoch 1 step 4"):
        mgsl_train.main(_args(tiny_root, 3, run_dir, extra=FEW))
    st = safe_load(run_dir / "checkpoints" / "last.pt")
    assert st["epoch"] == 1 and all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())


def test_bad_data_fails_before_anything_is_written(tiny_root, tmp_path, capsys):
    """A missing video, NaN features and a reversed moment: one error naming each file and record,
    raised before the run directory exists; the checker (python -m mgslnet.data) says the same."""
    root = tmp_path / "broken"
    d = root / "tsg_longtail"
    shutil.copytree(tiny_root / "tsg_longtail", d)
    with h5py.File(d / "features.h5", "a") as f:
        del f["SYN00003"]
        x = f["SYN00005"][()]
        x[1, 0] = np.nan
        del f["SYN00005"]
        f["SYN00005"] = x
    lines = (d / "charades_sta_train.txt").read_text().splitlines()
    lines[6] = f"{lines[6].split()[0]} 9.0 3.0##a reversed moment"
    (d / "charades_sta_train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataCheckError) as e:  # every problem at once, each with its file and record
        mgsl_train.main(_args(root, 1, tmp_path / "r1", extra=["data.check=full"]))
    msg = str(e.value)
    assert "SYN00003: no features for this id" in msg and "SYN00005" in msg and "charades_sta_train.txt" in msg, msg
    assert "line 7" in msg, msg
    assert not (tmp_path / "r1").exists()
    assert mgsl_data.main(["--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "SYN00003" in err and "SYN00005" in err and "NaN" in err and "line 7" in err
    (d / "glove.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"MISSING .*glove\.txt"):
        mgsl_train.main(_args(root, 1, tmp_path / "r3"))
    assert not (tmp_path / "r3").exists()


def test_the_embedded_set_is_kept_while_its_knobs_match_and_regenerated_otherwise(tmp_path, monkeypatch):
    """``make -C mgslnet data`` (generate_longtail) writes LONGTAIL's world once, reuses it while its
    seed and knobs are LONGTAIL's, and regenerates a set made by another default (an old
    data/tsg_longtail is never silently scored as the new world). Tiny sizes, the default's other knobs."""
    knobs = {**mgsl_data.LONGTAIL["knobs"], "train_videos": 12, "test_videos": 6}
    monkeypatch.setitem(mgsl_data.LONGTAIL, "knobs", knobs)
    out = mgsl_data.generate_longtail(tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    assert out == tmp_path / "tsg_longtail" and meta["seed"] == mgsl_data.LONGTAIL["seed"]
    assert all(meta["knobs"][k] == v for k, v in knobs.items())
    stamp = (out / "features.h5").stat().st_mtime_ns
    assert mgsl_data.generate_longtail(tmp_path) == out and (out / "features.h5").stat().st_mtime_ns == stamp
    monkeypatch.setitem(mgsl_data.LONGTAIL, "knobs", {**knobs, "aligned_space": not knobs["aligned_space"]})
    mgsl_data.generate_longtail(tmp_path)
    assert json.loads((out / "meta.json").read_text())["knobs"]["aligned_space"] is not knobs["aligned_space"]
