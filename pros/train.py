"""Pretrain ProS (Di, Zheng, Liu, Cheng, "ProS: Facial Omni-Representation Learning via
Prototype-based Self-Distillation", WACV 2024, arXiv 2311.01929): a student ViT matches the
similarity distributions of an EMA teacher ViT against learnable prototypes, on multi-crop views
of curated face images. Documented defaults: pros/config.py.

    python -m pros.train                                       # embedded set (configs/synthetic.yaml)
    python -m pros.train --config pros/configs/laion_face.yaml --data-root /data
    python -m pros.train --set head.kind=dino                  # the DINO-head baseline
    torchrun --standalone --nproc_per_node=2 -m pros.train     # DDP (gloo on CPU, nccl on GPUs)
"""

from __future__ import annotations

import math
import time

import torch

from common.cli import base_parser, default_config, parse
from common.data import build_loader, set_epoch
from common.log import progress
from common.run import start_run
from common.runtime import all_reduce_mean, autocast, check_step, make_grad_scaler, unwrap, wrap_ddp
from pros.augment import MultiCrop, step_generator
from pros.config import DEFAULTS, RESUMABLE, RULES
from pros.data import check_all
from pros.losses import CollapseAlarm, Objective
from pros.model import build_model, cosine, ema_momentum


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config("pros")), argv, DEFAULTS, RULES)
    run = start_run("pros", args, cfg, resumable=RESUMABLE)
    tc = cfg.train

    # ============================ data ============================
    pool, _ = check_all(cfg, args.data_root, downstream=False, log_=run.log)   # every file checked first
    run.log.info("pretraining pool: %d images (%s)", len(pool),
                 cfg.data.curated if cfg.data.curation else f"raw folder {cfg.data.pretrain}")
    run.open()
    loader = build_loader(pool, tc.batch_size, shuffle=True, seed=args.seed, dist=run.dist, drop_last=True,
                          num_workers=cfg.data.workers if pool.tensor is None else 0)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(pool)} pool images make no batch of {tc.batch_size} per process: lower "
                         f"train.batch_size or add images")
    total = tc.epochs * steps_per_epoch
    crops = MultiCrop(cfg.crops)

    # ============================ model ===========================
    torch.manual_seed(args.seed)                       # the same initial weights on every rank
    pros = build_model(cfg).to(run.device)
    model = wrap_ddp(pros, run.dist, run.device)
    objective = Objective(cfg, steps_per_epoch).to(run.device)
    alarm = CollapseAlarm(cfg)
    run.log.info("student %.2fM parameters (backbone %.2fM), %s head, K=%d, balance=%s",
                 sum(p.numel() for p in pros.student.parameters()) / 1e6,
                 sum(p.numel() for p in pros.student.backbone.parameters()) / 1e6, cfg.head.kind,
                 cfg.head.prototypes, cfg.loss.balance)

    # ========================== optimizer =========================
    world_batch = tc.batch_size * run.dist.world_size
    peak = tc.lr * world_batch / 256.0                 # DINO's linear scaling rule
    opt = torch.optim.AdamW(pros.trainable_groups(tc.weight_decay), lr=peak)
    warm = tc.warmup_epochs * steps_per_epoch

    def lr_factor(step: int) -> float:                 # linear warm-up, then cosine to min_lr (DINO)
        if step < warm:
            return (step + 1) / warm
        return cosine(step - warm, total - warm, 1.0, tc.min_lr / peak)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    scaler = make_grad_scaler(run.device, args.amp)

    # =========================== resume ===========================
    start_epoch, step = run.resume(model=pros, optimizer=opt, scheduler=sched, scaler=scaler, objective=objective)

    # ============================ loop ============================
    for epoch in range(start_epoch, tc.epochs):
        set_epoch(loader, epoch)
        model.train()
        sums: dict[str, float] = {}
        t_data = t_all = 0.0
        t_prev = time.perf_counter()
        for images in progress(loader, run.dist.rank, desc=f"epoch {epoch}"):
            g = step_generator(args.seed, run.dist.rank, step)       # the crops are a function of (seed, rank, step)
            globals_, locals_ = crops(images, g)
            globals_ = [v.to(run.device, non_blocking=True) for v in globals_]
            locals_ = [v.to(run.device, non_blocking=True) for v in locals_]
            t_data += time.perf_counter() - t_prev
            wd = cosine(step, total, tc.weight_decay, tc.weight_decay_end)
            for grp in opt.param_groups:
                if grp["apply_wd"]:
                    grp["weight_decay"] = wd
            with autocast(run.device, args.amp):
                out = model(globals_, locals_)
            parts = objective(out, step)
            opt.zero_grad(set_to_none=True)
            scaler.scale(parts["loss"]).backward()
            if epoch < tc.freeze_last_layer:                         # DINO: the last layer is frozen in epoch 1
                for p in pros.student.last.parameters():
                    p.grad = None
            if step == tc.poison_grad_step:                          # test hook for the NaN guard
                next(p for p in pros.student.parameters() if p.grad is not None).grad.view(-1)[0] = float("nan")
            scaler.unscale_(opt)
            check_step(parts, pros, step, epoch, scaler=scaler)      # loss, gradients, parameters finite
            if tc.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(pros.student.parameters(), tc.clip_grad)
            scaler.step(opt)
            scaler.update()
            sched.step()
            m = ema_momentum(step, total, cfg.teacher.momentum, cfg.teacher.momentum_end)
            unwrap(model).update_teacher(m)
            step += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            now = time.perf_counter()
            t_all += now - t_prev
            t_prev = now
        means = {k: all_reduce_mean(v / steps_per_epoch) for k, v in sums.items()}
        collapse = alarm.check(epoch, means["loss"], means["prototypes_used"], run.log)
        run.metrics.log(step, "train", epoch=epoch + 1, lr=sched.get_last_lr()[0], momentum=m, weight_decay=wd,
                        teacher_temp=objective.teacher_temp(step - 1), ln_k=math.log(cfg.head.prototypes),
                        collapsed=float(collapse is not None), data_share=t_data / max(t_all, 1e-9),
                        samples_per_s=steps_per_epoch * world_batch / max(t_all, 1e-9), **means)
        run.log.info("epoch %d: loss %.4f (ln K %.3f) teacher entropy %.3f, %d/%d prototypes used, %.0f samples/s",
                     epoch + 1, means["loss"], math.log(cfg.head.prototypes), means["teacher_entropy"],
                     means["prototypes_used"], cfg.head.prototypes, steps_per_epoch * world_batch / max(t_all, 1e-9))

    # ============================ save ============================
        run.save(model=pros, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                 objective=objective, extra={"collapse": collapse})
        if tc.keep_every and (epoch + 1) % tc.keep_every == 0:
            run.save(model=pros, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                     objective=objective, extra={"collapse": collapse}, name=f"epoch{epoch + 1:04d}.pt")
        if args.stop_after_epoch is not None and epoch + 1 >= args.stop_after_epoch:
            break
    run.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
