"""The shared data checker (issue 10, item 4): every problem at once, by file and record, before
training. The first checker (`python -m ecrl.data` via FeatureStore.check) passed all of these but
the missing video: it read no feature content."""

import logging

import h5py
import numpy as np
import pytest

from common.datacheck import DataCheck, DataCheckError


def _h5(path, items):
    with h5py.File(path, "w") as f:
        for k, v in items.items():
            if isinstance(v, dict):  # the official ActivityNet layout: a group holding one dataset
                g = f.create_group(k)
                for kk, vv in v.items():
                    g.create_dataset(kk, data=vv)
            else:
                f.create_dataset(k, data=v)
    return path


def _feats(rng, t=20, d=8):
    return rng.standard_normal((t, d)).astype(np.float32)


def test_every_feature_problem_is_reported_at_once_with_its_record(tmp_path):
    rng = np.random.default_rng(0)
    nan, inf = _feats(rng), _feats(rng)
    nan[3, 1] = np.nan
    inf[7, 0] = np.inf
    inf[9, 2] = -np.inf
    items = {f"v{i}": _feats(rng) for i in range(6)}
    items.update({"nan": nan, "inf": inf, "wide": _feats(rng, d=9), "flat": np.ones(8, np.float32),
                  "empty": np.zeros((0, 8), np.float32), "grouped": {"c3d_features": _feats(rng)}})
    path = _h5(tmp_path / "features.h5", items)
    check = DataCheck("demo")
    shapes = check.features(path, ids=[*items, "absent"])
    with pytest.raises(DataCheckError) as e:
        check.raise_if_problems()
    msg = str(e.value)
    assert msg.startswith("demo: data check full: 12 feature records; 6 problem(s):")
    for line in (f"{path}: absent: no features for this id",
                 f"{path}: nan: 1 NaN and 0 Inf value(s) in 1 of 20 row(s) (rows 3)",
                 f"{path}: inf: 0 NaN and 2 Inf value(s) in 2 of 20 row(s) (rows 7, 9)",
                 f"{path}: wide: shape (20, 9): 9-d features, expected 8-d (the 10 other records')",
                 f"{path}: flat: shape (8,): rank 1, expected rank 2",
                 f"{path}: empty: shape (0, 8): 0 row(s), expected at least 1"):
        assert line in msg, (line, msg)
    assert len(e.value.problems) == 6 and shapes["grouped"] == (20, 8)


def test_config_dim_and_a_clean_store(tmp_path):
    rng = np.random.default_rng(1)
    path = _h5(tmp_path / "f.h5", {f"v{i}": _feats(rng) for i in range(3)})
    check = DataCheck("ok")
    assert len(check.features(path)) == 3
    check.raise_if_problems()
    check.features(path, dim=16)
    assert [p.what for p in check.problems] == ["shape (20, 8): 8-d features, expected 16-d (the config's)"] * 3


def test_truncated_hdf5_and_npy_files_are_named(tmp_path):
    rng = np.random.default_rng(2)
    path = _h5(tmp_path / "f.h5", {f"v{i}": _feats(rng, t=200) for i in range(4)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    folder = tmp_path / "npy"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"v{i}.npy", _feats(rng))
    raw = (folder / "v1.npy").read_bytes()
    (folder / "v1.npy").write_bytes(raw[: len(raw) - 100])
    bad = _feats(rng)
    bad[0] = np.nan
    np.save(folder / "v2.npy", bad)
    check = DataCheck("trunc")
    check.features(path)
    check.features(folder, ids=["v0", "v1", "v2"])
    probs = [str(p) for p in check.problems]
    assert probs[0].startswith(f"{path}: unreadable HDF5 file (truncated or not HDF5)")
    assert probs[1].startswith(f"{folder}: v1: unreadable: ValueError") and "truncated?" in probs[1]
    assert probs[2] == f"{folder}: v2: 8 NaN and 0 Inf value(s) in 1 of 20 row(s) (rows 0)"
    assert len(probs) == 3


def test_word_vectors_nan_wrong_length_and_garbage(tmp_path):
    p = tmp_path / "glove.txt"
    p.write_text("the 0.1 0.2 0.3\nperson nan 0.2 0.3\nopens 0.1 0.2\ndoor 0.1 x 0.3\nunused nan nan nan\n"
                 "Door 0.1 inf 0.3\n")
    check = DataCheck("glove")
    assert check.word_vectors(p, words=["the", "person", "opens", "door"]) == 3
    assert [str(x) for x in check.problems] == [
        f"{p}: line 2 ('person'): 1 NaN and 0 Inf value(s)",
        f"{p}: line 3 ('opens'): 2 values, expected 3",
        f"{p}: line 4 ('door'): values do not parse as numbers (could not convert string to float: 'x')",
        f"{p}: line 6 ('Door'): 0 NaN and 1 Inf value(s)",
    ]  # 'unused' is not in the vocabulary: not read


def test_images_and_arrays(tmp_path):
    from PIL import Image

    good, trunc = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(good)
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(trunc)
    trunc.write_bytes(trunc.read_bytes()[:60])
    vol = tmp_path / "case1.npy"
    v = np.zeros((4, 5, 6), np.float32)
    v[1, 2, 3] = np.nan
    np.save(vol, v)
    check = DataCheck("mixed")
    check.images([("a", good), ("b", trunc), ("c", tmp_path / "c.png")], min_size=20)
    check.arrays([("case1", vol), ("case2", tmp_path / "missing.npy")], rank=3)
    probs = [str(x) for x in check.problems]
    assert f"{tmp_path / 'c.png'}: c: missing image" in probs
    assert f"{good}: a: image is 16x16, smaller than 20 px" in probs
    assert any(x.startswith(f"{trunc}: b: unreadable image") for x in probs)
    assert f"{tmp_path / 'missing.npy'}: case2: missing file" in probs
    assert f"{vol}: case1: 1 NaN and 0 Inf value(s) in 1 of 4 row(s) (rows 1)" in probs
    assert len(probs) == 5


def test_modes_fast_samples_deterministically_and_off_reads_nothing(tmp_path):
    ids = [f"v{i:04d}" for i in range(1000)]
    fast = DataCheck(mode="fast").sample(ids)
    assert len(fast) == 64 and set(fast) < set(ids)  # 2% of 1000 is 20; at least 64
    assert sorted(DataCheck(mode="fast").sample(list(reversed(ids)))) == sorted(fast)  # order does not matter
    assert len(DataCheck(mode="fast").sample([f"v{i}" for i in range(10_000)])) == 200
    assert DataCheck(mode="off").sample(ids) == [] and DataCheck(mode="full").sample(ids) == ids
    rng = np.random.default_rng(3)
    items = {f"v{i}": _feats(rng) for i in range(3)}
    items["v1"][0, 0] = np.nan
    path = _h5(tmp_path / "f.h5", items)
    off = DataCheck(mode="off")
    off.features(path, ids=["v0", "v1", "gone"])
    assert [str(p) for p in off.problems] == [f"{path}: gone: no features for this id"]  # presence only
    with pytest.raises(ValueError, match="valid: full | fast | off"):
        DataCheck(mode="quick")


def test_skips_are_counted_and_logged(tmp_path, caplog):
    log = logging.getLogger("demo.data")
    check = DataCheck("demo", log=log)
    for i in range(3):
        check.skip("train.json", f"v{i}", "zero-length moment")
    with caplog.at_level(logging.INFO, logger="demo.data"):
        check.raise_if_problems()
    assert "train.json: skipped 3 record(s): zero-length moment" in caplog.text
    assert "3 record(s) skipped" in check.summary()
