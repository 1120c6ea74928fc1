"""ECRL's named components on hand-made and random tensors. Each component the abstract names has
a test here that fails when the component is removed or replaced by the identity (README, Tests)."""

import math

import numpy as np
import pytest
import torch

from common.config import load_config
from common.tsg.grid import clip_centres, moment_to_clips
from ecrl.augment import AugConfig, augment, augment_step, make_plan
from ecrl.config import DEFAULTS
from ecrl.losses import (
    Objective,
    gaussian_prior,
    grounding_loss,
    inpaint_loss,
    smoothness_loss,
    sscl_from_logits,
    sscl_loss,
)
from ecrl.model import ECRLNet, build_model, decode
from ecrl.refine import SelfRefine

SMALL = ["model.d=16", "model.heads=2", "model.word_dim=12", "model.video_layers=1", "model.fusion_layers=1",
         "model.dropout=0.0", "ecrl.refine_hidden=8", "data.num_clips=16"]


def _batch(b=3, n=16, d=8, lw=5, pad=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    video_mask = torch.ones(b, n, dtype=torch.bool)
    for i, p in (pad or {}).items():
        video_mask[i, n - p:] = False
    return {"video": torch.randn(b, n, d, generator=g) * video_mask.unsqueeze(-1), "video_mask": video_mask,
            "words": torch.randint(2, 30, (b, lw), generator=g), "word_mask": torch.ones(b, lw, dtype=torch.bool),
            "start": torch.tensor([0.1, 0.3, 0.5][:b]), "end": torch.tensor([0.4, 0.6, 0.9][:b])}


def _fg(start, end, n):
    return tuple(int(x) for x in moment_to_clips(start, end, n))


# --------------------------------------------------------------------------- network, decoding

def test_model_shapes_padding_and_decode():
    torch.manual_seed(0)
    bt = _batch(pad={1: 6})
    bt["word_mask"][2, 3:] = False
    net = ECRLNet(vocab_size=30, word_dim=12, feat_dim=8, d=16, heads=2).eval()
    out = net(bt["video"], bt["video_mask"], bt["words"], bt["word_mask"])
    assert out["start"].shape == out["end"].shape == out["inside"].shape == (3, 16)
    assert out["hidden"].shape == (3, 16, 16)
    assert (out["start"][1, 10:] < -1e30).all() and (out["end"][1, 10:] < -1e30).all()
    for p in decode(out, bt["video_mask"], k=5):
        assert p.shape == (5, 2) and (p[:, 0] < p[:, 1]).all() and (p >= 0).all() and (p <= 1).all()
    bt2 = dict(bt, words=bt["words"].clone())
    bt2["words"][2, 3:] = 7  # padded words do not change the output
    out2 = net(bt2["video"], bt2["video_mask"], bt2["words"], bt2["word_mask"])
    assert torch.allclose(out["start"][2], out2["start"][2], atol=1e-5)


def test_synthetic_model_keeps_its_checkpoint_layout():
    """Parameter count and the head's state_dict keys of configs/synthetic.yaml's model as written by
    the checkpoints before the head moved to common.tsg.heads (old checkpoints must still load)."""
    from common.cli import default_config
    from ecrl.config import RULES

    m = build_model(load_config(default_config("ecrl"), [], DEFAULTS, RULES), 100, 64)
    assert sum(p.numel() for p in m.parameters()) == 175_851
    assert [k for k in m.state_dict() if ".head." in k] == [
        "net.head.conv.0.weight", "net.head.conv.0.bias", "net.head.out.weight", "net.head.out.bias"]


def test_frozen_glove_rows():
    emb = np.arange(30 * 12, dtype=np.float32).reshape(30, 12)
    net = ECRLNet(vocab_size=30, word_dim=12, feat_dim=8, d=16, heads=2, embeddings=emb)
    assert torch.equal(net.query.embed.weight, torch.from_numpy(emb)) and not net.query.embed.weight.requires_grad
    with pytest.raises(ValueError, match="expected"):
        ECRLNet(vocab_size=31, word_dim=12, feat_dim=8, d=16, heads=2, embeddings=emb)


def test_cross_modal_interaction_makes_the_grounding_depend_on_the_words():
    """Guards the cross-modal interaction: replaced by the identity (clips only), the head's
    scores would not depend on the sentence."""
    torch.manual_seed(0)
    net = ECRLNet(vocab_size=30, word_dim=12, feat_dim=8, d=16, heads=2, dropout=0.0).eval()
    bt = _batch()
    other = (bt["words"] + 5) % 28 + 2
    a = net(bt["video"], bt["video_mask"], bt["words"], bt["word_mask"])
    b = net(bt["video"], bt["video_mask"], other, bt["word_mask"])
    for k in ("start", "end", "inside", "hidden"):
        assert (a[k] - b[k]).abs().max() > 1e-3, k


# --------------------------------------------------------------------------- augmentation

@pytest.mark.parametrize("seed", range(6))
def test_augmentation_label_transform_is_exact(seed):
    """Features encode their source position, so each augmented clip tells where it came from:
    the transformed ground truth covers exactly the moved foreground and tau is exact."""
    rng = np.random.default_rng(seed)
    b, n = 6, 20
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[2, 14:] = False
    nv = mask.sum(1).numpy()
    fs = np.array([rng.integers(0, k - 1) for k in nv])  # clip-aligned moments
    fe = np.array([rng.integers(f, k) for f, k in zip(fs, nv)])
    start = torch.tensor(fs / nv, dtype=torch.float64)
    end = torch.tensor((fe + 1) / nv, dtype=torch.float64)
    video = torch.zeros(b, n, 2, dtype=torch.float64)
    video[:, :, 0] = torch.arange(n, dtype=torch.float64)           # source clip index
    video[:, :, 1] = torch.arange(b, dtype=torch.float64)[:, None]  # source video
    video *= mask.unsqueeze(-1)
    cfg = AugConfig(noise_std=0.0, clip_dropout=0.0, p_foreign=0.7)
    aug, s2, e2, plan = augment({"video": video, "video_mask": mask, "start": start, "end": end}, cfg, rng)
    for i in range(b):
        k = int(nv[i])
        a, c = plan.fg[i]
        assert math.isclose(float(s2[i]) * k, a, abs_tol=1e-5) and math.isclose(float(e2[i]) * k, c + 1, abs_tol=1e-5)
        own = aug[i, :k, 1] == i
        pos = aug[i, :k, 0].numpy()
        in_fg = (pos >= fs[i] - 1e-9) & (pos <= fe[i] + 1e-9) & own.numpy()
        idx = np.arange(k)
        assert in_fg[(idx >= a) & (idx <= c)].all()              # every moved-foreground clip is foreground
        assert not in_fg[(idx < a) | (idx > c)].any()            # and nothing else is
        tau = plan.tau[i, :k]
        assert np.isnan(tau[~own.numpy()]).all()                 # foreign clips have no time
        fgm = (idx >= a) & (idx <= c)
        assert np.allclose(np.clip(tau[fgm] * k - 0.5, fs[i], fe[i]), pos[fgm], atol=1e-9)  # interpolated
        bgm = own.numpy() & ((idx < a) | (idx > c))
        assert np.allclose(tau[bgm] * k - 0.5, pos[bgm], atol=1e-9)  # background: exact copies
        assert (aug[i, k:] == 0).all()


def test_augmentation_moves_and_rescales_the_foreground():
    """Guards the augmentation itself (an identity augmentation passes the exactness test above):
    the foreground moves and changes length, relocation decorrelates its position from the
    original one, and ``relocate=False`` keeps the relative position."""
    n, b = 32, 200
    rng = np.random.default_rng(0)
    start = torch.tensor(rng.uniform(0.05, 0.6, b))
    end = start + torch.tensor(rng.uniform(0.1, 0.3, b))
    mask = torch.ones(b, n, dtype=torch.bool)
    cfg = dict(noise_std=0.0, clip_dropout=0.0, p_foreign=0.0)
    moved = make_plan(mask, start, end, AugConfig(**cfg), np.random.default_rng(1))
    kept = make_plan(mask, start, end, AugConfig(**cfg, relocate=False), np.random.default_rng(1))
    orig = np.array([_fg(float(s), float(e), n) for s, e in zip(start, end)])
    assert (moved.fg[:, 0] != orig[:, 0]).mean() > 0.8
    assert ((moved.fg[:, 1] - moved.fg[:, 0]) != (orig[:, 1] - orig[:, 0])).mean() > 0.6
    assert abs(np.corrcoef(orig[:, 0], moved.fg[:, 0])[0, 1]) < 0.4
    assert np.corrcoef(orig[:, 0], kept.fg[:, 0])[0, 1] > 0.8


def test_no_transform_is_identity():
    bt = _batch(pad={0: 3})
    st, en = torch.tensor([0.1, 0.2, 0.0]), torch.tensor([0.5, 0.9, 1.0])
    cfg = AugConfig(p_temporal=0.0, noise_std=0.0, clip_dropout=0.0)
    aug, s2, e2, plan = augment({**bt, "start": st, "end": en}, cfg, np.random.default_rng(0))
    assert torch.equal(aug, bt["video"]) and not plan.splice.any()
    for i in range(3):
        n = int(bt["video_mask"][i].sum())
        assert math.isclose(float(s2[i]), float(st[i]), abs_tol=1e-6) and math.isclose(float(e2[i]), float(en[i]), abs_tol=1e-6)
        assert tuple(plan.fg[i]) == _fg(float(st[i]), float(en[i]), n)


def test_splice_points_marked_at_relocation():
    mask = torch.ones(1, 12, dtype=torch.bool)
    cfg = AugConfig(crop_max=0, p_foreign=0, speed_min=1, speed_max=1, clip_dropout=0)
    for seed in range(20):  # the foreground lands inside the video (not at 0) for some seeds; check all of them
        plan = make_plan(mask, torch.tensor([0.5]), torch.tensor([0.75]), cfg, np.random.default_rng(seed))
        a, c = plan.fg[0]
        if a > 0:
            assert plan.splice[0, a - 1] and plan.splice[0, a]
        if c < 11:
            assert plan.splice[0, c] and plan.splice[0, c + 1]
    assert any(make_plan(mask, torch.tensor([0.5]), torch.tensor([0.75]), cfg, np.random.default_rng(s)).fg[0, 0] > 0
               for s in range(20))


def test_augment_step_is_a_function_of_seed_rank_step():
    cfg = load_config(None, [], DEFAULTS).ecrl.aug
    bt = _batch()
    a, b = augment_step(bt, cfg, 0, 0, 5), augment_step(bt, cfg, 0, 0, 5)
    assert all(torch.equal(a[k], b[k]) for k in a if not torch.is_floating_point(a[k])) and torch.equal(a["video"], b["video"])
    assert not torch.equal(augment_step(bt, cfg, 0, 0, 6)["video"], a["video"])
    assert not torch.equal(augment_step(bt, cfg, 0, 1, 5)["video"], a["video"])


# --------------------------------------------------------------------------- SSCL

def test_sscl_exact_value_by_hand():
    """One augmented clip at tau = 0.25 against two original clips (centres 0.25, 0.75)."""
    times = torch.tensor([[0.25, 0.75]])
    tau = torch.tensor([[0.25]])
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # P = (1/4, 3/4)
    sigma = 0.25
    g1 = 1.0 / (1.0 + math.exp(-0.5 ** 2 / (2 * sigma**2)))  # G = (g1, 1 - g1)
    expected = g1 * math.log(g1 / 0.25) + (1 - g1) * math.log((1 - g1) / 0.75)
    assert float(sscl_from_logits(logits, tau, times, sigma)) == pytest.approx(expected, rel=1e-5)


def test_sscl_minimal_when_similarity_matches_prior():
    torch.manual_seed(0)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    times = clip_centres(mask)
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


def test_sscl_trains_augmented_features_to_match_the_original_at_equal_times():
    """Guards SSCL as a training signal: optimising the augmented video's features under SSCL
    alone makes each one most similar to the original clip it was taken from (tau). Removed
    (zero loss, no gradient), the features stay random and the match stays at chance."""
    torch.manual_seed(0)
    n = 16
    mask = torch.ones(1, n, dtype=torch.bool)
    h_orig = torch.randn(1, n, 32)
    perm = torch.randperm(n)
    tau = clip_centres(mask)[:, perm]  # augmented clip j shows original clip perm[j]
    h_aug = torch.randn(1, n, 32, requires_grad=True)
    opt = torch.optim.Adam([h_aug], lr=0.1)
    for _ in range(60):
        loss = sscl_loss(h_orig, mask, h_aug, tau, sigma=0.03, kappa=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sim = torch.einsum("bjd,bid->bji", torch.nn.functional.normalize(h_aug, dim=-1),
                       torch.nn.functional.normalize(h_orig, dim=-1))
    assert (sim[0].argmax(-1) == perm).float().mean() > 0.9


# --------------------------------------------------------------------------- grounding loss, objective, shared head

def test_grounding_loss_exact_extremes():
    mask = torch.ones(1, 8, dtype=torch.bool)
    st, en = torch.tensor([0.25]), torch.tensor([0.5])
    ts = torch.nn.functional.one_hot(torch.tensor([2]), 8).float()
    te = torch.nn.functional.one_hot(torch.tensor([3]), 8).float()
    inside = torch.tensor([[0, 0, 1, 1, 0, 0, 0, 0]]).float()
    good = {"start": ts * 50, "end": te * 50, "inside": (inside * 2 - 1) * 50}
    bad = {"start": te * 50, "end": ts * 50, "inside": -good["inside"]}
    assert grounding_loss(good, st, en, mask, 0) < 1e-6
    assert grounding_loss(bad, st, en, mask, 0) > 100
    flat = {"start": torch.zeros(1, 8), "end": torch.zeros(1, 8), "inside": torch.zeros(1, 8)}
    assert float(grounding_loss(flat, st, en, mask, 0, inside_weight=1.0)) == pytest.approx(2 * math.log(8) + math.log(2))


def _model_and_batch(*sets, seed=0):
    torch.manual_seed(seed)
    cfg = load_config(None, [*SMALL, *sets], DEFAULTS)
    model = build_model(cfg, 30, 8)
    bt = _batch(n=16)
    aug = augment_step(bt, cfg.ecrl.aug, 0, 0, 0)
    return cfg, model, bt, aug


def test_objective_is_the_weighted_sum_of_its_terms():
    """Guards that SSCL, the augmented grounding and the refine objective enter the loss with
    their weights (a term dropped from the objective fails here)."""
    cfg, model, bt, aug = _model_and_batch("ecrl.w_aug=0.5", "ecrl.w_sscl=2.0", "ecrl.w_refine=0.25")
    res = model(bt, aug, generator=torch.Generator().manual_seed(0))
    parts = Objective(cfg.ecrl)(res, bt, aug)
    assert set(parts) == {"ground", "ground_aug", "sscl", "refine", "loss"}
    assert all(float(parts[k].detach()) > 0 for k in ("ground", "ground_aug", "sscl", "refine"))
    expected = parts["ground"] + 0.5 * parts["ground_aug"] + 2.0 * parts["sscl"] + 0.25 * parts["refine"]
    assert torch.allclose(parts["loss"], expected)
    off = Objective(load_config(None, [*SMALL, "ecrl.w_sscl=0"], DEFAULTS).ecrl)(res, bt, aug)
    assert "sscl" not in off and torch.allclose(off["loss"], parts["ground"] + parts["ground_aug"] + parts["refine"])
    plain = Objective(cfg.ecrl)({"orig": res["orig"]}, bt, None)
    assert set(plain) == {"ground", "loss"}


def test_augmented_grounding_uses_the_transformed_labels():
    """Guards the equivariant supervision: the augmented video's grounding loss is measured
    against the transformed moment (scores placed on the moved foreground give a low loss,
    scores left on the original position a high one)."""
    cfg, _, bt, aug = _model_and_batch("ecrl.label_sigma=0")
    vm = bt["video_mask"]
    n = vm.shape[1]

    def scores_at(start, end):
        out = {"start": torch.full((3, n), -20.0), "end": torch.full((3, n), -20.0), "inside": torch.full((3, n), -20.0)}
        for i in range(3):
            a, c = _fg(float(start[i]), float(end[i]), n)
            out["start"][i, a] = out["end"][i, c] = 20.0
            out["inside"][i, a:c + 1] = 20.0
        return out

    obj = Objective(cfg.ecrl)
    moved = {"orig": scores_at(bt["start"], bt["end"]), "aug": scores_at(aug["start"], aug["end"])}
    stayed = {"orig": moved["orig"], "aug": moved["orig"]}
    assert any(_fg(float(aug["start"][i]), float(aug["end"][i]), n) != _fg(float(bt["start"][i]), float(bt["end"][i]), n)
               for i in range(3))
    g_moved = grounding_loss(moved["aug"], aug["start"], aug["end"], vm, 0)
    g_stayed = grounding_loss(stayed["aug"], aug["start"], aug["end"], vm, 0)
    assert float(g_moved) < 1e-3 and float(g_stayed) > 10
    parts = obj({"orig": {**moved["orig"], "hidden": torch.zeros(3, n, 4)},
                 "aug": {**moved["aug"], "hidden": torch.zeros(3, n, 4)}}, bt, aug)
    assert torch.allclose(parts["ground_aug"], g_moved)


def test_one_shared_network_grounds_both_videos():
    """Guards the shared grounding head: the augmented video goes through the very network (and
    head) of the original one, after self-refine, and its loss trains that head."""
    cfg, model, bt, aug = _model_and_batch()
    model.eval()
    res = model(bt, aug, generator=torch.Generator().manual_seed(0))
    again = model.net(res["refined"], bt["video_mask"], bt["words"], bt["word_mask"])
    for k in ("start", "end", "inside", "hidden"):
        assert torch.equal(res["aug"][k], again[k]), k
    assert sum(isinstance(m, type(model.net.head)) for m in model.modules()) == 1
    parts = Objective(cfg.ecrl)(res, bt, aug)
    grads = torch.autograd.grad(parts["ground_aug"], list(model.net.head.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)


# --------------------------------------------------------------------------- self-refine

def test_self_refine_is_applied_to_the_augmented_video():
    """Guards the wiring of self-refine: with ``ecrl.refine`` the network sees the refined video
    (not the raw augmented one) and the completeness term gets the module's inpainting."""
    _, model, bt, aug = _model_and_batch()
    res = model(bt, aug, generator=torch.Generator().manual_seed(0))
    assert "refined" in res and not torch.equal(res["refined"], aug["video"])
    assert res["inpaint_drop"].any() and not torch.equal(res["inpainted"], bt["video"])
    _, plain, _, _ = _model_and_batch("ecrl.refine=false")
    assert plain.refine is None and "refined" not in plain(bt, aug)


def test_self_refine_learns_to_restore_dropped_clips():
    """Guards the self-refine module: trained on its completeness objective, it restores clips
    dropped from a smooth video far better than leaving them as they are (what an identity
    module does)."""
    torch.manual_seed(0)
    n, d, b = 16, 6, 8
    t = torch.linspace(0, 3, n)
    basis = torch.randn(2, d)
    video = (torch.sin(t)[None, :, None] * basis[0] + torch.cos(t)[None, :, None] * basis[1]).expand(b, n, d).contiguous()
    video = video * torch.linspace(0.5, 1.5, b)[:, None, None]
    mask = torch.ones(b, n, dtype=torch.bool)
    r = SelfRefine(d, hidden=32)
    opt = torch.optim.Adam(r.parameters(), 5e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(120):
        drop = (torch.rand(b, n, generator=g) < 0.25) & mask
        out = r(video.masked_fill(drop[..., None], 0.0), mask, torch.zeros_like(drop), drop)
        loss = inpaint_loss(out, video, mask, drop)
        opt.zero_grad()
        loss.backward()
        opt.step()
    drop = (torch.rand(b, n, generator=torch.Generator().manual_seed(99)) < 0.25) & mask
    holes = video.masked_fill(drop[..., None], 0.0)
    with torch.no_grad():
        restored = r(holes, mask, torch.zeros_like(drop), drop)
    err = lambda x: float(((x - video) ** 2).mean(-1)[drop].mean())
    assert err(restored) < 0.25 * err(holes)
    assert float(inpaint_loss(restored, video, mask, drop)) < 0.25 * float(inpaint_loss(holes, video, mask, drop))


def test_smoothness_loss_exact():
    mask = torch.ones(1, 4, dtype=torch.bool)
    x = torch.tensor([[[0.0], [1.0], [5.0], [6.0]]])  # steps 1, 4, 1
    sp = torch.tensor([[False, True, True, False]])   # the splice between clips 1 and 2
    assert float(smoothness_loss(x, mask, sp)) == pytest.approx(16.0 / 1.0)
    assert float(smoothness_loss(x, mask, torch.zeros_like(sp))) == 0.0
