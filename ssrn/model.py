"""The SSRN network: one shared backbone run, in one batched forward, over the anchor and the
siamese sequences of each video (the abstract's siamese sampling feeds one reasoning network).

    words -> frozen GloVe -> Linear -> BiGRU (or a transformer layer)        word states, sentence
    clips -> LayerNorm -> Linear -> + sinusoid(clip time) -> transformer    clip states
    frame-query co-attention (VSLNet's context-query attention) -> fusion transformer layers
    [ssrn.fuse_siamese: anchor frames cross-attend to the siamese frames]
    boundary head: start / end / inside logits per clip

Shapes: B videos, M = 1 + S sequences (index 0 = the anchor), N clips, L words, D clip features,
d model width. ``decode`` turns the anchor's logits into ranked moments on the anchor's own grid
(``ssrn/sampling.py``: a clip span decodes to its cells' edges).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from common.tsg.decode import decode_boundaries
from common.tsg.heads import BoundaryHead
from ssrn.sampling import cell_edges


def sinusoid(pos: torch.Tensor, d: int) -> torch.Tensor:
    """Sinusoidal encoding of continuous positions ``pos [...]`` -> ``[..., d]`` (Transformer's table,
    evaluated at fractional positions so the siamese clips sit between the anchor clips)."""
    i = torch.arange(0, d, 2, device=pos.device, dtype=torch.float32)
    ang = pos.float()[..., None] / torch.pow(10000.0, i / d)
    pe = torch.zeros(*pos.shape, d, device=pos.device)
    pe[..., 0::2] = torch.sin(ang)
    pe[..., 1::2] = torch.cos(ang[..., : d // 2])
    return pe


def _encoder(d: int, heads: int, layers: int, dropout: float) -> nn.Module:
    if layers == 0:
        return None
    layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout, batch_first=True,
                                       norm_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class QueryEncoder(nn.Module):
    """Frozen GloVe vectors -> Linear -> BiGRU (the Liu group's code) or transformer layers ->
    LayerNorm: word states ``[B, L, d]`` and the masked mean ``[B, d]``."""

    # RECONSTRUCTED: the abstract names no query encoder; the group's released code (IA-Net) runs a
    # BiGRU over GloVe 840B vectors.
    def __init__(self, vocab_size: int, word_dim: int, d: int, kind: str = "bigru", layers: int = 1, heads: int = 4,
                 dropout: float = 0.1, embeddings=None, freeze: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        if embeddings is not None:
            emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
            if tuple(emb.shape) != (vocab_size, word_dim):
                raise ValueError(f"embeddings have shape {tuple(emb.shape)}, expected {(vocab_size, word_dim)}")
            self.embed.weight.data.copy_(emb)
        self.embed.weight.requires_grad_(not freeze)
        self.proj = nn.Linear(word_dim, d)
        self.kind = kind
        if kind == "bigru":
            self.rnn = nn.GRU(d, d // 2, layers, batch_first=True, bidirectional=True,
                              dropout=dropout if layers > 1 else 0.0)
        elif kind == "transformer":
            self.rnn = _encoder(d, heads, layers, dropout)
        else:
            raise ValueError(f"query encoder must be 'bigru' or 'transformer', got {kind!r}")
        self.norm = nn.LayerNorm(d)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proj(self.embed(words))
        if self.kind == "bigru":
            lengths = word_mask.sum(-1).clamp_min(1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=words.shape[1])
        else:
            x = self.rnn(x + sinusoid(torch.arange(words.shape[1], device=words.device), x.shape[-1]),
                         src_key_padding_mask=~word_mask)
        x = self.norm(x)
        m = word_mask.unsqueeze(-1).to(x.dtype)
        return x, (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class VideoEncoder(nn.Module):
    """Clip features -> LayerNorm -> Linear + sinusoid(clip time x N) -> transformer layers."""

    def __init__(self, feat_dim: int, d: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(feat_dim), nn.Linear(feat_dim, d), nn.Dropout(dropout))
        self.enc = _encoder(d, heads, layers, dropout)

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        x = self.proj(video) + sinusoid(times * video.shape[1], self.proj[1].out_features)
        return x if self.enc is None else self.enc(x, src_key_padding_mask=~video_mask)


# RECONSTRUCTED: the abstract speaks of "frame-query reasoning" only; this is VSLNet's context-query
# attention (Zhang et al., ACL 2020, Sec. 3.2), the co-attention most TSG baselines of the period use.
class CoAttention(nn.Module):
    """Frame-query co-attention: trilinear similarity ``S = w_v.v_i + w_q.q_j + w_m.(v_i * q_j)``,
    ``A = softmax_j(S) q`` (clip-to-word), ``B = softmax_j(S) softmax_i(S)^T v`` (word-to-clip,
    mapped back), fused as ``Linear([v; A; v*A; v*B])``."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.w_v = nn.Linear(d, 1, bias=False)
        self.w_q = nn.Linear(d, 1, bias=False)
        self.w_m = nn.Parameter(torch.empty(d).uniform_(-1 / math.sqrt(d), 1 / math.sqrt(d)))
        self.out = nn.Sequential(nn.Linear(4 * d, d), nn.GELU(), nn.Dropout(dropout))

    def forward(self, v, video_mask, q, word_mask):
        s = self.w_v(v) + self.w_q(q).transpose(1, 2) + torch.einsum("bnd,bld->bnl", v * self.w_m, q)  # [B, N, L]
        neg = torch.finfo(s.dtype).min
        s1 = torch.softmax(s.masked_fill(~word_mask[:, None, :], neg), -1)
        s2 = torch.softmax(s.masked_fill(~video_mask[:, :, None], neg), 1)
        a = s1 @ q
        b = s1 @ (s2.transpose(1, 2) @ v)
        return self.out(torch.cat([v, a, v * a, v * b], -1))


# RECONSTRUCTED: the abstract's siamese sampling "supplements the absent consecutive visual semantics"
# (a sentence cut in the excerpt available); read here as anchor frames attending to siamese frames.
class SiameseFusion(nn.Module):
    """Anchor frames cross-attend to every frame of the siamese sequences (pre-norm, residual)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)

    def forward(self, h_anchor, siamese, siamese_mask):
        a, _ = self.attn(self.norm(h_anchor), siamese, siamese, key_padding_mask=~siamese_mask, need_weights=False)
        return h_anchor + self.drop(a)


class SSRN(nn.Module):
    """The shared backbone over ``M`` sequences per video (module doc). ``forward`` takes
    ``video [B, M, N, D]``, ``video_mask [B, M, N]``, ``times [B, M, N]``, ``words [B, L]``,
    ``word_mask [B, L]`` and returns ``start``, ``end``, ``inside`` ``[B, M, N]`` and ``hidden``
    ``[B, M, N, d]`` (the fused frame-query features the reasoning compares; before the siamese
    fusion). Without ``fuse_siamese`` the anchor's outputs do not depend on the siamese inputs."""

    def __init__(self, *, vocab_size: int, word_dim: int, feat_dim: int, d: int = 256, heads: int = 4,
                 query_encoder: str = "bigru", query_layers: int = 1, video_layers: int = 1, fusion_layers: int = 1,
                 dropout: float = 0.1, embeddings=None, freeze_words: bool = True, fuse_siamese: bool = False):
        super().__init__()
        self.query = QueryEncoder(vocab_size, word_dim, d, query_encoder, query_layers, heads, dropout, embeddings,
                                  freeze_words)
        self.video = VideoEncoder(feat_dim, d, heads, video_layers, dropout)
        self.coattn = CoAttention(d, dropout)
        self.fusion = _encoder(d, heads, fusion_layers, dropout)
        self.norm = nn.LayerNorm(d)
        self.siamese_fusion = SiameseFusion(d, heads, dropout) if fuse_siamese else None
        # RECONSTRUCTED: the abstract's soft boundary labels imply a start/end boundary-probability head
        # (proposal-free); an inside (foreground) logit is added as in VSLNet's highlighting.
        self.head = BoundaryHead(d, dropout)

    def forward(self, video, video_mask, times, words, word_mask) -> dict[str, torch.Tensor]:
        b, m, n, _ = video.shape
        w, _ = self.query(words, word_mask)                                  # once per query
        w = w.repeat_interleave(m, 0)
        wm = word_mask.repeat_interleave(m, 0)
        vm = video_mask.reshape(b * m, n)
        v = self.video(video.reshape(b * m, n, -1), vm, times.reshape(b * m, n))
        h = self.coattn(v, vm, w, wm)
        if self.fusion is not None:
            h = self.fusion(h, src_key_padding_mask=~vm)
        h = self.norm(h).reshape(b, m, n, -1)
        hidden = h
        if self.siamese_fusion is not None and m > 1:
            anchor = self.siamese_fusion(h[:, 0], h[:, 1:].reshape(b, (m - 1) * n, -1),
                                         video_mask[:, 1:].reshape(b, (m - 1) * n))
            h = torch.cat([anchor[:, None], h[:, 1:]], 1)
        out = self.head(h.reshape(b * m, n, -1), vm)
        out = {k: x.reshape(b, m, n) for k, x in out.items()}
        out["hidden"] = hidden
        return out


def build_model(cfg, vocab_size: int, feat_dim: int, embeddings=None) -> SSRN:
    m = cfg.model
    return SSRN(vocab_size=vocab_size, word_dim=m.word_dim, feat_dim=feat_dim, d=m.d, heads=m.heads,
                query_encoder=m.query_encoder, query_layers=m.query_layers, video_layers=m.video_layers,
                fusion_layers=m.fusion_layers, dropout=m.dropout, embeddings=embeddings,
                freeze_words=m.freeze_words, fuse_siamese=cfg.ssrn.fuse_siamese)


# --------------------------------------------------------------------------- decoding

def decode(out: dict[str, torch.Tensor], video_mask: torch.Tensor, times: torch.Tensor, k: int = 5,
           nms: float = 0.5, max_len_frac: float = 1.0, inside_weight: float = 1.0) -> list[np.ndarray]:
    """The anchor's (sequence 0) top-k moments, fractions of the video: every clip span ``(i, j)``
    scores ``log p_s(i) + log p_e(j) + inside_weight x mean log sigmoid(inside)`` and decodes to
    ``[lo_i, hi_j]``, the clips' cells on the anchor's sampled grid (``ssrn.sampling.cell_edges``);
    greedy NMS keeps ``k`` (``common.tsg.decode.decode_boundaries`` with ``edges``)."""
    return decode_boundaries(out["start"][:, 0], out["end"][:, 0], video_mask[:, 0],
                             inside_logits=out["inside"][:, 0], inside_weight=inside_weight, k=k, nms=nms,
                             max_len_frac=max_len_frac, edges=cell_edges(times[:, 0], video_mask[:, 0]))
