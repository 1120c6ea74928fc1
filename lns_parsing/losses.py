"""The whole objective: MONAI DiceCE (nnU-Net's Dice + CE) plus, for the key-organ search, the
gate sparsity term lambda * mean_k sigmoid(a_k)."""

from __future__ import annotations

import torch
from torch import nn


class Objective(nn.Module):
    """L = DiceCE(logits, y) + lam * mean(gates)   (gates only in the search stage).

    RECONSTRUCTED: Dice over foreground classes, batch Dice, CE weight 1 (nnU-Net's defaults);
    lambda from the config (``search.lam``)."""

    def __init__(self, lam: float = 0.0):
        super().__init__()
        from monai.losses import DiceCELoss

        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
        self.lam = float(lam)

    def forward(self, out: dict, label: torch.Tensor) -> dict[str, torch.Tensor]:
        seg = self.dice_ce(out["logits"], label.unsqueeze(1))
        parts = {"dice_ce": seg}
        loss = seg
        if "gates" in out and self.lam > 0:
            parts["gate_l1"] = out["gates"].mean()
            loss = loss + self.lam * parts["gate_l1"]
        parts["loss"] = loss
        return parts
