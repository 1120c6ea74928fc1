"""The regression grounding head (MGSL-Net figure-2 caption: "regression based grounding heads")
and its decoder.

# RECONSTRUCTED: the head's form. Proposal-free and DRN-style: every clip t (centre c_t, a fraction
# of the video) regresses its distances to the moment's start and end, (l_t, r_t), and a confidence
# logit. Its span is [c_t - l_t, c_t + r_t]; at test time every valid clip's span, ranked by
# sigmoid(confidence), goes through greedy NMS and the first k survivors are the top-k moments
# (R@5 needs several scored candidates). Distances are in fractions of the video, unconstrained
# in sign (a clip whose centre lies just outside a short moment still regresses it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.tsg.evaluate import nms_topk
from common.tsg.grid import clip_centres


class RegressionHead(nn.Module):
    """Per clip: a confidence logit [B, T] and distances to start and end [B, T, 2] (fractions)."""

    def __init__(self, d: int, dropout: float = 0.0):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(dropout))
        self.conf = nn.Linear(d, 1)
        self.dist = nn.Linear(d, 2)

    def forward(self, h: torch.Tensor, video_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.mlp(h)
        conf = self.conf(x).squeeze(-1).float().masked_fill(~video_mask, -1e4)
        return {"conf": conf, "dist": self.dist(x).float()}


def clip_spans(dist: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """Each clip's regressed span [c_t - l_t, c_t + r_t] (fractions, not clipped) [B, T, 2];
    NaN on padding."""
    c = clip_centres(video_mask)
    return torch.stack([c - dist[..., 0], c + dist[..., 1]], -1)


# SHARED-CANDIDATE: common/tsg/decode.py decodes boundary heads (decode_boundaries) and one score per
# clip (decode_windows); this is the third kind, per-clip span regression (DRN, MGSL-Net).
def decode_regression(conf: torch.Tensor, dist: torch.Tensor, video_mask: torch.Tensor, *, k: int = 5,
                      nms: float = 0.5, min_len: float = 1e-3) -> list[np.ndarray]:
    """Top-``k`` moments per query (fractions of the video, best first): every valid clip's span
    (:func:`clip_spans`, clipped to [0, 1]; a span shorter than ``min_len`` is widened to it
    around its centre) ranked by its confidence, then greedy NMS (a candidate is dropped when its
    IoU with a kept one is > ``nms``; :func:`common.tsg.evaluate.nms_topk`)."""
    spans = clip_spans(dist.detach().float(), video_mask).cpu().numpy().astype(np.float64)
    score = conf.detach().float().cpu().numpy()
    valid = video_mask.cpu().numpy()
    s, e = np.minimum(spans[..., 0], spans[..., 1]), np.maximum(spans[..., 0], spans[..., 1])
    mid, half = (s + e) / 2, np.maximum((e - s) / 2, min_len / 2)
    s, e = np.clip(mid - half, 0.0, 1.0), np.clip(mid + half, 0.0, 1.0)
    # a span pushed against a video end keeps at least min_len inside the video
    s = np.where(e - s < min_len, np.maximum(0.0, e - min_len), s)
    e = np.where(e - s < min_len, np.minimum(1.0, s + min_len), e)
    order = np.argsort(-np.where(valid, score, -np.inf), axis=1, kind="stable")
    ranked = np.take_along_axis(np.stack([s, e], -1), order[..., None], axis=1)
    ok = np.take_along_axis(valid, order, axis=1)
    kept, kvalid = nms_topk(np.nan_to_num(ranked), ok, nms, keep=k)
    return [kept[b][kvalid[b]] for b in range(len(kept))]
