"""Train MHST (Liu et al., "Hypotheses Tree Building for One-Shot Temporal Sentence Localization",
AAAI 2023, arXiv 2301.01871) from glance annotations. Documented defaults: mhst/config.py.

    python -m mhst.train                                          # embedded set (configs/synthetic.yaml)
    python -m mhst.train --config mhst/configs/synthetic_viga.yaml   # the ViGA-style peer baseline
    python -m mhst.train --config mhst/configs/charades_i3d.yaml --data-root /data/tsg
    python -m mhst.train --set mhst.prune=false                   # an ablation: no pruning
    torchrun --standalone --nproc_per_node=2 -m mhst.train        # DDP (gloo on CPU, nccl on GPUs)
    python -m mhst.train --resume auto                            # continue the latest run of this config and seed

Each step encodes the batch, grows the hypotheses tree of every video (mhst/tree.py) and
minimises the self-supervised objective of mhst/losses.py. The loop sees each training query's
video, sentence and glance, never its start/end (mhst/data.py: load_data wraps the train set in
common.tsg.dataset.GlanceView).
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
from mhst.config import DEFAULTS, RESUMABLE, RULES, uses_tree
from mhst.data import load_data
from mhst.losses import Objective
from mhst.model import build_model


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config("mhst")), argv, DEFAULTS, RULES)
    run = start_run("mhst", args, cfg, resumable=RESUMABLE)  # DDP, device, seeds; checks a resume; writes nothing
    log, dist = run.log, run.dist

    # ============================ data ============================
    data = load_data(cfg, args.data_root, seed=args.seed, log=log)  # every file and glance checked before the run dir exists
    run.open()                                               # run dir, lock, config/env record, train.log
    loader = build_loader(data.train_set, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=dist,
                          num_workers=cfg.train.num_workers, collate_fn=collate_tsg)

    # ============================ model ===========================
    model = build_model(cfg, len(data.vocab), data.features.dim, data.embeddings).to(run.device)
    log.info("%s: %d trainable parameters; tree=%s prune=%s", "MHST" if cfg.mhst.method == "mhst" else
             "ViGA-style baseline", sum(p.numel() for p in model.parameters() if p.requires_grad),
             cfg.mhst.tree if uses_tree(cfg) else "none", cfg.mhst.prune if uses_tree(cfg) else "-")
    model = wrap_ddp(model, dist, run.device)
    objective = Objective(cfg.mhst, uses_tree(cfg))

    # ========================== optimizer =========================
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = warmup_scheduler(opt, cfg.train.schedule, cfg.train.warmup_steps, cfg.train.epochs * len(loader))
    scaler = make_grad_scaler(run.device, args.amp)

    # =========================== resume ===========================
    start_epoch, step = run.resume(model=model, optimizer=opt, scheduler=sched, scaler=scaler)
    extra = {"vocab": data.vocab.itos, "feat_dim": data.features.dim}  # what eval needs to rebuild the model

    # ============================ loop ============================
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        set_epoch(loader, epoch)
        sums: dict[str, float] = {}
        nb, t0 = 0, time.perf_counter()
        for batch in progress(loader, dist.rank, desc=f"epoch {epoch}"):
            batch = to_device(batch, run.device)
            with autocast(run.device, args.amp):
                parts = objective(model(batch), batch)
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
        run.metrics.log(step, "train", epoch=epoch + 1, lr=sched.get_last_lr()[0], **means)
        log.info("epoch %d/%d step %d " + " ".join(f"{k}={v:.4f}" for k, v in means.items()) + " (%.1fs, %.0f samples/s)",
                 epoch + 1, cfg.train.epochs, step, dt, nb * cfg.train.batch_size * dist.world_size / max(dt, 1e-9))

        # ============================ save ============================
        run.save(model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                 extra=extra)
        if args.stop_after_epoch == epoch + 1:
            log.info("--stop-after-epoch %d: stopping", epoch + 1)
            break
    run.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
