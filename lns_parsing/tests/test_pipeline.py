"""End to end on a tiny phantom through the run API: train -> eval in-process; resume after a stop
equals the uninterrupted run; a resume that changes the experiment is refused; NaN guard keeps the
last good checkpoint; ``data.check=off`` (bad data: tests/test_data.py); (slow) SIGKILL mid-epoch with
1 and 2 processes (gloo) resumes exactly; (slow) a tiny CV beats the majority atlas."""

import json

import pytest
import torch

from common.checkpoint import safe_load
from common.config import ConfigError
from common.run import ResumeError
from common.runtime import NonFiniteLossError
from common.testing import kill_and_resume
from lns_parsing import eval as lns_eval
from lns_parsing import train
from lns_parsing.phantom import generate

TINY = ["data.grid=[24,24,24]", "data.spacing=[10,10,10]", "train.patch=[16,16,16]", "model.strides=[1,2,2]",
        "model.filters=[4,8,16]", "organs.steps=2", "search.steps=2", "lns.steps=2", "data.folds=2", "data.check=off",
        "train.rand_affine=false", "train.samples_per_case=2", "eval.figures=false"]
# 2 development cases x 2 patches / batch 2: 2 steps per epoch; 2 CV train cases per fold: 2 steps per epoch


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lns")
    generate(root / "lns_phantom", seed=2, n_dev=2, n_cv=4)
    return root


def _args(root, run_dir, sets=(), extra=()):
    a = ["--data-root", str(root), "--run-dir", str(run_dir), "--no-tb", "--device", "cpu"]
    for s in (*TINY, *sets):
        a += ["--set", s]
    return a + list(extra)


def test_train_then_eval_end_to_end(tiny_root, tmp_path):
    run = tmp_path / "run"
    assert train.main(_args(tiny_root, run, sets=["eval.figures=true"])) == 0
    st = safe_load(run / "checkpoints" / "last.pt")
    ex = st["extra"]
    assert ex["done"] and ex["stages"] == ["organs_anchor", "organs_nonanchor", "search", "lns_f0", "ct_f0",
                                           "lns_f1", "ct_f1"]
    assert st["epoch"] == 7 and st["step"] == 14 and len(ex["selected"]) == 6
    assert set(ex["selected"]) == {n for n, _ in ex["ranking"][:6]}
    # only the stage in progress keeps Adam moments: every finished stage's state was dropped
    assert st["optimizer"]["state"] == {}
    assert lns_eval.main(["--data-root", str(tiny_root), "--run-dir", str(run), "--device", "cpu"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert {"Dice", "HD95", "ASD", "organ_dice_anchor", "defining_in_topk"} <= set(res["metrics"])
    assert set(res["baselines"]) == {"ct_only", "margin", "atlas"} and res["selected_organs"] == ex["selected"]
    assert (run / "fig_station_dice.png").stat().st_size > 1000 and list(run.glob("fig_slices_*.png"))


@pytest.mark.slow
def test_stop_and_resume_equals_the_uninterrupted_run_and_a_changed_config_is_refused(tiny_root, tmp_path):
    """In-process (slow: the SIGKILL versions below cover exact resume in the fast budget's stead)."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    sets = ["lns.organs=searched", "lns.ct_only_baseline=false", "data.folds=2", "lns.steps=4"]
    train.main(_args(tiny_root, full, sets))
    train.main(_args(tiny_root, cut, sets, ["--stop-after-epoch", "3"]))   # stopped at the end of the search stage
    assert safe_load(cut / "checkpoints" / "last.pt")["extra"]["stage"] == "search"
    with pytest.raises(ResumeError, match="train.lr"):
        train.main(_args(tiny_root, cut, [*sets, "train.lr=0.1"], ["--resume", str(cut / "checkpoints/last.pt")]))
    train.main(_args(tiny_root, cut, [*sets, "eval.overlap=0.25"], ["--resume", str(cut / "checkpoints/last.pt")]))
    a, b = safe_load(full / "checkpoints" / "last.pt"), safe_load(cut / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 7 and a["step"] == b["step"]
    assert a["extra"]["selected"] == b["extra"]["selected"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_root, tmp_path, monkeypatch):
    from lns_parsing.losses import Objective

    real = Objective.forward
    calls = {"n": 0}

    def poisoned(self, out, label):
        parts = real(self, out, label)
        calls["n"] += 1
        if calls["n"] == 4:  # the last step of epoch 2 (2 steps per epoch)
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(Objective, "forward", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match="epoch 1 step 3"):
        train.main(_args(tiny_root, run))
    st = safe_load(run / "checkpoints" / "last.pt")
    assert st["epoch"] == 1 and all(torch.isfinite(v).all() for v in st["model"].values() if v.is_floating_point())


def test_check_off_spelling_and_unknown_mode():
    from common.cli import base_parser, parse
    from lns_parsing.config import DEFAULTS, RULES

    _, cfg = parse(base_parser("x"), ["--set", "data.check=off"], DEFAULTS, RULES)  # YAML 1.1 would read False
    assert cfg.data.check == "off"
    with pytest.raises(ConfigError, match="data.check"):
        parse(base_parser("x"), ["--set", "data.check=sometimes"], DEFAULTS, RULES)


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 2])
def test_killed_mid_epoch_resumes_exactly(tiny_root, tmp_path, nproc):
    """SIGKILL mid-epoch inside the search stage (after its first checkpoint), resume: every network,
    the optimizer and the metrics equal the uninterrupted run's; with 2 processes (gloo) too."""
    sets = ["train.samples_per_case=4", "train.batch_size=1"]
    args = ["--data-root", str(tiny_root), "--no-tb", "--device", "cpu",
            *[x for s in (*TINY, *sets) for x in ("--set", s)]]
    spe = 8 // nproc  # steps per epoch of the 1-epoch organ and search stages: 2 cases x 4 patches / (1 x nproc)
    res = kill_and_resume("lns_parsing.train", args, kill_at_step=2 * spe + spe // 2 + 1, workdir=tmp_path,
                          nproc=nproc)
    assert res.checkpoint_epoch == 2 and res.checkpoint_step == 2 * spe, res.summary()
    assert res.identical == res.total and res.optimizer_identical == res.optimizer_total, res.summary()
    assert res.metrics_equal, res.summary()
    assert safe_load(res.resumed)["world_size"] == nproc


@pytest.mark.slow
def test_tiny_cv_beats_the_atlas(tmp_path, context="all"):
    """Context from true organs, 2 folds of 4 patients at 10 mm, the default LR and 300 steps: the LNS
    net beats the majority atlas and the CT-only net of the same folds by 3 Dice points each. (Seen
    failing with ``context`` = two distractor organs, "carotid_L,subclavian_L".)"""
    root = tmp_path / "data"
    generate(root / "lns_phantom", seed=5, n_dev=2, n_cv=8)
    run = tmp_path / "run"
    sets = [f"lns.organs={context}", "lns.organ_source=gt", "lns.ct_only_baseline=true", "lns.steps=300",
            "model.filters=[16,32,64]", "train.samples_per_case=4"]
    train.main(_args(root, run, sets=sets))
    lns_eval.main(["--data-root", str(root), "--run-dir", str(run), "--device", "cpu"])
    res = json.loads((run / "results.json").read_text())
    dice, base = res["metrics"]["Dice"], {k: v["Dice"] for k, v in res["baselines"].items()}
    assert dice > base["atlas"] + 3 and dice > base["ct_only"] + 3, (dice, base)
