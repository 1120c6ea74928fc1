"""The memory augmentation module (MGSL-Net abstract: "domain-specific persistent memory to record
the cross-modal shared semantic features"; "the memory slots are dynamically associated with both
common and rare cases", and at test time "the rare cases are enhanced by retrieving from the
stored memories").

# RECONSTRUCTED: the read, the gate and the slot count. Each domain (video, query) owns K learnable
# slots M [K, d]: persistent parameters updated by gradient over the whole training set, so what a
# rare case wrote survives across batches. A node h reads
#     a = softmax(cos(h, M) / tau),  r = a M,  h~ = h + sigmoid(W [h; r]) * r.
# What makes the memory "cross-modal shared semantics" is the alignment objective in
# mgslnet/losses.py (align_loss): the video memory's read for a moment's clips must identify the
# pair's query, the query memory's read the pair's moment.

A buffer ``usage`` keeps an EMA of each slot's read mass over training (a diagnostic: dead slots,
figures); it is in the state dict, so a resume restores it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Memory(nn.Module):
    """K persistent slots of width d, read by cosine attention and added through a gate."""

    def __init__(self, d: int, slots: int = 128, tau: float = 0.1, usage_momentum: float = 0.99):
        super().__init__()
        # RECONSTRUCTED: small slots (std 0.02): the read r = a M starts near 0, so the memory starts
        # near the identity and grows its slots where the losses need them (the cosine read ignores
        # the scale). Unit-variance slots (r as large as h) trained worse on the tiny test set.
        self.slots = nn.Parameter(0.02 * torch.randn(slots, d))
        self.gate = nn.Linear(2 * d, d)
        self.tau = float(tau)
        self.momentum = float(usage_momentum)
        self.register_buffer("usage", torch.full((slots,), 1.0 / slots))

    def read(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Read attention a [..., K] and read vector r = a M [..., d] for nodes h [..., d]."""
        cos = F.normalize(h.float(), dim=-1) @ F.normalize(self.slots.float(), dim=-1).T
        a = torch.softmax(cos / self.tau, -1)
        return a, (a @ self.slots.float()).to(h.dtype)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``h`` [B, N, d], ``mask`` [B, N] (valid nodes). Returns ``out`` (the enhanced nodes
        h + gate * r; padding rows unchanged), ``read`` (r), ``attn`` (a)."""
        a, r = self.read(h)
        g = torch.sigmoid(self.gate(torch.cat([h, r], -1)))
        out = torch.where(mask.unsqueeze(-1), h + g * r, h)
        if self.training:
            with torch.no_grad():
                m = mask.unsqueeze(-1).to(a.dtype)
                mass = (a * m).sum((0, 1)) / m.sum().clamp_min(1.0)
                self.usage.mul_(self.momentum).add_((1.0 - self.momentum) * mass.to(self.usage.dtype))
        return {"out": out, "read": r, "attn": a}


class NoMemory(nn.Module):
    """``mgsl.memory`` without this domain: the identity (no read, no parameters)."""

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": h}
