"""The whole MGSL-Net objective, weights included (``Objective``):

    L = w_reg L_reg + w_iou L_iou + w_conf L_conf + w_align L_align

* the regression head's losses on the moment's clips (``moment_clips``: every clip the moment
  overlaps, ``common.tsg.grid.moment_to_clips``): smooth-L1 of the distances to start and end
  (``reg_beta``, fractions of the video) and 1 - IoU of the clip's regressed span; BCE of every
  valid clip's confidence against "the clip lies in the moment";
* ``align_loss``, the memory's cross-modal alignment ("cross-modal shared semantic features"):
  the video memory's read r_t of each clip of pair i's moment must pick pair i's query feature
  q̄_i (the masked mean of the aligned words) out of the batch's query features, and the query
  memory's read r̄_i (mean over the words) must pick pair i's moment feature v̄_i (the mean of the
  aligned clips of the moment):

      L_align = CE_i(cos(r_t, q̄_j) / align_tau) + CE_i(cos(r̄_i, v̄_j) / align_tau)

  The targets are detached: the memory learns to return the other domain's semantics.

# RECONSTRUCTED: the loss forms and every weight (the abstract gives no objective); the in-batch
# contrast keeps the alignment from collapsing every read onto one vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.tsg.grid import clip_centres, moment_to_clips
from mgslnet.hetero import masked_mean


def moment_clips(start: torch.Tensor, end: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """The clips each moment overlaps [B, T] (at least one; ``common.tsg.grid`` conventions)."""
    first, last = moment_to_clips(start, end, video_mask.sum(-1))
    dev = video_mask.device
    idx = torch.arange(video_mask.shape[1], device=dev)
    first, last = torch.as_tensor(first, device=dev), torch.as_tensor(last, device=dev)
    return (idx[None] >= first[:, None]) & (idx[None] <= last[:, None]) & video_mask


def span_iou(ps: torch.Tensor, pe: torch.Tensor, s: torch.Tensor, e: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Elementwise temporal IoU of spans [ps, pe] and [s, e] (broadcasting; hull clamped at ``eps``)."""
    inter = (torch.minimum(pe, e) - torch.maximum(ps, s)).clamp_min(0.0)
    return inter / (torch.maximum(pe, e) - torch.minimum(ps, s)).clamp_min(eps)


def regression_losses(dist: torch.Tensor, start: torch.Tensor, end: torch.Tensor, video_mask: torch.Tensor,
                      inside: torch.Tensor, beta: float = 0.02) -> tuple[torch.Tensor, torch.Tensor]:
    """(smooth-L1 of the distances, 1 - IoU of the regressed spans), each averaged over the
    moment's clips of each pair, then over pairs."""
    c = clip_centres(video_mask).nan_to_num(0.0)
    s, e = start.float()[:, None], end.float()[:, None]
    target = torch.stack([c - s, e - c], -1)
    w = inside.float() / inside.sum(1, keepdim=True).clamp_min(1).float()       # each pair weighs 1
    l1 = F.smooth_l1_loss(dist.float(), target, beta=beta, reduction="none").sum(-1)
    ps, pe = c - dist[..., 0].float(), c + dist[..., 1].float()
    iou = span_iou(ps, pe, s, e)
    n = start.shape[0]
    return (l1 * w).sum() / n, ((1.0 - iou) * w).sum() / n


def centerness(start: torch.Tensor, end: torch.Tensor, video_mask: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """FCOS's centerness of each clip in its moment, sqrt(min(l, r) / max(l, r)) with l, r the true
    distances from the clip centre to start and end (clamped at 0); 0 outside the moment [B, T]."""
    c = clip_centres(video_mask).nan_to_num(0.0)
    left, right = (c - start.float()[:, None]).clamp_min(0.0), (end.float()[:, None] - c).clamp_min(0.0)
    ctr = torch.sqrt(torch.minimum(left, right) / torch.maximum(left, right).clamp_min(1e-6))
    return torch.where(inside, ctr, torch.zeros_like(ctr))


def confidence_loss(conf: torch.Tensor, target: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """BCE of each valid clip's confidence against its target in [0, 1] (mean over valid clips)."""
    bce = F.binary_cross_entropy_with_logits(conf.float(), target.float(), reduction="none")
    return (bce * video_mask).sum() / video_mask.sum().clamp_min(1)


def _contrast(queries: torch.Tensor, keys: torch.Tensor, owner: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean cross-entropy of picking key ``owner[n]`` for each query row n (cosine / tau)."""
    logits = F.normalize(queries.float(), dim=-1) @ F.normalize(keys.float(), dim=-1).T / tau
    return F.cross_entropy(logits, owner)


def align_loss(out: dict[str, torch.Tensor], inside: torch.Tensor, video_mask: torch.Tensor,
               word_mask: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """The memory's cross-modal alignment (module doc); 0 without a memory."""
    total = out["v_aligned"].new_zeros((), dtype=torch.float32)
    b = inside.shape[0]
    if "v_read" in out:
        q_bar = masked_mean(out["q_aligned"], word_mask).detach()                       # [B, d]
        rows = out["v_read"][inside]                                                    # [M, d] moment clips
        owner = torch.arange(b, device=inside.device)[:, None].expand_as(inside)[inside]
        weight = (1.0 / inside.sum(1).clamp_min(1).float())[owner]                      # each pair weighs 1
        logits = F.normalize(rows.float(), dim=-1) @ F.normalize(q_bar.float(), dim=-1).T / tau
        total = total + (F.cross_entropy(logits, owner, reduction="none") * weight).sum() / b
    if "q_read" in out:
        v_bar = masked_mean(out["v_aligned"], inside).detach()                          # the moment's feature
        r_bar = masked_mean(out["q_read"], word_mask)
        total = total + _contrast(r_bar, v_bar, torch.arange(b, device=inside.device), tau)
    return total


class Objective(nn.Module):
    """L = w_reg L_reg + w_iou L_iou + w_conf L_conf + w_align L_align (module doc)."""

    def __init__(self, mgsl):
        super().__init__()
        self.w = {k: float(mgsl[f"w_{k}"]) for k in ("reg", "iou", "conf", "align")}
        self.beta = float(mgsl.reg_beta)
        self.align_tau = float(mgsl.align_tau)
        self.conf_target = mgsl.conf_target

    def forward(self, out: dict[str, torch.Tensor], batch: dict) -> dict[str, torch.Tensor]:
        vm, wm = batch["video_mask"], batch["word_mask"]
        inside = moment_clips(batch["start"], batch["end"], vm)
        reg, iou = regression_losses(out["dist"], batch["start"], batch["end"], vm, inside, self.beta)
        target = centerness(batch["start"], batch["end"], vm, inside) if self.conf_target == "centerness" else inside
        parts = {"reg": reg, "iou": iou, "conf": confidence_loss(out["conf"], target, vm)}
        parts["align"] = align_loss(out, inside, vm, wm, self.align_tau) if self.w["align"] > 0 else reg.new_zeros(())
        parts["loss"] = sum(self.w[k] * parts[k] for k in ("reg", "iou", "conf", "align"))
        return parts
