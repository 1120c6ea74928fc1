"""Learning-rate schedules with linear warm-up, stepped once per optimizer update.

Nothing here is grounding-specific; it lives in ``common/tsg`` until a root ``common`` module
takes it (proposed: ``common/schedule.py``).

The multiplier of the base LR at update ``t`` (0-based; ``w`` warm-up updates, ``T`` in total):

* warm-up (``t < w``): ``(t + 1) / w``
* ``cosine``: ``r + (1 - r) * 0.5 * (1 + cos(pi * min(1, (t - w) / (T - w))))``, ``r = min_ratio``
* ``inverse_sqrt``: ``sqrt(w / (t + 1))`` (the Transformer schedule; IA-Net/CSMGAN's released code)
* ``constant``: ``1``
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

SCHEDULES = ("cosine", "inverse_sqrt", "constant")


def warmup_lambda(schedule: str, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> Callable[[int], float]:
    """The multiplier ``f(t)`` of the module doc."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; one of {SCHEDULES}")
    warm = max(1, int(warmup_steps))
    total = int(total_steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if schedule == "inverse_sqrt":
            return math.sqrt(warm / (step + 1))
        if schedule == "constant":
            return 1.0
        prog = min(1.0, (step - warm) / max(1, total - warm))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * prog))

    return f


def warmup_scheduler(optimizer: torch.optim.Optimizer, schedule: str, warmup_steps: int, total_steps: int,
                     min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` over :func:`warmup_lambda`; call ``.step()`` after every ``optimizer.step()``.
    Its state (the update count) goes into the checkpoint, so a resume continues the curve."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_lambda(schedule, warmup_steps, total_steps, min_ratio))


__all__ = ["SCHEDULES", "warmup_lambda", "warmup_scheduler"]
