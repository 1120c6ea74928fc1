import pytest
import yaml

from common.config import ConfigError, Range, diff_configs, load_config, parse_override, resolve_onto

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


# ---- issue 10 item 5: null, choices and ranges (each failed on the first config code: it accepted all) ----

RULED = {"train": {"epochs": 10, "batch_size": 32, "lr": 1e-3, "schedule": "cosine", "milestones": [5, 8],
                   "warmup": 0.1},
         "model": {"dropout": None, "norm": "bn"}}
RULES = {"train.epochs": Range(min=1), "train.batch_size": Range(min=1), "train.lr": Range(min=0.0, open_min=True),
         "train.schedule": ("cosine", "inverse_sqrt"), "train.milestones": Range(min=0),
         "train.warmup": Range(0, 1, open_max=True), "model.norm": ("bn", "gn", "none")}


@pytest.mark.parametrize("item,msg", [
    ("train.epochs=null", "'train.epochs' does not accept null"),
    ("train.schedule=null", "'train.schedule' does not accept null"),
    ("train=null", "'train' is a section"),
])
def test_null_only_where_the_default_is_null(item, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        load_config(None, [item], RULED, RULES)
    assert f"--set {item}" in str(e.value)
    cfg = load_config(None, ["model.dropout=0.1"], RULED, RULES)
    assert cfg.model.dropout == 0.1
    cfg = load_config(None, ["model.dropout=0.1", "model.dropout=null", "model.dropout=[1, 2]"], RULED, RULES)
    assert cfg.model.dropout == [1, 2]  # a null default accepts any type, and null again


def test_null_in_yaml_names_the_file(tmp_path):
    p = write(tmp_path, {"train": {"lr": None}})
    with pytest.raises(ConfigError, match=rf"{p}: 'train.lr' does not accept null \(its default is 0.001"):
        load_config(p, [], RULED, RULES)


@pytest.mark.parametrize("item,valid", [
    ("train.schedule=linear", "valid: cosine | inverse_sqrt"),
    ("model.norm=BN", "valid: bn | gn | none"),
    ("train.epochs=-1", "valid: >= 1"),
    ("train.epochs=0", "valid: >= 1"),
    ("train.batch_size=0", "valid: >= 1"),
    ("train.lr=0", "valid: > 0.0"),
    ("train.lr=.nan", "valid: > 0.0"),
    ("train.warmup=1.0", "valid: >= 0 and < 1"),
    ("train.milestones=[3,-1]", "element -1"),
])
def test_choices_and_ranges(item, valid):
    with pytest.raises(ConfigError) as e:
        load_config(None, [item], RULED, RULES)
    msg = str(e.value)
    assert msg.startswith(f"--set {item}: {item.split('=')[0]} = ") and valid in msg, msg


def test_rules_name_the_yaml_file_and_accept_valid_values(tmp_path):
    p = write(tmp_path, {"train": {"schedule": "step"}})
    with pytest.raises(ConfigError, match=rf"^{p}: train.schedule = 'step' is not one of the choices"):
        load_config(p, [], RULED, RULES)
    cfg = load_config(None, ["train.schedule=inverse_sqrt", "train.warmup=0", "train.lr=1e-5", "train.epochs=1"],
                      RULED, RULES)
    assert (cfg.train.schedule, cfg.train.warmup, cfg.train.epochs) == ("inverse_sqrt", 0.0, 1)


def test_rules_are_checked_on_defaults_and_must_name_real_keys():
    with pytest.raises(ConfigError, match=r"^DEFAULTS: train.epochs = 0 is out of range"):
        load_config(None, [], {"train": {"epochs": 0}}, {"train.epochs": Range(min=1)})
    with pytest.raises(ConfigError, match="RULES names 'train.epoch'"):
        load_config(None, [], RULED, {"train.epoch": Range(min=1)})
    with pytest.raises(ConfigError, match="tuple of allowed values or a Range"):
        load_config(None, [], RULED, {"train.epochs": 3})


def test_range_text_and_membership():
    assert str(Range(min=0, open_min=True)) == "> 0" and str(Range(0, 1, open_max=True)) == ">= 0 and < 1"
    assert 0.5 in Range(0, 1) and 1 in Range(0, 1) and 1 not in Range(0, 1, open_max=True)
    assert True not in Range(0, 2) and "1" not in Range(0, 2) and float("nan") not in Range()


def test_resolve_onto_checks_a_saved_config_against_todays_schema():
    saved = {"train": {"epochs": 3, "schedule": "cosine"}}
    cfg = resolve_onto(saved, "ckpt.pt", ["train.epochs=5"], RULED, RULES)
    assert cfg.train.epochs == 5 and cfg.train.lr == 1e-3  # keys missing from the saved config: today's defaults
    with pytest.raises(ConfigError, match="ckpt.pt: unknown config key 'train.old'"):
        resolve_onto({"train": {"old": 1}}, "ckpt.pt", [], RULED, RULES)
    with pytest.raises(ConfigError, match="--set train.schedule=linear"):
        resolve_onto(saved, "ckpt.pt", ["train.schedule=linear"], RULED, RULES)


def test_diff_configs():
    a = {"train": {"lr": 1.0, "epochs": 3, "flag": True, "ms": [1, 2]}, "x": 1}
    b = {"train": {"lr": 1, "epochs": 4, "flag": 1, "ms": (1, 2)}, "y": 2}
    assert diff_configs(a, b) == {"train.epochs": (3, 4), "train.flag": (True, 1), "x": (1, "<absent>"),
                                  "y": ("<absent>", 2)}


def test_rules_can_allow_null_for_a_numeric_default():
    rules = {**RULES, "train.warmup": Range(0, 1, open_max=True, null=True), "model.norm": ("bn", "gn", None)}
    cfg = load_config(None, ["train.warmup=null", "model.norm=null"], RULED, rules)
    assert cfg.train.warmup is None and cfg.model.norm is None
    with pytest.raises(ConfigError, match=r"valid: >= 0 and < 1 \(or null\)"):
        load_config(None, ["train.warmup=2"], RULED, rules)


def test_null_over_a_non_null_default_needs_rules_that_allow_it():
    """No RULES (or RULES silent on the key): null where the default is a number is an error."""
    for rules in (None, {}):
        with pytest.raises(ConfigError, match="does not accept null"):
            load_config(None, ["train.epochs=null"], RULED, rules)
    assert load_config(None, ["train.epochs=null"], RULED, {"train.epochs": Range(min=1, null=True)}).train.epochs is None


def test_only_true_and_false_are_booleans(tmp_path):
    # YAML 1.1 reads off/on/yes/no as booleans: `--set data.check=off` became False and failed the
    # choice (full|fast|off). Our loader follows YAML 1.2: they stay strings, in files and overrides.
    defaults = {"data": {"check": "full", "shuffle": True}}
    rules = {"data.check": ("full", "fast", "off")}
    assert parse_override("data.check=off") == ("data.check", "off")
    assert load_config(None, ["data.check=off"], defaults, rules=rules).data.check == "off"
    p = tmp_path / "c.yaml"
    p.write_text("data:\n  check: off\n  shuffle: false\n")
    cfg = load_config(p, [], defaults, rules=rules)
    assert cfg.data.check == "off" and cfg.data.shuffle is False
    with pytest.raises(ConfigError, match="data.shuffle"):
        load_config(None, ["data.shuffle=yes"], defaults, rules=rules)
