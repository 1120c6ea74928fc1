"""Self-refine module: restores completeness and smoothness of an augmented video.

Splicing leaves discontinuities (splice points) and clip dropout leaves holes. The module is a
gated residual temporal network in a bottleneck of the clip-feature space that sees, besides
the features, two indicator channels (splice point, dropped clip):

    x_refined = x + sigmoid(g) * delta,   [delta, g] = Conv1d-stack([Linear(x), splice, dropped])

Objective (trained jointly, ``refine_loss``):
* completeness: on the *original* video (whose clean features are known) clips are dropped at
  random and the module must inpaint them: MSE on the dropped clips (+ a small identity term on
  the kept ones so clean clips pass through);
* smoothness: on the augmented video, the squared step ||x_{j+1} - x_j||^2 across splice points,
  relative to the feature scale.

RECONSTRUCTED: the abstract says only that a self-refine module "improves completeness and
smoothness" of the augmented video; the architecture and both loss terms are this
reconstruction's choice (research note tsg_supervised.md §4.2 item 2).
"""

from __future__ import annotations

import torch
from torch import nn


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


def inpaint_loss(refine: SelfRefine, video: torch.Tensor, video_mask: torch.Tensor, p_drop: float,
                 generator: torch.Generator | None = None, keep_weight: float = 0.1) -> torch.Tensor:
    """Completeness: drop clips of the clean video, inpaint them, MSE against the clean features."""
    drop = (torch.rand(video_mask.shape, generator=generator) < p_drop).to(video.device) & video_mask
    x = video.masked_fill(drop.unsqueeze(-1), 0.0)
    out = refine(x, video_mask, torch.zeros_like(drop), drop)
    err = (out.float() - video.float().detach()).pow(2).mean(-1)
    keep = video_mask & ~drop
    l_drop = (err * drop).sum() / drop.sum().clamp_min(1)
    l_keep = (err * keep).sum() / keep.sum().clamp_min(1)
    return l_drop + keep_weight * l_keep


def smoothness_loss(x: torch.Tensor, video_mask: torch.Tensor, splice: torch.Tensor) -> torch.Tensor:
    """Smoothness: mean squared step across splice points, divided by the mean squared step
    between ordinary neighbours of the same videos (scale-free; 0 without splice points)."""
    step = (x[:, 1:] - x[:, :-1]).float().pow(2).mean(-1)
    pair_valid = video_mask[:, 1:] & video_mask[:, :-1]
    at_splice = splice[:, 1:] & splice[:, :-1] & pair_valid
    ordinary = pair_valid & ~at_splice
    if not at_splice.any():
        return x.new_zeros(())
    scale = ((step * ordinary).sum() / ordinary.sum().clamp_min(1)).detach().clamp_min(1e-6)
    return (step * at_splice).sum() / at_splice.sum() / scale


def refine_loss(refine: SelfRefine, clean: torch.Tensor, refined_aug: torch.Tensor, video_mask: torch.Tensor,
                aug_mask: torch.Tensor, splice: torch.Tensor, p_drop: float = 0.15, smooth_weight: float = 0.1,
                generator: torch.Generator | None = None) -> torch.Tensor:
    return inpaint_loss(refine, clean, video_mask, p_drop, generator) + \
        smooth_weight * smoothness_loss(refined_aug, aug_mask, splice)


__all__ = ["SelfRefine", "inpaint_loss", "smoothness_loss", "refine_loss"]
