"""The whole objective of MHST and of the ViGA-style peer baseline, weights included.

The abstract of arXiv 2301.01871 says only that "self-supervised losses" rank the hypotheses
and make the frame features discriminative with one labelled frame per moment. The four terms
and their forms are RECONSTRUCTED (weights in ``mhst/config.py``):

    L_MHST = w_relevance L_relevance + w_anchor L_anchor + w_contrast L_contrast + w_sparsity L_sparsity

* ``L_relevance``: every leaf's relevance against a Gaussian around the glance (peak 1 at the
  glance clip; BCE over the valid leaves), the pseudo-label ViGA and D3G build from a glance;
* ``L_anchor`` (glance anchoring): InfoNCE over the roots of the video: the root holding the
  glance against the video's other roots. A root that reaches into the Gaussian's core is an
  ambiguous negative (the moment's extent is unknown): it is down-weighted by ``1 - max`` of the
  peak-normalised Gaussian over its leaves;
* ``L_contrast`` (video-query contrastive): the pooled glance root of each query against the
  queries of the other samples of the batch (and back), InfoNCE;
* ``L_sparsity`` (tree sparsity): the mean relevance of the leaves outside the glance root, so
  few leaves survive pruning and few roots remain.

Without the tree (``mhst.tree=none``) there is no root: ``L_anchor`` is off, ``L_contrast`` pools
the whole video weighted by relevance, ``L_sparsity`` is the mean relevance.

The ViGA-style peer (``mhst.method=viga``; ViGA = Cui et al., SIGIR 2022, whose exact loss is
unverified here): ``w_relevance L_clip + w_contrast L_contrast``, ``L_clip = - sum_i g_i log
softmax_i(logit_i / viga_temp)`` with ``g`` the glance Gaussian normalised to sum 1 (a
Gaussian-weighted clip-query NCE within the video), ``L_contrast`` on the Gaussian-pooled clips.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.tsg.grid import gaussian_targets
from mhst.tree import containing, span_mask


def glance_clip(glance: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """The clip holding the glance (a fraction of the video): ``floor(g n)`` on ``n`` valid clips. [B] long"""
    n = video_mask.sum(-1)
    return torch.minimum((glance.float() * n).floor().long().clamp_min(0), (n - 1).clamp_min(0))


def glance_gaussian(glance: torch.Tensor, video_mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """A distribution over the valid clips centred on the glance (clip coordinate ``g n - 1/2``,
    so its peak is the clip holding the glance), width ``sigma`` x the clip grid, summing to 1
    (``common.tsg.grid.gaussian_targets``). [B, N]"""
    n = video_mask.sum(-1).float()
    return gaussian_targets(glance.float() * n - 0.5, video_mask, sigma * video_mask.shape[-1])


def info_nce(a: torch.Tensor, b: torch.Tensor, temp: float) -> torch.Tensor:
    """Symmetric InfoNCE between matched rows of two normalised sets [M, d] (row i <-> row i)."""
    if a.shape[0] < 2:
        return a.sum() * 0.0
    logits = a @ b.t() / temp
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class Objective(nn.Module):
    """``forward(out, batch) -> {"loss": total, term: value, ...}`` (module doc). Reads the
    glance, never ``start``/``end``."""

    def __init__(self, cfg_mhst, tree: bool):
        super().__init__()
        self.c = cfg_mhst
        self.tree = tree and cfg_mhst.method == "mhst"

    def forward(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        c = self.c
        mask = batch["video_mask"]
        g = glance_gaussian(batch["glance"], mask, c.sigma)                  # sums to 1 per video
        peak = g / g.amax(-1, keepdim=True).clamp_min(1e-12)                   # 1 at the glance clip
        if c.method == "viga":
            return self._viga(out, g, mask)
        mf = mask.float()
        rel = (F.binary_cross_entropy_with_logits(out["logit"], peak, reduction="none") * mf).sum() / mf.sum()
        zero = rel * 0.0
        if self.tree:
            roots = out["roots"]
            gi = glance_clip(batch["glance"], mask)
            has = out["tree"].kept.gather(1, gi.unsqueeze(1)).squeeze(1)      # the glance leaf survived pruning
            pos = containing(roots["first"], roots["last"], roots["valid"], gi) & has.unsqueeze(1)  # [B, R]
            member = span_mask(roots["first"], roots["last"], roots["valid"], mask.shape[1]).float()  # [B, R, N]
            near = (member * peak.unsqueeze(1)).amax(-1)                       # [B, R]
            logw = torch.where(pos, torch.zeros_like(near), torch.log((1.0 - near).clamp_min(1e-6)))
            logits = (roots["score"] / c.anchor_temp + logw).masked_fill(~roots["valid"], float("-inf"))
            lsm = torch.log_softmax(logits, -1)
            anchor = -(lsm.masked_fill(~pos, 0.0).sum(-1))[has].mean() if bool(has.any()) else zero
            pz = (roots["pz"] * pos.unsqueeze(-1).float()).sum(1)             # the glance root's pooled feature
            contrast = info_nce(out["qz"][has], pz[has], c.contrast_temp) if bool(has.any()) else zero
            inside = (member * pos.unsqueeze(-1).float()).sum(1)               # leaves of the glance root
            sparsity = (out["r"] * (1.0 - inside) * mf).sum() / mf.sum()
            n_roots = out["tree"].num_roots.float().mean()
            kept_glance = has.float().mean()
        else:
            w = out["r"] * mf
            pz = F.normalize(torch.bmm(w.unsqueeze(1), out["vz"]).squeeze(1) / w.sum(-1, keepdim=True).clamp_min(1e-6),
                             dim=-1)
            anchor, contrast = zero, info_nce(out["qz"], pz, c.contrast_temp)
            sparsity = (out["r"] * mf).sum() / mf.sum()
            n_roots = kept_glance = zero.detach()
        loss = c.w_relevance * rel + c.w_anchor * anchor + c.w_contrast * contrast + c.w_sparsity * sparsity
        return {"loss": loss, "relevance": rel, "anchor": anchor, "contrast": contrast, "sparsity": sparsity,
                "roots": n_roots.detach(), "glance_kept": kept_glance.detach()}

    def _viga(self, out: dict, g: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.c
        logp = torch.log_softmax((out["logit"] / c.viga_temp).masked_fill(~mask, float("-inf")), -1)
        clip = -(g * logp.masked_fill(~mask, 0.0)).sum(-1).mean()
        pz = F.normalize(torch.bmm(g.unsqueeze(1), out["vz"]).squeeze(1), dim=-1)
        contrast = info_nce(out["qz"], pz, c.contrast_temp)
        return {"loss": c.w_relevance * clip + c.w_contrast * contrast, "clip": clip, "contrast": contrast}


__all__ = ["Objective", "glance_clip", "glance_gaussian", "info_nce"]
