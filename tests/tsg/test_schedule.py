"""Warm-up + cosine / inverse-sqrt / constant: exact multipliers, and LambdaLR follows them."""

import math

import pytest
import torch

from common.tsg.schedule import warmup_lambda, warmup_scheduler


def test_warmup_then_each_schedule_exact():
    cos = warmup_lambda("cosine", 4, 12)
    assert [cos(t) for t in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cos(4) == 1.0 and cos(8) == pytest.approx(0.5) and cos(12) == pytest.approx(0.0) and cos(99) == 0.0
    assert warmup_lambda("cosine", 4, 12, min_ratio=0.1)(12) == pytest.approx(0.1)
    inv = warmup_lambda("inverse_sqrt", 4, 12)
    assert inv(3) == 1.0 and inv(15) == pytest.approx(math.sqrt(4 / 16)) and inv(99) == pytest.approx(0.2)
    assert warmup_lambda("constant", 4, 12)(50) == 1.0
    assert warmup_lambda("cosine", 0, 10)(0) == 1.0  # no warm-up: starts at the peak
    with pytest.raises(ValueError, match="unknown schedule"):
        warmup_lambda("linear", 1, 2)


def test_scheduler_steps_and_state_round_trip():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = warmup_scheduler(opt, "cosine", 2, 6)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 2.0, 2.0, 2 * 0.5 * (1 + math.cos(math.pi / 4)), 1.0, 2 * 0.5 * (1 + math.cos(3 * math.pi / 4))])
    opt2 = torch.optim.SGD([p], lr=2.0)
    again = warmup_scheduler(opt2, "cosine", 2, 6)
    again.load_state_dict(sched.state_dict())
    assert again.get_last_lr() == sched.get_last_lr()
