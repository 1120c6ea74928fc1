"""DSCNet's whole objective, weights included (every weight and loss form RECONSTRUCTED: only the
abstract of arXiv 2201.05307 is available):

    L = w_rec  CE(rebuilt words)                                   language semantic mining
      + w_dec  KL(P || Q)                                          DEC clustering (dscnet.cluster=dec)
      + w_pull CE(<g(a_k), c_j>/τ over centres j, target k)        pull a_k to c_k, away from the others
      + w_head [CE(start) + CE(end) + w_inside BCE(inside)]        the head learns the pseudo segments
      + w_fg   BCE(foreground, union of the pseudo segments)       foreground attention branch

over the selected (video, centre) pairs. The paired ceiling (``dscnet.paired``) replaces the pseudo
segments by the true moments of (video, query) pairs and drops the pull term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.tsg.grid import boundary_targets, gaussian_targets
from dscnet.cluster import dec_target


def soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution over clips, averaged over rows."""
    return -(target * F.log_softmax(logits.float(), -1)).sum(-1).mean()


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    loss = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return (loss * mask).sum() / mask.sum().clamp_min(1)


def span_mask(first: torch.Tensor, last: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[R, N]`` true on clips ``first..last`` (and valid)."""
    idx = torch.arange(mask.shape[-1], device=mask.device)
    return (idx[None, :] >= first[:, None]) & (idx[None, :] <= last[:, None]) & mask


class Objective(nn.Module):
    def __init__(self, dc):
        super().__init__()
        self.dc = dc

    def forward(self, out: dict, qbatch: dict | None = None, vbatch: dict | None = None) -> dict:
        dc = self.dc
        zero = next(v for v in out.values() if isinstance(v, torch.Tensor)).new_zeros(())
        parts = {"rec": zero, "dec": zero, "pull": zero, "head": zero, "fg": zero}
        if "rec_logits" in out:
            m = qbatch["word_mask"]
            parts["rec"] = F.cross_entropy(out["rec_logits"][m].float(), qbatch["words"][m])
        if "q_soft" in out:
            q = out["q_soft"]
            p = dec_target(q, out["dec_freq"])
            parts["dec"] = (p * (torch.log(p.clamp_min(1e-12)) - torch.log(q.clamp_min(1e-12)))).sum(1).mean()
        if "start" in out:
            vm = vbatch["video_mask"]
            if "pair_z" in out:   # the paired ceiling: true moments
                ts, te, inside = boundary_targets(vbatch["start"], vbatch["end"], vm, dc.label_sigma)
                union, rmask = inside, vm
            else:                 # DSCNet: the selected centres' pseudo segments
                rows = out["rows"]
                rmask = vm[rows]
                first, last = out["seg_first"].reshape(-1), out["seg_last"].reshape(-1)
                ts = gaussian_targets(first.float(), rmask, dc.label_sigma)
                te = gaussian_targets(last.float(), rmask, dc.label_sigma)
                inside = span_mask(first, last, rmask)
                union = (vm.new_zeros(vm.shape, dtype=torch.float32).index_add_(0, rows, inside.float()) > 0) & vm
                sel = out["sel"].reshape(-1)
                parts["pull"] = F.cross_entropy(out["match"][rows, sel].float(), sel)
            parts["head"] = (soft_ce(out["start"], ts) + soft_ce(out["end"], te)
                             + dc.w_inside * masked_bce(out["inside"], inside, rmask))
            if "fg" in out:
                parts["fg"] = masked_bce(out["fg"], union, vm)
        parts["loss"] = (dc.w_rec * parts["rec"] + dc.w_dec * parts["dec"] + dc.w_pull * parts["pull"]
                         + dc.w_head * parts["head"] + dc.w_fg * parts["fg"])
        return parts
