"""The MHST network: query and video encoders, query-gated leaves with their relevance, the
hypotheses tree (``mhst/tree.py``) and the scoring of its roots; ``build_model`` and ``decode``.
The objective is in ``mhst/losses.py``.

Shapes: B batch, N clips (leaves), L words, D clip-feature dim, d model width.

* leaves (the issue's form of the abstract's "each frame is a leaf"): ``h = LN(FC(v)) * sigmoid(FC(q))``
  (the contextual clip feature ``v`` gated by the sentence ``q``), then ``fusion_layers`` residual
  temporal convolutions; relevance ``r = sigmoid(w . [h; q; h * q])``;
* hypotheses: the roots of the tree; each scores ``mean leaf relevance + w_match * match``, the
  match being ``cos(P_v pool_r(v), P_q q)`` (``pool_r``: the relevance-weighted mean of the
  contextual clip features over the root's leaves);
* ``mhst.tree=none`` and the ViGA-style peer (``mhst.method=viga``) have no tree: their per-clip
  scores go through the shared multi-scale window decoder (``common.tsg.decode.decode_windows``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from common.tsg.decode import decode_windows
from common.tsg.evaluate import nms_topk
from common.tsg.grid import clips_to_moment
from mhst.config import uses_tree
from mhst.tree import Tree, build_tree, span_mask


# RECONSTRUCTED: the abstract names no encoder. The Liu group's released code (IA-Net, CSMGAN)
# and ViGA encode the query with a GRU over frozen GloVe vectors; attention pooling gives q.
class QueryEncoder(nn.Module):
    """GloVe word vectors (frozen by default) -> Linear -> BiGRU -> attention pooling: q [B, d]."""

    def __init__(self, vocab_size: int, word_dim: int, d: int, dropout: float,
                 embeddings: np.ndarray | torch.Tensor | None = None, freeze: bool = True):
        super().__init__()
        if d % 2:
            raise ValueError(f"model.d must be even (two GRU directions of d/2), got {d}")
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        if embeddings is not None:
            emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
            if tuple(emb.shape) != (vocab_size, word_dim):
                raise ValueError(f"embeddings have shape {tuple(emb.shape)}, expected {(vocab_size, word_dim)}")
            self.embed.weight.data.copy_(emb)
        self.embed.weight.requires_grad_(not freeze)
        self.proj = nn.Linear(word_dim, d)
        self.gru = nn.GRU(d, d // 2, batch_first=True, bidirectional=True)
        self.attn = nn.Linear(d, 1)
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.proj(self.embed(words)))
        lengths = word_mask.sum(-1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=words.shape[1])
        a = self.attn(out).squeeze(-1).float().masked_fill(~word_mask, float("-inf")).softmax(-1)
        return self.norm((a.unsqueeze(-1).to(out.dtype) * out).sum(1))


class ConvBlock(nn.Module):
    """Pre-norm residual temporal convolution over the valid clips (padding stays zero)."""

    def __init__(self, d: int, kernel: int, dropout: float):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"model.kernel must be odd (same-length temporal convolution), got {kernel}")
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).to(x.dtype)
        y = self.conv((self.norm(x) * m).transpose(1, 2)).transpose(1, 2)
        return (x + self.drop(F.gelu(y))) * m


# RECONSTRUCTED: clip features -> Linear -> residual temporal convolutions (context for the
# sub-phase order and for the boundaries); the abstract names no video encoder.
class VideoEncoder(nn.Module):
    def __init__(self, feat_dim: int, d: int, layers: int, kernel: int, dropout: float):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(feat_dim, d), nn.LayerNorm(d), nn.GELU(), nn.Dropout(dropout))
        self.blocks = nn.ModuleList(ConvBlock(d, kernel, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        x = self.inp(video) * video_mask.unsqueeze(-1).to(video.dtype)
        for blk in self.blocks:
            x = blk(x, video_mask)
        return self.norm(x)


class MHSTNet(nn.Module):
    """Encoders, query-gated leaves and their relevance, the tree and the hypothesis scores.

    ``forward`` returns ``{"v": contextual clips [B, N, d], "q": sentence [B, d], "h": leaves
    [B, N, d], "logit": relevance logits [B, N], "r": relevance [B, N] (0 on padding), "clip_score":
    what the window decoder reads [B, N], "vz": projected clips [B, N, d], "qz": projected,
    normalised sentence [B, d]}`` plus, with the tree, ``"tree"`` (:class:`~mhst.tree.Tree`),
    ``"roots"`` (:meth:`score_spans` of the roots) and, with ``history=True``, ``"nodes"`` (the
    merge history's nodes, scored the same way)."""

    def __init__(self, *, vocab_size: int, word_dim: int, feat_dim: int, d: int = 512, video_layers: int = 2,
                 fusion_layers: int = 1, kernel: int = 3, dropout: float = 0.2, relevance_hidden: int = 0,
                 embeddings=None, freeze_words: bool = True, method: str = "mhst", tree: str = "agglomerative",
                 tree_kw: dict | None = None, w_match: float = 1.0):
        super().__init__()
        self.method, self.tree_mode, self.tree_kw, self.w_match = method, tree, dict(tree_kw or {}), w_match
        self.query = QueryEncoder(vocab_size, word_dim, d, dropout, embeddings, freeze_words)
        self.video = VideoEncoder(feat_dim, d, video_layers, kernel, dropout)
        self.leaf_v = nn.Linear(d, d)
        self.leaf_norm = nn.LayerNorm(d)
        self.leaf_q = nn.Linear(d, d)
        self.fusion = nn.ModuleList(ConvBlock(d, kernel, dropout) for _ in range(fusion_layers))
        # RECONSTRUCTED: relevance_hidden > 0 puts a hidden layer before the linear read-out
        self.relevance = (nn.Linear(3 * d, 1) if relevance_hidden == 0 else
                          nn.Sequential(nn.Linear(3 * d, relevance_hidden), nn.GELU(), nn.Linear(relevance_hidden, 1)))
        self.match_v = nn.Linear(d, d)
        self.match_q = nn.Linear(d, d)

    @property
    def has_tree(self) -> bool:
        return self.method == "mhst" and self.tree_mode != "none"

    def leaves(self, v: torch.Tensor, q: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        """Query-gated leaves ``LN(FC(v)) * sigmoid(FC(q))`` then the fusion blocks. [B, N, d]"""
        h = self.leaf_norm(self.leaf_v(v)) * torch.sigmoid(self.leaf_q(q)).unsqueeze(1)
        h = h * video_mask.unsqueeze(-1).to(h.dtype)
        for blk in self.fusion:
            h = blk(h, video_mask)
        return h

    def score_spans(self, first, last, valid, kept, r, vz, qz) -> dict[str, torch.Tensor]:
        """Score hypotheses given as clip spans [B, K] over the kept leaves: ``mean_r`` (mean leaf
        relevance), ``pz`` (normalised relevance-weighted pool of ``vz``), ``match = pz . qz``,
        ``score = mean_r + w_match * match`` (``-inf`` on invalid spans), ``first/last/valid``."""
        m = (span_mask(first, last, valid, r.shape[1]) & kept.unsqueeze(1)).to(r.dtype)  # [B, K, N]
        mean_r = (m * r.unsqueeze(1)).sum(-1) / m.sum(-1).clamp_min(1.0)
        w = m * r.unsqueeze(1)
        pooled = torch.bmm(w, vz.to(w.dtype)) / w.sum(-1, keepdim=True).clamp_min(1e-6)
        pz = F.normalize(pooled, dim=-1)
        match = (pz * qz.unsqueeze(1)).sum(-1)
        score = (mean_r + self.w_match * match).masked_fill(~valid, float("-inf"))
        return {"first": first, "last": last, "valid": valid, "mean_r": mean_r, "match": match, "pz": pz,
                "score": score}

    def forward(self, video, video_mask, words, word_mask, history: bool = False) -> dict:
        v = self.video(video, video_mask)
        q = self.query(words, word_mask)
        h = self.leaves(v, q, video_mask)
        qe = q.unsqueeze(1).expand_as(h)
        logit = self.relevance(torch.cat([h, qe, h * qe], -1)).squeeze(-1).float()
        logit = logit.masked_fill(~video_mask, -1e4)
        r = torch.sigmoid(logit) * video_mask
        out = {"v": v, "q": q, "h": h, "logit": logit, "r": r, "vz": self.match_v(v).float(),
               "qz": F.normalize(self.match_q(q).float(), dim=-1)}
        out["clip_score"] = logit if self.method == "viga" else r
        if self.has_tree:
            tree: Tree = build_tree(h, r, video_mask, mode=self.tree_mode, **self.tree_kw)
            out["tree"] = tree
            out["roots"] = self.score_spans(tree.root_first, tree.root_last, tree.root_valid, tree.kept, r,
                                            out["vz"], out["qz"])
            if history:
                out["nodes"] = self.score_spans(tree.node_first, tree.node_last, tree.node_valid, tree.kept, r,
                                                out["vz"], out["qz"])
        return out


class MHST(nn.Module):
    """The training module: :class:`MHSTNet` on a collated batch (what DDP wraps)."""

    def __init__(self, net: MHSTNet):
        super().__init__()
        self.net = net

    def forward(self, batch: dict, history: bool = False) -> dict:
        return self.net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"], history=history)


def build_model(cfg, vocab_size: int, feat_dim: int, embeddings=None) -> MHST:
    m, t = cfg.model, cfg.mhst
    tree_kw = {"gamma": t.gamma, "tau_merge": t.tau_merge, "k_max": t.k_max, "levels": t.levels,
               "tau_prune": t.tau_prune if t.prune else None, "prune_relative": t.prune_rule == "relative"}
    return MHST(MHSTNet(vocab_size=vocab_size, word_dim=m.word_dim, feat_dim=feat_dim, d=m.d,
                        video_layers=m.video_layers, fusion_layers=m.fusion_layers, kernel=m.kernel,
                        dropout=m.dropout, relevance_hidden=m.relevance_hidden, embeddings=embeddings,
                        freeze_words=m.freeze_words, method=t.method, tree=t.tree if uses_tree(cfg) else "none",
                        tree_kw=tree_kw, w_match=t.w_match))


def ranked_hypotheses(out: dict, video_mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every hypothesis of each query, best first: the roots by score, then the merge history's
    nodes by score (the R@5 candidates when there are fewer than five roots). Returns spans as
    fractions ``[B, K, 2]``, validity ``[B, K]`` and the scores ``[B, K]``."""
    roots, nodes = out["roots"], out.get("nodes")
    parts = [roots] + ([nodes] if nodes is not None else [])
    first = torch.cat([p["first"] for p in parts], 1).cpu().numpy()
    last = torch.cat([p["last"] for p in parts], 1).cpu().numpy()
    score = torch.cat([p["score"].detach().float() for p in parts], 1).cpu().numpy()
    valid = torch.cat([p["valid"] for p in parts], 1).cpu().numpy()
    n_roots = roots["first"].shape[1]
    # roots before history nodes: rank by (is a node, -score), stable
    key = np.where(valid, -np.nan_to_num(score, neginf=-1e9), np.inf) + 1e6 * (np.arange(first.shape[1]) >= n_roots)
    order = np.argsort(key, axis=1, kind="stable")
    n = video_mask.sum(-1).cpu().numpy()[:, None]
    take = lambda a: np.take_along_axis(a, order, 1)
    spans = clips_to_moment(take(first), take(last), n)
    return spans, take(valid), take(score)


def decode(out: dict, video_mask: torch.Tensor, cfg) -> list[np.ndarray]:
    """Top-``eval.k`` moments per query (fractions, best first). With the tree: the top root is
    R@1, the rest come from the ranked hypotheses after greedy NMS (``eval.nms``). Without:
    ``decode_windows`` over the per-clip scores."""
    e = cfg.eval
    if "roots" not in out:
        return decode_windows(out["clip_score"], video_mask, scales=list(e.window_scales), k=e.k, nms=e.nms,
                              contrast=e.window_contrast)
    spans, valid, _ = ranked_hypotheses(out, video_mask)
    kept, kvalid = nms_topk(spans, valid, e.nms, keep=e.k)
    return [kept[i][kvalid[i]] for i in range(len(kept))]


__all__ = ["MHST", "MHSTNet", "QueryEncoder", "VideoEncoder", "build_model", "decode", "ranked_hypotheses"]
