"""Self-refine module: restores completeness and smoothness of an augmented video.

Splicing leaves discontinuities (splice points) and clip dropout leaves holes. The module is a
gated residual temporal network in a bottleneck of the clip-feature space that sees, besides
the features, two indicator channels (splice point, dropped clip):

    x_refined = x + sigmoid(g) * delta,   [delta, g] = Conv1d-stack([Linear(x), splice, dropped])

Its objective (``ecrl/losses.py``: ``refine_loss``, trained jointly with the grounding):
* completeness: on the *original* video (whose clean features are known) clips are dropped at
  random and the module must inpaint them: MSE on the dropped clips (+ a small identity term on
  the kept ones so clean clips pass through);
* smoothness: on the augmented video, the squared step ||x_{j+1} - x_j||^2 across splice points,
  relative to the feature scale.

The abstract says only that a self-refine module "improves completeness and smoothness" of the
augmented video.
"""

from __future__ import annotations

import torch
from torch import nn


# RECONSTRUCTED: the architecture (gated residual 1-D convolutions in a bottleneck, with splice and
# dropped-clip indicator channels) is this reconstruction's choice.
class SelfRefine(nn.Module):
    def __init__(self, feat_dim: int, hidden: int = 128, kernel: int = 5, layers: int = 2):
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(feat_dim), nn.Linear(feat_dim, hidden))
        convs = []
        ch = hidden + 2
        for _ in range(layers):
            convs += [nn.Conv1d(ch, hidden, kernel, padding=kernel // 2), nn.GELU()]
            ch = hidden
        self.convs = nn.Sequential(*convs)
        self.delta = nn.Linear(hidden, feat_dim)
        self.gate = nn.Linear(hidden, feat_dim)
        nn.init.constant_(self.gate.bias, -2.0)  # start close to the identity

    def forward(self, x: torch.Tensor, video_mask: torch.Tensor, splice: torch.Tensor,
                dropped: torch.Tensor) -> torch.Tensor:
        m = video_mask.unsqueeze(-1).to(x.dtype)
        h = self.inp(x) * m
        ind = torch.stack([splice.to(x.dtype), dropped.to(x.dtype)], -1) * m
        h = self.convs(torch.cat([h, ind], -1).transpose(1, 2)).transpose(1, 2)
        return (x + torch.sigmoid(self.gate(h)) * self.delta(h)) * m


__all__ = ["SelfRefine"]
