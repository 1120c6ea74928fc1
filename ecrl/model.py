"""The ECRL grounding network: query encoder, video encoder, cross-modal interaction and the
shared grounding head (start / end / inside scores per clip), plus top-K decoding.

Shapes: B batch, N clips, L words, D clip-feature dim, d model width.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.tsg.evaluate import nms_topk


def sinusoid(n: int, d: int, device=None) -> torch.Tensor:
    """Fixed sinusoidal positions [n, d]."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(0, d, 2, device=device, dtype=torch.float32)
    ang = pos / torch.pow(10000.0, i / d)
    pe = torch.zeros(n, d, device=device)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : d // 2])
    return pe


def _encoder(d: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout, batch_first=True,
                                       norm_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class QueryEncoder(nn.Module):
    """GloVe word vectors (frozen by default) -> Linear -> transformer layers; returns word states
    [B, L, d] and a masked-mean sentence vector [B, d].

    RECONSTRUCTED: the abstract does not name the query encoder; the group's released code uses a
    BiGRU over GloVe. A transformer layer is used here because it is as accurate at this scale and
    turns into large matmuls (the bench's FLOP fraction)."""

    def __init__(self, vocab_size: int, word_dim: int, d: int, heads: int, layers: int, dropout: float,
                 embeddings: np.ndarray | torch.Tensor | None = None, freeze: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        if embeddings is not None:
            emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
            if tuple(emb.shape) != (vocab_size, word_dim):
                raise ValueError(f"embeddings have shape {tuple(emb.shape)}, expected {(vocab_size, word_dim)}")
            self.embed.weight.data.copy_(emb)
        self.embed.weight.requires_grad_(not freeze)
        self.proj = nn.Linear(word_dim, d)
        self.enc = _encoder(d, heads, layers, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proj(self.embed(words)) + sinusoid(words.shape[1], self.proj.out_features, words.device)
        x = self.norm(self.enc(x, src_key_padding_mask=~word_mask))
        m = word_mask.unsqueeze(-1).to(x.dtype)
        sent = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return x, sent


class VideoEncoder(nn.Module):
    """Clip features -> Linear projection + positions -> transformer layers -> [B, N, d]."""

    def __init__(self, feat_dim: int, d: int, heads: int, layers: int, dropout: float, max_clips: int = 512):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(feat_dim), nn.Linear(feat_dim, d), nn.Dropout(dropout))
        self.register_buffer("pos", sinusoid(max_clips, d), persistent=False)
        self.enc = _encoder(d, heads, layers, dropout)

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        n = video.shape[1]
        if n > self.pos.shape[0]:
            raise ValueError(f"{n} clips > max_clips={self.pos.shape[0]}; raise model.max_clips")
        x = self.proj(video) + self.pos[:n]
        return self.enc(x, src_key_padding_mask=~video_mask)


class CrossModal(nn.Module):
    """Cross-modal interaction: each clip attends over the words (multi-head cross-attention), the
    clip state, the attended query and their product are fused, gated by the sentence vector, and
    a transformer stack reasons over the fused, query-related sequence.

    RECONSTRUCTED: the abstract says only "cross-modal interaction"; this is the common
    co-attention + fusion + self-attention design of the group's IA-Net/CSMGAN line."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.fuse = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Dropout(dropout))
        self.gate = nn.Linear(d, d)
        self.enc = _encoder(d, heads, layers, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, v, video_mask, w, word_mask, sent):
        a, _ = self.attn(v, w, w, key_padding_mask=~word_mask, need_weights=False)
        h = self.fuse(torch.cat([v, a, v * a], dim=-1)) * torch.sigmoid(self.gate(sent)).unsqueeze(1)
        return self.norm(self.enc(h, src_key_padding_mask=~video_mask))


class GroundingHead(nn.Module):
    """Shared boundary head: per clip a start logit, an end logit and an inside (foreground) logit.

    RECONSTRUCTED: the abstract says "shared grounding head" without its type; a proposal-free
    start/end (+ inside) head keeps the transform bookkeeping exact (labels are clip positions)."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(d, d, 3, padding=1), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(d, 3)

    def forward(self, h: torch.Tensor, video_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv(h.transpose(1, 2)).transpose(1, 2) + h
        o = self.out(x).float()
        neg = torch.finfo(o.dtype).min / 4
        start = o[..., 0].masked_fill(~video_mask, neg)
        end = o[..., 1].masked_fill(~video_mask, neg)
        return {"start": start, "end": end, "inside": o[..., 2]}


class ECRLNet(nn.Module):
    """Encoders + interaction + head. ``forward`` returns the head's logits and ``hidden``, the
    query-related frame-wise sequence [B, N, d] that SSCL compares between the two videos."""

    def __init__(self, *, vocab_size: int, word_dim: int, feat_dim: int, d: int = 256, heads: int = 4,
                 query_layers: int = 1, video_layers: int = 1, fusion_layers: int = 1, dropout: float = 0.1,
                 max_clips: int = 512, embeddings=None, freeze_words: bool = True):
        super().__init__()
        self.query = QueryEncoder(vocab_size, word_dim, d, heads, query_layers, dropout, embeddings, freeze_words)
        self.video = VideoEncoder(feat_dim, d, heads, video_layers, dropout, max_clips)
        self.cross = CrossModal(d, heads, fusion_layers, dropout)
        self.head = GroundingHead(d, dropout)

    def forward(self, video, video_mask, words, word_mask) -> dict[str, torch.Tensor]:
        w, sent = self.query(words, word_mask)
        v = self.video(video, video_mask)
        h = self.cross(v, video_mask, w, word_mask, sent)
        out = self.head(h, video_mask)
        out["hidden"] = h
        return out


# --------------------------------------------------------------------------- decoding

def span_scores(start_logits: torch.Tensor, end_logits: torch.Tensor, inside_logits: torch.Tensor | None = None,
                max_len: int | None = None, inside_weight: float = 0.0) -> torch.Tensor:
    """Log-score of every span (i, j), i <= j (< i + max_len): log p_s(i) + log p_e(j)
    (+ inside_weight * mean log sigmoid(inside) over the span). Invalid spans are -inf. [B, N, N]"""
    ls = F.log_softmax(start_logits.float(), -1)
    le = F.log_softmax(end_logits.float(), -1)
    sc = ls.unsqueeze(2) + le.unsqueeze(1)
    n = sc.shape[-1]
    idx = torch.arange(n, device=sc.device)
    valid = idx[None, :] >= idx[:, None]
    if max_len is not None:
        valid &= (idx[None, :] - idx[:, None]) < max_len
    if inside_logits is not None and inside_weight > 0:
        lp = F.logsigmoid(inside_logits.float())
        cs = torch.cat([lp.new_zeros(lp.shape[0], 1), lp.cumsum(-1)], -1)
        length = (idx[None, :] - idx[:, None] + 1).clamp_min(1).to(lp.dtype)
        mean_in = (cs[:, None, 1:] - cs[:, :-1, None]) / length
        sc = sc + inside_weight * mean_in
    return sc.masked_fill(~valid, float("-inf"))


def decode(out: dict[str, torch.Tensor], video_mask: torch.Tensor, k: int = 5, nms: float = 0.5,
           max_len_frac: float = 1.0, inside_weight: float = 1.0, pool: int = 100) -> list[np.ndarray]:
    """Top-k spans per query as fractions of the video's valid clips, [k, 2] in [0, 1].
    Clip i covers [i/n, (i+1)/n] of the n valid clips, so span (i, j) -> [i/n, (j+1)/n]."""
    n_valid = video_mask.sum(-1)
    n = video_mask.shape[1]
    max_len = max(1, int(math.ceil(max_len_frac * n)))
    sc = span_scores(out["start"].detach(), out["end"].detach(), out["inside"].detach(), max_len, inside_weight)
    b = sc.shape[0]
    flat = sc.reshape(b, -1)
    top = torch.topk(flat, min(pool, flat.shape[1]), dim=-1)
    vals = top.values.cpu().numpy()
    idx = top.indices.cpu().numpy()
    nv = n_valid.cpu().numpy().astype(np.float64)[:, None]
    spans = np.stack([(idx // n) / nv, (idx % n + 1) / nv], -1).clip(0.0, 1.0)  # ranked [B, pool, 2]
    kept, valid = nms_topk(spans, np.isfinite(vals), nms, keep=k)  # the workspace evaluator's greedy NMS
    return [kept[q][valid[q]] for q in range(b)]


# --------------------------------------------------------------------------- the full training module

class ECRL(nn.Module):
    """The grounding network plus (optionally) the self-refine module, with the whole ECRL
    objective in ``forward`` so that one DDP forward covers both videos:

        L = L_ground(original) + w_aug * L_ground(augmented, transformed labels)
            + w_sscl * SSCL(original, augmented) + w_refine * L_refine

    ``aug`` is ``None`` for the plain grounding model (the "without augmentation + SSCL" ablation)."""

    def __init__(self, net: ECRLNet, refine: nn.Module | None = None):
        super().__init__()
        self.net = net
        self.refine = refine

    def forward(self, batch: dict, aug: dict | None = None, *, weights: dict, label_sigma: float = 1.0,
                sscl_sigma: float = 0.05, sscl_kappa: float = 0.1, sscl_foreground_only: bool = False,
                refine_p_drop: float = 0.15, refine_smooth: float = 0.1,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        from ecrl.losses import grounding_loss, sscl_loss
        from ecrl.refine import refine_loss

        vm, wm = batch["video_mask"], batch["word_mask"]
        out = self.net(batch["video"], vm, batch["words"], wm)
        parts = {"ground": grounding_loss(out, batch["start"], batch["end"], vm, label_sigma, weights["inside"])}
        if aug is not None:
            xa = aug["video"]
            if self.refine is not None:
                xa = self.refine(xa, vm, aug["splice"], aug["dropped"])
                parts["refine"] = refine_loss(self.refine, batch["video"], xa, vm, vm, aug["splice"],
                                              refine_p_drop, refine_smooth, generator)
            out_a = self.net(xa, vm, batch["words"], wm)
            parts["ground_aug"] = grounding_loss(out_a, aug["start"], aug["end"], vm, label_sigma, weights["inside"])
            if weights["sscl"] > 0:
                rows = aug["fg_rows"] if sscl_foreground_only else None
                parts["sscl"] = sscl_loss(out["hidden"], vm, out_a["hidden"], aug["tau"], sscl_sigma, sscl_kappa, rows)
        total = parts["ground"]
        for k, wk in (("ground_aug", "aug"), ("sscl", "sscl"), ("refine", "refine")):
            if k in parts:
                total = total + weights[wk] * parts[k]
        parts["loss"] = total
        return parts
