"""Losses: the grounding loss of the shared head and SSCL, the self-supervised consistency loss.

SSCL (the abstract: "the KL divergence between the sequence similarity of the two videos and a
prior Gaussian distribution of timestamp distance"): for each augmented clip j whose source
position tau_j in the original video is known, the similarity of its query-related feature to
every original clip i, softmax-normalised over i, is pulled towards a Gaussian over the
timestamp distance t_i - tau_j:

    P_j(i) = softmax_i( cos(h'_j, h_i) / kappa ),   G_j(i) ∝ exp(-(t_i - tau_j)^2 / (2 sigma^2))
    L_SSCL = mean_j KL(G_j || P_j)

RECONSTRUCTED: the direction of the KL, the temperature kappa, sigma (in fractions of the video),
and that foreign clips (tau undefined) are left out are this reconstruction's choices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ecrl.augment import fg_clips


def clip_times(video_mask: torch.Tensor) -> torch.Tensor:
    """Centre of each valid clip as a fraction of the video's valid clips; NaN for padding. [B, N]"""
    n = video_mask.sum(-1, keepdim=True).clamp_min(1).to(torch.float32)
    idx = torch.arange(video_mask.shape[1], device=video_mask.device, dtype=torch.float32)
    t = (idx[None, :] + 0.5) / n
    return t.masked_fill(~video_mask, float("nan"))


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


def sscl_loss(h_orig: torch.Tensor, orig_mask: torch.Tensor, h_aug: torch.Tensor, tau: torch.Tensor,
              sigma: float = 0.05, kappa: float = 0.1, rows: torch.Tensor | None = None) -> torch.Tensor:
    """SSCL between the query-related sequences of the original [B, N, d] and augmented [B, N', d]
    videos; ``tau`` [B, N'] is each augmented clip's original position (NaN: foreign/padding)."""
    a = F.normalize(h_aug.float(), dim=-1)
    o = F.normalize(h_orig.float(), dim=-1)
    logits = torch.einsum("bjd,bid->bji", a, o) / kappa
    return sscl_from_logits(logits, tau, clip_times(orig_mask), sigma, rows)


# --------------------------------------------------------------------------- grounding

def boundary_targets(start: torch.Tensor, end: torch.Tensor, video_mask: torch.Tensor, sigma: float = 1.0):
    """Soft start/end targets (Gaussian over clip index around the first/last foreground clip,
    sigma in clips; a one-hot when sigma = 0) and the inside (foreground-clip) mask. [B, N] each."""
    bsz, n_max = video_mask.shape
    n_valid = video_mask.sum(-1).tolist()
    idx = torch.arange(n_max, device=video_mask.device, dtype=torch.float32)
    fs = torch.zeros(bsz, device=video_mask.device)
    fe = torch.zeros(bsz, device=video_mask.device)
    for b in range(bsz):
        a, c = fg_clips(float(start[b]), float(end[b]), int(n_valid[b]))
        fs[b], fe[b] = a, c

    def soft(center):
        if sigma <= 0:
            t = (idx[None, :] == center[:, None]).float()
        else:
            t = torch.exp(-((idx[None, :] - center[:, None]) ** 2) / (2 * sigma**2))
        t = t * video_mask
        return t / t.sum(-1, keepdim=True)

    inside = (idx[None, :] >= fs[:, None]) & (idx[None, :] <= fe[:, None]) & video_mask
    return soft(fs), soft(fe), inside


def grounding_loss(out: dict[str, torch.Tensor], start: torch.Tensor, end: torch.Tensor, video_mask: torch.Tensor,
                   label_sigma: float = 1.0, inside_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the start and end distributions against soft boundary targets, plus
    BCE of the inside scores on the foreground clips."""
    ts, te, inside = boundary_targets(start, end, video_mask, label_sigma)
    ls = -(ts * F.log_softmax(out["start"].float(), -1)).sum(-1).mean()
    le = -(te * F.log_softmax(out["end"].float(), -1)).sum(-1).mean()
    bce = F.binary_cross_entropy_with_logits(out["inside"].float(), inside.float(), reduction="none")
    li = (bce * video_mask).sum() / video_mask.sum().clamp_min(1)
    return ls + le + inside_weight * li
