"""The objective on hand-made outputs: exact values, gradient directions, and that it reads the
glance only. Each term guards a named component (README, Tests)."""

import math

import pytest
import torch

from common.config import load_config
from mhst.config import DEFAULTS, RULES
from mhst.losses import Objective, glance_clip, glance_gaussian, info_nce
from mhst.tree import Tree


def _cfg(*sets):
    return load_config(None, list(sets), DEFAULTS, RULES).mhst


@pytest.mark.parametrize("g,n_valid", [(0.0, 16), (0.31, 16), (0.5, 10), (0.999, 16), (0.73, 7)])
def test_glance_gaussian_peaks_at_the_glance_and_sums_to_one(g, n_valid):
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[0, :n_valid] = True
    p = glance_gaussian(torch.tensor([g]), mask, sigma=0.1)[0]
    gi = int(glance_clip(torch.tensor([g]), mask)[0])
    assert gi == min(int(g * n_valid), n_valid - 1)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-6)
    assert float(p[gi]) == float(p.max()) and (p[n_valid:] == 0).all()  # a glance on a clip edge ties two clips
    assert (p[:gi].diff() >= 0).all() and (p[gi:n_valid].diff() <= 0).all()  # unimodal around the glance


def _out(b=2, n=8, d=4, logit=None, roots=None, score=None, pz=None, qz=None):
    """A hand-made model output: two roots per video, [0, 3] and [4, 7], all leaves kept."""
    logit = torch.zeros(b, n) if logit is None else logit
    first = torch.tensor([[0, 4]] * b) if roots is None else roots[0]
    last = torch.tensor([[3, 7]] * b) if roots is None else roots[1]
    valid = torch.ones_like(first, dtype=torch.bool)
    tree = Tree(kept=torch.ones(b, n, dtype=torch.bool), root_first=first, root_last=last, root_valid=valid,
                node_first=first[:, :0], node_last=first[:, :0], node_valid=valid[:, :0],
                node_score=torch.zeros(b, 0), node_round=first[:, :0])
    qz = torch.nn.functional.normalize(torch.eye(b, d), dim=-1) if qz is None else qz
    pz = torch.nn.functional.normalize(torch.eye(b, d)[:, None].expand(b, 2, d).clone(), dim=-1) if pz is None else pz
    score = torch.zeros(b, 2) if score is None else score
    return {"logit": logit, "r": torch.sigmoid(logit), "qz": qz, "tree": tree,
            "roots": {"first": first, "last": last, "valid": valid, "score": score, "pz": pz},
            "vz": torch.randn(b, n, d)}


def _batch(b=2, n=8, glance=(0.1, 0.2)):
    return {"video_mask": torch.ones(b, n, dtype=torch.bool), "glance": torch.tensor(glance[:b])}


def test_relevance_term_is_bce_against_the_peak_normalised_gaussian():
    """Zero logits: BCE = log 2 whatever the target; the gradient raises the glance leaf and
    lowers the far leaves (guards the leaf-relevance loss)."""
    obj = Objective(_cfg("mhst.w_anchor=0", "mhst.w_contrast=0", "mhst.w_sparsity=0"), tree=True)
    logit = torch.zeros(2, 8, requires_grad=True)
    parts = obj(_out(logit=logit), _batch())
    assert float(parts["relevance"].detach()) == pytest.approx(math.log(2), abs=1e-6)
    parts["loss"].backward()
    gi = glance_clip(torch.tensor([0.1, 0.2]), torch.ones(2, 8, dtype=torch.bool))
    for b in range(2):
        assert logit.grad[b, gi[b]] < 0 and logit.grad[b, -1] > 0  # descent raises the glance, lowers the rest


def test_anchoring_term_exact_and_its_direction():
    """Root 0 holds the glance, root 1 lies far from it (Gaussian ~0 there): the anchor loss is
    -log softmax over the root scores / T (guards glance anchoring)."""
    cfg = _cfg("mhst.w_relevance=0", "mhst.w_contrast=0", "mhst.w_sparsity=0", "mhst.sigma=0.05")
    score = torch.tensor([[0.2, 0.5], [0.9, 0.1]], requires_grad=True)
    parts = Objective(cfg, tree=True)(_out(score=score), _batch(glance=(0.1, 0.2)))
    t = cfg.anchor_temp
    want = [math.log(1 + math.exp((0.5 - 0.2) / t)), math.log(1 + math.exp((0.1 - 0.9) / t))]
    assert float(parts["anchor"].detach()) == pytest.approx(sum(want) / 2, rel=1e-5)
    parts["loss"].backward()
    assert (score.grad[:, 0] < 0).all() and (score.grad[:, 1] > 0).all()


def test_anchoring_down_weights_a_negative_root_next_to_the_glance():
    """A negative root reaching into the Gaussian's core counts less than one far away."""
    cfg = _cfg("mhst.w_relevance=0", "mhst.w_contrast=0", "mhst.w_sparsity=0", "mhst.sigma=0.1")
    score = torch.tensor([[0.2, 0.5]])
    near = Objective(cfg, tree=True)(_out(b=1, score=score), _batch(b=1, glance=(0.45,)))  # glance in clip 3, root 1 starts at 4
    far = Objective(cfg, tree=True)(_out(b=1, score=score), _batch(b=1, glance=(0.01,)))   # glance in clip 0
    assert float(near["anchor"]) < float(far["anchor"])


def test_contrast_term_is_infonce_between_queries_and_glance_roots():
    """Guards the video-query contrastive loss: exact InfoNCE on orthonormal features; a query
    matched to the other sample's glance root costs more."""
    cfg = _cfg("mhst.w_relevance=0", "mhst.w_anchor=0", "mhst.w_sparsity=0", "mhst.contrast_temp=1.0")
    parts = Objective(cfg, tree=True)(_out(), _batch())
    assert float(parts["contrast"]) == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-6)
    swapped = _out(qz=torch.eye(2, 4).flip(0))
    assert float(Objective(cfg, tree=True)(swapped, _batch())["contrast"]) == pytest.approx(math.log(1 + math.e), rel=1e-6)
    assert float(parts["loss"]) == pytest.approx(cfg.w_contrast * math.log(1 + math.exp(-1.0)), rel=1e-6)  # in the total
    assert float(info_nce(torch.eye(1, 4), torch.eye(1, 4), 0.1)) == 0.0


def test_sparsity_term_is_the_mean_relevance_outside_the_glance_root():
    cfg = _cfg("mhst.w_relevance=0", "mhst.w_anchor=0", "mhst.w_contrast=0")
    logit = torch.tensor([[5.0] * 4 + [-1.0, 0.0, 1.0, 2.0]])
    parts = Objective(cfg, tree=True)(_out(b=1, logit=logit), _batch(b=1, glance=(0.1,)))
    want = float(torch.sigmoid(logit[0, 4:]).sum()) / 8
    assert float(parts["sparsity"]) == pytest.approx(want, rel=1e-6)
    assert float(parts["loss"]) == pytest.approx(cfg.w_sparsity * want, rel=1e-6)


def test_objective_reads_the_glance_never_the_moment():
    """A batch of the glance view has no start/end; the objective needs none (a KeyError would
    show that it reads them)."""
    batch = _batch()
    assert "start" not in batch and "end" not in batch
    for method in ("mhst", "viga"):
        cfg = _cfg(f"mhst.method={method}")
        out = _out()
        parts = Objective(cfg, tree=method == "mhst")(out, batch)
        assert torch.isfinite(parts["loss"])


def test_viga_style_loss_is_the_gaussian_weighted_clip_nce():
    """The peer baseline: -sum_i g_i log softmax_i(logit / T) with g the Gaussian (sums to 1)."""
    cfg = _cfg("mhst.method=viga", "mhst.w_contrast=0")
    logit = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    batch = _batch()
    parts = Objective(cfg, tree=False)(_out(logit=logit), batch)
    g = glance_gaussian(batch["glance"], batch["video_mask"], cfg.sigma)
    want = -(g * torch.log_softmax(logit / cfg.viga_temp, -1)).sum(-1).mean()
    assert float(parts["clip"]) == pytest.approx(float(want), rel=1e-6)
