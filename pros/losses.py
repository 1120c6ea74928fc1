"""The whole ProS pretraining objective: the prototype matching loss with its teacher balancing
(centring or Sinkhorn-Knopp), temperatures, and the collapse monitor.

    L = mean over pairs (t in global views, v in all views, v != t) of  -sum_k P_t[k] log P_s[k]
    P_s = softmax(s_v / tau_s),   P_t = balance(s_t / tau_t)

with s = cosines between the L2-normalised projection and the K unit prototypes (``model.py``).
RECONSTRUCTED: the abstract says only that the loss "aligns the similarity distribution of
features (from either student or teacher) against a set of learnable prototypes"; the form
above is DINO's (facebookresearch/dino@7c446df ``DINOLoss``) written with explicit prototypes.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(x)
    return x


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, temp: float, iters: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp balancing of teacher scores (N, K) (SwAV; DINOv2's ``sinkhorn_knopp_teacher``):
    Q = exp(s / temp), alternately normalised so that every prototype receives 1/K of the batch's
    mass and every sample 1/N; returns (N, K) with rows summing to 1 (a distribution per sample).
    Computed in the log domain: at tau_t = 0.02 the cosine range [-1, 1] spans exp(100), which
    underflows float32 in the linear-domain iteration. Under DDP the prototype sums cover every
    rank's samples."""
    log_q = (scores.detach().float() / temp).t()                          # (K, N)
    k, n = log_q.shape
    n_total = torch.tensor(float(n), device=log_q.device)
    _all_reduce(n_total)
    for _ in range(iters):
        log_q = log_q - _logsumexp_all_ranks(log_q) - math.log(k)         # each prototype: 1/K
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - torch.log(n_total)   # each sample: 1/N
    return torch.exp(log_q + torch.log(n_total)).t()


def _logsumexp_all_ranks(x: torch.Tensor) -> torch.Tensor:
    """log sum_j exp(x[:, j]) over the columns of every rank: (K, 1)."""
    top = x.max(dim=1, keepdim=True).values
    if _distributed():
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    total = torch.exp(x - top).sum(dim=1, keepdim=True)
    _all_reduce(total)
    return torch.log(total) + top


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of a distribution."""
    return -(p * torch.log(p.clamp(min=1e-12))).sum(-1)


class Objective(nn.Module):
    """The prototype matching loss (see the module docstring). ``forward(out, step)`` takes the
    model's ``{"student": (V, B, K), "teacher": (G, B, K)}`` cosines and returns the loss and its
    monitors (teacher entropy, prototype usage, the entropy of the batch's mean target). The
    centre is a buffer, so a checkpoint of this module resumes centring exactly."""

    def __init__(self, cfg, steps_per_epoch: int = 1):
        super().__init__()
        c = cfg.loss
        self.balance = c.balance
        self.tau_s = float(c.student_temp)
        self.tau_t0, self.tau_t1 = float(c.warmup_teacher_temp), float(c.teacher_temp)
        self.warmup_steps = int(c.warmup_teacher_temp_epochs) * int(steps_per_epoch)
        self.center_m = float(c.center_momentum)
        self.iters = int(c.sinkhorn_iters)
        self.k = int(cfg.head.prototypes)
        self.register_buffer("center", torch.zeros(1, self.k))

    def teacher_temp(self, step: int) -> float:
        """Linear warm-up tau_t0 -> tau_t1 over the warm-up steps, then constant (DINO)."""
        if step >= self.warmup_steps:
            return self.tau_t1
        return self.tau_t0 + (self.tau_t1 - self.tau_t0) * step / self.warmup_steps

    @torch.no_grad()
    def targets(self, teacher: torch.Tensor, step: int) -> torch.Tensor:
        """P_t (G, B, K) from the teacher's cosines."""
        g, b, k = teacher.shape
        tau = self.teacher_temp(step)
        s = teacher.float()
        if self.balance == "sinkhorn":
            return sinkhorn(s.reshape(g * b, k), tau, self.iters).reshape(g, b, k)
        if self.balance == "centering":
            return F.softmax((s - self.center) / tau, dim=-1)
        return F.softmax(s / tau, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """c <- m c + (1 - m) mean over every rank's teacher outputs (DINO ``update_center``)."""
        total = teacher.float().reshape(-1, teacher.shape[-1]).sum(0, keepdim=True)
        count = torch.tensor(float(teacher.shape[0] * teacher.shape[1]), device=total.device)
        _all_reduce(total)
        _all_reduce(count)
        self.center.mul_(self.center_m).add_(total / count, alpha=1 - self.center_m)

    # RECONSTRUCTED: the abstract's "prototype-based matching loss": DINO's cross-entropy over
    # (teacher global view, other student view) pairs, on cosine scores against shared prototypes
    def forward(self, out: dict[str, torch.Tensor], step: int = 0) -> dict[str, torch.Tensor]:
        student, teacher = out["student"], out["teacher"]
        p_t = self.targets(teacher, step)
        log_p_s = F.log_softmax(student.float() / self.tau_s, dim=-1)
        total, pairs = 0.0, 0
        for t in range(p_t.shape[0]):
            for v in range(log_p_s.shape[0]):
                if v == t:
                    continue
                total = total + (-(p_t[t] * log_p_s[v]).sum(-1)).mean()
                pairs += 1
        if pairs == 0:
            raise ValueError("the prototype matching loss needs at least two views (one teacher view and another)")
        loss = total / pairs
        if self.balance == "centering" and self.training:
            self.update_center(teacher)
        with torch.no_grad():
            flat = p_t.reshape(-1, self.k)
            used = torch.zeros(self.k, device=flat.device)
            used[flat.argmax(-1)] = 1
            parts = {"loss": loss, "teacher_entropy": entropy(flat).mean(),
                     "target_marginal_entropy": entropy(flat.mean(0, keepdim=True))[0],
                     "prototypes_used": _all_reduce(used).clamp(max=1).sum(),
                     "student_entropy": entropy(log_p_s.exp().reshape(-1, self.k)).mean()}
        return parts


class CollapseAlarm:
    """Watches the epoch means: a loss within ``tol`` x ln K of ln K means the student outputs the
    uniform distribution (the collapse DINO users report as a loss stuck at ln K, e.g. 8.3178 =
    ln 4096 in dinov2 issue #407); fewer than 2 prototypes used by the teacher's targets means a
    one-hot collapse. ``check`` returns the reason (or None) and, with ``on_collapse=stop``,
    raises instead."""

    def __init__(self, cfg):
        self.k = int(cfg.head.prototypes)
        self.after = int(cfg.loss.alarm_after)
        self.tol = float(cfg.loss.alarm_tol)
        self.stop = cfg.loss.on_collapse == "stop"

    def reason(self, epoch: int, loss: float, used: float) -> str | None:
        if epoch < self.after:
            return None
        ln_k = math.log(self.k)
        if abs(loss - ln_k) < self.tol * ln_k:
            return (f"uniform collapse: the epoch's loss {loss:.4f} sits at ln K = {ln_k:.4f} (K={self.k}): the "
                    f"student's distributions are flat")
        if used < 2:
            return f"one-hot collapse: the teacher's targets use {used:.0f} of {self.k} prototypes"
        return None

    def check(self, epoch: int, loss: float, used: float, log=None) -> str | None:
        why = self.reason(epoch, loss, used)
        if why is None:
            return None
        msg = (f"COLLAPSE ALARM at epoch {epoch + 1}: {why}. Try loss.balance=sinkhorn, a lower lr, a lower "
               f"teacher.momentum or fewer prototypes.")
        if self.stop:
            raise CollapseError(msg)
        if log is not None:
            log.warning("%s", msg)
        return why


class CollapseError(RuntimeError):
    """Training stopped by the collapse alarm (``loss.on_collapse=stop``); the last checkpoint is kept."""
