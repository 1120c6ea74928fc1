"""start_eval (issue 10, items 1, 5, 6, 7): the checkpoint's config and seed, eval's --set applied
and recorded, --out required outside a run directory, errors naming the checkpoint."""

import json
import shutil
import time

import pytest
import torch

from common.checkpoint import CheckpointError
from common.cli import base_parser, eval_parser
from common.config import ConfigError, Range, load_config
from common.run import RunError, start_eval, start_run

DEFAULTS = {"model": {"width": 4}, "attack": {"trigger": "patch"}, "eval": {"k": 5}}
RULES = {"attack.trigger": ("patch", "snow"), "eval.k": Range(min=1)}


def _model(width=4):
    return torch.nn.Linear(3, width)


def _train(root, *sets, seed=0):
    args = base_parser("t").parse_args(["--device", "cpu", "--runs-root", str(root), "--no-tb", "--seed", str(seed),
                                        *[x for s in sets for x in ("--set", s)]])
    cfg = load_config(None, args.overrides, DEFAULTS, RULES)
    run = start_run("demo", args, cfg).open()
    path = run.save(model=_model(cfg.model.width), epoch=1, step=4)
    run.close()
    return path


def _eval(root, *extra):
    return eval_parser("e").parse_args(["--device", "cpu", "--runs-root", str(root), *extra])


def test_eval_uses_the_trained_config_and_seed_and_records_its_own_overrides(tmp_path):
    ckpt = _train(tmp_path, "attack.trigger=snow", seed=2)
    run_dir = ckpt.parent.parent
    # the user evaluates with --seed 2 and a new eval.k; --config/--set of eval do not replace the trained config
    ev = start_eval("demo", _eval(tmp_path, "--seed", "2", "--set", "eval.k=1"), DEFAULTS, RULES)
    assert ev.checkpoint == ckpt and ev.out_dir == run_dir and ev.seed == 2 and ev.epoch == 1
    assert ev.cfg.attack.trigger == "snow" and ev.cfg.eval.k == 1
    model = ev.load_weights(_model())
    assert torch.equal(model.weight, torch.load(ckpt, weights_only=True)["model"]["weight"])
    res = json.loads(ev.write_results(dataset="synthetic", split="test", metrics={"acc": 0.5}).read_text())
    assert res["seed"] == 2 and res["config"] == "default" and res["checkpoint"] == str(ckpt)
    assert res["eval_overrides"] == ["eval.k=1"] and res["eval_changed"] == {"eval.k": [5, 1]}
    assert res["train_overrides"] == ["attack.trigger=snow"]
    assert "eval.k: 5 -> 1" in (run_dir / "eval.log").read_text()


def test_eval_set_is_validated(tmp_path):
    _train(tmp_path)
    with pytest.raises(ConfigError, match=r"--set eval.k=0: eval.k = 0 is out of range; valid: >= 1"):
        start_eval("demo", _eval(tmp_path, "--set", "eval.k=0"), DEFAULTS, RULES)
    with pytest.raises(ConfigError, match="unknown config key 'eval.kk'"):
        start_eval("demo", _eval(tmp_path, "--set", "eval.kk=1"), DEFAULTS, RULES)


def test_a_null_the_rules_allow_survives_the_trip_through_the_checkpoint(tmp_path, monkeypatch):
    # eval re-resolves the checkpoint's config onto today's schema: with the project's RULES, or a
    # null that RULES allow (Range(..., null=True)) would be refused at eval time
    rules = {**RULES, "eval.k": Range(min=1, null=True)}
    monkeypatch.setitem(globals(), "RULES", rules)   # _train loads the config with these RULES
    _train(tmp_path, "eval.k=null")
    ev = start_eval("demo", _eval(tmp_path, "--set", "eval.k=null"), DEFAULTS, rules)
    assert ev.cfg.eval.k is None and ev.eval_changed == {}


def test_latest_run_prefers_the_one_trained_with_the_same_overrides(tmp_path):
    snow = _train(tmp_path, "attack.trigger=snow")
    time.sleep(1.1)
    plain = _train(tmp_path)
    assert start_eval("demo", _eval(tmp_path), DEFAULTS, RULES).checkpoint == plain
    ev = start_eval("demo", _eval(tmp_path, "--set", "attack.trigger=snow"), DEFAULTS, RULES)
    assert ev.checkpoint == snow and ev.eval_changed == {}
    with pytest.raises(FileNotFoundError, match="no trained run of demo/default with seed 7"):
        start_eval("demo", _eval(tmp_path, "--seed", "7"), DEFAULTS, RULES)


def test_checkpoint_outside_a_run_dir_needs_out(tmp_path):
    ckpt = _train(tmp_path / "runs")
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    shutil.copy(ckpt, downloads / "last.pt")
    with pytest.raises(RunError, match=r"not inside a run directory.*--out DIR"):
        start_eval("demo", _eval(tmp_path, "--checkpoint", str(downloads / "last.pt")), DEFAULTS, RULES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Downloads", "runs"]
    assert [p.name for p in downloads.iterdir()] == ["last.pt"]  # nothing written next to it
    out = tmp_path / "eval_out"
    ev = start_eval("demo", _eval(tmp_path, "--checkpoint", str(downloads / "last.pt"), "--out", str(out)),
                    DEFAULTS, RULES)
    ev.write_results(dataset="synthetic", split="test", metrics={"acc": 1.0})
    assert ev.out_dir == out and (out / "results.json").is_file() and ev.path("fig.png") == out / "fig.png"
    assert [p.name for p in downloads.iterdir()] == ["last.pt"]


def test_eval_errors_name_the_checkpoint(tmp_path):
    ckpt = _train(tmp_path)
    ev = start_eval("demo", _eval(tmp_path, "--run-dir", str(ckpt.parent.parent)), DEFAULTS, RULES)
    with pytest.raises(CheckpointError, match=rf"{ckpt}: the checkpoint's model does not fit"):
        ev.load_weights(_model(width=8))
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(CheckpointError, match=rf"{ckpt}: not a readable checkpoint \(200 bytes"):
        start_eval("demo", _eval(tmp_path, "--checkpoint", str(ckpt)), DEFAULTS, RULES)
    with pytest.raises(FileNotFoundError, match="--run-dir .*no checkpoints/last.pt"):
        start_eval("demo", _eval(tmp_path, "--run-dir", str(tmp_path / "nothing")), DEFAULTS, RULES)
