"""The generator's skip settings, the dual path through one encoder, the local patches at the frontal
template, and parameter counts pinned against pix2pix's implementation."""

import numpy as np
import pytest
import torch

from dal_gan.losses import Objective
from dal_gan.model import LocalPatches, PatchDiscriminator, UNetGenerator, build_discriminators, build_model, n_params
from dal_gan.tests.conftest import tiny_cfg


def test_parameter_counts_match_pix2pix():
    # junyanz/pytorch-CycleGAN-and-pix2pix@78913853 models/networks.py: define_G('unet_256', ngf 64, batch norm,
    # dropout) prints 54.414 M; define_D('basic', input_nc 6, ndf 64, norm instance) 2.768 M (affine-free norm)
    assert n_params(UNetGenerator(256, 64, 8, "all", dropout=0.5)) == 54_413_955
    assert n_params(PatchDiscriminator(6, 64, 3)) == 2_767_809


@pytest.mark.parametrize("skips,expect", [("all", [True, True, True, True]), ("inner", [False, False, True, True]),
                                          ("none", [False, False, False, False])])
def test_skip_setting_decides_which_encoder_levels_reach_the_decoder(skips, expect):
    torch.manual_seed(0)
    g = UNetGenerator(32, 8, 4, skips, outer_levels=2, dropout=0.0).eval()
    z, feats = g.encode(torch.rand(2, 3, 32, 32) * 2 - 1)
    base = g.decode(z, feats)
    seen = []
    for i in range(len(feats)):
        moved = [f.clone() for f in feats]
        moved[i] = moved[i] + torch.randn_like(moved[i])
        seen.append(not torch.equal(g.decode(z, moved), base))
    assert seen == expect
    assert not torch.equal(g.decode(z + 1, feats), base)      # the bottleneck always matters


def test_generator_outputs():
    cfg = tiny_cfg()
    g = build_model(cfg, 7).eval()
    out = g(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert out["fake"].shape == (3, 3, 32, 32) and out["fake"].abs().max() <= 1
    assert out["logits"].shape == (3, 7) and out["z"].shape == (3, g.code_dim)
    assert torch.allclose(out["proj"].norm(dim=1), torch.ones(3))
    assert "proj" not in build_model(tiny_cfg("dual.enabled=false"), 7)(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        UNetGenerator(48)


def test_dual_path_runs_the_visible_image_through_the_shared_encoder():
    """Path V (a visible image of the subject) is encoded by the same weights and decoded to the frontal
    target; its reconstruction and the contrastive term send gradient to the visible input."""
    torch.manual_seed(0)
    cfg = tiny_cfg("loss.perc=0", "loss.id=0")
    g = build_model(cfg, 4).eval()          # eval: BatchNorm cannot couple the paths through batch statistics
    dg, dl, pt = build_discriminators(cfg)
    obj = Objective(cfg)
    t, v = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32, requires_grad=True)
    batch = {"thermal": t, "visible": v, "target": torch.rand(4, 3, 32, 32), "label": torch.arange(4)}
    out = g(torch.cat([t, v]) * 2 - 1)
    zt, _ = g.encode(t * 2 - 1)
    zv, _ = g.encode(v * 2 - 1)
    assert torch.allclose(out["z"], torch.cat([zt, zv]).flatten(1), atol=1e-6)   # one encoder for both domains
    parts = obj.generator(out, batch, dg, dl, pt)
    parts["loss"].backward()
    assert v.grad.abs().sum() > 0
    assert float(parts["l1"]) > float(torch.nn.functional.l1_loss(out["fake"][:4].detach(), batch["target"] * 2 - 1))
    # single path: the visible image is never read
    cfg1 = tiny_cfg("loss.perc=0", "loss.id=0", "dual.enabled=false")
    g1 = build_model(cfg1, 4).eval()
    p1 = Objective(cfg1).generator(g1(t * 2 - 1), batch, *build_discriminators(cfg1))
    assert float(p1["con"]) == 0


def test_local_patches_are_centred_on_the_templates_eyes_nose_and_mouth():
    cfg = tiny_cfg()
    size = cfg.data.size
    lp = LocalPatches(cfg.local.template, cfg.local.patch, size)
    t = np.array(cfg.local.template) * size
    want = [t[0], t[1], t[2], (t[3] + t[4]) / 2]
    for (x0, y0, x1, y1), c in zip(lp.boxes(), want):
        assert x1 - x0 == lp.p == round(cfg.local.patch * size)
        assert abs((x0 + x1) / 2 - c[0]) <= 0.5 and abs((y0 + y1) / 2 - c[1]) <= 0.5
    img = torch.arange(2 * 3 * size * size, dtype=torch.float32).view(2, 3, size, size)
    crops = lp(img)
    x0, y0, x1, y1 = lp.boxes()[3]
    assert crops.shape == (8, 3, lp.p, lp.p) and torch.equal(crops[7], img[1, :, y0:y1, x0:x1])


def test_template_patches_hold_the_rendered_frontal_eyes_nose_and_mouth():
    """On frontal targets of the embedded world (the generator's renders), each eye centre, the nose tip
    and both mouth corners fall inside their patch."""
    from common.faces import FIVE, Identity, Nuisance, render

    cfg = tiny_cfg()
    syn = cfg.synthetic
    lp = LocalPatches(cfg.local.template, cfg.local.patch, syn.render_size)
    boxes = lp.boxes()
    for i in range(6):
        pts = render(Identity.sample(syn.seed, i), Nuisance(scale=syn.face_scale, offset=(0.0, -0.02)),
                     syn.render_size).landmarks[FIVE]
        for (x, y), k in zip(pts, (0, 1, 2, 3, 3)):
            x0, y0, x1, y1 = boxes[k]
            assert x0 <= x <= x1 and y0 <= y <= y1, (i, k, (x, y), boxes[k])
