"""The config schema: every shipped config loads and obeys RULES; bad values fail before a run."""

from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from dmba.config import DEFAULTS, RULES, check, check_resume, run_name

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_obeys_the_rules(path):
    cfg = check(load_config(path, [], DEFAULTS))
    assert run_name(path.stem, cfg) == f"{path.stem}-clean"
    if path.stem.startswith(("sha", "shb", "qnrf", "jhu")):
        assert cfg.model.pretrained == "imagenet" and cfg.data.out_of_bounds == "clip"  # real data


def test_rules_name_every_violation_at_once():
    cfg = load_config(None, ["model.name=mcnn", "attack.alpha=1.5", "attack.keep_min=0.5", "attack.keep_max=0.4",
                             "tag=../x"], DEFAULTS)
    with pytest.raises(ConfigError) as e:
        check(cfg)
    msg = str(e.value)
    for part in ("model.name='mcnn'", "attack.alpha=1.5", "keep_min=0.5 > attack.keep_max=0.4", "tag='../x'"):
        assert part in msg
    assert set(RULES) <= {k for k in _flat(DEFAULTS)}  # rules only name real keys


def test_resume_may_change_only_the_epochs():
    a = load_config(None, [], DEFAULTS)
    check_resume(a.to_dict(), load_config(None, ["train.epochs=200"], DEFAULTS), "ckpt")
    with pytest.raises(ConfigError, match=r"optim.lr \(1e-07 -> 0.1\)"):
        check_resume(a.to_dict(), load_config(None, ["optim.lr=0.1"], DEFAULTS), "ckpt")


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"
