"""The cross-modal interaction module (MGSL-Net abstract: "a cross-modal graph convolution
network"), and its ablation.

# RECONSTRUCTED: only the module's name is known. One graph over the T clips and the L words of a
# pair; the adjacency is the masked softmax of projected dot products, recomputed in every layer;
# a layer is the residual graph convolution X <- LayerNorm(X + ReLU(A X W_g)) (IA-Net, the group's
# released code, has 2 GCN layers). ``interaction: coattention`` is the ablation: the very same
# layers (same parameters) with the intra-modal edges removed, so a clip only reads words and a
# word only reads clips (cross-attention of equal width).

Shapes: B batch, T clips, L words, d width.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def edge_mask(video_mask: torch.Tensor, word_mask: torch.Tensor, cross_only: bool = False) -> torch.Tensor:
    """Allowed edges of the joint graph [B, T+L, T+L]: between valid nodes; with ``cross_only``
    only between a clip and a word (the co-attention ablation)."""
    nodes = torch.cat([video_mask, word_mask], 1)
    allowed = nodes[:, :, None] & nodes[:, None, :]
    if cross_only:
        t = video_mask.shape[1]
        is_video = torch.zeros(nodes.shape[1], dtype=torch.bool, device=nodes.device)
        is_video[:t] = True
        allowed = allowed & (is_video[:, None] != is_video[None, :])[None]
    return allowed


class GraphLayer(nn.Module):
    """One graph convolution over the joint clip-word graph: A = softmax_masked(X W_q (X W_k)^T / sqrt(d)),
    X <- LayerNorm(X + Dropout(ReLU(A X W_g)))."""

    def __init__(self, d: int, dropout: float = 0.0):
        super().__init__()
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wg = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(d)

    def adjacency(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        logits = self.wq(x) @ self.wk(x).transpose(1, 2) / math.sqrt(x.shape[-1])
        logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min)
        a = torch.softmax(logits, -1)
        return a * allowed.any(-1, keepdim=True)  # padding rows read nothing

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.adjacency(x, allowed)
        return self.norm(x + self.drop(torch.relu(self.wg(a @ x)))), a


class CrossModalGCN(nn.Module):
    """``layers`` graph layers over [clips; words]; returns the aligned clips [B, T, d], the aligned
    words [B, L, d] and the last layer's adjacency [B, T+L, T+L] (for the figures)."""

    def __init__(self, d: int, layers: int = 2, dropout: float = 0.0, cross_only: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(GraphLayer(d, dropout) for _ in range(layers))
        self.cross_only = cross_only

    def forward(self, v: torch.Tensor, video_mask: torch.Tensor, q: torch.Tensor, word_mask: torch.Tensor):
        t = v.shape[1]
        allowed = edge_mask(video_mask, word_mask, self.cross_only)
        x = torch.cat([v, q], 1)
        a = None
        for layer in self.layers:
            x, a = layer(x, allowed)
        return x[:, :t], x[:, t:], a
