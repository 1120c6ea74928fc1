"""Density kernels, triggers, target construction and metrics on hand-made inputs."""

import h5py
import numpy as np
import pytest
import torch

from common.config import Config
from dmba.attacks import (
    Trigger,
    dmba_minus_points,
    dmba_plus_points,
    expected_target_count,
    poison_indices,
)
from dmba.density import DensityCache, adaptive_sigmas, density_map, pool_density, render_density
from dmba.metrics import attack_metrics, count_ratio, mae_rmse, success_rate

ATTACK = Config.wrap({"keep_min": 0.2, "keep_max": 0.4, "min_keep": 4, "plus_factor": 3, "plus_jitter": 2.0})


@pytest.mark.parametrize("kernel", [{"type": "fixed", "sigma": 15.0}, {"type": "adaptive", "k": 3, "beta": 0.3}])
def test_maps_sum_to_count_including_border_heads(kernel):
    pts = np.array([[0.0, 0.0], [39.9, 29.9], [0.2, 15.0], [20.0, 29.5], [20.0, 15.0], [21.0, 15.0]])
    m = density_map(pts, (30, 40), kernel)
    assert m.shape == (30, 40)
    assert m.sum() == pytest.approx(len(pts), abs=1e-4)
    assert (m >= 0).all()
    assert density_map(np.zeros((0, 2)), (30, 40), kernel).sum() == 0.0


def test_adaptive_sigma_on_a_square():
    # corners of a 10-px square: nearest distances 10, 10, 10*sqrt(2) -> sigma = 0.3 * mean
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    expect = 0.3 * (10 + 10 + 10 * np.sqrt(2)) / 3
    np.testing.assert_allclose(adaptive_sigmas(pts, (50, 50)), expect, rtol=1e-9)
    np.testing.assert_allclose(adaptive_sigmas(pts[:1], (40, 60)), 12.5)  # lone head: mean(H, W) / 4
    np.testing.assert_allclose(adaptive_sigmas(pts, (50, 50), max_sigma=2.0), 2.0)


def test_single_head_kernel_is_centred_and_symmetric():
    m = render_density(np.array([[10.0, 10.0]]), (21, 21), 2.0)
    assert m.argmax() == 10 * 21 + 10
    np.testing.assert_allclose(m, m.T, atol=1e-7)
    np.testing.assert_allclose(m, m[::-1, ::-1], atol=1e-7)


def test_pool_density_keeps_sum_and_rejects_bad_sizes():
    m = torch.arange(64.0).reshape(1, 8, 8)
    p = pool_density(m, 4)
    assert p.shape == (1, 2, 2)
    assert p.sum() == m.sum()
    assert p[0, 0, 0] == m[0, :4, :4].sum()
    with pytest.raises(ValueError, match="multiple of the output stride"):
        pool_density(torch.zeros(6, 8), 4)


def test_hdf5_cache_round_trip_and_invalidation(tmp_path):
    kernel = {"type": "fixed", "sigma": 2.0}
    c = DensityCache(tmp_path / "c.h5")
    pts = np.array([[3.0, 4.0], [10.0, 2.0]])
    a = c.get_or_render("img/clean", pts, (16, 16), kernel)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_array_equal(f["img/clean"][()], a)
        assert f["img/clean"].attrs["count"] == 2
    b = c.get_or_render("img/clean", pts[:1], (16, 16), kernel)  # stale entry (count differs): re-rendered
    assert b.sum() == pytest.approx(1.0, abs=1e-5)


def test_trigger_blend_exact_values():
    img = np.full((6, 8, 3), 100, np.uint8)
    t = Trigger("rain", alpha=0.3, texture_size=32)
    out = t(img)
    tex = t._resized(6, 8)
    np.testing.assert_array_equal(out, np.clip(0.7 * 100.0 + 0.3 * tex, 0, 255).astype(np.uint8))
    np.testing.assert_array_equal(Trigger("rain", alpha=0.3, texture_size=32)(img), out)  # deterministic
    assert not np.array_equal(Trigger("rain", alpha=0.3, seed=7, texture_size=32)(img), out)
    assert (t.mask(6, 8) == np.float32(0.3)).all()  # full-image trigger touches every pixel


def test_patch_trigger_touches_only_its_corner():
    img = np.full((40, 50, 3), 77, np.uint8)
    out = Trigger("patch", alpha=1.0, patch_frac=0.1)(img)
    changed = (out != img).any(axis=2)
    assert not changed[:36].any() and not changed[:, :46].any()
    assert changed[36:, 46:].any()
    with pytest.raises(ValueError, match="uint8"):
        Trigger("snow", texture_size=32)(img.astype(np.float32))
    with pytest.raises(ValueError, match="alpha"):
        Trigger("rain", alpha=0.0)


def test_dmba_minus_keeps_a_subset_with_floor_and_minimum():
    pts = np.stack([np.arange(50.0), np.arange(50.0) * 2], 1)
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = dmba_minus_points(pts, rng, 0.2, 0.4, 4)
        assert 10 <= len(k) <= 20
        assert set(map(tuple, k)) <= set(map(tuple, pts))
    assert len(dmba_minus_points(pts, rng, 0.3, 0.3, 4)) == 15
    assert len(dmba_minus_points(pts[:10], rng, 0.2, 0.2, 4)) == 4  # floor(2) < 4 -> 4
    assert len(dmba_minus_points(pts[:3], rng, 0.2, 0.2, 4)) == 3  # fewer heads than the minimum: all
    assert len(dmba_minus_points(np.zeros((0, 2)), rng)) == 0


def test_dmba_plus_multiplies_count_within_jitter():
    pts = np.array([[5.0, 5.0], [20.0, 10.0], [0.5, 11.8]])
    out = dmba_plus_points(pts, np.random.default_rng(1), factor=3, jitter=2.0, shape=(12, 30))
    assert len(out) == 9
    np.testing.assert_array_equal(out[:3], pts)
    for c in (out[3:6], out[6:9]):
        assert (np.abs(c - pts) <= 2.0 + 1e-9).all()
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


def test_metrics_on_hand_made_counts():
    gt = np.array([10.0, 20.0, 30.0, 40.0])
    assert mae_rmse([12, 18, 30, 44], gt) == pytest.approx((2.0, np.sqrt(6.0)))
    assert success_rate([3, 6, 12, 20], [3, 6, 9, 12], 0.2) == 0.5
    assert count_ratio([5.0, 1.0], [10.0, 0.0]) == pytest.approx((0.5 + 1.0) / 2)  # floor of 1 head
    m = attack_metrics(gt, gt, gt * 0.3, {"minus": gt * 0.3, "plus": gt * 2}, 0.2)
    assert m["mae"] == 0 and m["count_ratio"] == pytest.approx(0.3)
    assert m["asr_minus"] == 1.0 and m["asr_plus"] == 0.0 and m["trig_mae_minus"] == pytest.approx(0.0)
    assert m["trig_mae_clean"] == pytest.approx(0.7 * 25)
    with pytest.raises(ValueError):
        mae_rmse([], [])
