"""Dice, HD95 and ASD exact on hand-made masks at anisotropic spacing (0.8 x 0.8 x 4 mm)."""

import math

import numpy as np
import pytest

from lns_parsing.metrics import case_metrics, dice, summarize, surface_distances

SP = (0.8, 0.8, 4.0)


def vol(*boxes):
    v = np.zeros((8, 8, 8), bool)
    for b in boxes:
        v[b] = True
    return v


def test_dice_exact():
    a = vol(np.s_[1:3, 1:3, 1:3])
    b = vol(np.s_[2:4, 1:3, 1:3])
    assert dice(a, b) == pytest.approx(0.5)       # 4 shared of 8 + 8
    assert dice(a, a) == 1.0
    assert dice(a, vol()) == 0.0


def test_single_voxels_offset_in_x_and_z():
    a = vol(np.s_[2, 2, 2])
    b = vol(np.s_[3, 2, 4])
    hd, asd = surface_distances(a, b, SP)
    assert hd == pytest.approx(math.hypot(0.8, 8.0)) and asd == pytest.approx(math.hypot(0.8, 8.0))


def test_line_against_one_voxel_along_the_thick_axis():
    a = vol(np.s_[2, 2, 0:3])        # three voxels along z: distances 0, 4, 8 mm to b
    b = vol(np.s_[2, 2, 0])
    hd, asd = surface_distances(a, b, SP)
    assert asd == pytest.approx((0 + 4 + 8 + 0) / 4)               # symmetric mean over both surfaces
    assert hd == pytest.approx(np.percentile([0.0, 4.0, 8.0], 95))  # 7.6: the larger directed 95th percentile


def test_shifted_line_in_plane():
    a = vol(np.s_[1, 1, 0:3])
    b = vol(np.s_[3, 1, 0:3])
    hd, asd = surface_distances(a, b, SP)
    assert hd == pytest.approx(1.6) and asd == pytest.approx(1.6)


def test_missing_station_scores_zero_and_has_no_distances():
    true = np.zeros((8, 8, 8), np.int64)
    true[1:3, 1:3, 1:3] = 1
    true[5:7, 5:7, 5:7] = 2
    pred = np.zeros_like(true)
    pred[1:3, 1:3, 1:3] = 1                        # station 2 missed entirely (an empty prediction)
    m = case_metrics(pred, true, ["a", "b", "c"], SP)
    assert set(m) == {"a", "b"}                    # "c" is absent from the truth: skipped
    assert m["a"] == {"dice": 1.0, "hd95": 0.0, "asd": 0.0}
    assert m["b"]["dice"] == 0.0 and math.isnan(m["b"]["hd95"]) and math.isnan(m["b"]["asd"])
    s = summarize({"p1": m, "p2": {"a": {"dice": 0.5, "hd95": 2.0, "asd": 1.0}}}, ["a", "b", "c"])
    assert s["Dice"] == pytest.approx(100 * (0.5 + 0.5) / 2)        # p1: mean(1, 0) = 0.5; p2: 0.5
    assert s["Dice/a"] == pytest.approx(75.0) and s["Dice_std/a"] == pytest.approx(100 * np.std([1, 0.5], ddof=1))
    assert s["HD95"] == pytest.approx(1.0) and s["missed_stations"] == 1.0  # distances skip the missed station
