"""The Multiple Hypotheses Segment Tree: bottom-up, adjacency-constrained merging of query-gated
leaves (clips) into root hypotheses, with pruning of query-irrelevant leaves.

The abstract of arXiv 2301.01871 says: every frame is a leaf; adjacent nodes that share the same
visual-linguistic semantics are merged into an upper non-leaf node; each root covers a segment of
consecutive frames and is one hypothesis; query-irrelevant nodes are removed and down-weighted
while the tree grows. Everything below that sentence is RECONSTRUCTED (no equations, thresholds
or code are public):

* **merge score** of two adjacent nodes ``s(a, b) = cos(h_a, h_b) * (r_a r_b)^gamma``, ``h`` the
  node feature, ``r`` its relevance (mean leaf relevance);
* **parent** feature = the relevance-weighted mean of its leaves' features ("down-weighted by
  r"), relevance = the mean of its leaves' relevance;
* **pruning**: leaves with ``r < tau_prune`` (or, ``prune_relative``, ``r < tau_prune * max r`` of
  the video) are removed before merging; a removed leaf is a barrier, so it splits the segment
  around it (the video's most relevant leaf is never removed);
* ``agglomerative``: repeatedly merge the best adjacent pair of each video (ties: the leftmost
  pair) while its score is ``>= tau_merge`` and the video has more than ``k_max`` roots;
  ``levels``: ``L`` rounds of parallel pairwise merges, like a segment tree: in round ``l`` the
  nodes of rank ``2k + (l mod 2)`` and ``2k + 1 + (l mod 2)`` (alternating so that no boundary is
  fixed) merge when their score is ``>= tau_merge``; ``k_max`` is checked before each round.

Everything is vectorised over the batch: one step of the loop merges one pair in *every* video
(agglomerative) or every selected pair of every video (levels); there is no per-sample loop. The
structure (which leaves form which node) is discrete and built without gradients; the model
pools features and relevance over the resulting spans with gradients (``mhst/model.py``).

Node state lives at the node's first leaf ("head"); ``end[b, i]`` is the last leaf of the node
headed at ``i``. Shapes: B videos, N clips (leaves), d feature width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODES = ("agglomerative", "levels")
_W_MIN = 1e-6  # smallest relevance weight (a relevance of exactly 0 would make a parent undefined)


@dataclass
class Tree:
    """The tree of every video of a batch. Spans are inclusive clip indices ``(first, last)``."""

    kept: torch.Tensor         # [B, N] bool: valid leaves that survived pruning
    root_first: torch.Tensor   # [B, R] long: the roots, in temporal order
    root_last: torch.Tensor    # [B, R] long
    root_valid: torch.Tensor   # [B, R] bool
    node_first: torch.Tensor   # [B, M] long: every merged (non-leaf) node, in creation order: the merge history
    node_last: torch.Tensor    # [B, M] long
    node_valid: torch.Tensor   # [B, M] bool
    node_score: torch.Tensor   # [B, M] float: the merge score that created the node
    node_round: torch.Tensor   # [B, M] long: the merge step (agglomerative) or round (levels)

    @property
    def num_roots(self) -> torch.Tensor:
        return self.root_valid.sum(-1)


def next_head(alive: torch.Tensor) -> torch.Tensor:
    """For every position ``i`` the first ``j > i`` with ``alive[b, j]``, else ``N``. [B, N] long"""
    b, n = alive.shape
    idx = torch.arange(n, device=alive.device).expand(b, n)
    cand = torch.where(alive, idx, torch.full_like(idx, n))
    suffix_min = torch.flip(torch.cummin(torch.flip(cand, [1]), dim=1).values, [1])  # min_{j >= i}
    return torch.cat([suffix_min[:, 1:], torch.full((b, 1), n, dtype=idx.dtype, device=alive.device)], 1)


def _prev_head(alive: torch.Tensor) -> torch.Tensor:
    """For every position ``i`` the last ``j < i`` with ``alive[b, j]``, else ``-1``. [B, N] long"""
    b, n = alive.shape
    idx = torch.arange(n, device=alive.device).expand(b, n)
    prefix_max = torch.cummax(torch.where(alive, idx, torch.full_like(idx, -1)), dim=1).values  # max_{j <= i}
    return torch.cat([torch.full((b, 1), -1, dtype=idx.dtype, device=alive.device), prefix_max[:, :-1]], 1)


def _pair_scores(feat_sum, weight, rel_sum, count, alive, end, nxt, rows, i, gamma: float) -> torch.Tensor:
    """``s(i, nxt[i])`` at the positions ``(rows, i)`` (any broadcastable index tensors); ``-inf``
    where ``i`` is no head, has no next head, or a pruned/padded leaf lies in between. The cosine
    of the weighted means equals that of the weighted sums (the weights are positive)."""
    n = alive.shape[1]
    j = nxt[rows, i]
    jc = j.clamp(max=n - 1)
    ok = alive[rows, i] & (j < n) & (jc == end[rows, i] + 1)
    si, sj = feat_sum[rows, i], feat_sum[rows, jc]
    cos = (si * sj).sum(-1) / (si.norm(dim=-1) * sj.norm(dim=-1)).clamp_min(1e-12)
    rel = (rel_sum[rows, i] / count[rows, i]) * (rel_sum[rows, jc] / count[rows, jc])
    if gamma != 1.0:
        rel = rel.clamp_min(0.0) ** gamma
    return (cos * rel).masked_fill(~ok, float("-inf"))


def prune_leaves(r: torch.Tensor, video_mask: torch.Tensor, tau: float | None, relative: bool = False) -> torch.Tensor:
    """Leaves kept for merging: valid and ``r >= tau`` (``relative``: ``r >= tau * max r`` of the
    video; ``tau=None``: no pruning); a video that would lose every leaf keeps its most relevant
    one (the first on ties). [B, N] bool"""
    if tau is None:
        return video_mask.clone()
    thr = tau * r.masked_fill(~video_mask, 0.0).amax(-1, keepdim=True) if relative else tau
    kept = video_mask & (r >= thr)
    empty = ~kept.any(-1) & video_mask.any(-1)
    if empty.any():
        best = r.masked_fill(~video_mask, float("-inf")).argmax(-1)
        rows = empty.nonzero().squeeze(1)
        kept[rows, best[rows]] = True
    return kept


def merge_scores(feat_sum, weight, rel_sum, count, alive, end, gamma: float):
    """``s(i, next(i))`` for every position (``-inf`` where ``i`` is no head, has no next head, or
    a pruned or padded leaf lies in between) and ``next(i)`` (``N`` when none). [B, N] each"""
    b, n = alive.shape
    nxt = next_head(alive)
    rows = torch.arange(b, device=alive.device)[:, None]
    return _pair_scores(feat_sum, weight, rel_sum, count, alive, end, nxt, rows,
                        torch.arange(n, device=alive.device).expand(b, n), gamma), nxt


@torch.no_grad()
def build_tree(h: torch.Tensor, r: torch.Tensor, video_mask: torch.Tensor, *, mode: str = "agglomerative",
               gamma: float = 1.0, tau_merge: float = 0.3, k_max: int = 1, levels: int = 8,
               tau_prune: float | None = 0.5, prune_relative: bool = False) -> Tree:
    """Grow the tree of every video (module doc) from leaf features ``h`` [B, N, d], leaf relevance
    ``r`` [B, N] in [0, 1] and the valid clips ``video_mask`` [B, N]. ``tau_prune=None``: no pruning;
    ``prune_relative``: the threshold is ``tau_prune`` x the video's largest relevance."""
    if mode not in MODES:
        raise ValueError(f"unknown tree mode {mode!r}; one of {MODES}")
    h = h.detach().float()
    r = r.detach().float()
    b, n, _ = h.shape
    dev = h.device
    kept = prune_leaves(r, video_mask, tau_prune, prune_relative)
    w = r.clamp_min(_W_MIN)
    feat_sum = h * w.unsqueeze(-1)              # sum of w * h over the node's leaves, at its head
    weight = w.clone()                          # sum of w
    rel_sum = r.clone()                         # sum of r
    count = torch.ones_like(r)                  # number of leaves
    alive = kept.clone()                        # node heads
    end = torch.arange(n, device=dev).expand(b, n).clone()
    n_roots = alive.sum(-1)
    rows_all = torch.arange(b, device=dev)
    hist_first, hist_last, hist_valid, hist_score, hist_round = [], [], [], [], []

    def merge(rows, i, j):
        feat_sum[rows, i] += feat_sum[rows, j]
        weight[rows, i] += weight[rows, j]
        rel_sum[rows, i] += rel_sum[rows, j]
        count[rows, i] += count[rows, j]
        end[rows, i] = end[rows, j]
        alive[rows, j] = False

    if mode == "agglomerative":
        # a doubly linked list of heads; after a merge only the merged node's two pair scores change
        nxt = next_head(alive)
        prv = _prev_head(alive)
        s = _pair_scores(feat_sum, weight, rel_sum, count, alive, end, nxt, rows_all[:, None],
                         torch.arange(n, device=dev).expand(b, n), gamma)
        for step in range(n - 1):
            best, i = s.max(-1)[0], s.argmax(-1)  # argmax: the first maximum on ties, i.e. the leftmost pair
            do = torch.isfinite(best) & (best >= tau_merge) & (n_roots > k_max)
            if not bool(do.any()):
                break
            rows = do.nonzero().squeeze(1)
            ii = i[rows]
            jj = nxt[rows, ii]
            merge(rows, ii, jj)
            n_roots[rows] -= 1
            s[rows, jj] = float("-inf")
            nj = nxt[rows, jj]
            nxt[rows, ii] = nj
            has_next = nj < n
            prv[rows[has_next], nj[has_next]] = ii[has_next]
            s[rows, ii] = _pair_scores(feat_sum, weight, rel_sum, count, alive, end, nxt, rows, ii, gamma)
            pp = prv[rows, ii]
            has_prev = pp >= 0
            if bool(has_prev.any()):
                rp, ip = rows[has_prev], pp[has_prev]
                s[rp, ip] = _pair_scores(feat_sum, weight, rel_sum, count, alive, end, nxt, rp, ip, gamma)
            hist_first.append(torch.where(do, i, 0))
            hist_last.append(end[rows_all, i] * do)
            hist_valid.append(do)
            hist_score.append(torch.where(do, best, 0.0))
            hist_round.append(torch.full((b,), step, dtype=torch.long, device=dev))
        hist = [torch.stack(x, 1) if x else torch.zeros(b, 0, dtype=dt, device=dev) for x, dt in
                ((hist_first, torch.long), (hist_last, torch.long), (hist_valid, torch.bool),
                 (hist_score, torch.float32), (hist_round, torch.long))]
    else:
        for level in range(levels):
            s, nxt = merge_scores(feat_sum, weight, rel_sum, count, alive, end, gamma)
            nxt = nxt.clamp(max=n - 1)
            good = torch.isfinite(s) & (s >= tau_merge) & (n_roots > k_max).unsqueeze(1)
            if not bool(good.any()):
                break
            rank = alive.long().cumsum(-1) - 1
            sel = good & (rank % 2 == level % 2)
            if not bool(sel.any()):
                continue
            rows, ii = sel.nonzero(as_tuple=True)
            merge(rows, ii, nxt[rows, ii])
            n_roots -= sel.sum(-1)
            hist_first.append(torch.where(sel, torch.arange(n, device=dev).expand(b, n), 0))
            hist_last.append(end * sel)
            hist_valid.append(sel)
            hist_score.append(torch.where(sel, s, 0.0))
            hist_round.append(torch.full((b, n), level, dtype=torch.long, device=dev))
        hist = [torch.cat(x, 1) if x else torch.zeros(b, 0, dtype=dt, device=dev) for x, dt in
                ((hist_first, torch.long), (hist_last, torch.long), (hist_valid, torch.bool),
                 (hist_score, torch.float32), (hist_round, torch.long))]
    # roots: the heads still alive, in temporal order, trimmed to the largest count in the batch
    order = torch.argsort((~alive).long() * n + torch.arange(n, device=dev), dim=-1)
    width = max(int(alive.sum(-1).max()), 1)
    order = order[:, :width]
    return Tree(kept=kept, root_first=order, root_last=end.gather(1, order), root_valid=alive.gather(1, order),
                node_first=hist[0], node_last=hist[1], node_valid=hist[2], node_score=hist[3], node_round=hist[4])


def span_mask(first: torch.Tensor, last: torch.Tensor, valid: torch.Tensor, n: int) -> torch.Tensor:
    """Membership of clip ``i`` in span ``k``: ``first <= i <= last`` and the span valid. [B, K, N] bool"""
    idx = torch.arange(n, device=first.device)
    return (idx >= first.unsqueeze(-1)) & (idx <= last.unsqueeze(-1)) & valid.unsqueeze(-1)


def containing(first: torch.Tensor, last: torch.Tensor, valid: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
    """Which spans hold clip ``clip[b]``. [B, K] bool"""
    c = clip.unsqueeze(-1)
    return valid & (first <= c) & (last >= c)


__all__ = ["MODES", "Tree", "build_tree", "containing", "merge_scores", "next_head", "prune_leaves", "span_mask"]
