import pytest
import yaml

from common.config import ConfigError, load_config, parse_override

DEFAULTS = {"seed": 0, "train": {"lr": 1e-3, "epochs": 10, "amp": False, "milestones": [5, 8]},
            "model": {"hidden": 256, "name": "tiny", "dropout": None}}


def write(tmp_path, data, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_yaml_then_overrides_in_order(tmp_path):
    p = write(tmp_path, {"train": {"lr": 0.01}})
    cfg = load_config(p, ["train.epochs=3", "model.name=big", "train.lr=2e-2"], DEFAULTS)
    assert cfg.train.lr == 0.02 and cfg.train.epochs == 3 and cfg.model.name == "big"
    assert cfg.model.hidden == 256  # default kept
    assert DEFAULTS["train"]["lr"] == 1e-3  # defaults are not mutated


def test_unknown_override_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.lrr=1"], DEFAULTS)
    msg = str(e.value)
    assert "train.lrr" in msg
    for k in ("train.lr", "train.epochs", "model.hidden", "seed"):
        assert k in msg


def test_unknown_section_override_lists_valid_keys():
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config(None, ["optim.lr=1"], DEFAULTS)


def test_unknown_yaml_key_is_an_error(tmp_path):
    p = write(tmp_path, {"model": {"hiden": 3}})
    with pytest.raises(ConfigError, match="model.hiden"):
        load_config(p, [], DEFAULTS)


@pytest.mark.parametrize("item", ["train.epochs=1.5", "train.amp=yes please", "model.hidden=abc", "train.lr=true",
                                  "train.epochs=[1,2]"])
def test_type_mismatch_is_an_error(item):
    with pytest.raises(ConfigError, match="expects"):
        load_config(None, [item], DEFAULTS)


def test_int_for_float_list_and_null():
    cfg = load_config(None, ["train.lr=1", "train.milestones=[2,3,4]", "model.dropout=0.1", "train.amp=true"],
                      DEFAULTS)
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.milestones == [2, 3, 4]
    assert cfg.model.dropout == 0.1 and cfg.train.amp is True


def test_section_cannot_be_replaced_by_scalar():
    with pytest.raises(ConfigError, match="section"):
        load_config(None, ["train=3"], DEFAULTS)


def test_base_include_and_schemaless(tmp_path):
    write(tmp_path, {"a": 1, "b": {"c": 2, "d": 3}}, "base.yaml")
    p = write(tmp_path, {"base": "base.yaml", "b": {"c": 5}}, "child.yaml")
    cfg = load_config(p, ["b.d=7"])
    assert cfg.to_dict() == {"a": 1, "b": {"c": 5, "d": 7}}
    with pytest.raises(ConfigError, match="b.e"):
        load_config(p, ["b.e=1"])  # without defaults the file itself is the schema


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent.yaml")
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("noequals")


def test_attribute_access_error_names_keys():
    cfg = load_config(None, [], DEFAULTS)
    with pytest.raises(AttributeError, match="hidden"):
        _ = cfg.model.hiddn


def test_exponent_floats_parse_in_yaml_and_overrides(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("train:\n  lr: 5e-4\n")
    cfg = load_config(p, ["train.epochs=3"], DEFAULTS)
    assert cfg.train.lr == 5e-4
    assert load_config(None, ["train.lr=2e-2"], DEFAULTS).train.lr == 0.02
