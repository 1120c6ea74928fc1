"""The clip grid: exact values on hand-made moments."""

import numpy as np
import pytest
import torch

from common.tsg.grid import boundary_targets, clip_centres, clips_to_moment, gaussian_targets, moment_to_clips


def test_moment_to_clips_exact():
    first, last = moment_to_clips([0.0, 0.25, 0.23, 0.9, 0.5], [1.0, 0.5, 0.61, 0.95, 0.51], 8)
    assert first.tolist() == [0, 2, 1, 7, 4]
    assert last.tolist() == [7, 3, 4, 7, 4]  # 0.61*8 = 4.88 -> clip 4; a sliver still covers one clip
    assert moment_to_clips(0.3, 0.6, 10) == (3, 5)


def test_moment_on_the_grid_survives_float32_noise():
    s, e = torch.tensor([0.3, 0.6], dtype=torch.float32)  # 0.6000000238...: not one clip more
    assert float(e) * 10 > 6.0
    assert tuple(int(x) for x in moment_to_clips(s, e, 10)) == (3, 5)


def test_moment_to_clips_per_video_n_and_errors():
    first, last = moment_to_clips(np.array([0.5, 0.5]), np.array([1.0, 1.0]), np.array([4, 10]))
    assert first.tolist() == [2, 5] and last.tolist() == [3, 9]
    with pytest.raises(ValueError, match="at least one valid clip"):
        moment_to_clips(0.1, 0.2, 0)


def test_clips_to_moment_inverts_on_the_grid():
    m = clips_to_moment(np.array([2, 0]), np.array([3, 7]), 8)
    np.testing.assert_allclose(m, [[0.25, 0.5], [0.0, 1.0]])
    assert tuple(int(x) for x in moment_to_clips(*m[0], 8)) == (2, 3)


def test_clip_centres_with_padding():
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    c = clip_centres(mask)
    assert torch.allclose(c[0], torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert torch.allclose(c[1, :2], torch.tensor([0.25, 0.75])) and torch.isnan(c[1, 2:]).all()


def test_gaussian_targets_exact():
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    t = gaussian_targets(torch.tensor([2.0, 2.0]), mask, sigma=1.0)
    w = np.exp(-np.array([4, 1, 0, 1, 4]) / 2.0)
    np.testing.assert_allclose(t[0].numpy(), w / w.sum(), rtol=1e-6)
    np.testing.assert_allclose(t[1].numpy(), np.r_[w[:3] / w[:3].sum(), 0, 0], rtol=1e-6)  # padding: 0
    one_hot = gaussian_targets(torch.tensor([1.4, 0.0]), mask, sigma=0.0)
    assert one_hot.tolist() == [[0, 1, 0, 0, 0], [1, 0, 0, 0, 0]]


def test_boundary_targets_exact():
    mask = torch.ones(1, 8, dtype=torch.bool)
    ts, te, inside = boundary_targets(torch.tensor([0.25]), torch.tensor([0.5]), mask, sigma=0)
    assert ts[0].argmax() == 2 and te[0].argmax() == 3 and ts[0].sum() == 1
    assert inside[0].tolist() == [False, False, True, True, False, False, False, False]
