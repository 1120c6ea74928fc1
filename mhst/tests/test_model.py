"""The network on random tensors: shapes and padding, the query gate, hypothesis scoring, decoding
(top root = R@1, R@5 from the merge history), the ViGA-style variant, frozen GloVe."""

import numpy as np
import pytest
import torch

from common.config import load_config
from common.tsg.bench import fake_batch
from mhst.config import DEFAULTS, RULES
from mhst.model import MHSTNet, build_model, decode, ranked_hypotheses

SMALL = ["model.d=16", "model.word_dim=12", "model.dropout=0.0", "data.num_clips=16"]
SHAPE = {"clips": 16, "batch": 3, "feat": 8, "words": 6, "vocab": 30}


def _cfg(*sets):
    return load_config(None, [*SMALL, *sets], DEFAULTS, RULES)


def _batch(pad=None, seed=0):
    b = fake_batch(SHAPE, seed=seed)
    for i, p in (pad or {}).items():
        b["video_mask"][i, SHAPE["clips"] - p:] = False
        b["video"][i, SHAPE["clips"] - p:] = 0.0
    return b


def test_shapes_padding_and_roots_inside_the_valid_clips():
    torch.manual_seed(0)
    model = build_model(_cfg("mhst.tau_prune=0.3"), 30, 8).eval()
    bt = _batch(pad={1: 6})
    out = model(bt, history=True)
    assert out["r"].shape == out["logit"].shape == (3, 16) and out["h"].shape == (3, 16, 16)
    assert (out["r"][1, 10:] == 0).all()
    tree = out["tree"]
    assert not tree.kept[1, 10:].any()
    assert (tree.root_last[1][tree.root_valid[1]] < 10).all()
    for p in decode(out, bt["video_mask"], _cfg()):
        assert p.shape[1] == 2 and (p[:, 0] < p[:, 1]).all() and (p >= 0).all() and (p <= 1).all()


def test_the_query_gate_makes_the_leaves_depend_on_the_sentence():
    """Guards the query-gated leaves h = LN(FC(v)) * sigmoid(FC(q)): with the gate replaced by the
    identity the leaves would not depend on the sentence."""
    torch.manual_seed(0)
    net = build_model(_cfg(), 30, 8).net.eval()
    bt = _batch()
    other = (bt["words"] + 5) % 28 + 2
    v = net.video(bt["video"], bt["video_mask"])
    h1 = net.leaves(v, net.query(bt["words"], bt["word_mask"]), bt["video_mask"])
    h2 = net.leaves(v, net.query(other * bt["word_mask"], bt["word_mask"]), bt["video_mask"])
    assert (h1 - h2).abs().max() > 1e-3
    a = net(bt["video"], bt["video_mask"], bt["words"], bt["word_mask"])
    b = net(bt["video"], bt["video_mask"], other * bt["word_mask"], bt["word_mask"])
    assert (a["r"] - b["r"]).abs().max() > 1e-3


def test_hypothesis_score_is_mean_relevance_plus_weighted_match():
    """score(root) = mean leaf relevance + w_match * cos(P_v pool_r(v), P_q q), pooled over the
    root's kept leaves with relevance weights (guards the hypothesis scoring)."""
    torch.manual_seed(0)
    net = build_model(_cfg("mhst.w_match=0.7"), 30, 8).net.eval()
    r = torch.tensor([[0.9, 0.5, 0.2, 0.8]])
    vz = torch.randn(1, 4, 5)
    qz = torch.nn.functional.normalize(torch.randn(1, 5), dim=-1)
    kept = torch.tensor([[True, True, False, True]])
    s = net.score_spans(torch.tensor([[0, 3]]), torch.tensor([[1, 3]]), torch.tensor([[True, True]]), kept, r, vz, qz)
    pool = (0.9 * vz[0, 0] + 0.5 * vz[0, 1]) / 1.4
    want0 = 0.7 + 0.7 * float(torch.nn.functional.normalize(pool, dim=0) @ qz[0])
    want1 = 0.8 + 0.7 * float(torch.nn.functional.normalize(vz[0, 3], dim=0) @ qz[0])
    assert s["score"][0].tolist() == pytest.approx([want0, want1], abs=1e-5)


def _hand_out(root_scores):
    """A forward output with hand-made hypotheses on 8 clips: roots [0,2], [3,5], [6,7] and three
    merge-history nodes [0,1] (score .3), [4,7] (.2), [0,7] (.1)."""
    one = lambda *x: torch.tensor([list(x)])
    return {"roots": {"first": one(0, 3, 6), "last": one(2, 5, 7), "valid": torch.ones(1, 3, dtype=torch.bool),
                      "score": torch.tensor([root_scores])},
            "nodes": {"first": one(0, 4, 0), "last": one(1, 7, 7), "valid": torch.ones(1, 3, dtype=torch.bool),
                      "score": torch.tensor([[0.3, 0.2, 0.1]])}}


def test_decode_top_root_is_r1_and_history_fills_r5():
    """R@1 is the best-scored root; the other roots follow by score, then the merge history's
    nodes by score after NMS (IoU > 0.5 with a kept one is dropped: [0,1] overlaps root [0,2])."""
    out = _hand_out([0.1, 0.9, 0.5])
    pred = decode(out, torch.ones(1, 8, dtype=torch.bool), _cfg("eval.nms=0.5"))[0]
    assert pred.tolist() == [[3 / 8, 6 / 8], [6 / 8, 1.0], [0.0, 3 / 8], [4 / 8, 1.0], [0.0, 1.0]]
    spans, valid, score = ranked_hypotheses(out, torch.ones(1, 8, dtype=torch.bool))
    assert valid.all() and score[0].tolist() == pytest.approx([0.9, 0.5, 0.1, 0.3, 0.2, 0.1])
    assert len(decode(out, torch.ones(1, 8, dtype=torch.bool), _cfg("eval.k=1"))[0]) == 1


def test_without_the_tree_the_window_decoder_reads_the_clip_scores():
    torch.manual_seed(0)
    for sets in (["mhst.tree=none"], ["mhst.method=viga"]):
        cfg = _cfg(*sets)
        model = build_model(cfg, 30, 8).eval()
        out = model(_batch())
        assert "roots" not in out and "tree" not in out
        preds = decode(out, _batch()["video_mask"], cfg)
        assert all(len(p) == 5 for p in preds)
    # the ViGA-style variant decodes its logits, MHST without the tree its relevance
    viga = build_model(_cfg("mhst.method=viga"), 30, 8).eval()(_batch())
    none = build_model(_cfg("mhst.tree=none"), 30, 8).eval()(_batch())
    assert torch.equal(viga["clip_score"], viga["logit"]) and torch.equal(none["clip_score"], none["r"])


def test_frozen_glove_rows():
    emb = np.arange(30 * 12, dtype=np.float32).reshape(30, 12)
    net = MHSTNet(vocab_size=30, word_dim=12, feat_dim=8, d=16, embeddings=emb)
    assert torch.equal(net.query.embed.weight, torch.from_numpy(emb)) and not net.query.embed.weight.requires_grad
    with pytest.raises(ValueError, match="expected"):
        MHSTNet(vocab_size=31, word_dim=12, feat_dim=8, d=16, embeddings=emb)
    with pytest.raises(ValueError, match="even"):
        MHSTNet(vocab_size=30, word_dim=12, feat_dim=8, d=15)
