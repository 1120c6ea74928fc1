"""Deep semantic clustering of the query latents and the size prior (DSCNet's "language semantic
mining", arXiv 2201.05307 abstract; every algorithmic choice below is RECONSTRUCTED: only the
abstract and the introduction of the paper are available).

* :func:`kmeans`: Lloyd's algorithm with k-means++ seeding (or a warm start from the previous
  epoch's centres, so a centre keeps its index across epochs), deterministic for a given
  ``torch.Generator``; an empty cluster is re-seeded with the point farthest from its centre.
* :func:`dec_soft_assign` / :func:`dec_target`: DEC (Xie, Girshick, Farhadi, ICML 2016, "Unsupervised
  Deep Embedding for Clustering Analysis", arXiv 1511.06335 §3.1): Student-t soft assignments
  ``q_ik ∝ (1 + |z_i - c_k|^2 / a)^(-(a+1)/2)`` and the sharpened target ``p_ik ∝ q_ik^2 / f_k``
  with soft cluster frequencies ``f_k = Σ_i q_ik``; the loss is ``KL(P || Q)``.
* :func:`sinkhorn`: entropic optimal transport with given row and column marginals (Cuturi, NeurIPS
  2013, arXiv 1306.0895): the size prior matches the videos' centre assignments to the query
  clusters' sizes.
"""

from __future__ import annotations

import torch


def _sqdist(x: torch.Tensor, c: torch.Tensor, x_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances ``[N, K]`` (float64 accumulation for stable assignments);
    ``x_sq``: the rows' squared norms in float64, when the caller has them."""
    x64, c64 = x.double(), c.double()
    xx = (x64 * x64).sum(1, keepdim=True) if x_sq is None else x_sq[:, None]
    return (xx - 2.0 * x64 @ c64.T + (c64 * c64).sum(1)[None, :]).clamp_min(0.0)


def kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii, SODA 2007): ``[k, D]`` centres drawn from ``x``."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means: {n} points for {k} clusters (lower dscnet.clusters)")
    x64 = x.double()
    x_sq = (x64 * x64).sum(1)
    first = int(torch.randint(n, (1,), generator=generator))
    idx = [first]
    d2 = _sqdist(x64, x64[first:first + 1], x_sq)[:, 0]
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0.0:  # every point coincides with a centre: take the next unused index
            used = set(idx)
            nxt = next(i for i in range(n) if i not in used)
        else:
            nxt = int(torch.multinomial((d2 / total).float(), 1, generator=generator))
        idx.append(nxt)
        d2 = torch.minimum(d2, _sqdist(x64, x64[nxt:nxt + 1], x_sq)[:, 0])
    return x[idx].clone()


def kmeans(x: torch.Tensor, k: int, *, generator: torch.Generator, init: torch.Tensor | None = None,
           iters: int = 50, tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on ``x [N, D]``: ``(centres [k, D], assignment [N] int64)``. ``init`` warm-starts
    from given centres (kept in their order), else k-means++ seeding from ``generator``. Stops when
    no centre moves more than ``tol`` (relative to the data scale) or after ``iters`` rounds."""
    x = x.detach().float()
    c = kmeans_pp(x, k, generator) if init is None else init.detach().float().clone()
    if c.shape != (k, x.shape[1]):
        raise ValueError(f"k-means init has shape {tuple(c.shape)}, expected {(k, x.shape[1])}")
    scale = float(x.var(0).sum().clamp_min(1e-12))
    x64 = x.double()
    x_sq = (x64 * x64).sum(1)
    assign = torch.zeros(x.shape[0], dtype=torch.long)
    for _ in range(max(1, iters)):
        d = _sqdist(x64, c, x_sq)
        assign = d.argmin(1)
        counts = torch.bincount(assign, minlength=k)
        new = torch.zeros_like(c, dtype=torch.float64).index_add_(0, assign, x64)
        empty = (counts == 0).nonzero().flatten().tolist()
        new = (new / counts.clamp_min(1)[:, None]).float()
        if empty:  # re-seed each empty cluster with the point farthest from its current centre
            far = d.gather(1, assign[:, None])[:, 0].clone()
            for j in empty:
                i = int(far.argmax())
                new[j] = x[i]
                far[i] = -1.0
        shift = float(((new - c) ** 2).sum(1).max())
        c = new
        if not empty and shift <= tol * scale:
            break
    assign = _sqdist(x64, c, x_sq).argmin(1)
    return c, assign


def dec_soft_assign(z: torch.Tensor, centres: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """DEC's Student-t soft assignment ``q [N, K]`` (rows sum to 1), differentiable in both inputs."""
    d2 = ((z[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    q = (1.0 + d2 / alpha).pow(-(alpha + 1.0) / 2.0)
    return q / q.sum(1, keepdim=True)


def dec_target(q: torch.Tensor, freq: torch.Tensor | None = None) -> torch.Tensor:
    """DEC's target ``p_ik ∝ q_ik^2 / f_k`` (rows sum to 1); ``freq`` = soft cluster frequencies
    ``f_k`` (default: the column sums of ``q``). No gradient flows through the target."""
    q = q.detach()
    f = q.sum(0) if freq is None else freq.to(q)
    p = q * q / f.clamp_min(1e-12)[None, :]
    return p / p.sum(1, keepdim=True)


def sinkhorn(scores: torch.Tensor, row: torch.Tensor, col: torch.Tensor, eps: float = 0.05,
             iters: int = 100) -> torch.Tensor:
    """Transport plan ``P = diag(u) exp(scores / eps) diag(v)`` ``[B, K]`` whose rows sum to ``row [B]``
    and columns to ``col [K]`` (the totals must agree; ``col`` is rescaled to ``row.sum()``), by
    Sinkhorn-Knopp iterations in the log domain. No gradient."""
    s = scores.detach().double() / eps
    r = row.detach().double().to(s.device)
    c = col.detach().double().to(s.device)
    c = c * (r.sum() / c.sum().clamp_min(1e-300))
    log_r, log_c = torch.log(r.clamp_min(1e-300)), torch.log(c.clamp_min(1e-300))
    u = torch.zeros_like(r)
    v = torch.zeros_like(c)
    for _ in range(max(1, iters)):
        u = log_r - torch.logsumexp(s + v[None, :], dim=1)
        v = log_c - torch.logsumexp(s + u[:, None], dim=0)
    return torch.exp(s + u[:, None] + v[None, :]).to(scores.dtype)


__all__ = ["dec_soft_assign", "dec_target", "kmeans", "kmeans_pp", "sinkhorn"]


class Assignments:
    """The train queries' cluster assignment (``[N]`` int64, in the order of the shuffled sentence
    set), kept in the checkpoint beside the centres (which are model state)."""

    def __init__(self, n: int = 0):
        self.assign = torch.full((n,), -1, dtype=torch.long)

    def state_dict(self) -> dict:
        return {"assign": self.assign.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.assign = state["assign"].clone().long()


@torch.no_grad()
def encode_all(model, words: torch.Tensor, word_mask: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """``z`` of every sentence (the model in eval mode: no dropout), on the model's device, ``[N, z]``."""
    was = model.training
    model.eval()
    dev = model.centres.device
    zs = [model.ae.encode(words[i:i + batch].to(dev), word_mask[i:i + batch].to(dev)).float()
          for i in range(0, len(words), batch)]
    model.train(was)
    return torch.cat(zs)


@torch.no_grad()
def refresh(model, words: torch.Tensor, word_mask: torch.Tensor, *, method: str, generator: torch.Generator,
            iters: int = 50, alpha: float = 1.0) -> tuple[dict, dict]:
    """The epoch's deep semantic clustering of the whole train query set (RECONSTRUCTED schedule:
    once at the start of every epoch of the video stage).

    ``kmeans``: Lloyd's k-means on every ``z``, warm-started from the current centres (k-means++ the
    first time), so centre ``k`` keeps its index; shares = hard cluster sizes. ``dec``: centres from
    k-means the first time (as DEC initialises), afterwards learned by the KL loss; each epoch only
    the soft frequencies ``f_k`` of DEC's target are recomputed; shares = ``f_k / N``.

    Returns ``(state, stats)``: ``state = {centres, sizes, dec_freq, assign}`` (CPU tensors, to be
    broadcast and applied with ``model.set_clusters``), ``stats`` for the log."""
    z = encode_all(model, words, word_mask).cpu()
    k = model.k
    ready = bool(model.ready)
    if method == "kmeans" or not ready:
        centres, assign = kmeans(z, k, generator=generator, init=model.centres.detach().cpu() if ready else None,
                                 iters=iters)
    else:
        centres = model.centres.detach().cpu().float()
        assign = _sqdist(z, centres).argmin(1)
    counts = torch.bincount(assign, minlength=k).double()
    q = dec_soft_assign(z.double(), centres.double(), alpha)
    freq = q.sum(0)
    sizes = (freq if method == "dec" else counts) / len(z)
    inertia = float(_sqdist(z, centres).gather(1, assign[:, None]).mean())
    p = sizes[sizes > 0]
    stats = {"inertia": inertia, "used_clusters": int((counts > 0).sum()),
             "size_entropy": float(-(p * p.log()).sum() / torch.log(torch.tensor(float(k))))}
    return {"centres": centres.float(), "sizes": sizes.float(), "dec_freq": freq.float(), "assign": assign}, stats


__all__ += ["Assignments", "encode_all", "refresh"]
