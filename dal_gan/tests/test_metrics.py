"""SSIM / PSNR against skimage's exact definition, and the verification metrics on hand-made scores."""

import math

import numpy as np
import pytest
import torch

from dal_gan.metrics import auc, cosine_scores, eer, psnr, quality, roc, ssim, tar_at_far, verification


def _t(a):
    a = a[..., None] if a.ndim == 2 else a
    return torch.from_numpy(a).permute(2, 0, 1)[None].double()


@pytest.mark.parametrize("shape", [(32, 32, 3), (40, 48), (11, 17, 3)])
def test_ssim_equals_skimage_gaussian_population_definition(shape):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(sum(shape))
    a = rng.random(shape)
    b = np.clip(a + 0.15 * rng.standard_normal(shape), 0, 1)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
                                channel_axis=-1 if len(shape) == 3 else None)
    assert float(ssim(_t(a), _t(b))[0]) == pytest.approx(ref, abs=1e-6)
    # skimage's defaults (7-px uniform window, sample covariance) are another number: the definition matters
    assert abs(structural_similarity(a, b, data_range=1.0, channel_axis=-1 if len(shape) == 3 else None) - ref) > 1e-6


def test_identical_images_give_ssim_1_and_infinite_psnr():
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(3), atol=1e-6)
    assert torch.isinf(psnr(x, x)).all()
    q = quality(x, x)
    assert q["SSIM"] == pytest.approx(1.0, abs=1e-6) and q["n_identical"] == 3 and math.isinf(q["PSNR"])
    y = x.clone()
    y[0] = (y[0] + 0.1).clamp(0, 1)
    assert psnr(y[:1], x[:1])[0] == pytest.approx(float(10 * torch.log10(1 / ((y[0] - x[0]) ** 2).mean())), rel=1e-5)
    with pytest.raises(ValueError, match="11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))


def test_psnr_hand_value():
    x, y = torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.1)
    assert float(psnr(x, y)[0]) == pytest.approx(20.0, abs=1e-5)      # 10 log10(1 / 0.01)


# genuine 0.9, 0.6; impostor 0.8, 0.3, 0.2, 0.1 -> ROC (0,0) (0,.5) (.25,.5) (.25,1) (.5,1) (.75,1) (1,1)
S = np.array([0.9, 0.6, 0.8, 0.3, 0.2, 0.1])
G = np.array([1, 1, 0, 0, 0, 0], bool)


def test_roc_points_auc_eer_tar_on_hand_made_scores():
    fpr, tpr, thr = roc(S, G)
    assert fpr.tolist() == [0, 0, 0.25, 0.25, 0.5, 0.75, 1.0]
    assert tpr.tolist() == [0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert thr[1:].tolist() == [0.9, 0.8, 0.6, 0.3, 0.2, 0.1]
    assert auc(S, G) == pytest.approx(7 / 8)                      # pairs: 0.9 beats 4, 0.6 beats 3
    assert eer(S, G) == pytest.approx(0.25)                       # the curve crosses FPR = 1 - TPR at FPR 0.25
    assert tar_at_far(S, G, 0.01) == pytest.approx(0.5)
    assert tar_at_far(S, G, 0.5) == pytest.approx(1.0)
    v = verification(S, G)
    assert v == pytest.approx({"AUC": 87.5, "EER": 25.0, "TAR@FAR1": 50.0, "TAR@FAR5": 50.0})


def test_ties_perfect_and_reversed_scores():
    assert auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)           # a tie counts one half
    assert eer([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    perfect = verification(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0], bool))
    assert perfect == pytest.approx({"AUC": 100, "EER": 0, "TAR@FAR1": 100, "TAR@FAR5": 100})
    rev = verification(np.array([0.1, 0.2, 0.9, 0.8]), np.array([1, 1, 0, 0], bool))
    assert rev["AUC"] == pytest.approx(0) and rev["EER"] == pytest.approx(100)
    # EER interpolated between ROC points: genuine .9 .5, impostor .7 .3 -> (0,.5) (.5,.5) (.5,1): EER .5
    assert eer([0.9, 0.5, 0.7, 0.3], [1, 1, 0, 0]) == pytest.approx(0.5)
    # a crossing inside a sloped segment (a genuine tied with an impostor): (0,.5) -> (.5,1) meets 1 - x at .25
    assert eer([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="genuine and impostor"):
        auc([0.1, 0.2], [1, 1])


def test_cosine_scores_and_genuine_mask():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    g = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    s, gen = cosine_scores(p, ["a", "b"], g, ["a", "c", "b"])
    assert np.allclose(s, [[1, 2**-0.5, 0], [0, 2**-0.5, 1]])
    assert gen.tolist() == [[True, False, False], [False, False, True]]
