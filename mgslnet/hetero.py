"""The heterogeneous attention module (MGSL-Net abstract: "a heterogeneous attention module to
integrate the enhanced multi-modal features in both video and query domains").

# RECONSTRUCTED: only the module's purpose is known. Co-attention both ways between the enhanced
# clips V~ [B, T, d] and words Q~ [B, L, d] (the context-query attention of QANet/VSLNet):
#     S = (V~ W_v)(Q~ W_q)^T / sqrt(d),  A = softmax over words (clip -> word),  B = softmax over clips (word -> clip)
#     q_att = A Q~ (each clip's own reading of the query),  v_att = A B^T V~ (clips -> words -> clips)
# fused per clip as Linear([v~; q_att; v~ * q_att; v~ * v_att]) -> ReLU, then self-attention layers.
# ``hetero: false`` (the ablation) fuses Linear([v~; q_mean]) with the mean word instead: every clip
# sees the same query vector; the self-attention layers are kept.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x [B, N, d] over the valid rows of mask [B, N] -> [B, d]."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def encoder(d: int, heads: int, layers: int, dropout: float) -> nn.Module:
    """``layers`` pre-norm transformer encoder layers (identity when 0)."""
    if layers == 0:
        return nn.Identity()
    layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout, batch_first=True,
                                       norm_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class HeteroAttention(nn.Module):
    """Co-attention fusion of the two domains (module doc); returns the fused clips [B, T, d], and
    for the figures and tests ``q_att`` [B, T, d] and ``coatt`` (A) [B, T, L]."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float, enabled: bool = True):
        super().__init__()
        self.enabled = enabled
        if enabled:
            self.wv = nn.Linear(d, d, bias=False)
            self.wq = nn.Linear(d, d, bias=False)
        self.fuse = nn.Sequential(nn.Linear((4 if enabled else 2) * d, d), nn.ReLU(), nn.Dropout(dropout))
        self.enc = encoder(d, heads, layers, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, v: torch.Tensor, video_mask: torch.Tensor, q: torch.Tensor, word_mask: torch.Tensor):
        if self.enabled:
            s = self.wv(v) @ self.wq(q).transpose(1, 2) / math.sqrt(v.shape[-1])      # [B, T, L]
            neg = torch.finfo(s.dtype).min
            a = torch.softmax(s.masked_fill(~word_mask[:, None, :], neg), -1)         # clip -> word
            b = torch.softmax(s.masked_fill(~video_mask[:, :, None], neg), 1)          # word -> clip
            q_att = a @ q
            v_att = a @ (b.transpose(1, 2) @ v)
            x = torch.cat([v, q_att, v * q_att, v * v_att], -1)
        else:
            a = None
            q_att = masked_mean(q, word_mask).unsqueeze(1).expand_as(v)
            x = torch.cat([v, q_att], -1)
        h = self.fuse(x)
        if not isinstance(self.enc, nn.Identity):
            h = self.enc(h, src_key_padding_mask=~video_mask)
        h = self.norm(h).masked_fill(~video_mask.unsqueeze(-1), 0.0)
        return {"fused": h, "q_att": q_att, "coatt": a}
