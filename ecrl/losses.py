"""The whole ECRL objective, weights included (``Objective``):

    L = L_ground(original) + w_aug L_ground(augmented, transformed labels)
        + w_sscl SSCL(original, augmented) + w_refine L_refine

* ``grounding_loss``: the shared head's loss: cross-entropy of the start and end distributions
  against soft (Gaussian, ``label_sigma`` clips) boundary targets plus ``w_inside`` x BCE of the
  inside scores on the moment's clips (``common.tsg.grid.boundary_targets``).
* SSCL (the abstract: "the KL divergence between the sequence similarity of the two videos and a
  prior Gaussian distribution of timestamp distance"): for each augmented clip j whose source
  position tau_j in the original video is known, the similarity of its query-related feature to
  every original clip i, softmax-normalised over i, is pulled towards a Gaussian over the
  timestamp distance t_i - tau_j:

      P_j(i) = softmax_i( cos(h'_j, h_i) / kappa ),   G_j(i) ∝ exp(-(t_i - tau_j)^2 / (2 sigma^2))
      L_SSCL = mean_j KL(G_j || P_j)

* ``refine_loss``: completeness (inpainting MSE of clips dropped from the clean video, + 0.1 x
  the identity error on the kept ones) + ``refine_smooth`` x smoothness (the squared step across
  splice points of the refined augmented video, relative to ordinary steps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.tsg.grid import boundary_targets, clip_centres

# --------------------------------------------------------------------------- SSCL


def gaussian_prior(tau: torch.Tensor, times: torch.Tensor, sigma: float) -> torch.Tensor:
    """G[b, j, i] ∝ exp(-(times[b, i] - tau[b, j])^2 / 2 sigma^2) over valid i (times not NaN);
    rows with NaN tau are all zero. [B, Ja, Io]"""
    d = times[:, None, :] - tau[:, :, None]
    logit = -(d * d) / (2 * sigma * sigma)
    logit = logit.masked_fill(torch.isnan(times)[:, None, :], float("-inf"))
    row_ok = ~torch.isnan(tau)
    logit = logit.masked_fill(~row_ok[:, :, None], 0.0)
    g = torch.softmax(logit, -1)
    return g * row_ok[:, :, None]


def sscl_from_logits(logits: torch.Tensor, tau: torch.Tensor, times: torch.Tensor, sigma: float,
                     rows: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows j (tau defined, and ``rows`` if given) of KL(G_j || softmax_i logits[b, j, i]).
    ``logits`` [B, Ja, Io]: the augmented clips' similarity to the original clips."""
    valid_i = ~torch.isnan(times)
    logp = F.log_softmax(logits.float().masked_fill(~valid_i[:, None, :], float("-inf")), -1)
    g = gaussian_prior(tau, times, sigma)
    row_ok = ~torch.isnan(tau)
    if rows is not None:
        row_ok = row_ok & rows
    kl = torch.where(g > 0, g * (torch.log(g.clamp_min(1e-30)) - logp), torch.zeros_like(g)).sum(-1)
    n = row_ok.sum()
    if n == 0:
        return logits.new_zeros((), dtype=torch.float32)
    return (kl * row_ok).sum() / n


# RECONSTRUCTED: the direction of the KL, the temperature kappa, sigma (in fractions of the video),
# cosine similarity, and that foreign clips (tau undefined) are left out are this reconstruction's.
def sscl_loss(h_orig: torch.Tensor, orig_mask: torch.Tensor, h_aug: torch.Tensor, tau: torch.Tensor,
              sigma: float = 0.05, kappa: float = 0.1, rows: torch.Tensor | None = None) -> torch.Tensor:
    """SSCL between the query-related sequences of the original [B, N, d] and augmented [B, N', d]
    videos; ``tau`` [B, N'] is each augmented clip's original position (NaN: foreign/padding)."""
    a = F.normalize(h_aug.float(), dim=-1)
    o = F.normalize(h_orig.float(), dim=-1)
    logits = torch.einsum("bjd,bid->bji", a, o) / kappa
    return sscl_from_logits(logits, tau, clip_centres(orig_mask), sigma, rows)


# --------------------------------------------------------------------------- grounding

def grounding_loss(out: dict[str, torch.Tensor], start: torch.Tensor, end: torch.Tensor, video_mask: torch.Tensor,
                   label_sigma: float = 1.0, inside_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the start and end distributions against soft boundary targets, plus
    ``inside_weight`` x BCE of the inside scores on the moment's clips (mean over valid clips)."""
    ts, te, inside = boundary_targets(start, end, video_mask, label_sigma)
    ls = -(ts * F.log_softmax(out["start"].float(), -1)).sum(-1).mean()
    le = -(te * F.log_softmax(out["end"].float(), -1)).sum(-1).mean()
    bce = F.binary_cross_entropy_with_logits(out["inside"].float(), inside.float(), reduction="none")
    li = (bce * video_mask).sum() / video_mask.sum().clamp_min(1)
    return ls + le + inside_weight * li


# --------------------------------------------------------------------------- self-refine

def inpaint_loss(inpainted: torch.Tensor, clean: torch.Tensor, video_mask: torch.Tensor, drop: torch.Tensor,
                 keep_weight: float = 0.1) -> torch.Tensor:
    """Completeness: MSE of the restored clips against the clean features on the dropped clips,
    + ``keep_weight`` x the same on the kept ones (clean clips should pass through)."""
    err = (inpainted.float() - clean.float().detach()).pow(2).mean(-1)
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
        return x.new_zeros((), dtype=torch.float32)
    scale = ((step * ordinary).sum() / ordinary.sum().clamp_min(1)).detach().clamp_min(1e-6)
    return (step * at_splice).sum() / at_splice.sum() / scale


# RECONSTRUCTED: the abstract names the two properties (completeness, smoothness) only; both terms
# and the 0.1 identity weight are this reconstruction's.
def refine_loss(res: dict, batch: dict, aug: dict, smooth_weight: float = 0.1) -> torch.Tensor:
    """The self-refine objective from ``ECRL.forward``'s outputs (module doc)."""
    vm = batch["video_mask"]
    return (inpaint_loss(res["inpainted"], batch["video"], vm, res["inpaint_drop"])
            + smooth_weight * smoothness_loss(res["refined"], vm, aug["splice"]))


# --------------------------------------------------------------------------- the objective

# RECONSTRUCTED: the abstract gives no loss weights; all 1 by default (ecrl/config.py).
class Objective(nn.Module):
    """L = L_ground + w_aug L_ground(aug) + w_sscl SSCL + w_refine L_refine (module doc). ``forward(res, batch, aug)`` takes ``ECRL.forward``'s
    outputs, the batch and the augmentation (``ecrl.augment.augment_step``, or ``None``) and
    returns ``{"loss": total, "ground": ..., "ground_aug": ..., "sscl": ..., "refine": ...}``
    (the terms that apply)."""

    def __init__(self, ecrl_cfg):
        super().__init__()
        e = ecrl_cfg
        self.w = {"aug": float(e.w_aug), "sscl": float(e.w_sscl), "refine": float(e.w_refine)}
        self.w_inside = float(e.w_inside)
        self.label_sigma = float(e.label_sigma)
        self.sscl_sigma, self.sscl_kappa = float(e.sscl_sigma), float(e.sscl_kappa)
        self.sscl_foreground_only = bool(e.sscl_foreground_only)
        self.refine_smooth = float(e.refine_smooth)

    def forward(self, res: dict, batch: dict, aug: dict | None = None) -> dict[str, torch.Tensor]:
        vm = batch["video_mask"]
        parts = {"ground": grounding_loss(res["orig"], batch["start"], batch["end"], vm, self.label_sigma,
                                          self.w_inside)}
        if aug is not None:
            parts["ground_aug"] = grounding_loss(res["aug"], aug["start"], aug["end"], vm, self.label_sigma,
                                                 self.w_inside)
            if self.w["sscl"] > 0:
                rows = aug["fg_rows"] if self.sscl_foreground_only else None
                parts["sscl"] = sscl_loss(res["orig"]["hidden"], vm, res["aug"]["hidden"], aug["tau"],
                                          self.sscl_sigma, self.sscl_kappa, rows)
            if "refined" in res:
                parts["refine"] = refine_loss(res, batch, aug, self.refine_smooth)
        total = parts["ground"]
        for key, w in (("ground_aug", "aug"), ("sscl", "sscl"), ("refine", "refine")):
            if key in parts:
                total = total + self.w[w] * parts[key]
        parts["loss"] = total
        return parts
