"""A toy project for the tests of common's run life cycle, shaped like every project's train.py.

    python -m tests.toy --device cpu --no-tb
    python -m torch.distributed.run --standalone --nproc_per_node=2 -m tests.toy --device cpu --no-tb

Randomness a resume must reproduce: shuffling (DistributedSampler, a function of seed and epoch),
per-record noise drawn in the dataset (in DataLoader workers with data.workers > 0), dropout
(torch RNG) and a batch augmentation drawn from the global python, numpy and torch RNGs, which
differ per rank; only per-rank RNG states in the checkpoint make a resume exact.
"""

import math
import random

import numpy as np
import torch
from torch.utils.data import Dataset

from common.cli import base_parser, parse
from common.config import Range
from common.data import build_loader, set_epoch
from common.run import start_run
from common.runtime import all_reduce_mean, check_step, wrap_ddp

DEFAULTS = {
    "data": {"n": 96, "workers": 0},
    "model": {"hidden": 16, "dropout": 0.3},
    "train": {"epochs": 4, "batch_size": 8, "lr": 0.01, "schedule": "cosine",
              "poison_grad_step": -1,    # test hook: a NaN in one gradient at this step (the loss stays finite)
              "fail_at_step": -1},       # test hook: raise an ordinary exception at this step
}
RULES = {"train.epochs": Range(min=1), "train.batch_size": Range(min=1), "train.lr": Range(min=0, open_min=True),
         "train.schedule": ("cosine", "constant"), "model.dropout": Range(0, 1, open_max=True)}
RESUMABLE = ("train.epochs",)


class Noisy(Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 6, generator=g)
        self.y = self.x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):  # the worker's (or, without workers, the process's) numpy RNG
        return self.x[i] + float(np.random.normal(0, 0.05)), self.y[i]


def build_model(cfg):
    return torch.nn.Sequential(torch.nn.Linear(6, cfg.model.hidden), torch.nn.ReLU(),
                               torch.nn.Dropout(cfg.model.dropout), torch.nn.Linear(cfg.model.hidden, 1))


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__), argv, DEFAULTS, RULES)
    torch.set_num_threads(1)
    run = start_run("toy", args, cfg, resumable=RESUMABLE)
    data = Noisy(cfg.data.n)
    run.log.info("data: %d records checked", len(data))      # logged before open(): replayed into train.log
    run.open()
    loader = build_loader(data, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=run.dist,
                          num_workers=cfg.data.workers)
    model = wrap_ddp(build_model(cfg), run.dist, run.device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=0.9)
    total = cfg.train.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: 0.5 * (1 + math.cos(math.pi * s / total))) if cfg.train.schedule == "cosine" else (lambda s: 1.0))
    start_epoch, step = run.resume(model=model, optimizer=opt, scheduler=sched)
    for epoch in range(start_epoch, cfg.train.epochs):
        set_epoch(loader, epoch)
        model.train()
        loss_sum = 0.0
        for xb, yb in loader:
            xb = xb * (1 + 0.1 * float(np.random.rand())) + 0.05 * torch.randn_like(xb) + random.gauss(0, 0.01)
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step == cfg.train.poison_grad_step:
                next(model.parameters()).grad[0, 0] = float("nan")
            if step == cfg.train.fail_at_step:
                raise RuntimeError(f"toy failure at step {step}")
            check_step(loss, model, step, epoch)
            opt.step()
            sched.step()
            step += 1
            loss_sum += loss.item()
        run.metrics.log(step, "train", epoch=epoch + 1, loss=all_reduce_mean(loss_sum / len(loader)),
                        lr=sched.get_last_lr()[0])
        run.save(model=model, optimizer=opt, scheduler=sched, epoch=epoch + 1, step=step)
    run.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
