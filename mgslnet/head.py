"""The regression grounding head (MGSL-Net figure-2 caption: "regression based grounding heads").
Its decoder is ``common.tsg.decode.decode_regression`` (spans: ``common.tsg.decode.clip_spans``).

# RECONSTRUCTED: the head's form. Proposal-free and DRN-style: every clip t (centre c_t, a fraction
# of the video) regresses its distances to the moment's start and end, (l_t, r_t), and a confidence
# logit. Its span is [c_t - l_t, c_t + r_t]; at test time every valid clip's span, ranked by
# sigmoid(confidence), goes through greedy NMS and the first k survivors are the top-k moments
# (R@5 needs several scored candidates). Distances are in fractions of the video, unconstrained
# in sign (a clip whose centre lies just outside a short moment still regresses it).
"""

from __future__ import annotations

import torch
from torch import nn


class RegressionHead(nn.Module):
    """Per clip: a confidence logit [B, T] and distances to start and end [B, T, 2] (fractions)."""

    def __init__(self, d: int, dropout: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout))
        self.conf = nn.Linear(d, 1)
        self.dist = nn.Linear(d, 2)

    def forward(self, h: torch.Tensor, video_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.mlp(h)
        conf = self.conf(x).squeeze(-1).float().masked_fill(~video_mask, -1e4)
        return {"conf": conf, "dist": self.dist(x).float()}
