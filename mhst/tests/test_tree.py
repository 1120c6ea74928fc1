"""The hypotheses tree on hand-made leaves: merging, adjacency, pruning, ties, roots, history.
Each test names the component it guards (README, Tests); each was seen failing with the
component removed or replaced by the identity."""

import pytest
import torch
import torch.nn.functional as F

from mhst.tree import build_tree, next_head, span_mask

MODES = ["agglomerative", "levels"]


def _spans(tree, b=0, which="root"):
    f, la, v = (getattr(tree, f"{which}_first")[b], getattr(tree, f"{which}_last")[b], getattr(tree, f"{which}_valid")[b])
    return [(int(x), int(y)) for x, y, ok in zip(f, la, v) if ok]


def _two_blocks(n_a=5, n_b=7, d=8):
    """Two blocks of identical leaves with orthogonal features, every leaf fully relevant."""
    x, y = torch.zeros(d), torch.zeros(d)
    x[0], y[1] = 1.0, 1.0
    h = torch.stack([x] * n_a + [y] * n_b)[None]
    return h, torch.ones(1, n_a + n_b), torch.ones(1, n_a + n_b, dtype=torch.bool)


@pytest.mark.parametrize("mode", MODES)
def test_two_blocks_of_identical_leaves_give_exactly_two_roots(mode):
    """Guards the merging of adjacent nodes with the same semantics (tree building): without it
    every leaf stays a root."""
    h, r, m = _two_blocks()
    tree = build_tree(h, r, m, mode=mode, tau_merge=0.5, k_max=1, levels=8, tau_prune=None)
    assert _spans(tree) == [(0, 4), (5, 11)]
    assert int(tree.num_roots[0]) == 2


def _reference(h, r, m, tau_merge, k_max, tau_prune):
    """A per-video, per-merge loop written from the module doc: the vectorised tree must match it."""
    out = []
    for b in range(h.shape[0]):
        n = int(m[b].sum())
        kept = [i for i in range(n) if tau_prune is None or r[b, i] >= tau_prune] or [int(r[b, :n].argmax())]
        nodes = [[i, i] for i in kept]

        def feat(nd, b=b):
            idx = list(range(nd[0], nd[1] + 1))
            w = r[b, idx].clamp_min(1e-6)
            return F.normalize((h[b, idx] * w[:, None]).sum(0) / w.sum(), dim=0), r[b, idx].mean()

        while len(nodes) > k_max:
            best = None
            for k in range(len(nodes) - 1):
                if nodes[k + 1][0] != nodes[k][1] + 1:
                    continue
                (fa, ra), (fb, rb) = feat(nodes[k]), feat(nodes[k + 1])
                s = float((fa * fb).sum() * ra * rb)
                if best is None or s > best[0]:
                    best = (s, k)
            if best is None or best[0] < tau_merge:
                break
            k = best[1]
            nodes[k] = [nodes[k][0], nodes[k + 1][1]]
            del nodes[k + 1]
        out.append([tuple(x) for x in nodes])
    return out


@pytest.mark.parametrize("tau_merge,k_max,tau_prune", [(0.0, 1, None), (0.05, 2, 0.3), (-1.0, 1, 0.5), (0.1, 3, None)])
def test_vectorised_agglomerative_tree_equals_the_per_video_reference(tau_merge, k_max, tau_prune):
    """The batch is merged in one loop without a per-sample loop; the result equals a naive
    per-video implementation (merge score cos * r_a r_b, relevance-weighted parents, mean
    relevance, pruning barriers, k_max, tau_merge) on random leaves, padding included."""
    g = torch.Generator().manual_seed(0)
    b, n, d = 12, 20, 6
    h, r = torch.randn(b, n, d, generator=g), torch.rand(b, n, generator=g)
    m = torch.ones(b, n, dtype=torch.bool)
    m[3, 14:] = False
    tree = build_tree(h, r, m, tau_merge=tau_merge, k_max=k_max, tau_prune=tau_prune)
    assert [_spans(tree, i) for i in range(b)] == _reference(h, r, m, tau_merge, k_max, tau_prune)


@pytest.mark.parametrize("mode", MODES)
def test_no_non_adjacent_merge_and_hypotheses_are_consecutive(mode):
    """Every root and every merged node is a run of consecutive kept leaves; roots are ordered,
    disjoint, never hold a pruned or padded leaf, and cover every kept leaf; every merged node is
    the union of two adjacent nodes (its two children)."""
    g = torch.Generator().manual_seed(1)
    b, n, d = 16, 24, 5
    h, r = torch.randn(b, n, d, generator=g), torch.rand(b, n, generator=g)
    m = torch.ones(b, n, dtype=torch.bool)
    m[0, 17:] = False
    tree = build_tree(h, r, m, mode=mode, tau_merge=-1.0, k_max=1, levels=6, tau_prune=0.35)
    for i in range(b):
        kept = tree.kept[i].tolist()
        roots = _spans(tree, i)
        covered = [False] * n
        for (f, la), nxt in zip(roots, roots[1:] + [(n + 1, n + 1)]):
            assert f <= la < nxt[0], roots
            assert all(kept[f: la + 1]), (roots, kept)
            for c in range(f, la + 1):
                covered[c] = True
        assert covered == kept
        # children: a merged node splits into two nodes that existed before it (a leaf or an earlier node)
        nodes = _spans(tree, i, "node")
        rounds = tree.node_round[i][tree.node_valid[i]].tolist()
        for k, (f, la) in enumerate(nodes):
            earlier = {(c, c) for c in range(n) if kept[c]} | {nodes[j] for j in range(k) if rounds[j] < rounds[k]}
            assert any((f, c) in earlier and (c + 1, la) in earlier for c in range(f, la)), (f, la, nodes)


def test_an_irrelevant_leaf_splits_a_segment_when_pruning_is_on():
    """Guards pruning: one leaf of relevance 0.1 inside a block of identical relevant leaves is
    removed before merging and splits the block; without pruning the block merges into one root."""
    h = torch.ones(1, 9, 4)
    r = torch.full((1, 9), 0.9)
    r[0, 4] = 0.1
    m = torch.ones(1, 9, dtype=torch.bool)
    on = build_tree(h, r, m, tau_merge=-1.0, k_max=1, tau_prune=0.5)
    off = build_tree(h, r, m, tau_merge=-1.0, k_max=1, tau_prune=None)
    assert _spans(on) == [(0, 3), (5, 8)] and not bool(on.kept[0, 4])
    assert _spans(off) == [(0, 8)]
    # a video whose leaves are all irrelevant keeps its most relevant one
    low = build_tree(h, torch.tensor([[0.1, 0.2, 0.3, 0.2, 0.1, 0.0, 0.0, 0.1, 0.1]]), m, tau_prune=0.5)
    assert _spans(low) == [(2, 2)]


def test_merge_ties_are_broken_by_position():
    """Identical leaves: every pair scores the same, so the leftmost pair merges first, then the
    node it made with its right neighbour, and so on."""
    h = torch.ones(2, 4, 3)
    r = torch.ones(2, 4)
    tree = build_tree(h, r, torch.ones(2, 4, dtype=torch.bool), tau_merge=0.0, k_max=1, tau_prune=None)
    assert _spans(tree, 0, "node") == [(0, 1), (0, 2), (0, 3)] == _spans(tree, 1, "node")
    assert _spans(tree) == [(0, 3)]


def test_k_max_and_tau_merge_stop_merging():
    h, r, m = _two_blocks()
    assert len(_spans(build_tree(h, r, m, tau_merge=-1.0, k_max=1, tau_prune=None))) == 1
    assert _spans(build_tree(h, r, m, tau_merge=-1.0, k_max=3, tau_prune=None)) == [(0, 4), (5, 10), (11, 11)]
    assert len(_spans(build_tree(h, r, m, tau_merge=1.5, k_max=1, tau_prune=None))) == 12  # nothing scores >= 1.5


def test_relevance_weighted_parent_and_relevance_in_the_merge_score():
    """Hand-computed merge scores. Leaves a=(1,0) r=.8, b=(1,1) r=.2, c=(0,1) r=.2: s(a,b) =
    cos 45deg * .8 * .2 = .11314 merges first; the parent is the relevance-weighted mean (1, .2)
    with mean relevance .5, so s(ab, c) = (.2 / |(1, .2)|) * .5 * .2 = .019612 (an unweighted
    parent (1, .5) would give .04472). And s = cos * r_a r_b: of identical leaves, the relevant pair
    merges first."""
    h = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    r = torch.tensor([[0.8, 0.2, 0.2]])
    tree = build_tree(h, r, torch.ones(1, 3, dtype=torch.bool), tau_merge=0.0, k_max=1, tau_prune=None)
    assert _spans(tree, 0, "node") == [(0, 1), (0, 2)]
    assert tree.node_score[0].tolist() == pytest.approx([0.5 ** 0.5 * 0.16, 0.2 / 1.04 ** 0.5 * 0.1], abs=1e-6)
    h2 = torch.ones(1, 4, 2)
    r2 = torch.tensor([[0.3, 0.3, 0.9, 0.9]])
    t2 = build_tree(h2, r2, torch.ones(1, 4, dtype=torch.bool), tau_merge=0.0, k_max=1, tau_prune=None)
    assert _spans(t2, 0, "node")[0] == (2, 3)
    assert float(t2.node_score[0, 0]) == pytest.approx(0.81, abs=1e-6)


def test_next_head_and_span_mask():
    alive = torch.tensor([[True, False, True, False, False, True]])
    assert next_head(alive).tolist() == [[2, 2, 5, 5, 5, 6]]
    m = span_mask(torch.tensor([[1, 4]]), torch.tensor([[2, 4]]), torch.tensor([[True, False]]), 6)
    assert m.int().tolist() == [[[0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]]]
