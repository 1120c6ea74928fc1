"""Each component the paper names, on hand-made inputs: the cross-modal GCN, the memory (read,
identity when off, the alignment objective), the heterogeneous attention, the regression head and
its decoder; padding invariance of the whole network; the configs."""

import json

import numpy as np
import pytest
import torch

from common.config import ConfigError, load_config
from common.tsg.decode import clip_spans, decode_regression
from mgslnet.config import DEFAULTS, RULES
from mgslnet.eval import frequency_subsets, ranking_diagnostics, summarize_diagnostics
from mgslnet.gcn import CrossModalGCN, edge_mask
from mgslnet.hetero import HeteroAttention
from mgslnet.losses import Objective, align_loss, moment_clips, regression_losses
from mgslnet.memory import Memory, NoMemory
from mgslnet.model import build_model

SMALL = ["model.word_dim=8", "model.d=16", "model.heads=2", "mgsl.slots=8", "model.dropout=0.0", "data.num_clips=8"]


def _cfg(*extra):
    return load_config(None, [*SMALL, *extra], DEFAULTS, RULES)


def _batch(b=3, t=8, n_words=6, feat=12, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    wm = torch.arange(n_words)[None] < torch.tensor([n_words, 4, 2][:b])[:, None]
    return {"video": torch.randn(b, t, feat, generator=g), "video_mask": torch.ones(b, t, dtype=torch.bool),
            "words": torch.randint(2, vocab, (b, n_words), generator=g) * wm, "word_mask": wm,
            "start": torch.tensor([0.1, 0.5, 0.0][:b]), "end": torch.tensor([0.4, 0.9, 0.2][:b])}


def _net(*extra, seed=0):
    torch.manual_seed(seed)
    return build_model(_cfg(*extra), 20, 12).eval()


def _fwd(net, b):
    return net(b["video"], b["video_mask"], b["words"], b["word_mask"])


# --------------------------------------------------------------------------- cross-modal GCN

def test_edge_mask_exact():
    vm, wm = torch.tensor([[True, True, False]]), torch.tensor([[True, False]])
    full = edge_mask(vm, wm)[0].int().tolist()
    assert full == [[1, 1, 0, 1, 0], [1, 1, 0, 1, 0], [0] * 5, [1, 1, 0, 1, 0], [0] * 5]
    cross = edge_mask(vm, wm, cross_only=True)[0].int().tolist()
    assert cross == [[0, 0, 0, 1, 0], [0, 0, 0, 1, 0], [0] * 5, [1, 1, 0, 0, 0], [0] * 5]


def test_gcn_aligns_clips_with_words_and_with_each_other():
    """The graph mixes the modalities (a clip changes when a word does) and, unlike the
    co-attention ablation, also the clips among themselves (one layer)."""
    torch.manual_seed(0)
    gcn = CrossModalGCN(16, layers=1).eval()
    co = CrossModalGCN(16, layers=1, cross_only=True).eval()
    co.load_state_dict(gcn.state_dict())           # the ablation has the very same parameters
    v, q = torch.randn(1, 5, 16), torch.randn(1, 4, 16)
    vm, wm = torch.ones(1, 5, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool)
    q2 = q.clone()
    q2[0, 1] += 3.0
    v2 = v.clone()
    v2[0, 4] += 3.0
    for m in (gcn, co):
        base = m(v, vm, q, wm)[0][0, 0]
        assert not torch.allclose(base, m(v, vm, q2, wm)[0][0, 0], atol=1e-4)   # clip 0 reads the words
    assert not torch.allclose(gcn(v, vm, q, wm)[0][0, 0], gcn(v2, vm, q, wm)[0][0, 0], atol=1e-4)
    assert torch.allclose(co(v, vm, q, wm)[0][0, 0], co(v2, vm, q, wm)[0][0, 0], atol=1e-6)
    a = gcn(v, vm, q, wm)[2][0]
    assert torch.allclose(a.sum(-1), torch.ones(9), atol=1e-5) and (a[:5, 5:] > 0).all() and (a[:5, :5] > 0).all()


# --------------------------------------------------------------------------- memory

def test_a_clip_equal_to_a_slot_reads_that_slot():
    torch.manual_seed(0)
    mem = Memory(16, slots=10, tau=0.01)
    h = 2.5 * mem.slots.detach()[3][None, None]        # same direction as slot 3
    a, r = mem.read(h)
    assert a[0, 0].argmax() == 3 and a[0, 0, 3] > 0.99
    assert torch.allclose(r[0, 0], mem.slots.detach()[3], atol=0.05 * mem.slots[3].norm().item())
    out = mem(h, torch.ones(1, 1, dtype=torch.bool))
    g = torch.sigmoid(mem.gate(torch.cat([h, out["read"]], -1)))
    assert torch.allclose(out["out"], h + g * out["read"])   # h~ = h + sigmoid(W[h; r]) * r
    assert not torch.allclose(out["out"], h)


def test_memory_none_is_the_identity_and_a_memory_is_not():
    b = _batch()
    o = _fwd(_net("mgsl.memory=none"), b)
    assert torch.equal(o["v_mem"], o["v_aligned"]) and torch.equal(o["q_mem"], o["q_aligned"])
    assert "v_read" not in o and "q_read" not in o
    assert NoMemory()(b["video"], b["video_mask"])["out"] is b["video"]
    o = _fwd(_net("mgsl.memory=video"), b)
    assert not torch.allclose(o["v_mem"], o["v_aligned"]) and torch.equal(o["q_mem"], o["q_aligned"])
    o = _fwd(_net(), b)
    assert not torch.allclose(o["v_mem"], o["v_aligned"]) and not torch.allclose(o["q_mem"], o["q_aligned"])
    assert o["v_attn"].shape == (3, 8, 8) and o["q_attn"].shape == (3, 6, 8)


def test_slots_are_parameters_and_usage_a_buffer_updated_in_training():
    net = _net()
    sd = net.state_dict()
    assert "video_memory.slots" in dict(net.named_parameters()) and "video_memory.usage" in sd
    before = net.video_memory.usage.clone()
    net.train()
    _fwd(net, _batch())
    assert not torch.equal(before, net.video_memory.usage)
    assert torch.allclose(net.video_memory.usage.sum(), torch.tensor(1.0), atol=1e-5)


def test_alignment_loss_rewards_reads_that_return_the_other_domain():
    """L_align is low when each moment clip's video-memory read is its own query's feature and
    the query-memory read is its own moment's feature, high when the pairs are crossed."""
    torch.manual_seed(0)
    b, t, nw, d = 4, 6, 3, 16
    vm, wm = torch.ones(b, t, dtype=torch.bool), torch.ones(b, nw, dtype=torch.bool)
    inside = torch.zeros(b, t, dtype=torch.bool)
    inside[:, 1:3] = True
    q_al, v_al = torch.randn(b, nw, d), torch.randn(b, t, d)
    q_bar, v_bar = q_al.mean(1), v_al[:, 1:3].mean(1)
    good = {"q_aligned": q_al, "v_aligned": v_al, "v_read": q_bar[:, None].expand(b, t, d).clone(),
            "q_read": v_bar[:, None].expand(b, nw, d).clone()}
    perm = torch.tensor([1, 2, 3, 0])
    bad = dict(good, v_read=good["v_read"][perm], q_read=good["q_read"][perm])
    lg, lb = align_loss(good, inside, vm, wm, 0.1), align_loss(bad, inside, vm, wm, 0.1)
    assert lg < 0.05 and lb > 5.0, (lg, lb)
    # through the model: the loss reaches the slots; w_align=0 switches it off
    net = _net()
    net.train()
    bt = _batch()
    parts = Objective(_cfg().mgsl)(_fwd(net, bt), bt)
    assert parts["align"] > 0
    parts["align"].backward()
    assert net.video_memory.slots.grad.abs().sum() > 0 and net.query_memory.slots.grad.abs().sum() > 0
    assert Objective(_cfg("mgsl.w_align=0").mgsl)(_fwd(net, bt), bt)["align"] == 0


# --------------------------------------------------------------------------- heterogeneous attention

def test_heterogeneous_attention_gives_each_clip_its_own_reading_of_the_query():
    torch.manual_seed(0)
    v, q = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    vm, wm = torch.ones(2, 5, dtype=torch.bool), torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    on = HeteroAttention(16, 2, 1, 0.0, enabled=True).eval()(v, vm, q, wm)
    assert on["coatt"].shape == (2, 5, 4) and torch.allclose(on["coatt"].sum(-1), torch.ones(2, 5), atol=1e-5)
    assert (on["coatt"][1, :, 2:] == 0).all()                                  # padded words get no attention
    assert (on["q_att"][0] - on["q_att"][0].mean(0)).abs().max() > 1e-2       # clips read the query differently
    off = HeteroAttention(16, 2, 1, 0.0, enabled=False).eval()(v, vm, q, wm)
    assert off["coatt"] is None
    assert torch.allclose(off["q_att"][1], q[1, :2].mean(0).expand(5, 16), atol=1e-6)  # the mean query, every clip


# --------------------------------------------------------------------------- regression head and decoder

def test_decoder_gives_the_exact_span_of_hand_made_distances():
    n = 10
    vm = torch.ones(1, 12, dtype=torch.bool)
    vm[0, n:] = False                                       # 2 padding clips
    dist = torch.zeros(1, 12, 2)
    conf = torch.full((1, 12), -5.0)
    dist[0, 4] = torch.tensor([0.15, 0.25])                 # centre 0.45 -> [0.30, 0.70]
    conf[0, 4] = 3.0
    dist[0, 5] = torch.tensor([0.20, 0.20])                 # centre 0.55 -> [0.35, 0.75]: IoU 0.78 with the best
    conf[0, 5] = 2.0
    dist[0, 0] = torch.tensor([0.30, 0.10])                 # centre 0.05 -> [-0.25, 0.15] -> clipped [0, 0.15]
    conf[0, 0] = 1.0
    conf[0, 11] = 9.0                                       # padding: never decoded
    out = decode_regression(conf, dist, vm, k=3, nms=0.5)[0]
    np.testing.assert_allclose(out[0], [0.30, 0.70], atol=1e-9)
    np.testing.assert_allclose(out[1], [0.0, 0.15], atol=1e-9)
    assert len(out) == 3 and not np.isclose(out[2], [0.35, 0.75]).all()     # suppressed by NMS
    out = decode_regression(conf, dist, vm, k=3, nms=1.0)[0]                 # no NMS: ranked by confidence
    np.testing.assert_allclose(out[:3], [[0.30, 0.70], [0.35, 0.75], [0.0, 0.15]], atol=1e-9)
    spans = clip_spans(dist, vm)
    assert torch.isnan(spans[0, 11]).all() and torch.allclose(spans[0, 4], torch.tensor([0.30, 0.70]))


def test_regression_losses_vanish_at_the_true_distances_only():
    vm = torch.ones(2, 10, dtype=torch.bool)
    start, end = torch.tensor([0.2, 0.55]), torch.tensor([0.5, 0.75])
    inside = moment_clips(start, end, vm)
    assert inside[0].nonzero().flatten().tolist() == [2, 3, 4] and inside[1].nonzero().flatten().tolist() == [5, 6, 7]
    c = (torch.arange(10) + 0.5) / 10
    exact = torch.stack([c[None] - start[:, None], end[:, None] - c[None]], -1)
    reg, iou = regression_losses(exact, start, end, vm, inside)
    assert reg.abs() < 1e-7 and iou.abs() < 1e-6
    reg2, iou2 = regression_losses(exact + 0.1, start, end, vm, inside)
    assert reg2 > 0.05 and iou2 > 0.1


def test_ranking_diagnostics_split_ranking_from_regression_exactly():
    """Hand-made: 10 clips, moment [0.2, 0.5] (clips 2-4, centre 0.35 -> clip 3). Query 0: the most
    confident clip (3) is in the moment and regresses it exactly. Query 1: the most confident clip (8)
    lies outside (and regresses nothing), but clip 3 regresses the moment exactly: a ranking error,
    not a regression error.
    Query 2: clip 3 is on top but every clip's span is [0.45, 0.5] (IoU 1/6): the regression fails."""
    vm = torch.ones(3, 10, dtype=torch.bool)
    c = (torch.arange(10) + 0.5) / 10
    start, end = torch.full((3,), 0.2), torch.full((3,), 0.5)
    exact = torch.stack([c - 0.2, 0.5 - c], -1)
    dist = torch.stack([exact, exact, torch.stack([c - 0.45, 0.5 - c], -1)])   # query 2: spans [0.45, 0.5]
    dist[1, 8] = 0.0                                  # the top clip of query 1 regresses [0.85, 0.85]: IoU 0
    conf = torch.full((3, 10), -3.0)
    conf[0, 3] = conf[1, 8] = conf[2, 3] = 2.0
    d = ranking_diagnostics(conf, dist, start, end, vm)
    assert d["top1_in_moment"].tolist() == [True, False, True]
    np.testing.assert_allclose(d["centre_iou"], [1.0, 1.0, 0.05 / 0.3], atol=1e-6)
    np.testing.assert_allclose(d["best_iou"], [1.0, 1.0, 0.05 / 0.3], atol=1e-6)
    s = summarize_diagnostics(d)
    assert s == pytest.approx({"top1_clip_in_moment": 200 / 3, "centre_clip_R1@0.5": 200 / 3, "best_clip_R1@0.5": 200 / 3})
    assert summarize_diagnostics(d, np.array([False, True, False]))["top1_clip_in_moment"] == 0.0
    assert summarize_diagnostics(d, np.zeros(3, dtype=bool))["best_clip_R1@0.5"] is None


def test_frequency_subsets_bin_queries_by_their_rarest_concept(tmp_path):
    meta = {"train_concept_counts": {"a": 500, "b": 60, "c": 12, "d": 3},
            "query_concepts": {"test": [["a"], ["a", "b"], ["a", "c"], ["b", "d"], ["a", "e"], ["b"]]}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    # query 3 (d: 3) and 4 (e: never seen) are rare, i.e. in no bin; query 5 is not evaluated
    assert frequency_subsets(tmp_path / "meta.json", [0, 1, 2, 3, 4]) == {
        "seen_10-49": [2], "seen_50-199": [1], "seen_200+": [0]}
    assert frequency_subsets(tmp_path / "missing.json", [0]) == {}
    (tmp_path / "meta.json").write_text(json.dumps({"test_subsets": {}}))              # real data: no concepts
    assert frequency_subsets(tmp_path / "meta.json", [0]) == {}


# --------------------------------------------------------------------------- the whole network

@pytest.mark.parametrize("extra", [(), ("model.video_encoder=attention", "mgsl.interaction=coattention",
                                        "mgsl.hetero=false")])
def test_padding_changes_no_output(extra):
    """A video padded with garbage clips (video_mask false) and a query padded with garbage word
    ids (word_mask false) give the same outputs on the valid clips."""
    net = _net(*extra)
    b = _batch(b=1, t=6, n_words=4)
    padded = {"video": torch.cat([b["video"], 9 * torch.randn(1, 3, 12)], 1),
              "video_mask": torch.cat([b["video_mask"], torch.zeros(1, 3, dtype=torch.bool)], 1),
              "words": torch.cat([b["words"], torch.tensor([[5, 7]])], 1),
              "word_mask": torch.cat([b["word_mask"], torch.zeros(1, 2, dtype=torch.bool)], 1)}
    with torch.no_grad():
        a, p = _fwd(net, b), _fwd(net, padded)
    for k in ("conf", "dist", "fused", "v_mem"):
        assert torch.allclose(a[k], p[k][:, :6], atol=1e-5), k
    assert torch.allclose(a["q_mem"], p["q_mem"][:, :4], atol=1e-5)


def test_the_sentence_changes_the_grounding():
    net = _net()
    b = _batch()
    b2 = dict(b, words=torch.roll(b["words"], 1, 0), word_mask=torch.roll(b["word_mask"], 1, 0))
    with torch.no_grad():
        assert not torch.allclose(_fwd(net, b)["conf"][0], _fwd(net, b2)["conf"][0], atol=1e-4)


def test_config_rules():
    with pytest.raises(ConfigError, match="mgsl.memory"):
        _cfg("mgsl.memory=sometimes")
    with pytest.raises(ConfigError, match="mgsl.interaction"):
        _cfg("mgsl.interaction=transformer")
    with pytest.raises(ConfigError, match="mgsl.tau"):
        _cfg("mgsl.tau=0")
    with pytest.raises(ValueError, match="even"):
        build_model(_cfg("model.d=15"), 20, 12)


def test_every_claim_variant_is_a_valid_config_that_switches_one_component():
    from common.data import REPO_ROOT
    from mgslnet.claim import VARIANTS

    full = load_config(REPO_ROOT / "mgslnet" / "configs" / f"{VARIANTS['full'].config}.yaml", [], DEFAULTS, RULES)
    for name, v in VARIANTS.items():
        cfg = load_config(REPO_ROOT / "mgslnet" / "configs" / f"{v.config}.yaml", list(v.overrides), DEFAULTS, RULES)
        changed = {k for k in full.mgsl.to_dict() if cfg.mgsl[k] != full.mgsl[k]}
        assert len(changed) == (0 if name == "full" else 1), (name, changed)
