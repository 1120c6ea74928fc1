"""The whole SSRN objective, weights included (``Objective``):

    L = L_gt(anchor) + w_siamese x mean_s L_gt(siamese s) + alpha x [KL(Q_start || P_start) + KL(Q_end || P_end)]

* ``L_gt`` (:func:`grounding_loss`) of one sequence, on its own grid (``ssrn/sampling.py``):
  cross-entropy of the start and end distributions against the sequence's start / end clip
  (one-hot, or a Gaussian of ``label_sigma`` clips), plus ``w_inside`` x the BCE of the inside
  logits on the sequence's inside clips.
* ``Q`` (``ssrn/reasoning.py``): the anchor's soft boundary labels, ``omega x`` the siamese
  distributions propagated onto the anchor grid ``+ (1 - omega) x`` the anchor's own, detached.
  ``alpha = 1``, ``omega = 0.5`` as in SiaSamRea (Sec. 3.3).

``ssrn.siamese = 0`` gives exactly ``L_gt(anchor)``; ``ssrn.reasoning = false`` (or ``alpha = 0``)
gives exactly the GT losses of the anchor and the siamese sequences (siamese = extra samples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.tsg.grid import gaussian_targets
from ssrn.reasoning import boundary_soft_labels


def boundary_ce(logits: torch.Tensor, target: torch.Tensor, video_mask: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
    """Mean over the batch of the cross-entropy of ``softmax(logits) [B, N]`` against the clip
    ``target [B]`` (one-hot at ``sigma = 0``, else a Gaussian of ``sigma`` clips; ``common.tsg.grid``)."""
    t = gaussian_targets(target.float(), video_mask, sigma)
    return -(t * F.log_softmax(logits.float(), -1)).sum(-1).mean()


def kl_to(q: torch.Tensor, logits: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``KL(q || softmax(logits))`` over the valid clips; ``q`` is a target
    (no gradient flows into it)."""
    q = q.detach().float() * video_mask
    logp = F.log_softmax(logits.float(), -1)
    return torch.where(q > 0, q * (torch.log(q.clamp_min(1e-30)) - logp), torch.zeros_like(q)).sum(-1).mean()


def grounding_loss(out: dict, batch: dict, m: int, sigma: float = 0.0, w_inside: float = 1.0) -> torch.Tensor:
    """``L_gt`` of sequence ``m`` (0 = anchor) against its own labels (module doc)."""
    vm = batch["video_mask"][:, m]
    ls = boundary_ce(out["start"][:, m], batch["label_start"][:, m], vm, sigma)
    le = boundary_ce(out["end"][:, m], batch["label_end"][:, m], vm, sigma)
    bce = F.binary_cross_entropy_with_logits(out["inside"][:, m].float(), batch["inside"][:, m].float(),
                                             reduction="none")
    return ls + le + w_inside * (bce * vm).sum() / vm.sum().clamp_min(1)


class Objective(nn.Module):
    """The SSRN objective (module doc). ``forward(out, batch)`` takes ``SSRN.forward``'s outputs and
    the batch and returns ``{"loss", "ground", "ground_siamese", "reason"}`` (the terms that apply)."""

    def __init__(self, ssrn_cfg):
        super().__init__()
        s = ssrn_cfg
        self.sigma, self.w_inside, self.w_siamese = float(s.label_sigma), float(s.w_inside), float(s.w_siamese)
        self.reasoning, self.alpha, self.omega = bool(s.reasoning), float(s.alpha), float(s.omega)
        self.tau, self.window = float(s.tau), float(s.window)

    def forward(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        m = out["start"].shape[1]
        parts = {"ground": grounding_loss(out, batch, 0, self.sigma, self.w_inside)}
        total = parts["ground"]
        if m > 1:
            parts["ground_siamese"] = torch.stack([grounding_loss(out, batch, s, self.sigma, self.w_inside)
                                                   for s in range(1, m)]).mean()
            total = total + self.w_siamese * parts["ground_siamese"]
            if self.reasoning and self.alpha > 0:
                vm = batch["video_mask"][:, 0]
                parts["reason"] = sum(kl_to(boundary_soft_labels(out, batch, k, self.tau, self.window, self.omega),
                                            out[k][:, 0], vm) for k in ("start", "end"))
                total = total + self.alpha * parts["reason"]
        parts["loss"] = total
        return parts
