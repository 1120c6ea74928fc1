import pickle

import h5py
import numpy as np
import pytest

from common.data import DataFormatError, DatasetNotFoundError
from common.tsg.features import FeatureStore, MissingVideoError, resample


@pytest.fixture
def h5(tmp_path):
    p = tmp_path / "f.h5"
    with h5py.File(p, "w") as f:
        f["A"] = np.arange(12, dtype=np.float64).reshape(6, 2)
        f.create_group("v_b")["c3d_features"] = np.ones((3, 2), np.float32)  # official ANet layout
        f["bad"] = np.array([[1.0, np.nan]], np.float32)
        f["flat"] = np.ones(4, np.float32)
    return p


def test_h5_store(h5):
    fs = FeatureStore(h5)
    assert "A" in fs and "nope" not in fs and len(fs) == 4 and fs.dim == 2
    x = fs.get("A")
    assert x.dtype == np.float32 and x.shape == (6, 2) and x[5, 1] == 11
    np.testing.assert_array_equal(fs.get("v_b"), np.ones((3, 2)))
    with pytest.raises(DataFormatError, match="'bad': 1 clip"):
        fs.get("bad")
    with pytest.raises(DataFormatError, match=r"'flat': features have shape \(4,\)"):
        fs.get("flat")
    with pytest.raises(MissingVideoError, match="no features for video 'nope'"):
        fs.get("nope")


def test_check_lists_missing_videos_and_dim(h5):
    fs = FeatureStore(h5)
    fs.check(["A", "v_b"])
    with pytest.raises(MissingVideoError) as e:
        fs.check(["A", "x2", "x1", "x1"])
    assert str(h5) in str(e.value) and "2 video(s): x1, x2" in str(e.value)
    with pytest.raises(DataFormatError, match="2-d but the config says 1024-d"):
        fs.check(["A"], dim=1024)


def test_handle_is_reopened_after_pickling(h5):
    fs = FeatureStore(h5)
    fs.get("A")
    clone = pickle.loads(pickle.dumps(fs))  # what a DataLoader worker receives
    assert clone._h5 is None
    np.testing.assert_array_equal(clone.get("A"), fs.get("A"))


def test_durations_from_feature_length(h5, tmp_path):
    assert FeatureStore(h5).durations(["A", "v_b", "A"], 0.5) == {"A": 3.0, "v_b": 1.5}
    np.save(tmp_path / "vid1.npy", np.zeros((5, 3), np.float32))
    assert FeatureStore(tmp_path).durations(["vid1"], 1.0) == {"vid1": 5.0}
    with pytest.raises(MissingVideoError):
        FeatureStore(h5).durations(["zz"], 1.0)


def test_npy_folder(tmp_path):
    np.save(tmp_path / "vid1.npy", np.zeros((5, 3), np.float16))
    fs = FeatureStore(tmp_path)
    assert fs.get("vid1").dtype == np.float32 and fs.dim == 3 and "vid2" not in fs
    with pytest.raises(DatasetNotFoundError):
        FeatureStore(tmp_path / "nothing.h5")


def test_resample_mean_exact():
    x = np.arange(10, dtype=np.float32)[:, None]
    out, mask = resample(x, 4)
    # bin edges round(linspace(0, 10, 5)) = [0, 2, 5, 8, 10]
    np.testing.assert_allclose(out[:, 0], [0.5, 3.0, 6.0, 8.5])
    assert mask.all()
    out, _ = resample(x, 10)
    np.testing.assert_array_equal(out, x)


def test_resample_uniform_and_short_videos():
    x = np.arange(10, dtype=np.float32)[:, None]
    out, mask = resample(x, 4, "uniform")  # round(linspace(0, 9, 4)) = [0, 3, 6, 9]
    np.testing.assert_array_equal(out[:, 0], [0, 3, 6, 9])
    for mode in ("mean", "uniform"):
        out, mask = resample(x[:3], 5, mode)
        np.testing.assert_array_equal(out[:, 0], [0, 1, 2, 0, 0])
        np.testing.assert_array_equal(mask, [True, True, True, False, False])
    with pytest.raises(ValueError, match="mode"):
        resample(x, 4, "max")


def test_resample_mean_preserves_the_average():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((97, 8)).astype(np.float32)
    out, _ = resample(x, 16)
    edges = np.round(np.linspace(0, 97, 17)).astype(int)
    np.testing.assert_allclose((out * np.diff(edges)[:, None]).sum(0) / 97, x.mean(0), atol=1e-5)


def test_resample_uniform_offset_picks_the_frames_between():
    """SSRN's siamese sampling: ``offset`` shifts the uniform positions by a fraction of a step
    (exact frame indices on a video whose features are their own index)."""
    x = np.arange(31, dtype=np.float32)[:, None]  # 31 frames, 4 clips: step 10, positions 0, 10, 20, 30
    idx = lambda off: resample(x, 4, "uniform", offset=off)[0][:, 0].tolist()
    assert idx(0.0) == [0, 10, 20, 30] == resample(x, 4, "uniform")[0][:, 0].tolist()
    assert idx(0.5) == [5, 15, 25, 30]            # half a step later; the last one is clipped to T - 1
    assert idx(-0.5) == [0, 5, 15, 25]            # half a step earlier; the first one clipped to 0
    assert idx(0.26) == [3, 13, 23, 30]           # round(10 * 0.26) = 3
    assert idx(-0.04) == [0, 10, 20, 30]          # less than half a frame: the same frames
    out, mask = resample(x[:3], 5, "uniform", offset=0.5)  # a short video keeps its frames; nothing to shift
    np.testing.assert_array_equal(out[:, 0], [0, 1, 2, 0, 0])
    assert mask.tolist() == [True, True, True, False, False]
    with pytest.raises(ValueError, match="uniform"):
        resample(x, 4, "mean", offset=0.5)
    with pytest.raises(ValueError, match="finite"):
        resample(x, 4, "uniform", offset=float("nan"))
