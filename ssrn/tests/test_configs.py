"""Every config fits the schema and the cross-key rules, every claim variant is a valid config, and
the real-dataset configs name files and formats the shared readers accept on the real annotation
files (../shared/data/tsg, skipped when absent)."""

from pathlib import Path

import pytest

from common.config import ConfigError, load_config
from common.tsg import read_annotations
from ssrn.config import DEFAULTS, RULES, validate

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def _load(name, *sets):
    return load_config(CONFIGS[0].parent / f"{name}.yaml", list(sets), DEFAULTS, RULES)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_validates(path):
    validate(load_config(path, [], DEFAULTS, RULES))


def test_cross_key_rules():
    with pytest.raises(ConfigError, match="data.resample='mean'"):
        validate(load_config(None, ["data.resample=mean"], DEFAULTS, RULES))
    validate(load_config(None, ["data.resample=mean", "ssrn.siamese=0", "ssrn.jitter=false"], DEFAULTS, RULES))
    with pytest.raises(ConfigError, match="fuse_siamese"):
        validate(load_config(None, ["ssrn.siamese=0", "ssrn.fuse_siamese=true"], DEFAULTS, RULES))
    with pytest.raises(ConfigError, match="divisible"):
        validate(load_config(None, ["model.heads=3"], DEFAULTS, RULES))
    with pytest.raises(ConfigError, match="ssrn.omega"):
        load_config(None, ["ssrn.omega=1.5"], DEFAULTS, RULES)


def test_real_configs_use_the_group_settings():
    ch, an, ta = _load("charades_i3d"), _load("activitynet_c3d"), _load("tacos_c3d")
    assert (ch.data.num_clips, an.data.num_clips, ta.data.num_clips) == (64, 200, 200)
    assert (ch.data.feature_dim, an.data.feature_dim, ta.data.feature_dim) == (1024, 500, 4096)
    assert ch.data.resample == an.data.resample == ta.data.resample == "uniform"
    assert an.data.test == "val_2.json" and an.data.on_bad_record == "skip"
    assert ch.model.word_dim == 300 and ch.model.d == 512 and (ch.train.lr, an.train.lr) == (4e-4, 8e-4)
    assert ch.ssrn.siamese == 2 and (ch.ssrn.alpha, ch.ssrn.omega) == (1.0, 0.5)


@pytest.mark.parametrize("name,folder", [("charades_i3d", "charades_sta"), ("activitynet_c3d", "activitynet_captions"),
                                         ("tacos_c3d", "tacos")])
def test_real_annotations_read_with_the_config(shared_dir, name, folder):
    cfg = _load(name)
    base = Path(shared_dir) / "data" / "tsg" / folder
    if not (base / cfg.data.train).is_file():
        pytest.skip(f"{base / cfg.data.train} absent")
    kw = {"durations": base / cfg.data.durations} if cfg.data.durations else {}
    ann = read_annotations(base / cfg.data.train, cfg.data.format, on_bad_record=cfg.data.on_bad_record, **kw)
    assert len(ann.queries) > 9000 and all(0 <= q.start < q.end <= q.duration + 1e-6 for q in ann.queries)


def test_claim_variants_are_valid_configs():
    """Every claim variant's overrides name real keys and pass the rules (before a long run), and each
    switches off exactly what its name says."""
    from ssrn.claim import TESTBED, VARIANTS

    cfgs = {}
    for name, v in VARIANTS.items():
        cfgs[name] = _load(v.config, *v.overrides)
        validate(cfgs[name])
        assert cfgs[name].data.subdir == TESTBED["subdir"]
    full = cfgs["full"]
    assert full.ssrn.siamese == 2 and full.ssrn.reasoning and full.ssrn.alpha > 0 and not full.ssrn.fuse_siamese
    assert cfgs["no_siamese"].ssrn.siamese == 0 and cfgs["no_siamese"].ssrn.jitter
    assert cfgs["no_reasoning"].ssrn.siamese == 2 and not cfgs["no_reasoning"].ssrn.reasoning
    assert cfgs["mean_pool"].data.resample == "mean" and cfgs["mean_pool"].ssrn.siamese == 0
    assert cfgs["fuse"].ssrn.fuse_siamese
    for c in cfgs.values():
        assert c.train.epochs == full.train.epochs and c.data.num_clips == full.data.num_clips
