"""Train a crowd counter clean or backdoored (DMBA-/DMBA+) — Sun et al., "Backdoor Attacks on Crowd
Counting", ACM MM 2022, arXiv 2207.05641. Documented defaults: dmba/config.py.

    python -m dmba.train                                       # CSRNet, clean, embedded set
    python -m dmba.train --set attack.mode=dmba_minus          # DMBA- (rain trigger, 20% poison)
    python -m dmba.train --config dmba/configs/shb.yaml --data-root /data --set attack.mode=dmba_plus
    python -m dmba.train --config dmba/configs/sha_bayesian.yaml --data-root /data --seed 1
    torchrun --standalone --nproc_per_node=2 -m dmba.train    # DDP (gloo on CPU, nccl on GPUs)
"""

from __future__ import annotations

import time

import torch

from common.cli import base_parser, config_name, default_config, parse
from common.data import build_loader, set_epoch
from common.log import progress
from common.run import start_run
from common.runtime import all_reduce_mean, autocast, barrier, check_step, make_grad_scaler, wrap_ddp
from dmba.config import DEFAULTS, RESUMABLE, RULES, run_name, validate
from dmba.data import CrowdDataset, collate, density_cache, load_splits, to_device
from dmba.losses import Objective
from dmba.model import STRIDES, build_model, param_groups


def build_optimizer(cfg, groups):
    o = cfg.optim
    if o.name == "sgd":
        opt = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    else:
        opt = torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)
    if o.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.train.epochs)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    return opt, sched


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config("dmba")), argv, DEFAULTS, RULES)
    validate(cfg)
    stride = STRIDES[cfg.model.name]
    # runs/dmba/<config>-<clean|dmba_minus|dmba_plus>[-tag]/: clean and attacked runs side by side
    run = start_run("dmba", args, cfg, resumable=RESUMABLE, config_name=run_name(config_name(args), cfg))
    log, dist = run.log, run.dist

    # ============================ data ============================
    # both splits checked (every problem at once, by file and record) before the run dir exists
    samples = load_splits(cfg, args.data_root, (cfg.dataset.train_split, cfg.dataset.test_split), log)
    samples = samples[cfg.dataset.train_split]
    train_set = CrowdDataset(samples, cfg, "train", stride, cfg.attack.mode,
                             density_cache(cfg, args.data_root, cfg.dataset.train_split), seed=args.seed)
    if dist.is_main:
        train_set.precompute()  # rank 0 fills the HDF5 map cache; the others only read it
    barrier()
    run.open()                  # run dir, lock, config/env record, train.log
    log.info("train: %d images, %d samples (%d poisoned, mode %s, trigger %s); %d torch threads",
             len(samples), len(train_set), train_set.n_poisoned, cfg.attack.mode, cfg.attack.trigger,
             torch.get_num_threads())
    loader = build_loader(train_set, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=dist,
                          num_workers=cfg.data.workers, collate_fn=collate)

    # ============================ model ===========================
    model = build_model(cfg, log).to(run.device)
    objective = Objective(cfg, stride)

    # ========================== optimizer =========================
    opt, sched = build_optimizer(cfg, param_groups(model, cfg))
    scaler = make_grad_scaler(run.device, args.amp)
    model = wrap_ddp(model, dist, run.device)

    # =========================== resume ===========================
    start_epoch, step = run.resume(model=model, optimizer=opt, scheduler=sched, scaler=scaler)

    # ============================ loop ============================
    t0 = time.time()
    for epoch in range(start_epoch, cfg.train.epochs):
        set_epoch(loader, epoch)
        train_set.set_epoch(epoch)  # crops and flips: a function of (seed, epoch, index)
        model.train()
        sums: dict[str, float] = {}
        n = 0
        for batch in progress(loader, dist.rank, desc=f"epoch {epoch}"):
            batch = to_device(batch, run.device)
            with autocast(run.device, args.amp):
                out = model(batch["image"], points=batch["points"])
            parts = objective(out, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(parts["loss"]).backward()
            check_step(parts, model, step, epoch, scaler=scaler)  # loss, gradients, parameters finite
            scaler.step(opt)
            scaler.update()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
            step += 1
        sched.step()
        means = {k: all_reduce_mean(v / max(n, 1), run.device) for k, v in sums.items()}
        run.metrics.log(step, "train", epoch=epoch + 1, lr=opt.param_groups[0]["lr"], **means)
        log.info("epoch %d/%d loss %.5g (%.0fs)", epoch + 1, cfg.train.epochs, means["loss"], time.time() - t0)

        # ============================ save ============================
        run.save(model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                 extra={"stride": stride})  # every rank (RNG states gathered; rank 0 writes)
        if args.stop_after_epoch == epoch + 1:
            log.info("--stop-after-epoch %d: stopping", epoch + 1)
            break
    log.info("done: %s", run.run_dir)
    run.close()
    if dist.is_main:
        print(run.run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
