"""Train a crowd counter clean or backdoored (DMBA-/DMBA+) with one script.

    python dmba/train.py                                       # CSRNet, clean, embedded set
    python dmba/train.py --set attack.mode=dmba_minus          # DMBA- (rain trigger, 20% poison)
    python dmba/train.py --config dmba/configs/shb.yaml --set model.name=bayesian --set attack.mode=dmba_plus
    torchrun --standalone --nproc_per_node=2 dmba/train.py ...  # DDP (gloo on CPU, nccl on CUDA)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:  # `python dmba/train.py` from a fresh clone
    sys.path.insert(0, str(HERE.parent))

from common.checkpoint import load_training_state, save_training_state  # noqa: E402
from common.cli import base_parser, config_name, parse  # noqa: E402
from common.data import build_loader, data_root, set_epoch  # noqa: E402
from common.log import progress  # noqa: E402
from common.run import start_run  # noqa: E402
from common.runtime import (  # noqa: E402
    all_reduce_mean,
    autocast,
    barrier,
    check_finite,
    cleanup_distributed,
    make_grad_scaler,
    wrap_ddp,
)
from dmba.config import DEFAULTS, run_name  # noqa: E402
from dmba.data import CrowdDataset, collate, list_samples  # noqa: E402
from dmba.density import DensityCache  # noqa: E402
from dmba.losses import Criterion, dot_map  # noqa: E402
from dmba.models import STRIDES, build_model  # noqa: E402


def dataset_root(cfg, cli_root) -> Path:
    return data_root(cli_root) / cfg.dataset.root


def density_cache(cfg, cli_root, split: str) -> DensityCache:
    if not cfg.data.cache:
        return DensityCache(None)
    name = DensityCache.file_name(cfg.dataset.name, split, dict(cfg.dataset.kernel))
    return DensityCache(data_root(cli_root) / ".cache" / "dmba" / name)


def build_optimizer(cfg, params):
    o = cfg.optim
    if o.name == "sgd":
        opt = torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    elif o.name == "adam":
        opt = torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    else:
        raise ValueError(f"optim.name must be sgd or adam, got {o.name!r}")
    if o.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    elif o.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs)
    else:
        raise ValueError(f"optim.schedule must be constant or cosine, got {o.schedule!r}")
    return opt, sched


def forward(model, name: str, x, pts, stride: int):
    if name == "kdmg":
        h, w = x.shape[-2] // stride, x.shape[-1] // stride
        return model(x, dot_map(pts, (h, w), stride).to(x.device))
    return model(x)


def main(argv=None) -> Path:
    args, cfg = parse(base_parser(__doc__, HERE / "configs" / "synthetic.yaml"), argv, DEFAULTS)
    run = start_run("dmba", args, cfg, config_name=run_name(config_name(args), cfg))
    log = run.log
    name = cfg.model.name
    if name not in STRIDES:
        raise ValueError(f"unknown model.name {name!r}; choose from {sorted(STRIDES)}")
    stride = STRIDES[name]

    # data first: every annotation is validated before a model is built
    root = dataset_root(cfg, args.data_root)
    samples = list_samples(cfg.dataset.format, root, cfg.dataset.train_split, cfg.data.out_of_bounds)
    train_set = CrowdDataset(samples, cfg, "train", stride, cfg.attack.mode,
                             density_cache(cfg, args.data_root, cfg.dataset.train_split))
    if run.is_main:
        train_set.precompute()  # rank 0 fills the HDF5 cache; the others only read it
    barrier()
    log.info("train: %d images, %d samples (%d poisoned, mode %s, trigger %s)", len(samples), len(train_set),
             train_set.n_poisoned, cfg.attack.mode, cfg.attack.trigger)
    loader = build_loader(train_set, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=run.dist,
                          num_workers=cfg.data.workers, collate_fn=collate)

    model = build_model(cfg).to(run.device)
    crit = Criterion(cfg, name, stride)
    opt, sched = build_optimizer(cfg, model.parameters())
    scaler = make_grad_scaler(run.device, args.amp)
    model = wrap_ddp(model, run.dist, run.device)

    start_epoch, step = 0, 0
    if run.resume_from:
        st = load_training_state(run.resume_from, model=model, optimizer=opt, scheduler=sched, scaler=scaler)
        start_epoch, step = st["epoch"], st["step"]
        log.info("resumed at epoch %d step %d", start_epoch, step)

    t0 = time.time()
    for epoch in range(start_epoch, cfg.train.epochs):
        set_epoch(loader, epoch)
        model.train()
        tot, n = 0.0, 0
        for x, dens, pts, _ in progress(loader, run.dist.rank, desc=f"epoch {epoch}"):
            x, dens = x.to(run.device), dens.to(run.device)
            with autocast(run.device, args.amp):
                out = forward(model, name, x, pts, stride)
            out = tuple(o.float() for o in out) if isinstance(out, tuple) else out.float()
            loss, parts = crit(model, out, dens, pts)
            check_finite(loss, step, epoch, parts)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            tot += float(loss.detach())
            n += 1
            step += 1
        sched.step()
        mean_loss = all_reduce_mean(tot / max(n, 1), run.device)
        run.metrics.log(step, "train", epoch=epoch + 1, loss=mean_loss, lr=opt.param_groups[0]["lr"])
        log.info("epoch %d/%d loss %.5g (%.0fs)", epoch + 1, cfg.train.epochs, mean_loss, time.time() - t0)
        if run.is_main:
            save_training_state(run.ckpt_dir / "last.pt", model=model, optimizer=opt, scheduler=sched,
                                scaler=scaler, epoch=epoch + 1, step=step, config=cfg.to_dict(),
                                extra={"run_name": run.config_name, "stride": stride})
        barrier()
        if args.stop_after_epoch == epoch + 1:
            log.info("--stop-after-epoch %d: stopping", epoch + 1)
            break
    log.info("done: %s", run.run_dir)
    run.close()
    cleanup_distributed()
    print(run.run_dir)
    return run.run_dir


if __name__ == "__main__":
    main()
