"""Grounding heads shared by TSG projects.

:class:`BoundaryHead` is the proposal-free start / end / inside head of ECRL and SSRN (VSLNet-style
boundary distributions plus a foreground logit); its logits go to
:func:`common.tsg.decode.decode_boundaries`. The projects say why they use it (their
``# RECONSTRUCTED:`` notes at the call site).
"""

from __future__ import annotations

import torch
from torch import nn


class BoundaryHead(nn.Module):
    """Per clip a start, an end and an inside logit from clip states ``h [B, N, d]``: a width-3
    convolution (GELU, dropout) with a residual, then ``Linear(d, 3)``. Logits are float32; padding
    clips (``video_mask`` False) get start / end ``finfo.min / 4`` (finite, so a log-softmax over
    them stays finite); ``inside`` is left as it is on padding (losses mask it).

    Parameters: ``d*d*3 + d`` (conv) ``+ 3*d + 3`` (linear); keys ``conv.0.*`` and ``out.*``."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(d, d, 3, padding=1), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(d, 3)

    def forward(self, h: torch.Tensor, video_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.conv(h.transpose(1, 2)).transpose(1, 2) + h
        o = self.out(x).float()
        neg = torch.finfo(o.dtype).min / 4
        return {"start": o[..., 0].masked_fill(~video_mask, neg), "end": o[..., 1].masked_fill(~video_mask, neg),
                "inside": o[..., 2]}


__all__ = ["BoundaryHead"]
