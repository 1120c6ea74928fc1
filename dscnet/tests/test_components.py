"""Each component DSCNet's abstract names, on hand-made inputs: k-means recovers clusters, DEC's
target sharpens, Sinkhorn meets its marginals, the size prior changes the selection, pseudo
segments are exact, the aggregation is the attention-weighted sum, the foreground probability is
multiplied into the head's, the objective trains the head towards the pseudo segments."""

import math

import numpy as np
import torch

from common.config import load_config
from dscnet.cluster import dec_soft_assign, dec_target, kmeans, refresh, sinkhorn
from dscnet.config import DEFAULTS
from dscnet.losses import Objective
from dscnet.model import (
    DSCNet,
    SemanticAggregation,
    combine_inside,
    deviation_scores,
    pseudo_segments,
    select_centres,
)

SMALL = ["model.word_dim=8", "model.query_hidden=8", "model.z_dim=8", "model.d=8", "model.video_layers=1",
         "model.head_layers=1", "dscnet.clusters=4", "dscnet.top_m=1", "model.dropout=0.0"]


def _cfg(*extra):
    return load_config(None, [*SMALL, *extra], DEFAULTS)


def test_kmeans_recovers_hand_made_clusters_and_keeps_centre_order_on_warm_start():
    g = torch.Generator().manual_seed(0)
    true = torch.tensor([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    label = torch.arange(3).repeat_interleave(50)
    x = true[label] + 0.5 * torch.randn(150, 2, generator=g)
    c, a = kmeans(x, 3, generator=g)
    # one centre per blob: the assignment equals the true labels up to a permutation
    perm = torch.cdist(true, c).argmin(1)
    assert sorted(perm.tolist()) == [0, 1, 2]
    assert torch.equal(a, perm[label])
    for k in range(3):
        assert torch.allclose(c[perm[k]], x[label == k].mean(0), atol=1e-5)
    # warm start: centre j stays the centre of the same blob (indices are stable across epochs)
    c2, a2 = kmeans(x, 3, generator=g, init=c.flip(0))
    assert torch.allclose(c2, c.flip(0), atol=1e-5) and torch.equal(a2, 2 - a)


def test_dec_soft_assignment_and_sharpened_target():
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    c = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    q = dec_soft_assign(z, c, alpha=1.0)
    # Student-t with one degree of freedom: q ∝ 1 / (1 + d^2)
    assert torch.allclose(q[2], torch.tensor([1 / 2, 1 / 5]) / (1 / 2 + 1 / 5))
    p = dec_target(q)
    assert torch.allclose(p.sum(1), torch.ones(3))
    assert p[0, 0] > q[0, 0] and p[1, 1] > q[1, 1]   # confident points get more confident


def test_sinkhorn_meets_its_marginals():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(12, 5, generator=g)
    row = torch.full((12,), 2.0)
    col = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05]) * 24
    p = sinkhorn(s, row, col, eps=0.5, iters=500).double()
    assert torch.allclose(p.sum(1), row.double(), atol=1e-6)
    assert torch.allclose(p.sum(0), col.double(), atol=1e-6)


def test_size_prior_spreads_the_selection_over_the_query_clusters_sizes():
    """Every video prefers centre 0 a little: raw top-1 gives all of them centre 0; the size
    prior's plan (uniform cluster sizes) gives each centre its share of the videos."""
    g = torch.Generator().manual_seed(2)
    s = 0.01 * torch.randn(40, 4, generator=g)
    s[:, 0] += 0.2
    raw = select_centres(s, 1)
    assert (raw == 0).all()
    prior = select_centres(s, 1, sizes=torch.full((4,), 0.25), eps=0.05, iters=200)
    counts = torch.bincount(prior[:, 0], minlength=4)
    assert all(8 <= c <= 12 for c in counts.tolist()), counts   # row-wise argmax of a soft plan: about 10 each


def test_pseudo_segments_are_exact_on_hand_made_attention():
    mask = torch.ones(4, 8, dtype=torch.bool)
    alpha = torch.tensor([
        [0.0, 0.3, 0.3, 0.0, 0.1, 0.1, 0.1, 0.1],    # mean 0.125: 0.1 is below it, the one run is {1, 2}
        [0.2, 0.0, 0.0, 0.2, 0.2, 0.2, 0.0, 0.2],    # runs {0}, {3,4,5}, {7}: longest {3,4,5}
        [0.3, 0.3, 0.0, 0.0, 0.0, 0.0, 0.2, 0.2],    # tie of length 2: more attention wins -> {0,1}
        [0.125] * 8,                                 # flat: the whole video
    ])
    first, last = pseudo_segments(alpha, mask)
    assert first.tolist() == [1, 3, 0, 0] and last.tolist() == [2, 5, 1, 7]
    # padding: the mean is over valid clips and a run never enters padding
    m = torch.tensor([[True] * 5 + [False] * 3])
    f, la = pseudo_segments(torch.tensor([[0.1, 0.1, 0.3, 0.3, 0.25, 0.9, 0.9, 0.9]]), m)
    assert (f.item(), la.item()) == (2, 4)


def test_aggregation_is_the_attention_weighted_sum_over_valid_clips():
    torch.manual_seed(0)
    agg = SemanticAggregation(d=4, z_dim=3, tau=0.1)
    feats = torch.randn(2, 6, 4)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    centres = torch.randn(5, 3)
    out = agg(feats, mask, centres)
    logits = torch.einsum("bnd,kd->bkn", feats, agg.key(centres)) / 2.0
    alpha = torch.softmax(logits.masked_fill(~mask[:, None], float("-inf")), -1)
    assert torch.allclose(out["alpha"], alpha, atol=1e-6)
    assert torch.all(out["alpha"][1, :, 4:] == 0)
    assert torch.allclose(out["activity"], torch.einsum("bkn,bnd->bkd", alpha, feats), atol=1e-6)
    assert torch.allclose(out["scores"].exp().sum(-1) <= 5, torch.ones(2, dtype=torch.bool))
    # each centre attends where its key points: a clip equal to centre 2's key gets most of alpha_2
    feats2 = torch.zeros(1, 6, 4)
    feats2[0, 3] = 5 * agg.key(centres)[2].detach()
    assert agg(feats2, torch.ones(1, 6, dtype=torch.bool), centres)["alpha"][0, 2].argmax() == 3


def test_foreground_probability_is_multiplied_into_the_head():
    inside = torch.tensor([[0.0, 2.0, -1.0]])
    fg = torch.tensor([[1.0, -3.0, 0.5]])
    got = torch.sigmoid(combine_inside(inside, fg))
    assert torch.allclose(got, torch.sigmoid(inside) * torch.sigmoid(fg), atol=1e-6)
    assert torch.equal(combine_inside(inside, None), inside)
    cfg_on, cfg_off = _cfg(), _cfg("dscnet.foreground=false")
    torch.manual_seed(0)
    net = DSCNet(cfg_on, vocab_size=10, feat_dim=5).eval()
    v, vm = torch.randn(2, 7, 5), torch.ones(2, 7, dtype=torch.bool)
    w, wm = torch.randint(2, 10, (2, 4)), torch.ones(2, 4, dtype=torch.bool)
    g = net.ground(v, vm, w, wm)
    assert not torch.allclose(g["inside"], g["head_inside"])
    assert torch.allclose(torch.sigmoid(g["inside"]), torch.sigmoid(g["head_inside"]) * torch.sigmoid(g["fg"]), atol=1e-5)
    off = DSCNet(cfg_off, vocab_size=10, feat_dim=5).eval()
    assert off.foreground is None and torch.equal(off.ground(v, vm, w, wm)["inside"], off.ground(v, vm, w, wm)["head_inside"])


def _net_with_centres(*extra):
    torch.manual_seed(0)
    cfg = _cfg(*extra)
    net = DSCNet(cfg, vocab_size=12, feat_dim=5)
    net.set_clusters(torch.randn(4, 8), torch.tensor([0.4, 0.3, 0.2, 0.1]))
    return cfg, net


def test_forward_selects_centres_and_trains_the_head_towards_their_pseudo_segments():
    cfg, net = _net_with_centres()
    v, vm = torch.randn(3, 10, 5), torch.ones(3, 10, dtype=torch.bool)
    w, wm = torch.randint(2, 12, (6, 4)), torch.ones(6, 4, dtype=torch.bool)
    out = net(words=w, word_mask=wm, video=v, video_mask=vm)
    sel = out["sel"]
    assert sel.shape == (3, 1)
    alpha = out["alpha"][torch.arange(3), sel[:, 0]]
    f, la = pseudo_segments(alpha, vm)
    assert torch.equal(out["seg_first"][:, 0], f) and torch.equal(out["seg_last"][:, 0], la)
    # the head's loss is lowest when start/end/inside sit on the pseudo segments
    obj = Objective(cfg.dscnet)
    base = obj(out, {"words": w, "word_mask": wm}, {"video_mask": vm})
    good = dict(out)
    idx = torch.arange(10)
    on = (idx[None] >= f[:, None]) & (idx[None] <= la[:, None])
    good["start"] = torch.where(idx[None] == f[:, None], 3.0, 0.0)
    good["end"] = torch.where(idx[None] == la[:, None], 3.0, 0.0)
    good["inside"] = torch.where(on, 3.0, -3.0)
    bad = dict(good, start=good["start"].roll(3, 1), end=good["end"].roll(3, 1), inside=good["inside"].roll(3, 1))
    h_good = obj(good, {"words": w, "word_mask": wm}, {"video_mask": vm})["head"]
    h_bad = obj(bad, {"words": w, "word_mask": wm}, {"video_mask": vm})["head"]
    assert h_good < base["head"] and h_good < h_bad
    # every term is present and weighted as documented
    dc = cfg.dscnet
    total = dc.w_rec * base["rec"] + dc.w_pull * base["pull"] + dc.w_head * base["head"] + dc.w_fg * base["fg"]
    assert torch.allclose(base["loss"], total) and all(base[k] > 0 for k in ("rec", "pull", "head", "fg"))
    # the foreground target is the union of the selected centres' pseudo segments
    tgt = obj(dict(out, fg=torch.where(on, 10.0, -10.0)), {"words": w, "word_mask": wm}, {"video_mask": vm})["fg"]
    assert tgt < 1e-3


def test_size_prior_switch_changes_the_training_selection():
    _, with_prior = _net_with_centres()
    _, without = _net_with_centres("dscnet.size_prior=false")
    without.load_state_dict(with_prior.state_dict())
    v, vm = torch.randn(32, 10, 5), torch.ones(32, 10, dtype=torch.bool)
    a = with_prior(video=v, video_mask=vm)["sel"]
    b = without(video=v, video_mask=vm)["sel"]
    assert torch.equal(b[:, 0], with_prior(video=v, video_mask=vm)["scores"].argmax(1))
    counts = torch.bincount(a[:, 0], minlength=4).tolist()
    expect = [12.8, 9.6, 6.4, 3.2]   # the shares 0.4/0.3/0.2/0.1 of 32 videos
    assert all(abs(c - e) <= 2.5 for c, e in zip(counts, expect)), counts
    assert not torch.equal(a, b)


def test_language_semantic_mining_clusters_the_query_latents():
    """refresh(): the centres are the k-means centres of the train queries' z (a fixed point:
    each centre is the mean of its members), shares are the cluster sizes, and the model keeps them."""
    cfg, net = _net_with_centres()
    net.ready.fill_(False)
    words = torch.randint(2, 12, (40, 5))
    mask = torch.ones(40, 5, dtype=torch.bool)
    state, stats = refresh(net, words, mask, method="kmeans", generator=torch.Generator().manual_seed(0), iters=100)
    net.set_clusters(state["centres"], state["sizes"], state["dec_freq"])
    z = net.ae.eval().encode(words, mask)
    a = state["assign"]
    for k in range(4):
        if (a == k).any():
            assert torch.allclose(net.centres[k], z[a == k].mean(0), atol=1e-4)
    assert torch.allclose(net.sizes, torch.bincount(a, minlength=4).float() / 40)
    assert torch.equal(net.nearest_centre(z), a) and bool(net.ready)
    assert math.isclose(stats["inertia"], float(((z - net.centres[a]).detach() ** 2).sum(1).mean()), rel_tol=1e-4)


def test_query_agnostic_deviation_scores_peak_on_the_odd_clip():
    v = torch.zeros(1, 6, 3)
    v[0, 4] = 5.0
    s = deviation_scores(v, torch.ones(1, 6, dtype=torch.bool))
    assert s[0].argmax() == 4


def test_event_hits_separate_localisation_from_identification_on_hand_made_spans():
    """Query 1's top-1 span is exactly an event (hit), query 2's lies between the events (miss): 50 %.
    At random positions in a 40 s video with events [0, 10] and [20, 30]: a 10 s span hits when its
    start is within 10/3 s of an event's start (10 of the 30 s of starts), a 6 s span when its start
    is in [0, 14/3] or [58/3, 74/3] (10 of 34 s): chance = (1/3 + 10/34) / 2."""
    from types import SimpleNamespace

    from dscnet.eval import event_hits

    meta = {"video_events": {"v": [{"span": [0.0, 10.0], "concepts": []}, {"span": [20.0, 30.0], "concepts": []}]}}
    queries = [SimpleNamespace(vid="v", duration=40.0)] * 2
    preds = [np.array([[0.0, 10.0], [5.0, 9.0]]), np.array([[12.0, 18.0]])]
    out = event_hits(preds, queries, meta, draws=4000)
    assert out["diag_event_hit"] == 50.0
    assert math.isclose(out["diag_event_hit_chance"], 100 * (1 / 3 + 10 / 34) / 2, abs_tol=0.6), out
