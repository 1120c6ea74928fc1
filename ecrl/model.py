"""The ECRL grounding network (query encoder, video encoder, cross-modal interaction, the shared
grounding head: start / end / inside scores per clip, ``common.tsg.heads.BoundaryHead``), the
training module that runs it on the original and the augmented (self-refined) video,
``build_model`` and ``decode``. The objective is in ``ecrl/losses.py``.

Shapes: B batch, N clips, L words, D clip-feature dim, d model width.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.tsg.decode import decode_boundaries
from common.tsg.heads import BoundaryHead
from ecrl.refine import SelfRefine


def sinusoid(n: int, d: int, device=None) -> torch.Tensor:
    """Fixed sinusoidal positions [n, d]."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(0, d, 2, device=device, dtype=torch.float32)
    ang = pos / torch.pow(10000.0, i / d)
    pe = torch.zeros(n, d, device=device)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : d // 2])
    return pe


def _encoder(d: int, heads: int, layers: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout, batch_first=True,
                                       norm_first=True, activation="gelu")
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


# RECONSTRUCTED: the abstract does not name the query encoder; the group's released code (IA-Net)
# uses a BiGRU over GloVe. A transformer layer is used here: as accurate at this scale, and large
# matmuls (the bench's FLOP fraction).
class QueryEncoder(nn.Module):
    """GloVe word vectors (frozen by default) -> Linear -> transformer layers; returns word states
    [B, L, d] and a masked-mean sentence vector [B, d]."""

    def __init__(self, vocab_size: int, word_dim: int, d: int, heads: int, layers: int, dropout: float,
                 embeddings: np.ndarray | torch.Tensor | None = None, freeze: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        if embeddings is not None:
            emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
            if tuple(emb.shape) != (vocab_size, word_dim):
                raise ValueError(f"embeddings have shape {tuple(emb.shape)}, expected {(vocab_size, word_dim)}")
            self.embed.weight.data.copy_(emb)
        self.embed.weight.requires_grad_(not freeze)
        self.proj = nn.Linear(word_dim, d)
        self.enc = _encoder(d, heads, layers, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.proj(self.embed(words)) + sinusoid(words.shape[1], self.proj.out_features, words.device)
        x = self.norm(self.enc(x, src_key_padding_mask=~word_mask))
        m = word_mask.unsqueeze(-1).to(x.dtype)
        sent = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return x, sent


class VideoEncoder(nn.Module):
    """Clip features -> Linear projection + positions -> transformer layers -> [B, N, d]. No input
    LayerNorm: it would remove each clip's feature norm, which tells event clips from background."""

    def __init__(self, feat_dim: int, d: int, heads: int, layers: int, dropout: float, max_clips: int = 512):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(feat_dim, d), nn.Dropout(dropout))  # no LayerNorm: a clip's feature norm carries signal
        self.register_buffer("pos", sinusoid(max_clips, d), persistent=False)
        self.enc = _encoder(d, heads, layers, dropout)

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        n = video.shape[1]
        if n > self.pos.shape[0]:
            raise ValueError(f"{n} clips > max_clips={self.pos.shape[0]}; raise model.max_clips")
        x = self.proj(video) + self.pos[:n]
        return self.enc(x, src_key_padding_mask=~video_mask)


# RECONSTRUCTED: the abstract says only "cross-modal interaction"; this is the co-attention +
# fusion + self-attention design common to the group's IA-Net/CSMGAN line.
class CrossModal(nn.Module):
    """Cross-modal interaction: each clip attends over the words (multi-head cross-attention), the
    clip state, the attended query and their product are fused, gated by the sentence vector, and
    a transformer stack reasons over the fused, query-related sequence."""

    def __init__(self, d: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.fuse = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Dropout(dropout))
        self.gate = nn.Linear(d, d)
        self.enc = _encoder(d, heads, layers, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, v, video_mask, w, word_mask, sent):
        a, _ = self.attn(v, w, w, key_padding_mask=~word_mask, need_weights=False)
        h = self.fuse(torch.cat([v, a, v * a], dim=-1)) * torch.sigmoid(self.gate(sent)).unsqueeze(1)
        return self.norm(self.enc(h, src_key_padding_mask=~video_mask))


class ECRLNet(nn.Module):
    """Encoders + interaction + head. ``forward`` returns the head's logits and ``hidden``, the
    query-related frame-wise sequence [B, N, d] that SSCL compares between the two videos."""

    def __init__(self, *, vocab_size: int, word_dim: int, feat_dim: int, d: int = 256, heads: int = 4,
                 query_layers: int = 1, video_layers: int = 1, fusion_layers: int = 1, dropout: float = 0.1,
                 max_clips: int = 512, embeddings=None, freeze_words: bool = True):
        super().__init__()
        self.query = QueryEncoder(vocab_size, word_dim, d, heads, query_layers, dropout, embeddings, freeze_words)
        self.video = VideoEncoder(feat_dim, d, heads, video_layers, dropout, max_clips)
        self.cross = CrossModal(d, heads, fusion_layers, dropout)
        # RECONSTRUCTED: the abstract says "shared grounding head" without its type; a proposal-free
        # start/end (+ inside) head keeps the transform bookkeeping exact (labels are clip positions).
        self.head = BoundaryHead(d, dropout)

    def forward(self, video, video_mask, words, word_mask) -> dict[str, torch.Tensor]:
        w, sent = self.query(words, word_mask)
        v = self.video(video, video_mask)
        h = self.cross(v, video_mask, w, word_mask, sent)
        out = self.head(h, video_mask)
        out["hidden"] = h
        return out


# --------------------------------------------------------------------------- decoding

def decode(out: dict[str, torch.Tensor], video_mask: torch.Tensor, k: int = 5, nms: float = 0.5,
           max_len_frac: float = 1.0, inside_weight: float = 1.0) -> list[np.ndarray]:
    """Top-k moments per query as fractions of the video, [<= k, 2] best first: span score
    log p_s(i) + log p_e(j) + inside_weight * mean log sigmoid(inside), then NMS
    (``common.tsg.decode.decode_boundaries``)."""
    return decode_boundaries(out["start"], out["end"], video_mask, inside_logits=out["inside"],
                             inside_weight=inside_weight, k=k, nms=nms, max_len_frac=max_len_frac)


# --------------------------------------------------------------------------- the training module

class ECRL(nn.Module):
    """The shared grounding network plus (optionally) the self-refine module. One ``forward``
    covers both videos (one DDP forward) and returns every output the objective needs
    (``ecrl.losses.Objective``):

    * ``orig``: the network's outputs on the original video (start/end/inside logits, ``hidden``);
    * ``aug``: the same network's outputs on the augmented video (after self-refine), when
      ``aug`` (``ecrl.augment.augment_step``) is given;
    * ``refined``: the refined augmented video [B, N, D]; ``inpainted`` and ``inpaint_drop``: the
      clean video with clips dropped at random (``refine_p_drop``, drawn from ``generator``) and
      restored by the module, for the completeness term.

    ``aug=None`` is the plain grounding model (the "no augmentation, no SSCL" ablation)."""

    def __init__(self, net: ECRLNet, refine: SelfRefine | None = None, refine_p_drop: float = 0.15):
        super().__init__()
        self.net = net
        self.refine = refine
        self.refine_p_drop = refine_p_drop

    def forward(self, batch: dict, aug: dict | None = None,
                generator: torch.Generator | None = None) -> dict[str, dict | torch.Tensor]:
        vm, words, wm = batch["video_mask"], batch["words"], batch["word_mask"]
        res: dict = {"orig": self.net(batch["video"], vm, words, wm)}
        if aug is None:
            return res
        xa = aug["video"]
        if self.refine is not None:
            xa = self.refine(xa, vm, aug["splice"], aug["dropped"])
            drop = (torch.rand(vm.shape, generator=generator) < self.refine_p_drop).to(vm.device) & vm
            clean = batch["video"].masked_fill(drop.unsqueeze(-1), 0.0)
            res["refined"] = xa
            res["inpainted"] = self.refine(clean, vm, torch.zeros_like(drop), drop)
            res["inpaint_drop"] = drop
        res["aug"] = self.net(xa, vm, words, wm)
        return res


def build_model(cfg, vocab_size: int, feat_dim: int, embeddings=None) -> ECRL:
    """ECRL from a config (``ecrl/config.py``): the network, and the self-refine module when both
    ``ecrl.augment`` and ``ecrl.refine`` are on (it works on augmented videos only)."""
    m, e = cfg.model, cfg.ecrl
    net = ECRLNet(vocab_size=vocab_size, word_dim=m.word_dim, feat_dim=feat_dim, d=m.d, heads=m.heads,
                  query_layers=m.query_layers, video_layers=m.video_layers, fusion_layers=m.fusion_layers,
                  dropout=m.dropout, max_clips=max(m.max_clips, cfg.data.num_clips), embeddings=embeddings,
                  freeze_words=m.freeze_words)
    refine = SelfRefine(feat_dim, e.refine_hidden) if (e.augment and e.refine) else None
    return ECRL(net, refine, e.refine_p_drop)
