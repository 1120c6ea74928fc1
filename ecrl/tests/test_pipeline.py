"""End-to-end tests on a tiny embedded set: train + eval beats `random`, exact resume, 2-process
DDP (gloo), NaN guard, and clear errors for missing data."""

import json
import os
import shutil
import socket

import h5py
import pytest
import torch
import torch.multiprocessing as mp

from common.checkpoint import safe_load
from common.data import DatasetNotFoundError
from common.runtime import NonFiniteLossError
from common.tsg import MissingVideoError
from common.tsg.synthetic import generate

# one event per video: the tiny test checks the pipeline learns (foreground detection), not language
TINY = {"preset": "v1", "train_videos": 48, "test_videos": 32, "queries_per_video": 1, "distractors": 0, "noise": 0.5,
        "feature_dim": 16, "glove_dim": 50, "loc_bias": 0.0}
SETS = ["data.num_clips=16", "model.d=32", "model.heads=2", "ecrl.refine_hidden=16", "train.batch_size=8",
        "train.warmup_steps=5", "train.lr=3e-3", "eval.batch_size=64"]


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


def test_train_eval_beats_random(tiny_root, tmp_path):
    from ecrl import eval as ev
    from ecrl import train as tr

    run_dir = tmp_path / "run"
    tr.main(_args(tiny_root, run_dir, epochs=6))
    out = ev.main(["--data-root", str(tiny_root), "--run-dir", str(run_dir), "--device", "cpu"])
    res = json.loads((run_dir / "results.json").read_text())
    assert res["project"] == "ecrl" and res["dataset"] == "tsg_synthetic" and res["num_queries"] == 32
    assert set(res["baselines"]) == {"prior", "random"}
    m, rnd = out["metrics"], out["baselines"]["random"]
    assert m["R1@0.5"] > rnd["R1@0.5"] + 10 and m["mIoU"] > rnd["mIoU"] + 5, (m, rnd)
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 32 and len(json.loads(lines[0])["pred"]) == 5
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == list(range(1, 7))
    assert all(k in metrics[0] for k in ("ground", "ground_aug", "sscl", "refine", "loss"))


def test_resume_after_kill_gives_same_final_state(tiny_root, tmp_path):
    from ecrl import eval as ev
    from ecrl import train as tr

    full, cut = tmp_path / "full", tmp_path / "cut"
    tr.main(_args(tiny_root, full, epochs=3))
    tr.main(_args(tiny_root, cut, epochs=3) + ["--stop-after-epoch", "1"])
    assert safe_load(cut / "checkpoints" / "last.pt")["epoch"] == 1
    tr.main(_args(tiny_root, cut, epochs=3) + ["--resume", str(cut / "checkpoints" / "last.pt")])
    a, b = safe_load(full / "checkpoints" / "last.pt"), safe_load(cut / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    ma = ev.main(["--data-root", str(tiny_root), "--run-dir", str(full), "--device", "cpu"])["metrics"]
    mb = ev.main(["--data-root", str(tiny_root), "--run-dir", str(cut), "--device", "cpu"])["metrics"]
    assert ma == mb


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    from ecrl import train as tr
    from ecrl.model import ECRL

    real = ECRL.forward
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        parts = real(self, *a, **k)
        calls["n"] += 1
        if calls["n"] > 6:  # epoch 1 has 6 steps (48 queries / 8)
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(ECRL, "forward", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="epoch 1 step 6"):
        tr.main(_args(tiny_root, run_dir, epochs=3))
    st = safe_load(run_dir / "checkpoints" / "last.pt")
    assert st["epoch"] == 1 and all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())


def test_missing_video_and_missing_files_fail_before_training(tiny_root, tmp_path):
    from ecrl import train as tr

    root = tmp_path / "broken"
    shutil.copytree(tiny_root / "tsg_synthetic", root / "tsg_synthetic")
    with h5py.File(root / "tsg_synthetic" / "features.h5", "a") as f:
        del f["SYN00003"]
    with pytest.raises(MissingVideoError, match="SYN00003"):
        tr.main(_args(root, tmp_path / "r1", epochs=1))
    assert not (tmp_path / "r1" / "checkpoints").exists()
    (root / "tsg_synthetic" / "glove.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"MISSING .*glove\.txt"):
        tr.main(_args(root, tmp_path / "r2", epochs=1))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, root, run_dir, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from common.runtime import unwrap
    from ecrl import train as tr

    _, model = tr.train(_args(root, run_dir, epochs=2))
    torch.save({k: v.detach().clone() for k, v in unwrap(model).state_dict().items()}, f"{out}.{rank}")


def test_two_process_ddp_gloo(tiny_root, tmp_path):
    run_dir, out = tmp_path / "ddp", tmp_path / "params"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_root), str(run_dir), str(out)), nprocs=2, join=True)
    p0 = torch.load(f"{out}.0", weights_only=True)
    p1 = torch.load(f"{out}.1", weights_only=True)
    for k in p0:  # DDP keeps the replicas identical
        assert torch.allclose(p0[k], p1[k], atol=1e-6), k
    env = json.loads((run_dir / "env.json").read_text())
    assert env["world_size"] == 2
    st = safe_load(run_dir / "checkpoints" / "last.pt")
    assert st["epoch"] == 2 and st["step"] == 6  # 48 queries / (8 per rank x 2 ranks) = 3 steps per epoch
    for k in p0:
        assert torch.equal(st["model"][k], p0[k]), k
