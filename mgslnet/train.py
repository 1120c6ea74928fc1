"""Train MGSL-Net (Liu et al., "Memory-Guided Semantic Learning Network for Temporal Sentence
Grounding", AAAI 2022, arXiv 2201.00454). Documented defaults: mgslnet/config.py.

    python -m mgslnet.train                                          # embedded long-tail set (configs/synthetic.yaml)
    python -m mgslnet.train --config mgslnet/configs/charades_i3d.yaml --data-root /data/tsg
    python -m mgslnet.train --set mgsl.memory=none                   # an ablation: no memory
    torchrun --standalone --nproc_per_node=2 -m mgslnet.train        # DDP (gloo on CPU, nccl on GPUs)
    python -m mgslnet.train --resume auto                            # continue the latest run of this config and seed

Each step runs the network of mgslnet/model.py and minimises the objective of mgslnet/losses.py.
"""

from __future__ import annotations

import time

import torch

from common.cli import base_parser, default_config, parse
from common.data import build_loader, set_epoch
from common.log import progress
from common.run import start_run
from common.runtime import all_reduce_mean, autocast, check_step, make_grad_scaler, unwrap, wrap_ddp
from common.tsg.dataset import collate_tsg, to_device
from common.tsg.schedule import warmup_scheduler
from mgslnet.config import DEFAULTS, RESUMABLE, RULES
from mgslnet.data import load_data
from mgslnet.losses import Objective
from mgslnet.model import build_model, n_params


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config("mgslnet")), argv, DEFAULTS, RULES)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run = start_run("mgslnet", args, cfg, resumable=RESUMABLE)  # DDP, device, seeds; checks a resume; writes nothing
    log, dist = run.log, run.dist

    # ============================ data ============================
    data = load_data(cfg, args.data_root, seed=args.seed, glove_cache=cfg.train.glove_cache or None,
                     log=log)                                    # every file checked before the run dir exists
    run.open()                                                   # run dir, lock, config/env record, train.log
    loader = build_loader(data.train_set, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=dist,
                          num_workers=cfg.train.num_workers, collate_fn=collate_tsg)

    # ============================ model ===========================
    model = build_model(cfg, len(data.vocab), data.features.dim, data.embeddings).to(run.device)
    g = cfg.mgsl
    log.info("MGSL-Net: %d trainable parameters; interaction=%s memory=%s (K=%d, tau=%g) w_align=%g hetero=%s",
             n_params(model), g.interaction, g.memory, g.slots, g.tau, g.w_align, g.hetero)
    model = wrap_ddp(model, dist, run.device)
    objective = Objective(cfg.mgsl)

    # ========================== optimizer =========================
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = warmup_scheduler(opt, cfg.train.schedule, cfg.train.warmup_steps, cfg.train.epochs * len(loader))
    scaler = make_grad_scaler(run.device, args.amp)

    # =========================== resume ===========================
    start_epoch, step = run.resume(model=model, optimizer=opt, scheduler=sched, scaler=scaler)

    # ============================ loop ============================
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        set_epoch(loader, epoch)
        sums: dict[str, float] = {}
        nb, t0 = 0, time.perf_counter()
        for batch in progress(loader, dist.rank, desc=f"epoch {epoch}"):
            batch = to_device(batch, run.device)
            with autocast(run.device, args.amp):
                out = model(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
            parts = objective(out, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(parts["loss"]).backward()
            check_step(parts, model, step, epoch, scaler=scaler)  # loss, gradients, parameters finite
            if cfg.train.grad_clip > 0:
                scaler.unscale_(opt)
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
        usage = {f"{tag}_slots_used": int((m.usage > 0.1 / m.usage.numel()).sum())
                 for tag, m in (("video", unwrap(model).video_memory), ("query", unwrap(model).query_memory))
                 if hasattr(m, "usage")}
        run.metrics.log(step, "train", epoch=epoch + 1, lr=sched.get_last_lr()[0], **means, **usage)
        log.info("epoch %d/%d step %d " + " ".join(f"{k}={v:.4f}" for k, v in means.items()) + " %s (%.1fs, %.0f samples/s)",
                 epoch + 1, cfg.train.epochs, step, usage or "", dt, nb * cfg.train.batch_size * dist.world_size / max(dt, 1e-9))

        # ============================ save ============================
        run.save(model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                 extra={"vocab": data.vocab.itos, "feat_dim": data.features.dim})  # what eval needs to rebuild the model
        if args.stop_after_epoch == epoch + 1:
            log.info("--stop-after-epoch %d: stopping", epoch + 1)
            break
    run.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
