"""Data from a config: every problem listed at once before training, train_fraction subsets,
test subsets from meta.json, and the `python -m <project>.data` checker."""

import json

import h5py
import numpy as np
import pytest

from common.config import ConfigError, load_config
from common.data import DatasetNotFoundError
from common.datacheck import DataCheckError
from common.tsg.data import DATA_DEFAULTS, DATA_RULES, check_main, load_grounding_data, subsample

SCHEMA = {"data": dict(DATA_DEFAULTS), "model": {"word_dim": 3}}


def _write(root, train_lines, test_lines, videos=("A", "B", "C"), bad_video=None):
    d = root / "tsg_synthetic"
    d.mkdir(parents=True, exist_ok=True)
    (d / "charades_sta_train.txt").write_text("\n".join(train_lines) + "\n")
    (d / "charades_sta_test.txt").write_text("\n".join(test_lines) + "\n")
    (d / "charades.json").write_text(json.dumps({v: {"duration": 10.0} for v in videos}))
    with h5py.File(d / "features.h5", "w") as f:
        for v in videos:
            x = np.ones((8, 4), np.float32)
            if v == bad_video:
                x[2, 1] = np.nan
            f[v] = x
    (d / "glove.txt").write_text("person 1 0 0\nopens 0 1 0\ndoor 0 0 1\n")
    return d


TRAIN = [f"{v} 1.0 4.0##a person opens the door." for v in "ABCABCABCA"]
TEST = ["A 2.0 5.0##the person opens a door.", "B 0.0 3.0##person opens door."]


def _cfg(*sets):
    return load_config(None, list(sets), SCHEMA, DATA_RULES)


def test_loads_datasets_subsets_and_vocab(tmp_path):
    d = _write(tmp_path, TRAIN, TEST)
    (d / "meta.json").write_text(json.dumps({"test_subsets": {"first": [0], "both": [0, 1]}}))
    g = load_grounding_data(_cfg(), tmp_path, word_dim=3)
    assert len(g.train_set) == 10 and len(g.test_set) == 2 and g.subsets == {"first": [0], "both": [0, 1]}
    assert g.embeddings.shape == (len(g.vocab), 3) and g.features.dim == 4
    with pytest.raises(DataCheckError, match="3 values, expected 5"):
        load_grounding_data(_cfg(), tmp_path, word_dim=5)
    assert load_grounding_data(_cfg(), tmp_path, need_train_set=False).train_set is None


def test_vocabulary_keeps_test_words_that_glove_has(tmp_path):
    d = _write(tmp_path, TRAIN, TEST + ["C 1.0 2.0##a person opens the window."])
    (d / "glove.txt").write_text("person 1 0 0\nopens 0 1 0\ndoor 0 0 1\nwindow 1 1 0\n")
    g = load_grounding_data(_cfg(), tmp_path)
    assert "window" in g.vocab and np.allclose(g.embeddings[g.vocab.stoi["window"]], [1, 1, 0])
    assert g.vocab.itos[:2] == ["<pad>", "<unk>"] and "the" in g.vocab  # train words keep their ids


def test_every_bad_record_is_listed_at_once_or_skipped(tmp_path):
    bad_train = TRAIN + ["A 5.0 2.0##reversed moment.", "Z 1.0 2.0##unknown video."]
    bad_test = TEST + ["B 1.0 1.0##zero length."]
    _write(tmp_path, bad_train, bad_test)
    with pytest.raises(DataCheckError) as e:
        load_grounding_data(_cfg(), tmp_path)
    msg = str(e.value)
    assert "3 problem(s)" in msg and "line 11" in msg and "line 12" in msg and "line 3" in msg
    assert "charades_sta_test.txt: line 3: end 1.0 <= start 1.0" in msg
    g = load_grounding_data(_cfg("data.on_bad_record=skip"), tmp_path)
    assert len(g.train.queries) == 10 and g.train.skipped == 2 and g.test.skipped == 1


def test_missing_files_videos_and_bad_features(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="MISSING .*features.h5"):
        load_grounding_data(_cfg(), tmp_path, hint="make data")
    _write(tmp_path, TRAIN, TEST, videos=("A",))
    (tmp_path / "tsg_synthetic" / "charades.json").write_text(json.dumps({v: {"duration": 10.0} for v in "ABC"}))
    with pytest.raises(DataCheckError, match="(?s)B: no features for this id.*C: no features for this id"):
        load_grounding_data(_cfg('data.check="off"'), tmp_path)  # presence is checked in every mode
    _write(tmp_path, TRAIN, TEST, bad_video="B")
    load_grounding_data(_cfg('data.check="off"'), tmp_path)  # off: no content read
    with pytest.raises(DataCheckError, match="features.h5: B: .*NaN"):
        load_grounding_data(_cfg("data.check=full"), tmp_path)
    with pytest.raises(ConfigError, match="train_fraction"):
        _cfg("data.train_fraction=0")


def test_train_fraction_is_fixed_per_seed_and_nested(tmp_path):
    _write(tmp_path, [f"A {i / 10:.1f} {i / 10 + 1:.1f}##a person opens the door." for i in range(40)], TEST)
    g = load_grounding_data(_cfg("data.train_fraction=0.25"), tmp_path, seed=3)
    ids25 = [q.query_id for q in g.train.queries]
    assert len(ids25) == 10 and len(g.train_set) == 10 and ids25 == sorted(ids25)
    full = load_grounding_data(_cfg(), tmp_path).train
    assert ids25 == [q.query_id for q in subsample(full, 0.25, 3).queries]  # a function of the seed only
    ids50 = [q.query_id for q in subsample(full, 0.5, 3).queries]
    assert set(ids25) <= set(ids50) and len(ids50) == 20
    assert ids25 != [q.query_id for q in subsample(full, 0.25, 4).queries]
    with pytest.raises(ValueError, match="train_fraction"):
        subsample(full, 0.0, 0)


def test_check_main_exit_codes(tmp_path, capsys):
    _write(tmp_path, TRAIN, TEST, bad_video="C")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {num_clips: 4}\n")
    argv = ["--config", str(cfg), "--data-root", str(tmp_path)]
    assert check_main("ecrl", SCHEMA, argv, DATA_RULES) == 2
    assert "features.h5: C: 1 NaN" in capsys.readouterr().err
    _write(tmp_path, TRAIN, TEST)
    assert check_main("ecrl", SCHEMA, argv + ["--check", "fast"], DATA_RULES) == 0
    assert "ok: " in capsys.readouterr().out
