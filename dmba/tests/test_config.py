"""The config schema: every shipped config loads and obeys RULES; bad values fail before a run."""

from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from dmba.config import DEFAULTS, RULES, run_name, validate

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_loads_and_obeys_the_rules(path):
    cfg = validate(load_config(path, [], DEFAULTS, RULES))
    assert run_name(path.stem, cfg) == f"{path.stem}-clean"
    if path.stem.startswith(("sha", "shb", "qnrf", "jhu")):
        assert cfg.model.pretrained == "imagenet" and cfg.data.out_of_bounds == "clip"  # real data


@pytest.mark.parametrize("item, msg", [("model.name=mcnn", "model.name = 'mcnn' is not one of"),
                                       ("attack.alpha=1.5", "attack.alpha = 1.5 is out of range"),
                                       ("data.check=some", "data.check = 'some'"),
                                       ("train.epochs=0", "train.epochs = 0 is out of range"),
                                       ("data.crop=0", "data.crop = 0 is out of range")])
def test_rules_refuse_bad_values_when_the_config_loads(item, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(None, [item], DEFAULTS, RULES)
    assert load_config(None, ["data.crop=null"], DEFAULTS, RULES).data.crop is None


def test_cross_key_checks_name_every_violation_at_once():
    cfg = load_config(None, ["attack.keep_min=0.5", "attack.keep_max=0.4", "tag=../x"], DEFAULTS, RULES)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    for part in ("keep_min=0.5 > attack.keep_max=0.4", "tag='../x'"):
        assert part in str(e.value)
    assert set(RULES) <= set(_flat(DEFAULTS))  # rules only name real keys


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"
