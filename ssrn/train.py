"""Train SSRN (Zhu, Liu et al., "Rethinking the Video Sampling and Reasoning Strategies for Temporal
Sentence Grounding", arXiv 2301.00514). Documented defaults: ssrn/config.py.

    python -m ssrn.train                                          # embedded set (configs/synthetic.yaml)
    python -m ssrn.train --config ssrn/configs/charades_i3d.yaml --data-root /data/tsg
    python -m ssrn.train --set ssrn.reasoning=false               # an ablation: siamese sequences as extra samples
    torchrun --standalone --nproc_per_node=2 -m ssrn.train        # DDP (gloo on CPU, nccl on GPUs)
    python -m ssrn.train --resume auto                            # continue the latest run of this config and seed

Each step runs the shared network once over the anchor and the S siamese sequences of every video
(ssrn/sampling.py: offsets a pure function of (seed, epoch, index)) and minimises ssrn/losses.py:
the GT loss of every sequence on its own grid plus alpha x KL(Q || P_anchor), Q the soft boundary
labels reasoned from the siamese sequences (ssrn/reasoning.py).
"""

from __future__ import annotations

import time

import torch

from common.cli import base_parser, default_config, parse
from common.data import build_loader, set_epoch
from common.log import progress
from common.run import runs_root, start_run
from common.runtime import all_reduce_mean, autocast, check_step, make_grad_scaler, wrap_ddp
from common.tsg.dataset import collate_tsg, to_device
from common.tsg.schedule import warmup_scheduler
from ssrn.config import DEFAULTS, RESUMABLE, RULES, validate
from ssrn.data import load_data
from ssrn.losses import Objective
from ssrn.model import build_model


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config("ssrn")), argv, DEFAULTS, RULES)
    validate(cfg)
    run = start_run("ssrn", args, cfg, resumable=RESUMABLE)  # DDP, device, seeds; checks a resume; writes nothing
    log, dist = run.log, run.dist

    # ============================ data ============================
    cache = runs_root(args.runs_root) / "ssrn" / "cache" / f"{cfg.data.subdir.replace('/', '_')}_glove_vocab.npy"
    data = load_data(cfg, args.data_root, seed=args.seed, glove_cache=cache, log=log)  # every file checked first
    run.open()                                                                  # run dir, lock, record, train.log
    loader = build_loader(data.train_set, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=dist,
                          num_workers=cfg.train.num_workers, collate_fn=collate_tsg)

    # ============================ model ===========================
    model = build_model(cfg, len(data.vocab), data.features.dim, data.embeddings).to(run.device)
    log.info("SSRN: %d trainable parameters; siamese=%d jitter=%s reasoning=%s alpha=%g fuse_siamese=%s resample=%s",
             sum(p.numel() for p in model.parameters() if p.requires_grad), cfg.ssrn.siamese, cfg.ssrn.jitter,
             cfg.ssrn.reasoning, cfg.ssrn.alpha, cfg.ssrn.fuse_siamese, cfg.data.resample)
    model = wrap_ddp(model, dist, run.device)
    objective = Objective(cfg.ssrn)

    # ========================== optimizer =========================
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = warmup_scheduler(opt, cfg.train.schedule, cfg.train.warmup_steps, cfg.train.epochs * len(loader))
    scaler = make_grad_scaler(run.device, args.amp)

    # =========================== resume ===========================
    start_epoch, step = run.resume(model=model, optimizer=opt, scheduler=sched, scaler=scaler)

    # ============================ loop ============================
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        set_epoch(loader, epoch)
        data.train_set.set_epoch(epoch)   # this epoch's siamese offsets: a function of (seed, epoch, index)
        sums: dict[str, float] = {}
        nb, t0 = 0, time.perf_counter()
        for batch in progress(loader, dist.rank, desc=f"epoch {epoch}"):
            batch = to_device(batch, run.device)
            with autocast(run.device, args.amp):
                out = model(batch["video"], batch["video_mask"], batch["times"], batch["words"], batch["word_mask"])
            parts = objective(out, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(parts["loss"]).backward()
            if cfg.train.grad_clip > 0:
                scaler.unscale_(opt)
            check_step(parts, model, step, epoch, scaler=scaler)   # loss, gradients, parameters finite
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
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
        run.save(model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                 extra={"vocab": data.vocab.itos, "feat_dim": data.features.dim})
        if args.stop_after_epoch == epoch + 1:
            log.info("--stop-after-epoch %d: stopping", epoch + 1)
            break
    log.info("done: %s", run.run_dir)
    run.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
