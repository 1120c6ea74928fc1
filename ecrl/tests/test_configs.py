"""Every config fits the schema, and the real-dataset configs name files and formats that the
shared readers accept on the real annotation files (../shared/data/tsg, skipped when absent)."""

from pathlib import Path

import pytest

from common.config import load_config
from common.tsg import Vocab, read_annotations
from ecrl.config import DEFAULTS, RULES, validate

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_with_schema(path):
    cfg = load_config(path, [], DEFAULTS, RULES)
    validate(cfg)
    assert cfg.data.num_clips <= cfg.model.max_clips
    assert cfg.model.d % cfg.model.heads == 0
    if path.stem.startswith("claim_"):
        from ecrl.claim import TESTBED

        assert cfg.data.subdir == TESTBED["subdir"]


def test_every_rule_rejects_a_value_outside_it():
    from common.config import ConfigError, Range, flat_items

    defaults = flat_items(DEFAULTS)
    for key, rule in RULES.items():
        if isinstance(rule, Range):
            bad = rule.min - 1 if rule.min is not None else rule.max + 1
            bad = int(bad) if isinstance(defaults[key], int) else float(bad)
        else:
            bad = "nonsense"
        with pytest.raises(ConfigError, match=key.replace(".", "\\.") + ".*(out of range|not one of)"):
            load_config(None, [f"{key}={bad}"], DEFAULTS, RULES)
    with pytest.raises(ConfigError, match="needs ecrl.augment"):
        validate(load_config(None, ["ecrl.augment=false"], DEFAULTS, RULES))


def test_real_configs_use_group_settings():
    ch = load_config(CONFIGS[0].parent / "charades_i3d.yaml", [], DEFAULTS)
    an = load_config(CONFIGS[0].parent / "activitynet_c3d.yaml", [], DEFAULTS)
    ta = load_config(CONFIGS[0].parent / "tacos_c3d.yaml", [], DEFAULTS)
    assert (ch.data.num_clips, an.data.num_clips, ta.data.num_clips) == (64, 200, 200)
    assert ch.model.word_dim == an.model.word_dim == ta.model.word_dim == 300
    assert (ch.data.feature_dim, an.data.feature_dim, ta.data.feature_dim) == (1024, 500, 4096)
    assert ch.model.d == 512 and (ch.train.lr, an.train.lr, ta.train.lr) == (4e-4, 8e-4, 4e-4)
    assert (ch.data.format, an.data.format, ta.data.format) == ("charades", "activitynet", "tacos")


@pytest.mark.parametrize("name,folder", [("charades_i3d", "charades_sta"),  # ActivityNet: a 37k-query file, slow
                                         pytest.param("activitynet_c3d", "activitynet_captions", marks=pytest.mark.slow),
                                         ("tacos_c3d", "tacos")])
def test_real_annotations_read_with_config_format(shared_dir, name, folder):
    cfg = load_config(CONFIGS[0].parent / f"{name}.yaml", [], DEFAULTS)
    base = Path(shared_dir) / "data" / "tsg" / folder
    kw = {"durations": base / cfg.data.durations} if cfg.data.durations else {}
    kw["on_bad_record"] = cfg.data.on_bad_record
    ann = read_annotations(base / cfg.data.train, cfg.data.format, **kw)
    assert len(ann.queries) > 9000 and all(0 <= q.start < q.end <= q.duration + 1e-6 for q in ann.queries)
    vocab = Vocab.build([q.sentence for q in ann.queries], cfg.data.min_word_freq)
    ids = vocab.encode(ann.queries[0].sentence, cfg.data.max_words)
    assert 0 < len(ids) <= cfg.data.max_words and Vocab.UNK not in ids


def test_claim_variants_are_valid_configs():
    """Every claim variant's overrides name real keys and pass the rules (before a long run)."""
    from ecrl.claim import VARIANTS

    for name, v in VARIANTS.items():
        cfg = load_config(CONFIGS[0].parent / f"{v.config}.yaml", list(v.overrides), DEFAULTS, RULES)
        validate(cfg)
        assert name.startswith("full") == (cfg.ecrl.augment and cfg.ecrl.w_sscl > 0 and cfg.ecrl.refine
                                          and cfg.ecrl.aug.relocate), name
