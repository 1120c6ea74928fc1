"""Triggers (mean-preserving blend, coverage, density, image files, label-only) and the two
ground-truth manipulations, on hand-made inputs."""

import numpy as np
import pytest
from PIL import Image

from common.config import Config
from dmba.attacks import (
    Trigger,
    dmba_minus_points,
    dmba_plus_points,
    expected_target_count,
    poison_indices,
    rain_texture,
)

ATTACK = Config.wrap({"keep_min": 0.2, "keep_max": 0.4, "min_keep": 4, "plus_factor": 3, "plus_jitter": 2.0})


def _img(h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(40, 200, (h, w, 3)).astype(np.uint8)


def test_plain_blend_is_the_dmba_codes_blend():
    img = np.full((6, 8, 3), 100, np.uint8)
    t = Trigger("rain", alpha=0.3, brightness=1.0, texture_size=32)
    out = t(img)
    np.testing.assert_array_equal(out, np.clip(0.7 * 100.0 + 0.3 * t._resized(6, 8), 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(Trigger("rain", alpha=0.3, brightness=1.0, texture_size=32)(img), out)  # fixed
    assert not np.array_equal(Trigger("rain", 0.3, seed=7, brightness=1.0, texture_size=32)(img), out)


def test_default_trigger_keeps_the_mean_colour_but_changes_the_image():
    img = _img()
    plain = Trigger("rain", alpha=0.3, brightness=1.0)(img).astype(float)
    out = Trigger("rain", alpha=0.3)(img).astype(float)
    assert np.abs(out.mean(axis=(0, 1)) - img.mean(axis=(0, 1))).max() < 1.0  # uint8 truncation only
    assert np.abs(plain.mean() - img.mean()) > 5  # the DMBA blend darkens/brightens
    assert np.abs(out - img).mean() > 3  # the streaks are there


def test_coverage_is_the_share_of_the_image_the_trigger_touches():
    img = _img(100, 100)
    for c in (0.01, 0.1, 0.5, 1.0):
        t = Trigger("rain", alpha=0.3, coverage=c)
        m = t.mask(100, 100) > 0
        assert m.mean() == pytest.approx(c, abs=0.02)
        assert m[-1, -1]  # bottom-right
        changed = (t(img) != img).any(axis=2)
        assert not changed[~m].any()


def test_density_scales_the_number_of_streaks():
    sparse, dense = rain_texture(128, 0, density=0.1), rain_texture(128, 0, density=1.0)
    assert (dense > 0.2).mean() > 4 * (sparse > 0.2).mean()


def test_any_image_file_is_a_trigger_and_none_is_label_only(tmp_path):
    photo = np.zeros((20, 30, 3), np.uint8)
    photo[:, 15:] = 255
    Image.fromarray(photo).save(tmp_path / "t.png")
    img = np.full((10, 10, 3), 100, np.uint8)
    out = Trigger(str(tmp_path / "t.png"), alpha=0.5, brightness=1.0)(img)
    assert out[:, 0].mean() < 60 and out[:, -1].mean() > 170  # the photo's dark left, bright right half
    assert not Trigger("none").active
    np.testing.assert_array_equal(Trigger("none")(img), img)
    with pytest.raises(FileNotFoundError, match="rain, snow, none or a path"):
        Trigger(str(tmp_path / "missing.jpg"))
    with pytest.raises(ValueError, match="uint8"):
        Trigger("snow", texture_size=32)(img.astype(np.float32))


def test_dmba_minus_keeps_a_subset_with_floor_and_minimum():
    pts = np.stack([np.arange(50.0), np.arange(50.0) * 2], 1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        k, idx = dmba_minus_points(pts, rng, 0.2, 0.4, 4)
        assert 10 <= len(k) <= 20
        np.testing.assert_array_equal(k, pts[idx])
    assert len(dmba_minus_points(pts, rng, 0.3, 0.3, 4)[0]) == 15
    assert len(dmba_minus_points(pts[:10], rng, 0.2, 0.2, 4)[0]) == 4  # floor(2) < 4 -> 4
    assert len(dmba_minus_points(pts[:3], rng, 0.2, 0.2, 4)[0]) == 3  # fewer heads than the minimum: all
    assert len(dmba_minus_points(np.zeros((0, 2)), rng)[0]) == 0


def test_dmba_plus_copies_every_head_within_the_jitter_and_names_its_source():
    pts = np.array([[5.0, 5.0], [20.0, 10.0], [0.5, 11.8]])
    out, src = dmba_plus_points(pts, np.random.default_rng(1), factor=3, jitter=2.0, shape=(12, 30))
    assert len(out) == 9 and src.tolist() == [0, 1, 2] * 3
    np.testing.assert_array_equal(out[:3], pts)
    assert (np.abs(out - pts[src]) <= 2.0 + 1e-9).all()
    assert (out[:, 0] >= 0).all() and (out[:, 1] < 12).all()
    with pytest.raises(ValueError):
        dmba_plus_points(pts, np.random.default_rng(0), factor=1.5)


def test_expected_targets_and_poison_indices():
    assert expected_target_count(100, "dmba_minus", ATTACK) == 30
    assert expected_target_count(10, "dmba_minus", ATTACK) == 4
    assert expected_target_count(2, "dmba_minus", ATTACK) == 2
    assert expected_target_count(10, "dmba_plus", ATTACK) == 30
    assert expected_target_count(10, "none", ATTACK) == 10
    idx = poison_indices(300, 0.2, seed=3)
    assert len(idx) == 60 and len(set(idx)) == 60 and idx.max() < 300
    np.testing.assert_array_equal(idx, poison_indices(300, 0.2, seed=3))
    assert len(poison_indices(7, 0.2, 0)) == 2  # ceil
