"""DSCNet's modules (Liu et al., "Unsupervised Temporal Video Grounding with Deep Semantic
Clustering", AAAI 2022, arXiv 2201.05307). Only the abstract and the introduction are available;
the three parts the abstract names are here, every layer choice is RECONSTRUCTED:

1. **Language semantic mining** (:class:`QueryAutoencoder` + ``dscnet/cluster.py``): GloVe -> BiGRU
   -> deep semantic feature ``z``; a GRU decoder rebuilds the words from ``z``; the ``z`` of the whole
   train query set are clustered into ``K`` centres ``c_k`` (buffers: they are in the checkpoint).
2. **Video-based semantic aggregation** (:class:`SemanticAggregation`): clip features ``F``; per centre
   the attention ``α_k = softmax_t(F W c_k)`` and the activity ``a_k = Σ_t α_k,t F_t``; a video keeps
   its top-M centres by matching score (``log p(k | a_k)``, optionally through the size prior's
   Sinkhorn plan); each kept centre's pseudo segment is the longest run of ``α_k`` above its mean
   (:func:`pseudo_segments`); a grounding head conditioned on ``c_k`` (:class:`GroundingHead`, FiLM)
   learns the pseudo segments.
3. **Foreground attention branch** (:class:`ForegroundBranch`): a query-agnostic per-clip score trained
   towards the union of a video's pseudo segments, multiplied into the head's inside probability at
   inference (:meth:`DSCNet.ground`).

Inference: the real query -> ``z`` (``dscnet.infer=query``; ``centre``: its nearest centre) -> head ->
top-1 span, NMS -> top-5 (:func:`decode`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from common.tsg.decode import decode_boundaries, decode_windows
from dscnet.cluster import dec_soft_assign, sinkhorn

NEG = -1e4  # logit of a padding clip


# ============================================================ 1. language semantic mining

class QueryAutoencoder(nn.Module):
    """GloVe -> BiGRU -> ``z`` (LayerNorm without affine: every ``z`` has zero mean and unit variance
    over its dimensions, so k-means works on a fixed scale) and a GRU decoder that rebuilds the
    words from ``z`` with teacher forcing. RECONSTRUCTED: the abstract says "encoder-decoder"."""

    def __init__(self, vocab_size: int, word_dim: int, hidden: int, z_dim: int, dropout: float = 0.0,
                 embeddings: np.ndarray | torch.Tensor | None = None, freeze: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        if embeddings is not None:
            self.embed.weight.data.copy_(torch.as_tensor(np.asarray(embeddings), dtype=torch.float32))
        self.embed.weight.requires_grad_(not freeze)
        self.drop = nn.Dropout(dropout)
        self.enc = nn.GRU(word_dim, hidden, batch_first=True, bidirectional=True)
        self.to_z = nn.Linear(2 * hidden, z_dim)
        self.z_norm = nn.LayerNorm(z_dim, elementwise_affine=False)
        self.bos = nn.Parameter(torch.zeros(word_dim))
        self.init_h = nn.Linear(z_dim, hidden)
        self.dec = nn.GRU(word_dim + z_dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, vocab_size)

    def encode(self, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        """``z [B, z_dim]`` of PAD-padded word ids ``[B, L]``."""
        x = self.drop(self.embed(words))
        lengths = word_mask.sum(1).clamp_min(1).cpu()
        _, h = self.enc(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return self.z_norm(self.to_z(torch.cat([h[0], h[1]], -1)))

    def decode(self, z: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """Teacher-forced word logits ``[B, L, V]``: step ``t`` sees ``z`` and the words before ``t``."""
        b, length = words.shape
        prev = torch.cat([self.bos.expand(b, 1, -1), self.embed(words[:, :-1])], 1)
        inp = torch.cat([self.drop(prev), z[:, None, :].expand(b, length, -1)], -1)
        h, _ = self.dec(inp, torch.tanh(self.init_h(z))[None])
        return self.out(self.drop(h))


# ============================================================ 2. video-based semantic aggregation

class ClipEncoder(nn.Module):
    """Clip features -> ``F [B, N, d]``: a linear map and residual temporal conv blocks (kernel 3,
    dilation 1, 2, 4, ...: block ``i`` sees ``2^(i+2) - 1`` clips), zero on padding. RECONSTRUCTED
    (the abstract names no video encoder)."""

    def __init__(self, feat_dim: int, d: int, layers: int, dropout: float, input_norm: bool = True):
        super().__init__()
        norm = nn.LayerNorm(d) if input_norm else nn.Identity()   # off: the clip's feature norm (saliency) survives
        self.proj = nn.Sequential(nn.Linear(feat_dim, d), norm, nn.GELU(), nn.Dropout(dropout))
        self.convs = nn.ModuleList(nn.Conv1d(d, d, 3, padding=2 ** i, dilation=2 ** i) for i in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.drop = nn.Dropout(dropout)

    def forward(self, video: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask[..., None].to(video.dtype)
        x = self.proj(video) * m
        for conv, norm in zip(self.convs, self.norms):
            x = x + self.drop(F.gelu(norm(conv(x.transpose(1, 2)).transpose(1, 2))))
            x = x * m
        return x


class SemanticAggregation(nn.Module):
    """Per centre ``c_k``: ``α_k = softmax_t(F W c_k / sqrt(d))`` over the valid clips, activity
    ``a_k = Σ_t α_k,t F_t``, and the matching logits ``<g(a_k), c_j> / τ`` (cosine) of every activity
    with every centre; a video's score for centre ``k`` is ``log p(k | a_k)``."""

    def __init__(self, d: int, z_dim: int, tau: float):
        super().__init__()
        self.key = nn.Linear(z_dim, d, bias=False)   # W
        self.back = nn.Linear(d, z_dim)              # g: activity -> semantic space
        self.tau = tau
        self.scale = 1.0 / math.sqrt(d)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor, centres: torch.Tensor) -> dict:
        keys = self.key(centres)                                              # [K, d]
        logits = torch.einsum("bnd,kd->bkn", feats, keys) * self.scale        # [B, K, N]
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
        alpha = torch.softmax(logits, -1)
        act = torch.einsum("bkn,bnd->bkd", alpha, feats)                      # [B, K, d]
        match = torch.einsum("bkz,jz->bkj", F.normalize(self.back(act), dim=-1),
                             F.normalize(centres, dim=-1)) / self.tau         # [B, K, K]
        scores = torch.diagonal(F.log_softmax(match, -1), dim1=1, dim2=2)      # [B, K]: log p(k | a_k)
        return {"attn_logits": logits, "alpha": alpha, "activity": act, "match": match, "scores": scores}


def select_centres(scores: torch.Tensor, top_m: int, sizes: torch.Tensor | None = None, eps: float = 0.05,
                   iters: int = 50) -> torch.Tensor:
    """The ``top_m`` centres each video keeps ``[B, M]``: the best matching scores, or, with the size
    prior (``sizes``: the query clusters' shares), the largest entries of each row of the Sinkhorn
    plan whose rows carry ``M`` and whose columns carry ``B M sizes_k``. RECONSTRUCTED: without pairs,
    the query clusters' sizes are the only link the whole query set gives between a centre and a
    visual pattern; a permutation of the centres is otherwise a fixed point of the self-training."""
    m = min(top_m, scores.shape[1])
    s = scores.detach().float()
    if sizes is not None:
        b = s.shape[0]
        s = sinkhorn(s, torch.full((b,), float(m), dtype=torch.float64), sizes.double() * b * m, eps, iters).float()
    return torch.topk(s, m, dim=1).indices


def pseudo_segments(alpha: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last clip ``[R]`` of the longest run of ``alpha [R, N]`` above its mean over the
    valid clips (ties: the run with more attention; no clip above the mean, a flat attention: the
    whole video). RECONSTRUCTED: the abstract says the centres "guide the composition of possible
    activities"; a contiguous run above the mean is the simplest segment an attention defines."""
    a = alpha.detach().float()
    n_valid = mask.sum(1).clamp_min(1)
    mean = (a * mask).sum(1, keepdim=True) / n_valid[:, None]
    above = (a > mean + 1e-7) & mask
    r, n = a.shape
    run = torch.zeros(r, dtype=torch.float32, device=a.device)
    mass = torch.zeros(r, dtype=torch.float32, device=a.device)
    best = torch.full((r,), -1.0, device=a.device)
    last = torch.zeros(r, dtype=torch.long, device=a.device)
    length = torch.zeros(r, dtype=torch.long, device=a.device)
    for t in range(n):
        on = above[:, t]
        run = torch.where(on, run + 1, torch.zeros_like(run))
        mass = torch.where(on, mass + a[:, t], torch.zeros_like(mass))
        key = torch.where(on, run + 0.5 * mass, torch.full_like(run, -1.0))   # mass <= 1 < one clip
        better = key > best
        best = torch.where(better, key, best)
        last = torch.where(better, torch.full_like(last, t), last)
        length = torch.where(better, run.long(), length)
    first = last - length + 1
    flat = best < 0
    first = torch.where(flat, torch.zeros_like(first), first)
    last = torch.where(flat, n_valid - 1, last)
    return first, last


class GroundingHead(nn.Module):
    """Start / end / inside logits per clip ``[R, N]`` from ``F`` conditioned on a semantic vector
    (a centre in training, the query's ``z`` or its nearest centre at inference) by FiLM
    (``LN(F) (1 + γ(c)) + β(c)``) and residual temporal convs. RECONSTRUCTED layer choices."""

    def __init__(self, d: int, z_dim: int, layers: int, dropout: float):
        super().__init__()
        self.film = nn.Linear(z_dim, 2 * d)
        self.norm = nn.LayerNorm(d)
        self.convs = nn.ModuleList(nn.Conv1d(d, d, 3, padding=1) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(layers))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(d, 3)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor):
        gamma, beta = self.film(cond).chunk(2, -1)
        x = self.norm(feats) * (1.0 + gamma[:, None, :]) + beta[:, None, :]
        m = mask[..., None].to(x.dtype)
        x = x * m
        for conv, norm in zip(self.convs, self.norms):
            x = x + self.drop(F.gelu(norm(conv(x.transpose(1, 2)).transpose(1, 2))))
            x = x * m
        start, end, inside = self.out(x).unbind(-1)
        return start.masked_fill(~mask, NEG), end.masked_fill(~mask, NEG), inside.masked_fill(~mask, NEG)


# ============================================================ 3. foreground attention branch

class ForegroundBranch(nn.Module):
    """A query-agnostic foreground logit per clip ``[B, N]`` (MLP over ``F``). RECONSTRUCTED."""

    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d, d // 2 or 1), nn.GELU(), nn.Dropout(dropout), nn.Linear(d // 2 or 1, 1))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.mlp(feats)[..., 0].masked_fill(~mask, NEG)


def combine_inside(inside: torch.Tensor, fg: torch.Tensor | None) -> torch.Tensor:
    """The logit of ``σ(inside) σ(fg)``: the foreground probability multiplied into the head's inside
    probability (``fg=None``: unchanged)."""
    if fg is None:
        return inside
    logp = F.logsigmoid(inside.float()) + F.logsigmoid(fg.float())
    return logp - torch.log1p(-torch.exp(logp).clamp(max=1.0 - 1e-6))


# ============================================================ the network

class DSCNet(nn.Module):
    """The whole network; ``forward`` returns every output a loss or a figure needs (a dict)."""

    def __init__(self, cfg, vocab_size: int, feat_dim: int, embeddings=None):
        super().__init__()
        mc, dc = cfg.model, cfg.dscnet
        self.k, self.top_m, self.paired = int(dc.clusters), int(dc.top_m), bool(dc.paired)
        self.size_prior, self.eps, self.iters = bool(dc.size_prior), float(dc.sinkhorn_eps), int(dc.sinkhorn_iters)
        self.use_fg, self.infer = bool(dc.foreground), dc.infer
        self.dec, self.dec_alpha = dc.cluster == "dec", float(dc.dec_alpha)
        self.ae = QueryAutoencoder(vocab_size, mc.word_dim, mc.query_hidden, mc.z_dim, mc.dropout, embeddings,
                                   mc.freeze_words)
        # the centres: learned by DEC's KL when dscnet.cluster=dec, else set by k-means each epoch
        self.centres = nn.Parameter(torch.zeros(self.k, mc.z_dim), requires_grad=dc.cluster == "dec")
        self.register_buffer("sizes", torch.full((self.k,), 1.0 / self.k))    # the query clusters' shares
        self.register_buffer("dec_freq", torch.ones(self.k))                  # DEC's soft frequencies f_k
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))      # centres set at least once
        self.video = ClipEncoder(feat_dim, mc.d, mc.video_layers, mc.dropout, mc.video_norm)
        self.aggregate = SemanticAggregation(mc.d, mc.z_dim, dc.tau)
        self.head = GroundingHead(mc.d, mc.z_dim, mc.head_layers, mc.dropout)
        self.foreground = ForegroundBranch(mc.d, mc.dropout) if dc.foreground else None

    # ---- clustering state (dscnet/cluster.py writes it; it is part of the checkpoint) ----------
    @torch.no_grad()
    def set_clusters(self, centres: torch.Tensor, sizes: torch.Tensor, dec_freq: torch.Tensor | None = None) -> None:
        self.centres.data.copy_(centres)
        self.sizes.copy_(sizes / sizes.sum())
        if dec_freq is not None:
            self.dec_freq.copy_(dec_freq)
        self.ready.fill_(True)

    def nearest_centre(self, z: torch.Tensor) -> torch.Tensor:
        """Index of each ``z``'s nearest centre (Euclidean) ``[B]``."""
        return torch.cdist(z.float(), self.centres.detach().float()).argmin(1)

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, words=None, word_mask=None, video=None, video_mask=None, pair_words=None,
                pair_mask=None) -> dict:
        """``words`` (a batch of train sentences): ``z``, ``rec_logits``. ``video`` (a batch of train
        videos, unpaired): the aggregation outputs, the selected centres ``sel [B, M]``, their pseudo
        segments ``seg_first/seg_last [B, M]``, the head's ``start/end/inside [B*M, N]`` conditioned
        on those centres, ``fg [B, N]``. ``pair_words`` (the paired ceiling: one query per video row):
        the head conditioned on the query's ``z`` instead, ``pair_z``."""
        out: dict = {}
        if words is not None:
            z = self.ae.encode(words, word_mask)
            out["z"] = z
            out["rec_logits"] = self.ae.decode(z, words)
            if self.dec and bool(self.ready):
                out["q_soft"] = dec_soft_assign(z, self.centres, self.dec_alpha)
                out["dec_freq"] = self.dec_freq
        if video is None:
            return out
        feats = self.video(video, video_mask)
        out["feats"] = feats
        if self.foreground is not None:
            out["fg"] = self.foreground(feats, video_mask)
        if pair_words is not None:
            z = self.ae.encode(pair_words, pair_mask)
            out["pair_z"] = z
            out["start"], out["end"], out["inside"] = self.head(feats, video_mask, z)
            return out
        centres = self.centres.detach()
        agg = self.aggregate(feats, video_mask, centres)
        out.update(agg)
        sel = select_centres(agg["scores"], self.top_m, self.sizes if self.size_prior else None, self.eps, self.iters)
        b, m = sel.shape
        rows = torch.arange(b, device=sel.device)[:, None].expand(b, m).reshape(-1)
        alpha = agg["alpha"][rows, sel.reshape(-1)]                                # [B*M, N]
        first, last = pseudo_segments(alpha, video_mask[rows])
        out["sel"], out["rows"] = sel, rows
        out["seg_first"], out["seg_last"] = first.view(b, m), last.view(b, m)
        out["start"], out["end"], out["inside"] = self.head(feats[rows], video_mask[rows], centres[sel.reshape(-1)])
        return out

    # ---- inference -----------------------------------------------------------------------------
    def ground(self, video, video_mask, words, word_mask, infer: str | None = None, foreground: bool | None = None):
        """Start / end / inside logits ``[B, N]`` for real queries (one per video row): the query's
        ``z`` (or its nearest centre) conditions the head; the foreground probability is multiplied
        into the inside probability. Also returns the outputs a figure needs."""
        infer = infer or self.infer
        feats = self.video(video, video_mask)
        z = self.ae.encode(words, word_mask)
        cond = self.centres.detach()[self.nearest_centre(z)] if infer == "centre" else z
        start, end, inside = self.head(feats, video_mask, cond)
        use_fg = self.use_fg if foreground is None else (foreground and self.foreground is not None)
        fg = self.foreground(feats, video_mask) if self.foreground is not None else None
        return {"start": start, "end": end, "inside": combine_inside(inside, fg if use_fg else None),
                "head_inside": inside, "fg": fg, "z": z, "feats": feats}


def decode(out: dict, video_mask: torch.Tensor, *, k: int = 5, nms: float = 0.5, inside_weight: float = 1.0,
           max_len_frac: float = 1.0) -> list[np.ndarray]:
    """Ranked moments (fractions of the video) per query from :meth:`DSCNet.ground`'s logits:
    ``log p_start(i) + log p_end(j) + w mean log σ(inside')`` over spans, NMS, top-k."""
    return decode_boundaries(out["start"], out["end"], video_mask, inside_logits=out["inside"],
                             inside_weight=inside_weight, k=k, nms=nms, max_len_frac=max_len_frac)


def window_decode(scores: torch.Tensor, video_mask: torch.Tensor, *, k: int = 5, nms: float = 0.5,
                  contrast: float = 1.0) -> list[np.ndarray]:
    """One score per clip -> ranked moments by the shared multi-scale window decoder
    (``common.tsg.decode.decode_windows``): the foreground branch alone and the query-agnostic
    baseline use it."""
    return decode_windows(scores, video_mask, k=k, nms=nms, contrast=contrast)


def deviation_scores(video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
    """The training-free query-agnostic saliency ``[B, N]``: each clip's Euclidean distance from its
    video's mean clip, z-scored per video (padding very low)."""
    m = video_mask[..., None].to(video.dtype)
    n = m.sum(1).clamp_min(1)
    mean = (video * m).sum(1, keepdim=True) / n[:, None]
    dev = ((video - mean) ** 2).sum(-1).sqrt()
    mu = (dev * video_mask).sum(1, keepdim=True) / n
    sd = (((dev - mu) ** 2) * video_mask).sum(1, keepdim=True).div(n).sqrt().clamp_min(1e-6)
    return ((dev - mu) / sd).masked_fill(~video_mask, NEG)


def build_model(cfg, vocab_size: int, feat_dim: int, embeddings=None) -> DSCNet:
    return DSCNet(cfg, vocab_size, feat_dim, embeddings)


def n_params(model: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
