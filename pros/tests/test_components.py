"""Each named component of ProS on hand-made inputs: the prototype matching loss (teacher entropy
when student and teacher agree, prototype-permutation invariance), centring and Sinkhorn
balancing, the shared prototypes read by the teacher without gradient, the EMA teacher, the
multi-crop augmentation, the collapse alarm and the downstream heads' starting point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pros.augment import MultiCrop, colour_jitter, gaussian_blur, random_grey, resized_crop, step_generator
from pros.losses import CollapseAlarm, CollapseError, Objective, entropy, sinkhorn
from pros.model import ProS, build_model, cosine, ema_momentum
from pros.tests.helpers import TINY_MODEL, cfg


def _objective(balance="none", **loss):
    over = [f"loss.balance={balance}", "head.prototypes=6"] + [f"loss.{k}={v}" for k, v in loss.items()]
    return Objective(cfg(*over))


# --------------------------------------------------------------------------- the loss


def test_loss_equals_the_teacher_entropy_when_student_and_teacher_agree():
    """Same scores, same temperature, no balancing: every pair's cross-entropy H(P_t, P_s) is
    H(P_t); the loss is their mean."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(1, 5, 6, generator=g).expand(2, 5, 6).clone()     # two views with the same scores
    obj = _objective(student_temp=0.1, teacher_temp=0.1, warmup_teacher_temp=0.1)
    parts = obj({"student": s, "teacher": s}, step=0)
    expected = entropy(torch.softmax(s[0] / 0.1, -1)).mean()
    assert torch.allclose(parts["loss"], expected, atol=1e-6), (parts["loss"], expected)
    assert torch.allclose(parts["teacher_entropy"], expected, atol=1e-6)
    # a student that disagrees pays more than the entropy (Gibbs)
    other = obj({"student": s.flip(-1), "teacher": s}, step=0)["loss"]
    assert other > expected + 0.1


def test_loss_pairs_skip_the_same_view_and_use_every_student_view():
    """2 teacher (global) views, 3 student views: the pairs are (t0,v1), (t0,v2), (t1,v0), (t1,v2)."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(2, 4, 6, generator=g)
    s = torch.randn(3, 4, 6, generator=g)
    obj = _objective(student_temp=0.1, teacher_temp=0.05, warmup_teacher_temp=0.05)
    p_t = torch.softmax(t / 0.05, -1)
    log_s = torch.log_softmax(s / 0.1, -1)
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]
    want = sum(-(p_t[a] * log_s[b]).sum(-1).mean() for a, b in pairs) / 4
    assert torch.allclose(obj({"student": s, "teacher": t}, 0)["loss"], want, atol=1e-6)


@pytest.mark.parametrize("balance", ["none", "centering", "sinkhorn"])
def test_loss_is_invariant_to_permuting_the_prototypes(balance):
    g = torch.Generator().manual_seed(2)
    t, s = torch.randn(2, 8, 6, generator=g), torch.randn(4, 8, 6, generator=g)
    perm = torch.randperm(6, generator=g)
    a = _objective(balance)({"student": s, "teacher": t}, 0)["loss"]
    b = _objective(balance)({"student": s[..., perm], "teacher": t[..., perm]}, 0)["loss"]
    assert torch.allclose(a, b, atol=1e-5), (a, b)


def test_model_loss_is_invariant_to_permuting_the_prototype_rows():
    """The same invariance through the network: ProS's one prototype matrix, permuted, gives the
    same loss (the teacher reads the same, permuted, matrix)."""
    c = cfg(*TINY_MODEL)
    torch.manual_seed(0)
    model = build_model(c, weights=None).eval()
    x = [torch.randn(3, 3, 64, 64) for _ in range(2)]
    obj = Objective(c).eval()
    loc = [torch.randn(3, 3, 32, 32)]
    torch.manual_seed(0)
    model2 = build_model(c, weights=None).eval()
    with torch.no_grad():
        model2.student.last.weight.copy_(model2.student.last.weight[torch.randperm(c.head.prototypes)])
    a = obj(model(x, loc), 0)["loss"]
    b = obj(model2(x, loc), 0)["loss"]
    assert torch.allclose(a, b, atol=1e-5), (a, b)


def test_teacher_temperature_warms_up_linearly():
    obj = Objective(cfg("loss.warmup_teacher_temp=0.04", "loss.teacher_temp=0.07", "loss.warmup_teacher_temp_epochs=2"),
                    steps_per_epoch=5)
    assert obj.teacher_temp(0) == pytest.approx(0.04)
    assert obj.teacher_temp(5) == pytest.approx(0.055)
    assert obj.teacher_temp(10) == obj.teacher_temp(99) == pytest.approx(0.07)


# --------------------------------------------------------------------------- balancing


def test_centering_subtracts_the_centre_and_updates_it_by_ema():
    obj = _objective("centering", center_momentum=0.9, teacher_temp=0.5, warmup_teacher_temp=0.5)
    t = torch.tensor([[[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0]]])           # (G=1, B=2, K=6)
    obj.update_center(t)
    assert torch.allclose(obj.center, torch.tensor([[0.05, 0.05, 0, 0, 0, 0]]))   # 0.1 x the batch mean
    obj.update_center(t)
    assert torch.allclose(obj.center, torch.tensor([[0.095, 0.095, 0, 0, 0, 0]]))
    # the targets are softmax((s - c) / tau)
    p = obj.targets(t, 0)
    assert torch.allclose(p, torch.softmax((t - obj.center) / 0.5, -1))
    # the loss's forward updates the centre in training mode only
    before = obj.center.clone()
    obj.eval()({"student": t.expand(2, 2, 6), "teacher": t}, 0)
    assert torch.equal(obj.center, before)
    obj.train()({"student": t.expand(2, 2, 6), "teacher": t}, 0)
    assert not torch.equal(obj.center, before)


@pytest.mark.parametrize("balance", ["centering", "sinkhorn"])
def test_objective_balances_a_teacher_that_prefers_one_prototype(balance):
    """Without balancing every target picks prototype 0; centring (after one centre update) and
    Sinkhorn spread the batch's targets over the prototypes."""
    g = torch.Generator().manual_seed(5)
    t = torch.randn(1, 48, 6, generator=g) * 0.1
    t[..., 0] += 1.0
    over = dict(teacher_temp=0.1, warmup_teacher_temp=0.1, sinkhorn_iters=3, center_momentum=0.0)
    assert _objective("none", **over).targets(t, 0).argmax(-1).unique().numel() == 1
    obj = _objective(balance, **over)
    if balance == "centering":
        obj.update_center(t)
    p = obj.targets(t, 0)
    assert torch.allclose(p.sum(-1), torch.ones(1, 48), atol=1e-5)
    assert p.argmax(-1).unique().numel() >= 5
    assert entropy(p.reshape(-1, 6).mean(0, keepdim=True))[0] > 0.9 * math.log(6)


def test_sinkhorn_marginals():
    g = torch.Generator().manual_seed(4)
    s = torch.randn(40, 8, generator=g) * 0.3
    s[:, 0] += 2.0                                                      # a strong preference for prototype 0
    q = sinkhorn(s, temp=0.1, iters=3)
    assert torch.allclose(q.sum(1), torch.ones(40), atol=1e-5)          # a distribution per sample
    q50 = sinkhorn(s, temp=0.1, iters=50)
    assert torch.allclose(q50.sum(0), torch.full((8,), 40 / 8), atol=0.05)   # every prototype 1/K of the mass
    assert (q50.argmax(1).unique().numel()) > 4                          # the preference is balanced away
    assert softmax_argmax_unique(s) == 1


def softmax_argmax_unique(s):
    return torch.softmax(s / 0.1, -1).argmax(-1).unique().numel()


# --------------------------------------------------------------------------- the networks


def _tiny(kind="prototypes"):
    c = cfg(*TINY_MODEL, f"head.kind={kind}")
    torch.manual_seed(0)
    return c, build_model(c, weights=None)


def test_teacher_reads_the_students_prototypes_without_gradient():
    c, model = _tiny()
    assert model.teacher.last is None and model.shared
    g = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    out = model(g, [torch.randn(2, 3, 32, 32)])
    assert out["student"].shape == (3, 2, c.head.prototypes) and out["teacher"].shape == (2, 2, c.head.prototypes)
    # the teacher's scores are its z against the student's (unit) prototypes
    with torch.no_grad():
        z = model.teacher(g, prototypes=model.student.last.unit())["z"]
    assert torch.allclose(out["teacher"], z @ torch.nn.functional.normalize(model.student.last.weight, dim=-1).t(),
                          atol=1e-6)
    # no gradient reaches the teacher; the prototypes get one (from the student's side only)
    Objective(c)(out, 0)["loss"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    assert model.student.last.weight.grad is not None and model.student.last.weight.grad.abs().sum() > 0
    assert model.student.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
    # a change of the student's prototypes changes what the teacher sees
    with torch.no_grad():
        model.student.last.weight.mul_(-1)
        assert torch.allclose(model(g)["teacher"], -out["teacher"], atol=1e-5)


def test_dino_head_keeps_its_own_last_layer_on_the_teacher():
    c, model = _tiny("dino")
    assert model.teacher.last is not None and not model.shared and model.teacher_prototypes() is None
    g = [torch.randn(2, 3, 64, 64) for _ in range(2)]
    before = model(g)["teacher"]
    with torch.no_grad():
        model.student.last.weight.mul_(-1)                               # the student's head only
    assert torch.allclose(model(g)["teacher"], before)


def test_ema_update_is_exact():
    _, model = _tiny()
    s = dict(model.student.named_parameters())
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    t0 = {n: p.clone() for n, p in model.teacher.named_parameters()}
    model.update_teacher(0.9)
    for n, p in model.teacher.named_parameters():
        assert torch.allclose(p, 0.9 * t0[n] + 0.1 * s[n].detach(), atol=1e-6), n
    model.update_teacher(1.0)                                            # m = 1: frozen
    assert all(torch.equal(p, q) for p, q in zip(model.teacher.parameters(), [p.clone() for p in model.teacher.parameters()]))


def test_momentum_and_cosine_schedules():
    assert ema_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert ema_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert ema_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert cosine(25, 100, 1.0, 0.0) == pytest.approx(0.5 + 0.5 * math.cos(math.pi / 4))


def test_backbone_shares_weights_across_crop_sizes():
    """dynamic_img_size: the same ViT embeds 64-px and 32-px crops (position embeddings interpolated)."""
    c, model = _tiny()
    out = model.student([torch.randn(2, 3, 64, 64), torch.randn(2, 3, 32, 32)])
    assert out["cls"].shape == (2, 2, 32) and torch.allclose(out["z"].norm(dim=-1), torch.ones(2, 2), atol=1e-5)


# --------------------------------------------------------------------------- multi-crop


def test_full_crop_without_jitter_is_the_image_and_flip_mirrors_it():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    same = resized_crop(x, 16, (1.0, 1.0), 0.0, torch.Generator().manual_seed(1), ratio=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)
    flip = resized_crop(x, 16, (1.0, 1.0), 1.0, torch.Generator().manual_seed(1), ratio=(1.0, 1.0))
    assert torch.allclose(flip, x.flip(-1), atol=1e-5)


def test_blur_grey_and_jitter_do_what_they_say():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    b = gaussian_blur(x, torch.tensor([1.5, 0.0]))
    assert torch.allclose(b[1], x[1]) and b[0].diff(dim=-1).abs().mean() < 0.5 * x[0].diff(dim=-1).abs().mean()
    assert torch.allclose(b.mean((2, 3)), x.mean((2, 3)), atol=0.02)      # blur keeps the mean (reflect padding)
    grey = random_grey(x, 1.0, g)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    assert torch.equal(colour_jitter(x, (0.4, 0.4, 0.2, 0.1), 0.0, g), x)
    assert not torch.allclose(colour_jitter(x, (0.4, 0.4, 0.2, 0.1), 1.0, g), x)


def test_multicrop_blurs_the_views_it_is_told_to():
    """Same generator, blur probability 1 vs 0: the blurred views lose high frequencies (the
    random draws are the same, so nothing else differs)."""
    imgs = (torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    sharp = MultiCrop(cfg("crops.blur_p=[0.0,0.0,0.0]", "crops.jitter_p=0.0", "crops.gray_p=0.0").crops)
    blurred = MultiCrop(cfg("crops.blur_p=[1.0,1.0,1.0]", "crops.jitter_p=0.0", "crops.gray_p=0.0").crops)
    (a, _), _ = sharp(imgs, step_generator(0, 0, 3))
    (b, _), _ = blurred(imgs, step_generator(0, 0, 3))
    assert b.diff(dim=-1).abs().mean() < 0.95 * a.diff(dim=-1).abs().mean()     # sigma 0.03-0.57 px at 64 px


def test_multicrop_is_a_function_of_seed_rank_and_step():
    c = cfg().crops
    mc = MultiCrop(c)
    imgs = (torch.rand(4, 3, 64, 64) * 255).to(torch.uint8)
    g1, l1 = mc(imgs, step_generator(0, 0, 7))
    g2, l2 = mc(imgs, step_generator(0, 0, 7))
    g3, _ = mc(imgs, step_generator(0, 0, 8))
    g4, _ = mc(imgs, step_generator(0, 1, 7))
    assert len(g1) == c.n_global and len(l1) == c.n_local
    assert g1[0].shape == (4, 3, c.global_size, c.global_size) and l1[0].shape == (4, 3, c.local_size, c.local_size)
    assert all(torch.equal(a, b) for a, b in zip(g1 + l1, g2 + l2))
    assert not torch.allclose(g1[0], g3[0]) and not torch.allclose(g1[0], g4[0])
    assert not torch.allclose(g1[0], g1[1])                               # two different global views


# --------------------------------------------------------------------------- collapse alarm


def test_collapse_alarm():
    c = cfg("head.prototypes=256", "loss.alarm_after=1")
    alarm = CollapseAlarm(c)
    ln_k = math.log(256)
    assert alarm.reason(0, ln_k, 1) is None                              # before alarm_after
    assert "uniform collapse" in alarm.reason(1, ln_k + 0.01, 100)
    assert "one-hot collapse" in alarm.reason(1, 2.0, 1)
    assert alarm.reason(1, 3.0, 40) is None
    stop = CollapseAlarm(cfg("head.prototypes=256", "loss.on_collapse=stop"))
    with pytest.raises(CollapseError, match="uniform collapse"):
        stop.check(3, ln_k, 100)


# --------------------------------------------------------------------------- downstream heads


@pytest.mark.parametrize("task", ["attributes", "expression", "landmarks"])
def test_task_heads_start_at_the_prior(task):
    from pros.model import TaskHead

    rng = np.random.default_rng(0)
    if task == "attributes":
        y, n_out = (rng.random((50, 4)) < [0.1, 0.5, 0.8, 0.3]).astype(int), 4
    elif task == "expression":
        y, n_out = rng.choice(7, 50, p=[0.4, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]), 7
    else:
        y, n_out = rng.random((50, 5, 2)) * 64, 5
    head = TaskHead(task, 16, n_out, patch=8)
    head.start_at_prior(y, (8, 8))
    out = head({"cls": torch.randn(3, 16), "patches": torch.randn(3, 8, 8, 16)}).detach()
    if task == "attributes":
        assert torch.allclose(torch.sigmoid(out[0]), torch.tensor(y.mean(0)).float(), atol=1e-3)
    elif task == "expression":
        assert int(out[0].argmax()) == int(np.bincount(y).argmax())
    else:
        assert torch.allclose(out[0], torch.tensor(y.mean(0)).float(), atol=1e-3)


def test_pros_is_a_module_with_student_and_teacher():
    _, model = _tiny()
    assert isinstance(model, ProS)
    n_s = sum(p.numel() for p in model.student.parameters())
    n_t = sum(p.numel() for p in model.teacher.parameters())
    assert n_s - n_t == model.student.last.weight.numel()                # the teacher owns no prototypes


@pytest.mark.parametrize("linear", [True, False])
def test_landmark_probe_fits_coordinates_that_are_linear_in_the_patch_tokens(linear):
    """Landmarks that are a linear function of all patch tokens (hand-made: random tokens, a random
    map): the frozen-feature probe with the global linear term fits them on held-out images; the
    soft-argmax term alone stays near the mean shape (model.LandmarkHead; on the embedded set it
    stayed at the mean shape's NME, on training images too)."""
    from pros.data import ImageStore, TaskSet
    from pros.downstream import _fit_head, _predict, score

    g = torch.Generator().manual_seed(0)
    n, (h, w), d, n_pts = 240, (4, 4), 8, 5
    tok = torch.randn(n, h, w, d, generator=g)
    amap = torch.randn(h * w * d, n_pts * 2, generator=g) * 0.5
    y = (tok.reshape(n, -1) @ amap).reshape(n, n_pts, 2) + torch.tensor([[10.0, 10.0], [22.0, 10.0], [16.0, 16.0],
                                                                         [11.0, 23.0], [21.0, 23.0]])
    ts = TaskSet("landmarks", "train", [str(i) for i in range(n)], ImageStore.from_array(np.zeros((n, 1, 1, 3), np.uint8)),
                 y.numpy(), ocular=(0, 1))
    feats = {"patches": tok, "cls": tok.mean((1, 2))}
    fit, held = np.arange(200), np.arange(200, n)
    head = _fit_head(ts, feats, fit, 1e-4, 300, 8, 0, lr=1e-2, landmark_linear=linear)
    test = ts.subset(held)
    nme = score("landmarks", _predict(head, {k: v[held] for k, v in feats.items()}), test.targets, test.ocular)
    mean_shape = score("landmarks", np.tile(y[fit].mean(0, keepdim=True).numpy(), (len(held), 1, 1)), test.targets,
                       test.ocular)
    if linear:
        assert nme < 0.25 * mean_shape, (nme, mean_shape)
    else:
        assert nme > 0.6 * mean_shape, (nme, mean_shape)
