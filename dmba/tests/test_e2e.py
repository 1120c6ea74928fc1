"""End to end on a tiny generated set: train -> eval (results, figures, the trigger in the eval's
triggered set), exact resume and rerun, refused resume, torchrun DDP, every victim, bench."""

import json
from pathlib import Path

import pytest
import torch

from common.checkpoint import safe_load
from common.config import ConfigError, load_config
from common.run import ResumeError
from common.testing import kill_and_resume, torchrun
from dmba import eval as dmba_eval
from dmba import train as dmba_train
from dmba.config import DEFAULTS, RULES
from dmba.data import CrowdDataset, collate, eval_sets, list_samples
from dmba.losses import Objective
from dmba.model import STRIDES, build_model
from dmba.synthetic import generate


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate(root / "tiny", seed=1, n_train=8, n_test=4, size=32, min_count=3, max_count=12, r_far=1.0, r_near=2.0)
    return root


SETS = ["dataset.root=tiny", "model.width=0.125", "train.batch_size=4", "train.eval_batch_size=4", "data.cache=false",
        "train.epochs=1"]


def _args(root, runs, *extra, train=True):
    return ["--data-root", str(root), "--runs-root", str(runs), *(["--no-tb"] if train else []), "--device", "cpu",
            *[x for s in SETS for x in ("--set", s)], *extra]


def _eval(root, runs, *extra):
    return dmba_eval.main(_args(root, runs, *extra, train=False))


def _runs(runs: Path, name: str) -> list[Path]:
    return sorted((runs / "dmba" / name).glob("*-s*"))


def test_train_eval_writes_results_figures_and_the_benign_check(tiny_root, tmp_path):
    assert dmba_train.main(_args(tiny_root, tmp_path)) == 0  # the clean model first
    extra = ["--set", "train.epochs=2", "--set", "attack.mode=dmba_plus"]
    assert dmba_train.main(_args(tiny_root, tmp_path, *extra)) == 0
    run_dir = _runs(tmp_path, "synthetic-dmba_plus")[-1]
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs] == [1, 2]
    assert _eval(tiny_root, tmp_path, *extra) == 0
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
    # eval may change the test-time trigger (recorded; --out keeps the run's own results) but not the model
    snow = tmp_path / "snow"
    _eval(tiny_root, tmp_path, *extra, "--set", "attack.trigger=snow", "--set", "eval.figures=0", "--out", str(snow))
    other = json.loads((snow / "results.json").read_text())
    assert other["trigger"] == "snow" and other["eval_changed"] == {"attack.trigger": ["rain", "snow"],
                                                                   "eval.figures": [3, 0]}
    assert json.loads((run_dir / "results.json").read_text())["trigger"] == "rain"
    with pytest.raises(ConfigError, match=r"eval may not change .*optim.lr \(0.001 -> 0.5\)"):
        _eval(tiny_root, tmp_path, *extra, "--set", "optim.lr=0.5")


def test_label_only_attack_has_no_trigger_at_eval(tiny_root):
    """attack.trigger=none: the eval's 'triggered' set is the clean set (trigger_stats is eval's own)."""
    samples = list_samples("shanghaitech", tiny_root / "tiny", "test")
    for trigger, l1 in (("none", 0.0), ("rain", None)):
        cfg = load_config(None, [*SETS, "attack.mode=dmba_minus", f"attack.trigger={trigger}"], DEFAULTS, RULES)
        stats = dmba_eval.trigger_stats(*eval_sets(samples, cfg, 8))
        assert stats["trigger_l1"] == l1 if l1 is not None else stats["trigger_l1"] > 0.005, (trigger, stats)


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
    ck = str(part / "checkpoints/last.pt")
    with pytest.raises(ResumeError, match="attack.alpha: 0.3 .checkpoint. -> 0.5"):  # only train.epochs may change
        dmba_train.main(_args(tiny_root, tmp_path / "b", *extra, "--resume", ck, "--set", "attack.alpha=0.5"))
    assert _runs(tmp_path / "b", "synthetic-dmba_minus") == [part] and safe_load(ck)["config"]["attack"]["alpha"] == 0.3


KILL = ["--set", "train.epochs=3", "--set", "attack.mode=dmba_minus", "--set", "data.crop=16", "--set", "data.flip=true",
        "--seed", "3"]


@pytest.mark.slow
@pytest.mark.parametrize("nproc, kill_at", [(1, 4), (2, 3)])
def test_sigkill_mid_epoch_and_resume_equals_the_uninterrupted_run(tiny_root, tmp_path, nproc, kill_at):
    """8 clean + 2 poisoned images, batch 4: 3 steps per epoch (1 process) or 2 per rank (2 processes,
    gloo). SIGKILL in epoch 2 after the epoch-1 checkpoint, --resume: weights, optimizer state and
    metrics equal the uninterrupted run's bit for bit."""
    args = [a for a in _args(tiny_root, tmp_path / "unused") if a not in ("--runs-root", str(tmp_path / "unused"))]
    res = kill_and_resume("dmba.train", [*args, *KILL], kill_at_step=kill_at, workdir=tmp_path, nproc=nproc)
    assert res.checkpoint_epoch == 1 and res.checkpoint_step == (3 if nproc == 1 else 2), res.summary()
    assert res.identical == res.total and res.optimizer_identical == res.optimizer_total, res.summary()
    assert res.metrics_equal, res.summary()
    st = safe_load(res.resumed)
    assert st["epoch"] == 3 and st["world_size"] == nproc


@pytest.mark.slow
def test_torchrun_ddp_two_processes_matches_one(tiny_root, tmp_path):
    """Two ranks of batch 2 take the same SGD steps as one process of batch 4 (gradients averaged)."""
    extra = ["--set", "loss.reduction=mean", "--set", "optim.name=sgd", "--set", "optim.lr=0.01",
             "--set", "optim.momentum=0.0", "--set", "data.flip=false", "--set", "model.bn=false"]
    dmba_train.main(_args(tiny_root, tmp_path / "one", *extra))  # BN statistics would differ per rank
    torchrun("dmba.train", _args(tiny_root, tmp_path / "two", *extra, "--set", "train.batch_size=2"), nproc=2,
             timeout=300)
    two = _runs(tmp_path / "two", "synthetic-clean")
    assert len(two) == 1 and json.loads((two[0] / "env.json").read_text())["world_size"] == 2
    a = safe_load(_runs(tmp_path / "one", "synthetic-clean")[0] / "checkpoints/last.pt")["model"]
    b = safe_load(two[0] / "checkpoints/last.pt")["model"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


@pytest.mark.parametrize("model", ["csrnet", "can", "sfanet", "bayesian", "kdmg"])
def test_every_victim_takes_a_finite_step_on_a_poisoned_batch(tiny_root, model):
    """The one training loop serves all five: a DMBA- batch (points, maps, support, head targets)
    through each victim and its own objective gives a finite loss whose gradient reaches every
    trainable tensor, KDMG's kernel refiner included."""
    cfg = load_config(None, [*SETS, f"model.name={model}", "attack.mode=dmba_minus", "attack.poison_rate=1.0",
                             "data.crop=16"], DEFAULTS, RULES)
    stride = STRIDES[model]
    ds = CrowdDataset(list_samples("shanghaitech", tiny_root / "tiny", "train"), cfg, "train", stride, "dmba_minus")
    batch = collate([ds[k] for k in (0, 8, 9)])  # one clean image, two poisoned copies
    net = build_model(cfg)
    parts = Objective(cfg, stride)(net(batch["image"], points=batch["points"]), batch)
    parts["loss"].backward()
    assert torch.isfinite(parts["loss"]) and parts["loss"] > 0
    assert not [n for n, p in net.named_parameters() if p.grad is None]  # every tensor is in the graph
    moved = [n for n, p in net.named_parameters() if p.grad.abs().sum() > 0]  # (a conv bias before BN gets 0)
    assert len(moved) >= 0.9 * len(list(net.parameters())), moved
    if model == "kdmg":
        assert all(p.grad.abs().sum() > 0 for p in net.refiner.adapt[-1].parameters())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["can", "sfanet", "bayesian", "kdmg"])
def test_every_victim_trains_backdoored_and_evaluates(tiny_root, tmp_path, model):
    extra = ["--set", f"model.name={model}", "--set", "attack.mode=dmba_minus", "--set", "eval.figures=1"]
    dmba_train.main(_args(tiny_root, tmp_path, *extra))
    _eval(tiny_root, tmp_path, *extra)
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

    assert bench.main(["--models", "kdmg", "--size", "32", "--width", "0.125", "--iters", "1", "--peak-n", "128",
                       "--device", "cpu", "--runs-root", str(tmp_path)]) == 0
    files = list((tmp_path / "dmba" / "bench").glob("*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert [r["model"] for r in rec["results"]] == ["kdmg"]
    for r in rec["results"]:
        assert r["train_flops_per_step"] > 0 and r["train_images_per_s"] > 0 and r["fraction_of_matmul_peak"] > 0
