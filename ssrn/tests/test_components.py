"""SSRN's named components on hand-made and random tensors. Each component the abstract names has a
test here (or in test_sampling.py / test_pipeline.py) that fails when the component is removed or
replaced by the identity (README, Tests)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.config import load_config
from common.tsg.decode import decode_boundaries
from ssrn.config import DEFAULTS, RULES
from ssrn.losses import Objective, boundary_ce, grounding_loss, kl_to
from ssrn.model import SSRN, decode
from ssrn.reasoning import affinity, boundary_soft_labels, propagate, soft_labels
from ssrn.sampling import cell_edges

N, M, D, L = 8, 3, 6, 5


def _net(**kw):
    torch.manual_seed(0)
    return SSRN(vocab_size=30, word_dim=12, feat_dim=D, d=16, heads=2, dropout=0.0, **kw).eval()


def _batch(b=2, m=M, seed=0, pad=None):
    g = torch.Generator().manual_seed(seed)
    vm = torch.ones(b, m, N, dtype=torch.bool)
    for i, p in (pad or {}).items():
        vm[i, :, N - p:] = False
    n = vm.sum(-1, keepdim=True).float()
    offs = torch.linspace(-0.4, 0.4, m)
    times = ((torch.arange(N).float() + 0.5 + offs[None, :, None]) / n).clamp(0, 1) * vm
    first = torch.randint(0, 3, (b, m), generator=g)
    last = first + torch.randint(0, 3, (b, m), generator=g)
    idx = torch.arange(N)
    return {"video": torch.randn(b, m, N, D, generator=g) * vm[..., None], "video_mask": vm, "times": times,
            "words": torch.randint(2, 30, (b, L), generator=g), "word_mask": torch.ones(b, L, dtype=torch.bool),
            "label_start": first, "label_end": last, "inside": (idx >= first[..., None]) & (idx <= last[..., None]),
            "offsets": offs.repeat(b, 1)}


def _fwd(net, bt):
    return net(bt["video"], bt["video_mask"], bt["times"], bt["words"], bt["word_mask"])


def _cfg(*sets):
    return load_config(None, list(sets), DEFAULTS, RULES).ssrn


# --------------------------------------------------------------------------- shared backbone

def test_shapes_padding_and_one_shared_backbone():
    """Shared backbone: a siamese sequence identical to the anchor gets identical outputs (one set of
    weights in one batched forward), and padding clips never win a boundary."""
    net = _net()
    bt = _batch(pad={1: 3})
    bt["video"][:, 2], bt["times"][:, 2] = bt["video"][:, 0], bt["times"][:, 0]
    out = _fwd(net, bt)
    assert out["start"].shape == out["end"].shape == out["inside"].shape == (2, M, N)
    assert out["hidden"].shape == (2, M, N, 16)
    assert (out["start"][1, :, N - 3:] < -1e30).all()
    for k in ("start", "end", "inside", "hidden"):
        torch.testing.assert_close(out[k][:, 2], out[k][:, 0], rtol=0, atol=1e-5)
        assert (out[k][:, 1] - out[k][:, 0]).abs().max() > 1e-3, k
    # each sequence, run alone with its own query, gets what the batched forward gave it
    for s in range(M):
        alone = _fwd(net, {k: (v[:, s:s + 1] if k in ("video", "video_mask", "times") else v) for k, v in bt.items()})
        for k in ("start", "end", "inside"):
            torch.testing.assert_close(alone[k][:, 0], out[k][:, s], rtol=0, atol=1e-5)


def test_anchor_predictions_do_not_depend_on_siamese_inputs():
    """Inference is anchor only: without fuse_siamese the anchor's outputs ignore the siamese inputs."""
    net = _net()
    a, b = _batch(seed=0), _batch(seed=0)
    b["video"][:, 1:] = torch.randn_like(b["video"][:, 1:])
    oa, ob = _fwd(net, a), _fwd(net, b)
    for k in ("start", "end", "inside"):
        assert torch.equal(oa[k][:, 0], ob[k][:, 0]), k
    alone = {k: (v[:, :1] if k in ("video", "video_mask", "times") else v) for k, v in a.items()}
    torch.testing.assert_close(_fwd(net, alone)["start"][:, 0], oa["start"][:, 0], rtol=0, atol=1e-5)


def test_fuse_siamese_supplies_siamese_frames_to_the_anchor():
    """ssrn.fuse_siamese: the anchor's outputs change with the siamese frames (removed, they would not)."""
    net = _net(fuse_siamese=True)
    a, b = _batch(seed=0), _batch(seed=0)
    b["video"][:, 1:] = torch.randn_like(b["video"][:, 1:])
    oa, ob = _fwd(net, a), _fwd(net, b)
    assert (oa["start"][:, 0] - ob["start"][:, 0]).abs().max() > 1e-3
    assert torch.equal(oa["hidden"][:, 0], ob["hidden"][:, 0])   # the reasoning compares pre-fusion features


def test_co_attention_makes_the_grounding_depend_on_the_words():
    """Frame-query co-attention: replaced by the identity (clips only), the scores would not depend on
    the sentence."""
    net = _net()
    bt = _batch()
    other = dict(bt, words=(bt["words"] + 5) % 28 + 2)
    oa, ob = _fwd(net, bt), _fwd(net, other)
    for k in ("start", "end", "inside"):
        assert (oa[k] - ob[k]).abs().max() > 1e-3, k


@pytest.mark.parametrize("kind", ["bigru", "transformer"])
def test_query_encoder_ignores_padding(kind):
    net = _net(query_encoder=kind)
    bt = _batch()
    bt["word_mask"][1, 3:] = False
    bt["words"][1, 3:] = 0
    other = dict(bt, words=bt["words"].clone())
    other["words"][1, 3:] = 9
    torch.testing.assert_close(_fwd(net, bt)["start"], _fwd(net, other)["start"], rtol=0, atol=1e-5)


def test_synthetic_model_keeps_its_checkpoint_layout():
    """Parameter count and the head's state_dict keys of configs/synthetic.yaml's model as written by
    the checkpoints before the head moved to common.tsg.heads (old checkpoints must still load)."""
    from common.cli import default_config
    from ssrn.model import build_model

    m = build_model(load_config(default_config("ssrn"), [], DEFAULTS, RULES), 100, 64)
    assert sum(p.numel() for p in m.parameters()) == 127_755
    assert [k for k in m.state_dict() if k.startswith("head.")] == [
        "head.conv.0.weight", "head.conv.0.bias", "head.out.weight", "head.out.bias"]


def test_frozen_glove_rows():
    emb = np.arange(30 * 12, dtype=np.float32).reshape(30, 12)
    net = SSRN(vocab_size=30, word_dim=12, feat_dim=D, d=16, heads=2, embeddings=emb)
    assert torch.equal(net.query.embed.weight, torch.from_numpy(emb)) and not net.query.embed.weight.requires_grad
    with pytest.raises(ValueError, match="expected"):
        SSRN(vocab_size=31, word_dim=12, feat_dim=D, d=16, heads=2, embeddings=emb)


# --------------------------------------------------------------------------- decoding on the grid

def test_decode_maps_spans_to_the_cells_of_the_grid():
    times = torch.tensor([[0.05, 0.2, 0.45, 0.8, 0.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    start = torch.full((1, 5), -20.0)
    end = torch.full((1, 5), -20.0)
    start[0, 1], end[0, 2] = 10.0, 10.0                # best span (1, 2)
    start[0, 4] = end[0, 4] = -1e38                     # padding
    lo, hi = cell_edges(times, mask)
    p = decode_boundaries(start, end, mask, k=5, nms=0.9, edges=(lo, hi))[0]
    np.testing.assert_allclose(p[0], [lo[0, 1], hi[0, 2]])   # [0.125, 0.625]
    np.testing.assert_allclose(p[0], [0.125, 0.625])
    assert (p >= 0).all() and (p <= 1).all() and (p[:, 0] < p[:, 1]).all() and len(p) == 5
    out = {"start": start[:, None], "end": end[:, None], "inside": torch.zeros(1, 1, 5)}
    np.testing.assert_allclose(decode(out, mask[:, None], times[:, None], nms=0.9)[0][0], [0.125, 0.625])


# --------------------------------------------------------------------------- reasoning

def _hand_reasoning():
    """One video, anchor times 0.125, 0.375, 0.625, 0.875; one siamese sequence half a step later."""
    ta = torch.tensor([[0.125, 0.375, 0.625, 0.875]])
    ts = torch.tensor([[[0.25, 0.5, 0.75, 1.0]]])
    m = torch.ones(1, 4, dtype=torch.bool)
    ha = torch.eye(4)[None]                       # anchor frame i = e_i
    hs = torch.eye(4)[[1, 2, 2, 3]][None, None]    # siamese frames look like anchor 1, 2, 2, 3
    return ha, m, ta, hs, m[:, None], ts


def test_affinity_by_hand():
    ha, ma, ta, hs, ms, ts = _hand_reasoning()
    a = affinity(ha, ma, ta, hs, ms, ts, tau=0.1, window=1.0)
    assert a.shape == (1, 1, 4, 4)
    torch.testing.assert_close(a.sum(-1), torch.ones(1, 1, 4))
    # within one anchor step, siamese frame j goes to the anchor frame it equals
    e = np.exp(10.0)
    # siamese frame 0 (t = 0.25, like anchor 1) is half a step from anchors 0 and 1, 1.5 and 2.5 from 2, 3
    np.testing.assert_allclose(a[0, 0, 0].numpy(), [1 / (e + 1), e / (e + 1), 0.0, 0.0], rtol=1e-5)
    full = affinity(ha, ma, ta, hs, ms, ts, tau=0.1, window=0.0)
    np.testing.assert_allclose(full[0, 0, 0].numpy(), [1 / (e + 3), e / (e + 3), 1 / (e + 3), 1 / (e + 3)], rtol=1e-5)
    pad = affinity(ha, ma, ta, hs, torch.tensor([[[True, True, True, False]]]), ts)
    assert pad[0, 0, 3].sum() == 0


def test_propagation_and_soft_labels():
    """Q sums to 1, equals P_anchor at omega = 0 and the propagated distribution at omega = 1; the
    propagated start mass follows the affinity onto the anchor grid."""
    ha, ma, ta, hs, ms, ts = _hand_reasoning()
    a = affinity(ha, ma, ta, hs, ms, ts, tau=0.01)
    p_sia = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])            # siamese start at its frame 1 (looks like anchor 2)
    prop = propagate(a, p_sia)
    torch.testing.assert_close(prop, torch.tensor([[0.0, 0.0, 1.0, 0.0]]), atol=1e-6, rtol=0)
    p_a = torch.softmax(torch.randn(1, 4), -1)
    for omega in (0.0, 0.3, 1.0):
        q = soft_labels(p_a, prop, omega)
        torch.testing.assert_close(q.sum(-1), torch.ones(1))
    assert torch.equal(soft_labels(p_a, prop, 0.0), p_a)
    assert torch.equal(soft_labels(p_a, prop, 1.0), prop)
    two = propagate(torch.cat([a, a], 1), torch.cat([p_sia, torch.tensor([[[1.0, 0, 0, 0]]])], 1))
    torch.testing.assert_close(two.sum(-1), torch.ones(1))    # the mean over siamese sequences


def test_soft_labels_follow_the_siamese_boundary():
    """The reasoning moves probability to the anchor frame whose features match the siamese start:
    removed (Q = own prediction), the soft label would not move."""
    net = _net()
    bt = _batch(b=1, m=2)
    out = {k: v.clone() for k, v in _fwd(net, bt).items()}
    out["start"][:, 0] = 0.0                                   # a flat anchor prediction
    out["start"][:, 1] = -30.0
    out["start"][0, 1, 5] = 30.0                               # the siamese sequence is sure: clip 5
    out["hidden"][:, 1] = out["hidden"][:, 0]                  # siamese frame j looks like anchor frame j
    q = boundary_soft_labels(out, bt, "start", tau=0.01, window=1.0, omega=0.5)
    torch.testing.assert_close(q.sum(-1), torch.ones(1))
    assert q[0].argmax() == 5 and q[0, 5] > 0.5 + 0.5 / N - 1e-4


# --------------------------------------------------------------------------- the objective

def test_objective_with_s0_or_alpha0_is_exactly_the_baseline_loss():
    net = _net()
    bt = _batch()
    out = _fwd(net, bt)
    anchor_only = {k: v[:, :1] for k, v in out.items()}
    bt1 = {k: (v[:, :1] if torch.is_tensor(v) and v.dim() >= 2 and v.shape[1] == M else v) for k, v in bt.items()}
    base = grounding_loss(anchor_only, bt1, 0)
    parts = Objective(_cfg("ssrn.siamese=0"))(anchor_only, bt1)
    assert torch.equal(parts["loss"], base) and set(parts) == {"ground", "loss"}
    plain = base + torch.stack([grounding_loss(out, bt, s) for s in (1, 2)]).mean()
    for sets in (("ssrn.alpha=0",), ("ssrn.reasoning=false",)):
        parts = Objective(_cfg(*sets))(out, bt)
        assert torch.equal(parts["loss"], plain) and "reason" not in parts, sets
    full = Objective(_cfg())(out, bt)
    assert full["reason"] > 0 and torch.allclose(full["loss"], plain + full["reason"])


def test_reasoning_term_by_hand():
    """alpha x [KL(Q_s || P_s) + KL(Q_e || P_e)] with Q from the reasoning, detached."""
    net = _net()
    bt = _batch()
    out = _fwd(net, bt)
    cfg = _cfg("ssrn.alpha=2.0", "ssrn.omega=0.3", "ssrn.tau=0.2", "ssrn.window=1.5")
    parts = Objective(cfg)(out, bt)
    vm = bt["video_mask"][:, 0]
    want = 0.0
    for k in ("start", "end"):
        aff = affinity(out["hidden"][:, 0], vm, bt["times"][:, 0], out["hidden"][:, 1:], bt["video_mask"][:, 1:],
                       bt["times"][:, 1:], 0.2, 1.5)
        p = torch.softmax(out[k], -1)
        q = 0.3 * propagate(aff, p[:, 1:]) + 0.7 * p[:, 0]
        want = want + (q * (q.log() - p[:, 0].log())).sum(-1).mean()
    torch.testing.assert_close(parts["reason"], want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(parts["loss"], parts["ground"] + parts["ground_siamese"] + 2.0 * want,
                               rtol=1e-5, atol=1e-6)
    # Q is a target: the reasoning term sends no gradient into the siamese logits
    logits = {k: v.detach().clone().requires_grad_(True) for k, v in out.items()}
    kl_to(boundary_soft_labels(logits, bt, "start", 0.2, 1.5, 0.3), logits["start"][:, 0], vm).backward()
    assert logits["start"].grad[:, 1:].abs().max() == 0 and logits["start"].grad[:, 0].abs().max() > 0


def test_boundary_ce_and_kl_exact():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    torch.testing.assert_close(boundary_ce(logits, torch.tensor([2]), mask), -F.log_softmax(logits, -1)[0, 2])
    q = torch.tensor([[0.5, 0.5, 0.0]])
    p = torch.softmax(logits, -1)[0]
    torch.testing.assert_close(kl_to(q, logits, mask), 0.5 * (np.log(0.5) - p[0].log()) + 0.5 * (np.log(0.5) - p[1].log()))
    assert kl_to(torch.softmax(logits, -1), logits, mask).abs() < 1e-6
