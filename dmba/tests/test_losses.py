"""Each victim's objective on hand-made inputs (exact values)."""

import math

import pytest
import torch

from common.config import load_config
from dmba.config import DEFAULTS
from dmba.losses import Objective, bayesian_loss, cosine_loss


def _obj(*over):
    cfg = load_config(None, list(over), DEFAULTS)
    from dmba.model import STRIDES

    return Objective(cfg, STRIDES[cfg.model.name])


def _batch(density, support=None, points=None, targets=None, st=64.0):
    b = density.shape[0]
    return {"density": density, "support": support if support is not None else torch.zeros_like(density),
            "points": points or [torch.zeros(0, 2)] * b, "head_targets": targets or [torch.zeros(0)] * b,
            "st_size": torch.full((b,), st)}


def test_mse_sums_over_pixels_and_averages_over_images():
    pred = torch.zeros(2, 1, 2, 2)
    gt = torch.ones(2, 1, 2, 2)
    parts = _obj()({"density": pred}, _batch(gt))
    assert float(parts["loss"]) == pytest.approx(4.0)  # (4 + 4) / 2 images
    assert float(_obj("loss.reduction=mean")({"density": pred}, _batch(gt))["loss"]) == pytest.approx(1.0)


def test_sfanet_adds_a_tenth_of_the_summed_attention_bce():
    pred, gt = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]])
    att, sup = torch.tensor([[[[0.5, 0.5]]]]), torch.tensor([[[[1.0, 0.0]]]])
    parts = _obj("model.name=sfanet")({"density": pred, "attention": att}, _batch(gt, sup))
    assert float(parts["attention"]) == pytest.approx(2 * math.log(2), rel=1e-5)
    assert float(parts["loss"]) == pytest.approx(1.0 + 0.1 * 2 * math.log(2), rel=1e-5)


def test_bayesian_loss_exact_without_background_and_with_per_head_targets():
    pred = torch.zeros(1, 1, 4, 4)
    pred[0, 0, 1, 2] = 0.25
    one = [torch.tensor([[9.0, 9.0]])]
    # one head, no background: the posterior is 1 everywhere, so the loss is |t - sum(pred)|
    assert float(bayesian_loss(pred, one, [torch.ones(1)], torch.tensor([32.0]), 8, use_bg=False)) == pytest.approx(0.75)
    assert float(bayesian_loss(pred, one, [torch.tensor([0.5])], torch.tensor([32.0]), 8, use_bg=False)) == \
        pytest.approx(0.25)
    assert float(bayesian_loss(pred, [torch.zeros(0, 2)], [torch.zeros(0)], torch.tensor([32.0]), 8)) == \
        pytest.approx(0.25)


def test_bayesian_background_distance_uses_the_image_side():
    """A far cell's mass goes to the background when d_img is small and to the head when it is large."""
    pred = torch.zeros(1, 1, 1, 8)
    pred[0, 0, 0, 7] = 1.0  # cell centre x = 60, the head sits at x = 4: 56 px away
    pts, tgt = [torch.tensor([[4.0, 4.0]])], [torch.ones(1)]
    near = float(bayesian_loss(pred, pts, tgt, torch.tensor([8.0]), 8, sigma=8.0, bg_ratio=1.0))
    far = float(bayesian_loss(pred, pts, tgt, torch.tensor([4096.0]), 8, sigma=8.0, bg_ratio=1.0))
    # small side: background distance 8^2/56^2 << 56^2, the cell counts as background: |1 - 0| + |0 - 1| = 2
    assert near == pytest.approx(2.0, abs=1e-4)
    assert far == pytest.approx(0.0, abs=1e-4)  # huge side: all mass explains the head


def test_kdmg_is_summed_mse_plus_ten_times_one_minus_cosine():
    pred = torch.tensor([[[[1.0, 0.0]]]])
    target = torch.tensor([[[[0.0, 1.0]]]])
    parts = _obj("model.name=kdmg")({"density": pred, "target": target}, _batch(torch.zeros(1, 1, 1, 2)))
    assert float(parts["cosine"]) == pytest.approx(1.0)
    assert float(parts["loss"]) == pytest.approx(2.0 + 10.0)
    assert float(cosine_loss(pred, pred)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="needs model.name=kdmg"):
        _obj("loss.name=kdmg")
