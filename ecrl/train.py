"""Train ECRL (Liu et al., "Transform-Equivariant Consistency Learning for Temporal Sentence
Grounding", arXiv 2305.04123). Documented defaults: ecrl/config.py.

    python -m ecrl.train                                          # embedded set (configs/synthetic.yaml)
    python -m ecrl.train --config ecrl/configs/charades_i3d.yaml --data-root /data/tsg
    python -m ecrl.train --set ecrl.w_sscl=0                      # an ablation: SSCL off, augmentation kept
    torchrun --standalone --nproc_per_node=2 -m ecrl.train        # DDP (gloo on CPU, nccl on GPUs)
    python -m ecrl.train --resume auto                            # continue the latest run of this config and seed

Each step augments the batch (exactly known transformed labels and time map, ecrl/augment.py),
runs the shared network on the original and the self-refined augmented video (ecrl/model.py)
and minimises the objective of ecrl/losses.py.
"""

from __future__ import annotations

import time

import torch

from common.cli import base_parser, default_config, parse
from common.data import build_loader, set_epoch
from common.log import progress
from common.run import start_run
from common.runtime import all_reduce_mean, autocast, check_step, make_grad_scaler, wrap_ddp
from common.tsg.dataset import collate_tsg, to_device
from common.tsg.schedule import warmup_scheduler
from ecrl.augment import augment_step
from ecrl.config import DEFAULTS, RESUMABLE, RULES, validate
from ecrl.data import load_data
from ecrl.losses import Objective
from ecrl.model import build_model


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config("ecrl")), argv, DEFAULTS, RULES)
    validate(cfg)
    run = start_run("ecrl", args, cfg, resumable=RESUMABLE)  # DDP, device, seeds; checks a resume; writes nothing
    log, dist = run.log, run.dist

    # ============================ data ============================
    data = load_data(cfg, args.data_root, seed=args.seed, log=log)  # every file checked before the run dir exists
    run.open()                                                      # run dir, lock, config/env record, train.log
    loader = build_loader(data.train_set, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=dist,
                          num_workers=cfg.train.num_workers, collate_fn=collate_tsg)

    # ============================ model ===========================
    model = build_model(cfg, len(data.vocab), data.features.dim, data.embeddings).to(run.device)
    log.info("ECRL: %d trainable parameters; augment=%s refine=%s w_sscl=%g relocate=%s", sum(
        p.numel() for p in model.parameters() if p.requires_grad), cfg.ecrl.augment, model.refine is not None,
        cfg.ecrl.w_sscl, cfg.ecrl.aug.relocate)
    model = wrap_ddp(model, dist, run.device)
    objective = Objective(cfg.ecrl)

    # ========================== optimizer =========================
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = warmup_scheduler(opt, cfg.train.schedule, cfg.train.warmup_steps, cfg.train.epochs * len(loader))
    scaler = make_grad_scaler(run.device, args.amp)

    # =========================== resume ===========================
    start_epoch, step = run.resume(model=model, optimizer=opt, scheduler=sched, scaler=scaler)

    # ============================ loop ============================
    extra = {"vocab": data.vocab.itos, "feat_dim": data.features.dim}  # what eval needs to rebuild the model
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        set_epoch(loader, epoch)
        sums: dict[str, float] = {}
        nb, t0 = 0, time.perf_counter()
        for batch in progress(loader, dist.rank, desc=f"epoch {epoch}"):
            batch = to_device(batch, run.device)
            # augmentation and the inpainting mask: pure functions of (seed, rank, step), so resume is exact
            aug = augment_step(batch, cfg.ecrl.aug, args.seed, dist.rank, step) if cfg.ecrl.augment else None
            gen = torch.Generator().manual_seed(args.seed * 7_000_003 + dist.rank * 131 + step)
            with autocast(run.device, args.amp):
                parts = objective(model(batch, aug, generator=gen), batch, aug)
            opt.zero_grad(set_to_none=True)
            scaler.scale(parts["loss"]).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            check_step(parts, model, step, epoch, scaler=scaler)  # loss, gradients, parameters finite
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            nb += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        dt = time.perf_counter() - t0
        means = {k: all_reduce_mean(v / max(nb, 1), run.device) for k, v in sums.items()}
        run.metrics.log(step, "train", epoch=epoch + 1, lr=sched.get_last_lr()[0],
                        samples_per_s=nb * cfg.train.batch_size * dist.world_size / max(dt, 1e-9), **means)
        log.info("epoch %d/%d step %d " + " ".join(f"{k}={v:.4f}" for k, v in means.items()) + " (%.1fs)",
                 epoch + 1, cfg.train.epochs, step, dt)

        # ============================ save ============================
        run.save(model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step, extra=extra)
        if args.stop_after_epoch == epoch + 1:
            log.info("--stop-after-epoch %d: stopping", epoch + 1)
            break
    run.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
