"""End to end on a tiny phantom: exact resume after a kill, 2-process DDP (gloo), NaN guard, and
(slow) a tiny 2-fold CV that beats the majority atlas."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from common.checkpoint import safe_load
from lns_parsing.phantom import generate

TINY = ["data.grid=[24,24,24]", "data.spacing=[10,10,10]", "train.patch=[16,16,16]", "model.strides=[1,2,2]",
        "model.filters=[4,8,16]", "organs.steps=2", "search.steps=2", "lns.steps=2", "data.folds=2", "data.check=fast",
        "train.rand_affine=false"]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lns")
    generate(root / "lns_phantom", seed=2, n_dev=2, n_cv=4)
    return root


def _args(root, run_dir, extra=(), sets=()):
    a = ["--data-root", str(root), "--run-dir", str(run_dir), "--no-tb", "--device", "cpu"]
    for s in (*TINY, *sets):
        a += ["--set", s]
    return a + list(extra)


def _weights(run_dir):
    return {p.name: safe_load(p)["model"] for p in sorted((run_dir / "checkpoints").glob("*.pt")) if p.name != "last.pt"}


def test_resume_after_a_kill_equals_the_uninterrupted_run(tiny_root, tmp_path):
    from lns_parsing import train

    full, cut = tmp_path / "full", tmp_path / "cut"
    sets = ["organs.steps=4", "search.steps=4", "lns.steps=4", "train.batch_size=1"]  # 2 epochs per stage
    train.main(_args(tiny_root, full, sets=sets))
    train.main(_args(tiny_root, cut, ["--stop-after-epoch", "5"], sets))        # killed inside the search stage
    assert safe_load(cut / "checkpoints" / "last.pt")["extra"]["stage"] == "search"
    assert not (cut / "train_done.json").exists()
    train.main(_args(tiny_root, cut, ["--resume", str(cut / "checkpoints" / "last.pt")], sets))
    a, b = _weights(full), _weights(cut)
    assert set(a) == set(b) and {"lns_f0.pt", "ct_f1.pt", "search.pt", "organs_nonanchor.pt"} <= set(a)
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    assert json.loads((full / "search.json").read_text()) == json.loads((cut / "search.json").read_text())


def test_resume_refuses_a_changed_config(tiny_root, tmp_path):
    from lns_parsing import train

    run = tmp_path / "r"
    train.main(_args(tiny_root, run, ["--stop-after-epoch", "1"]))
    with pytest.raises(ValueError, match="train.lr"):
        train.main(_args(tiny_root, run, ["--resume", str(run / "checkpoints/last.pt"), "--set", "train.lr=0.1"]))


def test_nan_loss_stops_training(tiny_root, tmp_path, monkeypatch):
    from common.runtime import NonFiniteLossError
    from lns_parsing import train
    from lns_parsing.losses import Objective

    real = Objective.forward

    def poisoned(self, out, label):
        parts = real(self, out, label)
        parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(Objective, "forward", poisoned)
    with pytest.raises(NonFiniteLossError, match="epoch 0 step 0"):
        train.main(_args(tiny_root, tmp_path / "nan"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, root, run_dir):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from lns_parsing import train

    train.main(_args(root, run_dir, sets=["organs.steps=1", "search.steps=1", "lns.steps=1"]))


def test_two_process_ddp_gloo(tiny_root, tmp_path):
    run_dir = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_root), str(run_dir)), nprocs=2, join=True)
    assert json.loads((run_dir / "env.json").read_text())["world_size"] == 2
    assert (run_dir / "train_done.json").is_file()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines and all(r["epoch"] == 1 for r in lines)     # 2 cases / (1 x 2 ranks): one step per epoch


@pytest.mark.slow
def test_tiny_cv_beats_the_atlas(tmp_path):
    """Context from true organs, 2 folds of 4 patients at 10 mm: the LNS net beats the majority atlas."""
    from lns_parsing import eval as ev
    from lns_parsing import train

    root = tmp_path / "data"
    generate(root / "lns_phantom", seed=5, n_dev=2, n_cv=8)
    run = tmp_path / "run"
    sets = ["lns.organs=all", "lns.organ_source=gt", "lns.ct_only_baseline=false", "lns.steps=300",
            "model.filters=[8,16,32]", "train.lr=0.01", "eval.figures=false"]
    train.main(_args(root, run, sets=sets))
    ev.main(["--data-root", str(root), "--run-dir", str(run), "--device", "cpu"])
    res = json.loads((run / "results.json").read_text())
    assert res["metrics"]["Dice"] > res["baselines"]["atlas"]["Dice"] + 3, (res["metrics"]["Dice"], res["baselines"])
