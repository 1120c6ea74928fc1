"""Siamese reasoning: soft boundary labels for the anchor from its siamese sequences (the
abstract: "a reasoning strategy learns the inter-relationships among these frames and generates
soft labels on the boundaries").

Formulation carried over from SiaSamRea (Yu et al., NeurIPS 2021, Sec. 3.2-3.3: affinity of
l2-normalised features, softmax-normalised, propagation of the siamese predictions, ``Q = omega x
propagated + (1 - omega) x own``, ``alpha`` x a divergence to the anchor's prediction):

* **Affinity** (:func:`affinity`): for each frame ``j`` of siamese sequence ``s`` and each anchor
  frame ``i``, ``cos(h_s,j, h_a,i) / tau`` of the fused frame-query features, softmax-normalised
  over the anchor frames (rows = siamese frames), restricted to anchor frames within ``window``
  anchor steps of frame ``j`` (the nearest anchor frame always allowed).
* **Propagation** (:func:`propagate`): each siamese frame sends its start (end) probability to the
  anchor frames it resembles: ``P~(i) = mean_s sum_j P_s(j) A_s(j, i)``, a distribution over the
  anchor frames (every row of ``A`` sums to 1).
* **Soft labels** (:func:`soft_labels`): ``Q = omega P~ + (1 - omega) P_anchor``; the loss
  (``ssrn/losses.py``) is ``alpha x KL(Q || P_anchor)`` per boundary with ``Q`` detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# RECONSTRUCTED: rows are siamese frames (each sends its boundary mass to the anchor frames, so the
# propagated labels are a distribution without renormalising); the temperature tau and the
# temporal window are this reconstruction's (over 64-200 frames a plain cosine softmax is flat).
def affinity(h_anchor: torch.Tensor, anchor_mask: torch.Tensor, anchor_times: torch.Tensor, h_siamese: torch.Tensor,
             siamese_mask: torch.Tensor, siamese_times: torch.Tensor, tau: float = 0.1,
             window: float = 1.0) -> torch.Tensor:
    """``A [B, S, Ns, Na]``: row ``(s, j)`` is a distribution over the valid anchor frames (zero for a
    padding frame ``j``). ``h_anchor [B, Na, d]``, ``h_siamese [B, S, Ns, d]``, masks and times
    (fractions of the video) alike; ``window`` in anchor steps (``1 / valid anchor clips``), 0 = all."""
    a = F.normalize(h_anchor.float(), dim=-1)
    s = F.normalize(h_siamese.float(), dim=-1)
    logits = torch.einsum("bsjd,bid->bsji", s, a) / tau
    allowed = anchor_mask[:, None, None, :].expand_as(logits)
    if window > 0:
        step = 1.0 / anchor_mask.sum(-1).clamp_min(1).to(torch.float32)               # [B]
        dist = (siamese_times[..., None] - anchor_times[:, None, None, :]).abs() / step[:, None, None, None]
        dist = dist.masked_fill(~anchor_mask[:, None, None, :], float("inf"))
        nearest = F.one_hot(dist.argmin(-1), dist.shape[-1]).bool()
        allowed = allowed & ((dist <= window + 1e-6) | nearest)
    p = torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1)
    return p * siamese_mask[..., None]


def propagate(aff: torch.Tensor, p_siamese: torch.Tensor) -> torch.Tensor:
    """``P~ [B, Na] = mean_s sum_j p_siamese[b, s, j] aff[b, s, j, :]`` (``p_siamese [B, S, Ns]``, each
    a distribution over its valid frames): a distribution over the anchor frames."""
    return torch.einsum("bsj,bsji->bi", p_siamese.float(), aff) / aff.shape[1]


def soft_labels(p_anchor: torch.Tensor, propagated: torch.Tensor, omega: float = 0.5) -> torch.Tensor:
    """``Q = omega x propagated + (1 - omega) x p_anchor`` (both distributions over the anchor frames)."""
    return omega * propagated + (1.0 - omega) * p_anchor


def boundary_soft_labels(out: dict, batch: dict, key: str, tau: float, window: float, omega: float) -> torch.Tensor:
    """``Q`` for boundary ``key`` (``"start"`` or ``"end"``) of the anchor (sequence 0) from the model's
    outputs (``ssrn.model.SSRN.forward``) and the batch (``ssrn.sampling.SiameseDataset``), detached."""
    with torch.no_grad():
        vm, t, h = batch["video_mask"], batch["times"], out["hidden"]
        aff = affinity(h[:, 0], vm[:, 0], t[:, 0], h[:, 1:], vm[:, 1:], t[:, 1:], tau, window)
        p = torch.softmax(out[key].float(), -1)
        return soft_labels(p[:, 0], propagate(aff, p[:, 1:]), omega)


__all__ = ["affinity", "boundary_soft_labels", "propagate", "soft_labels"]
