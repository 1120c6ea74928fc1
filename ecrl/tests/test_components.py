"""Unit tests of the ECRL components on hand-made and random tensors."""

import math

import numpy as np
import pytest
import torch

from ecrl.augment import AugConfig, augment, fg_clips, make_plan
from ecrl.losses import boundary_targets, clip_times, gaussian_prior, grounding_loss, sscl_from_logits, sscl_loss
from ecrl.model import ECRLNet, decode, span_scores
from ecrl.refine import SelfRefine, inpaint_loss, smoothness_loss


def _batch(b=3, n=16, d=8, lw=5, pad=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    video_mask = torch.ones(b, n, dtype=torch.bool)
    if pad:
        for i, p in pad.items():
            video_mask[i, n - p:] = False
    return {"video": torch.randn(b, n, d, generator=g) * video_mask.unsqueeze(-1), "video_mask": video_mask,
            "words": torch.randint(2, 30, (b, lw), generator=g), "word_mask": torch.ones(b, lw, dtype=torch.bool)}


def test_model_shapes_and_padding():
    torch.manual_seed(0)
    bt = _batch(pad={1: 6})
    bt["word_mask"][2, 3:] = False
    net = ECRLNet(vocab_size=30, word_dim=12, feat_dim=8, d=16, heads=2).eval()
    out = net(bt["video"], bt["video_mask"], bt["words"], bt["word_mask"])
    assert out["start"].shape == out["end"].shape == out["inside"].shape == (3, 16)
    assert out["hidden"].shape == (3, 16, 16)
    assert (out["start"][1, 10:] < -1e30).all() and (out["end"][1, 10:] < -1e30).all()
    preds = decode(out, bt["video_mask"], k=5)
    for p in preds:
        assert p.shape == (5, 2) and (p[:, 0] < p[:, 1]).all() and (p >= 0).all() and (p <= 1).all()
    # padded words do not change the output
    bt2 = dict(bt)
    bt2["words"] = bt["words"].clone()
    bt2["words"][2, 3:] = 7
    out2 = net(bt2["video"], bt2["video_mask"], bt2["words"], bt2["word_mask"])
    assert torch.allclose(out["start"][2], out2["start"][2], atol=1e-5)


def test_frozen_glove_rows():
    emb = np.arange(30 * 12, dtype=np.float32).reshape(30, 12)
    net = ECRLNet(vocab_size=30, word_dim=12, feat_dim=8, d=16, heads=2, embeddings=emb)
    assert torch.equal(net.query.embed.weight, torch.from_numpy(emb)) and not net.query.embed.weight.requires_grad
    with pytest.raises(ValueError, match="expected"):
        ECRLNet(vocab_size=31, word_dim=12, feat_dim=8, d=16, heads=2, embeddings=emb)


def test_span_scores_and_decode_exact():
    n = 4
    start = torch.full((1, n), -10.0)
    end = torch.full((1, n), -10.0)
    start[0, 1] = 5.0
    end[0, 2] = 5.0
    sc = span_scores(start, end)
    assert torch.isinf(sc[0, 2, 1]) and sc[0, 2, 1] < 0  # end before start is invalid
    assert divmod(int(sc[0].flatten().argmax()), n) == (1, 2)
    out = {"start": start, "end": end, "inside": torch.zeros(1, n)}
    top = decode(out, torch.ones(1, n, dtype=torch.bool), k=1)[0]
    assert np.allclose(top, [[0.25, 0.75]])  # clips 1..2 of 4
    # max_len forbids the long span
    assert torch.isinf(span_scores(start, end, max_len=1)[0, 1, 2])


def test_decode_suppresses_overlapping_spans():
    n = 4
    start = torch.tensor([[5.0, 4.0, -9.0, -9.0]])
    end = torch.tensor([[-9.0, 5.0, 4.9, -9.0]])
    out = {"start": start, "end": end, "inside": torch.zeros(1, n)}
    top = decode(out, torch.ones(1, n, dtype=torch.bool), k=5, nms=0.5, inside_weight=0.0)[0]
    # ranked (0,1), (0,2), (1,1), (1,2), ...: (0,2) overlaps (0,1) with IoU 2/3 > 0.5 and is dropped
    assert np.allclose(top[:2], [[0.0, 0.5], [0.25, 0.5]])
    ious = [[max(0, min(a[1], b[1]) - max(a[0], b[0])) / (max(a[1], b[1]) - min(a[0], b[0])) for b in top] for a in top]
    assert all(ious[i][j] <= 0.5 + 1e-9 for i in range(len(top)) for j in range(len(top)) if i != j)


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_label_transform_is_exact(seed):
    """Features encode their source position, so each augmented clip tells where it came from:
    the transformed ground truth covers exactly the moved foreground and tau is exact."""
    rng = np.random.default_rng(seed)
    b, n = 6, 20
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[2, 14:] = False
    nv = mask.sum(1).numpy()
    # clip-aligned moments
    fs = np.array([rng.integers(0, k - 1) for k in nv])
    fe = np.array([rng.integers(f, k) for f, k in zip(fs, nv)])
    start = torch.tensor(fs / nv, dtype=torch.float64)
    end = torch.tensor((fe + 1) / nv, dtype=torch.float64)
    video = torch.zeros(b, n, 2, dtype=torch.float64)
    video[:, :, 0] = torch.arange(n, dtype=torch.float64)       # source clip index
    video[:, :, 1] = torch.arange(b, dtype=torch.float64)[:, None]  # source video
    video *= mask.unsqueeze(-1)
    cfg = AugConfig(noise_std=0.0, clip_dropout=0.0, p_foreign=0.7)
    aug, s2, e2, plan = augment({"video": video, "video_mask": mask, "start": start, "end": end}, cfg, rng)
    for i in range(b):
        k = int(nv[i])
        a, c = plan.fg[i]
        # transformed label == the augmented clips holding the foreground, exactly
        assert math.isclose(float(s2[i]) * k, a, abs_tol=1e-5) and math.isclose(float(e2[i]) * k, c + 1, abs_tol=1e-5)
        own = aug[i, :k, 1] == i
        pos = aug[i, :k, 0].numpy()
        in_fg = (pos >= fs[i] - 1e-9) & (pos <= fe[i] + 1e-9) & own.numpy()
        idx = np.arange(k)
        assert in_fg[(idx >= a) & (idx <= c)].all()              # every moved-foreground clip is foreground
        assert not in_fg[(idx < a) | (idx > c)].any()            # and nothing else is
        # tau is each own clip's original position (clip centre, fraction); NaN for foreign clips
        tau = plan.tau[i, :k]
        assert np.isnan(tau[~own.numpy()]).all()
        fgm = (idx >= a) & (idx <= c)
        assert np.allclose(np.clip(tau[fgm] * k - 0.5, fs[i], fe[i]), pos[fgm], atol=1e-9)  # interpolated
        # background clips are exact copies (no blending): tau*k - 0.5 is their index
        bgm = own.numpy() & ((idx < a) | (idx > c))
        assert np.allclose(tau[bgm] * k - 0.5, pos[bgm], atol=1e-9)
        assert (aug[i, k:] == 0).all()  # padding stays padding


def test_augmentation_nonaligned_moment_maps_linearly():
    rng = np.random.default_rng(3)
    mask = torch.ones(1, 10, dtype=torch.bool)
    video = torch.randn(1, 10, 4)
    start, end = torch.tensor([0.23]), torch.tensor([0.61])
    _, s2, e2, plan = augment({"video": video, "video_mask": mask, "start": start, "end": end},
                              AugConfig(noise_std=0, clip_dropout=0, speed_min=1.5, speed_max=1.5), rng)
    fs, fe = fg_clips(0.23, 0.61, 10)
    a, c = plan.fg[0]
    r = (c - a + 1) / (fe - fs + 1)
    assert math.isclose(float(s2[0]), (a + (2.3 - fs) * r) / 10, rel_tol=1e-6)
    assert math.isclose(float(e2[0]), (a + (6.1 - fs) * r) / 10, rel_tol=1e-6)
    assert a / 10 <= float(s2[0]) < float(e2[0]) <= (c + 1) / 10


def test_no_transform_is_identity():
    bt = _batch(pad={0: 3})
    st, en = torch.tensor([0.1, 0.2, 0.0]), torch.tensor([0.5, 0.9, 1.0])
    cfg = AugConfig(p_temporal=0.0, noise_std=0.0, clip_dropout=0.0)
    aug, s2, e2, plan = augment({**bt, "start": st, "end": en}, cfg, np.random.default_rng(0))
    assert torch.equal(aug, bt["video"])
    assert not plan.splice.any()
    for i in range(3):
        n = int(bt["video_mask"][i].sum())
        f0, f1 = fg_clips(float(st[i]), float(en[i]), n)
        assert math.isclose(float(s2[i]), float(st[i]), abs_tol=1e-6) and math.isclose(float(e2[i]), float(en[i]), abs_tol=1e-6)
        assert tuple(plan.fg[i]) == (f0, f1)


def test_splice_points_marked_at_relocation():
    mask = torch.ones(1, 12, dtype=torch.bool)
    plan = make_plan(mask, torch.tensor([0.5]), torch.tensor([0.75]),
                     AugConfig(crop_max=0, p_foreign=0, speed_min=1, speed_max=1, clip_dropout=0),
                     np.random.default_rng(1))
    a, c = plan.fg[0]
    if a > 0:
        assert plan.splice[0, a - 1] and plan.splice[0, a]


def test_sscl_minimal_when_similarity_matches_prior():
    torch.manual_seed(0)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    times = clip_times(mask)
    tau = torch.rand(2, 8)
    tau[0, 3] = float("nan")  # a foreign clip: no row
    g = gaussian_prior(tau, times, 0.1)
    assert torch.allclose(g[~torch.isnan(tau)].sum(-1), torch.ones(15))
    assert (g[0, 3] == 0).all() and (g[1, :, 7:] == 0).all()
    logits = torch.log(g.clamp_min(1e-30)).requires_grad_(True)
    at_prior = sscl_from_logits(logits, tau, times, 0.1)
    at_prior.backward()
    assert abs(at_prior.item()) < 1e-5
    assert logits.grad[~torch.isnan(tau)].abs().max() < 1e-5  # a stationary point
    for s in range(3):
        other = logits.detach() + torch.randn(logits.shape, generator=torch.Generator().manual_seed(s))
        assert float(sscl_from_logits(other, tau, times, 0.1)) > at_prior.item() + 1e-3


def test_sscl_loss_prefers_aligned_features():
    """Features that are identical at equal times give lower SSCL than shuffled ones."""
    torch.manual_seed(0)
    n = 12
    mask = torch.ones(1, n, dtype=torch.bool)
    h = torch.randn(1, n, 32)
    tau = clip_times(mask)
    aligned = sscl_loss(h, mask, h, tau, sigma=0.05, kappa=0.05)
    shuffled = sscl_loss(h, mask, h[:, torch.randperm(n)], tau, sigma=0.05, kappa=0.05)
    assert float(aligned) < float(shuffled)


def test_boundary_targets_and_grounding_loss():
    mask = torch.ones(1, 8, dtype=torch.bool)
    ts, te, inside = boundary_targets(torch.tensor([0.25]), torch.tensor([0.5]), mask, sigma=0)
    assert ts[0].argmax() == 2 and te[0].argmax() == 3 and ts[0].sum() == 1
    assert inside[0].tolist() == [False, False, True, True, False, False, False, False]
    good = {"start": ts * 50, "end": te * 50, "inside": (inside.float() * 2 - 1) * 50}
    bad = {"start": te * 50, "end": ts * 50, "inside": -good["inside"]}
    assert grounding_loss(good, torch.tensor([0.25]), torch.tensor([0.5]), mask, 0) < 1e-6
    assert grounding_loss(bad, torch.tensor([0.25]), torch.tensor([0.5]), mask, 0) > 10


def test_refine_losses():
    mask = torch.ones(2, 10, dtype=torch.bool)
    x = torch.randn(2, 10, 6)
    assert float(smoothness_loss(x, mask, torch.zeros(2, 10, dtype=torch.bool))) == 0.0
    smooth = torch.linspace(0, 1, 10)[None, :, None].expand(2, 10, 6).clone()
    spliced = smooth.clone()
    spliced[:, 5:] += 3.0
    sp = torch.zeros(2, 10, dtype=torch.bool)
    sp[:, 4:6] = True
    assert float(smoothness_loss(spliced, mask, sp)) > 100 * float(smoothness_loss(smooth, mask, sp))
    # inpainting is learnable: a few steps on a smooth signal lower the loss
    torch.manual_seed(0)
    r = SelfRefine(6, hidden=16)
    video = torch.sin(torch.linspace(0, 6, 10))[None, :, None] * torch.randn(1, 1, 6)
    video = video.expand(4, 10, 6).contiguous()
    mask = torch.ones(4, 10, dtype=torch.bool)
    opt = torch.optim.Adam(r.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(60):
        loss = inpaint_loss(r, video, mask, 0.3, g)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    g = torch.Generator().manual_seed(123)
    assert inpaint_loss(r, video, mask, 0.3, g).item() < 0.5 * first
