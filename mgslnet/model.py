"""MGSL-Net (Liu et al., AAAI 2022, arXiv 2201.00454): the pipeline of the paper's figure 2,
"encode the features; align them with the cross-modal GCN; apply a domain-specific persistent
memory to the aligned features of each domain; heterogeneous attention; regression based
grounding heads", plus ``build_model`` and ``decode``. The objective is in ``mgslnet/losses.py``.

    query  : GloVe (frozen) -> Linear -> BiGRU                                   Q [B, L, d]
    video  : Linear + sinusoidal positions -> BiGRU | self-attention layers        V [B, T, d]
    align  : cross-modal GCN over [V; Q] (mgslnet/gcn.py)                         V', Q'
    memory : V~ = Mem_v(V'), Q~ = Mem_q(Q') (mgslnet/memory.py)
    fuse   : heterogeneous attention (mgslnet/hetero.py)                          H [B, T, d]
    head   : per clip confidence + distances to start / end (mgslnet/head.py)

Every step is switchable in the config (``mgsl.interaction``, ``mgsl.memory``, ``mgsl.hetero``).
``forward`` returns everything the objective and the figures need; it stores nothing on the module.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from common.tsg.decode import decode_regression
from mgslnet.gcn import CrossModalGCN
from mgslnet.head import RegressionHead
from mgslnet.hetero import HeteroAttention, encoder
from mgslnet.memory import Memory, NoMemory


def sinusoid(n: int, d: int) -> torch.Tensor:
    """Fixed sinusoidal positions [n, d]."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    ang = pos / torch.pow(10000.0, torch.arange(0, d, 2, dtype=torch.float32) / d)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : d // 2])
    return pe


class BiGRU(nn.Module):
    """A bidirectional GRU over the valid prefix of each sequence (packed, so padding changes no
    output), width d (d // 2 per direction); padding rows are 0."""

    def __init__(self, d: int, layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if d % 2:
            raise ValueError(f"model.d={d} must be even (a BiGRU has d/2 units per direction)")
        self.gru = nn.GRU(d, d // 2, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out.masked_fill(~mask.unsqueeze(-1), 0.0)


# RECONSTRUCTED: the abstract names no encoders; GloVe -> Linear -> BiGRU is the group's released
# query encoder (IA-Net, CSMGAN).
class QueryEncoder(nn.Module):
    """Word ids [B, L] -> word states [B, L, d]."""

    def __init__(self, vocab_size: int, word_dim: int, d: int, dropout: float, embeddings=None, freeze: bool = True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        if embeddings is not None:
            emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
            if tuple(emb.shape) != (vocab_size, word_dim):
                raise ValueError(f"embeddings have shape {tuple(emb.shape)}, expected {(vocab_size, word_dim)}")
            self.embed.weight.data.copy_(emb)
        self.embed.weight.requires_grad_(not freeze)
        self.proj = nn.Sequential(nn.Linear(word_dim, d), nn.Dropout(dropout))
        self.rnn = BiGRU(d)
        self.norm = nn.LayerNorm(d)

    def forward(self, words: torch.Tensor, word_mask: torch.Tensor) -> torch.Tensor:
        return self.norm(self.rnn(self.proj(self.embed(words)), word_mask))


# RECONSTRUCTED: Linear + positions -> BiGRU (the group's code) or self-attention layers.
class VideoEncoder(nn.Module):
    """Clip features [B, T, D] -> clip states [B, T, d]."""

    def __init__(self, feat_dim: int, d: int, heads: int, kind: str, layers: int, dropout: float,
                 max_clips: int = 512):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(feat_dim, d), nn.Dropout(dropout))
        self.register_buffer("pos", sinusoid(max_clips, d), persistent=False)
        self.kind = kind
        self.enc = BiGRU(d, layers, dropout) if kind == "gru" else encoder(d, heads, layers, dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor) -> torch.Tensor:
        n = video.shape[1]
        if n > self.pos.shape[0]:
            raise ValueError(f"{n} clips > max_clips={self.pos.shape[0]}; raise model.max_clips")
        x = self.proj(video) + self.pos[:n].to(video.dtype)
        x = self.enc(x, video_mask) if self.kind == "gru" else self.enc(x, src_key_padding_mask=~video_mask)
        return self.norm(x)


class MGSLNet(nn.Module):
    """The whole network (module doc). ``forward(video, video_mask, words, word_mask)`` returns:

    * ``conf`` [B, T] confidence logits, ``dist`` [B, T, 2] distances to start and end (fractions);
    * ``v_aligned`` [B, T, d], ``q_aligned`` [B, L, d]: after the interaction (the alignment
      loss's targets); ``adjacency`` [B, T+L, T+L]: the last graph layer's;
    * ``v_read`` / ``q_read`` (r, [B, N, d]) and ``v_attn`` / ``q_attn`` (a, [B, N, K]) for each
      domain with a memory; ``v_mem`` / ``q_mem``: the features after the memory (= the aligned
      ones without it);
    * ``fused`` [B, T, d], ``q_att`` [B, T, d] and ``coatt`` [B, T, L] (None without hetero)."""

    def __init__(self, *, vocab_size: int, word_dim: int, feat_dim: int, d: int = 512, heads: int = 4,
                 video_encoder: str = "gru", video_layers: int = 1, fusion_layers: int = 1, dropout: float = 0.2,
                 max_clips: int = 512, embeddings=None, freeze_words: bool = True, interaction: str = "gcn",
                 gcn_layers: int = 2, memory: str = "both", slots: int = 128, tau: float = 0.1,
                 usage_momentum: float = 0.99, hetero: bool = True):
        super().__init__()
        self.query = QueryEncoder(vocab_size, word_dim, d, dropout, embeddings, freeze_words)
        self.video = VideoEncoder(feat_dim, d, heads, video_encoder, video_layers, dropout, max_clips)
        self.interaction = CrossModalGCN(d, gcn_layers, dropout, cross_only=interaction == "coattention")
        mk = lambda on: Memory(d, slots, tau, usage_momentum) if on else NoMemory()
        self.video_memory = mk(memory in ("both", "video"))
        self.query_memory = mk(memory in ("both", "query"))
        self.hetero = HeteroAttention(d, heads, fusion_layers, dropout, enabled=hetero)
        self.head = RegressionHead(d, dropout)

    def forward(self, video: torch.Tensor, video_mask: torch.Tensor, words: torch.Tensor,
                word_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        q = self.query(words, word_mask)
        v = self.video(video, video_mask)
        va, qa, adj = self.interaction(v, video_mask, q, word_mask)
        vm, qm = self.video_memory(va, video_mask), self.query_memory(qa, word_mask)
        fz = self.hetero(vm["out"], video_mask, qm["out"], word_mask)
        out = self.head(fz["fused"], video_mask)
        out.update(v_aligned=va, q_aligned=qa, adjacency=adj, v_mem=vm["out"], q_mem=qm["out"],
                   fused=fz["fused"], q_att=fz["q_att"], coatt=fz["coatt"])
        for tag, m in (("v", vm), ("q", qm)):
            if "read" in m:
                out[f"{tag}_read"], out[f"{tag}_attn"] = m["read"], m["attn"]
        return out


def build_model(cfg, vocab_size: int, feat_dim: int, embeddings=None) -> MGSLNet:
    """MGSL-Net from a config (``mgslnet/config.py``)."""
    m, g = cfg.model, cfg.mgsl
    return MGSLNet(vocab_size=vocab_size, word_dim=m.word_dim, feat_dim=feat_dim, d=m.d, heads=m.heads,
                   video_encoder=m.video_encoder, video_layers=m.video_layers, fusion_layers=m.fusion_layers,
                   dropout=m.dropout, max_clips=max(m.max_clips, cfg.data.num_clips), embeddings=embeddings,
                   freeze_words=m.freeze_words, interaction=g.interaction, gcn_layers=g.gcn_layers, memory=g.memory,
                   slots=g.slots, tau=g.tau, usage_momentum=g.usage_momentum, hetero=g.hetero)


def decode(out: dict[str, torch.Tensor], video_mask: torch.Tensor, k: int = 5, nms: float = 0.5) -> list[np.ndarray]:
    """Top-k moments per query as fractions of the video, [<= k, 2] best first (mgslnet/head.py)."""
    return decode_regression(out["conf"], out["dist"], video_mask, k=k, nms=nms)


def n_params(model: nn.Module, trainable: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)
