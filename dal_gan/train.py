"""Train DAL-GAN (Di, Hu, Patel, "Heterogeneous Face Frontalization via Domain Agnostic Learning",
IEEE FG 2021, arXiv 2107.08311): thermal profile -> visible frontal. Documented defaults: dal_gan/config.py.

    python -m dal_gan.train                                       # embedded set (configs/synthetic.yaml)
    python -m dal_gan.train --config dal_gan/configs/synthetic_pix2pix.yaml      # the pix2pix baseline
    python -m dal_gan.train --config dal_gan/configs/arl_vtf.yaml --data-root /data
    torchrun --standalone --nproc_per_node=2 -m dal_gan.train     # DDP (gloo on CPU, nccl on GPUs)
    python -m dal_gan.train --resume auto                         # continue the latest run of this config and seed

Needs the frozen identity-loss embedder first (python -m dal_gan.embedders) when loss.id > 0.
Each step (pix2pix's order): the generator runs on [thermal; visible] (dual path) or thermal; the
discriminators step on the detached output; then the generator steps on the multi-purpose loss
(losses.py) with the discriminators frozen.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

import torch
import torch.nn as nn

from common.cli import base_parser, default_config, parse
from common.data import build_loader, set_epoch
from common.log import progress
from common.run import start_run
from common.runtime import all_reduce_mean, autocast, check_step, make_grad_scaler, unwrap, wrap_ddp
from dal_gan.config import DEFAULTS, RESUMABLE, RULES
from dal_gan.data import ImageStore, PairSet, load_data
from dal_gan.embedders import embedder_path, load_embedder
from dal_gan.losses import Objective, Perceptual
from dal_gan.metrics import ssim
from dal_gan.model import build_discriminators, build_model


def set_requires_grad(modules, flag: bool) -> None:
    for m in modules:
        if m is not None:
            for p in m.parameters():
                p.requires_grad_(flag)


def linear_decay(total: int, decay_from: float):
    """pix2pix's 'linear' policy: constant, then linearly to 0 over the last (1 - decay_from) of the steps."""
    start = int(decay_from * total)
    return lambda s: 1.0 if s < start else max(0.0, 1.0 - (s - start) / max(1, total - start))


@torch.no_grad()
def validate(g: nn.Module, val: PairSet, device: torch.device, batch: int = 128) -> dict[str, float]:
    """L1 (in [0, 1]) and SSIM of the thermal path's output to the frontal target on the val frames."""
    if len(val) == 0:
        return {}
    was = g.training
    g.eval()
    l1, s = [], []
    for i in range(0, len(val), batch):
        x, y = val.thermal[i:i + batch].to(device), val.target[i:i + batch].to(device)
        f = (unwrap(g)(x * 2 - 1)["fake"] + 1) / 2
        l1.append((f - y).abs().flatten(1).mean(1))
        s.append(ssim(f.cpu(), y.cpu()))
    g.train(was)
    return {"val_l1": float(torch.cat(l1).mean()), "val_ssim": float(torch.cat(s).mean())}


def main(argv=None) -> int:
    args, cfg = parse(base_parser(__doc__, default_config("dal_gan")), argv, DEFAULTS, RULES)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run = start_run("dal_gan", args, cfg, resumable=RESUMABLE)  # DDP, device, seeds; checks a resume; writes nothing
    with run:  # an error that ends training goes into train.log too
        # ============================ data ============================
        data = load_data(cfg, args.data_root, log_=run.log)       # every file checked before the run dir exists
        emb_path = embedder_path(cfg, "loss", args.runs_root) if cfg.loss.id > 0 else None
        embedder = load_embedder(emb_path) if emb_path else None  # a missing embedder fails here, before open()
        perceptual = Perceptual(cfg.loss.perc_layers) if cfg.loss.perc > 0 else None
        run.open()                                                # run dir, lock, config/env record, train.log
        if emb_path:
            run.log.info("identity-loss embedder: %s", emb_path)
        store = ImageStore(cfg.data.size, cfg.data.box_margin)
        train_set, val_set = PairSet(data.train, data, store, data.label), PairSet(data.val, data, store, data.label)
        loader = build_loader(train_set, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=run.dist,
                              num_workers=cfg.train.workers, drop_last=True)
        if len(loader) == 0:
            raise ValueError(f"{len(train_set)} training frames are fewer than one batch of {cfg.train.batch_size} per process")

        # ============================ model ===========================
        dev = run.device
        g = wrap_ddp(build_model(cfg, len(data.train_subjects)).to(dev), run.dist, dev)
        d_global, d_local, patches = build_discriminators(cfg)
        d_global = wrap_ddp(d_global.to(dev), run.dist, dev)
        d_local = wrap_ddp(d_local.to(dev), run.dist, dev) if d_local is not None else None
        patches = patches.to(dev) if patches is not None else None
        discs = nn.ModuleDict({"global": d_global, **({"local": d_local} if d_local is not None else {})})
        objective = Objective(cfg, perceptual, embedder).to(dev)

        # ========================== optimizer =========================
        t = cfg.train
        opt_g = torch.optim.Adam(g.parameters(), lr=t.lr_g, betas=(t.beta1, 0.999))
        opt_d = torch.optim.Adam(discs.parameters(), lr=t.lr_d, betas=(t.beta1, 0.999))
        total = t.epochs * len(loader)
        sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, linear_decay(total, t.decay_from))
        sched_d = torch.optim.lr_scheduler.LambdaLR(opt_d, linear_decay(total, t.decay_from))
        scaler = make_grad_scaler(dev, args.amp)

        # =========================== resume ===========================
        more = {"d_global": d_global, "opt_d": opt_d, "sched_d": sched_d, **({"d_local": d_local} if d_local else {})}
        start_epoch, step = run.resume(model=g, optimizer=opt_g, scheduler=sched_g, scaler=scaler, **more)
        run.log.info("%s | generator %d params, discriminators %d | %d steps/epoch, batch %d x %d process(es)",
                     data.summary(), sum(p.numel() for p in g.parameters()), sum(p.numel() for p in discs.parameters()),
                     len(loader), t.batch_size, run.dist.world_size)

        # ============================ loop ============================
        v_key = "visible" if cfg.dual.v_input == "same_pose" else "frontal"
        for epoch in range(start_epoch, t.epochs):
            set_epoch(loader, epoch)
            g.train()
            discs.train()
            sums, t0 = defaultdict(float), time.perf_counter()
            for batch in progress(loader, run.dist.rank, desc=f"epoch {epoch}"):
                batch = {k: v.to(dev) for k, v in batch.items()}
                inp = torch.cat([batch["thermal"], batch[v_key]]) if cfg.dual.enabled else batch["thermal"]
                with autocast(dev, args.amp):
                    out = g(inp * 2 - 1)                                  # path T (and path V), one shared encoder
                # -- discriminators: real [thermal, target] vs fake [thermal, G(thermal)] (+ local patches)
                set_requires_grad(discs.values(), True)
                with autocast(dev, args.amp):
                    d_parts = objective.discriminator(batch, out["fake"][: len(batch["thermal"])], d_global, d_local, patches)
                opt_d.zero_grad(set_to_none=True)
                scaler.scale(d_parts["loss"]).backward()
                check_step(d_parts, discs, step, epoch, scaler=scaler)
                scaler.step(opt_d)
                # -- generator: the multi-purpose loss, discriminators frozen (their plain modules: no DDP hooks)
                set_requires_grad(discs.values(), False)
                with autocast(dev, args.amp):
                    g_parts = objective.generator(out, batch, unwrap(d_global), unwrap(d_local) if d_local else None, patches)
                opt_g.zero_grad(set_to_none=True)
                scaler.scale(g_parts["loss"]).backward()
                if step == t.poison_grad_step:                            # test hook (NaN guard)
                    next(p for p in g.parameters() if p.grad is not None).grad.view(-1)[0] = float("nan")
                check_step(g_parts, g, step, epoch, scaler=scaler)        # loss, gradients, parameters finite
                scaler.step(opt_g)
                scaler.update()
                sched_g.step()
                sched_d.step()
                step += 1
                for k, v in g_parts.items():
                    sums[k] += float(v.detach())
                for k, v in d_parts.items():
                    sums["d_" + k if not k.startswith("d_") else k] += float(v.detach())
            n = len(loader)
            means = {k: all_reduce_mean(v / n) for k, v in sums.items()}
            means.update(validate(g, val_set, dev))
            run.metrics.log(step, "train", epoch=epoch + 1, lr=sched_g.get_last_lr()[0],
                            epoch_s=round(time.perf_counter() - t0, 2), **means)
            run.log.info("epoch %d/%d step %d | %s | %.1f s", epoch + 1, t.epochs, step,
                         " ".join(f"{k} {v:.4g}" for k, v in means.items() if not math.isnan(v)), time.perf_counter() - t0)

        # ============================ save ============================
            run.save(model=g, optimizer=opt_g, scheduler=sched_g, scaler=scaler, epoch=epoch + 1, step=step,
                     extra={"n_classes": len(data.train_subjects), "train_subjects": data.train_subjects}, **more)
            if args.stop_after_epoch is not None and epoch + 1 >= args.stop_after_epoch:
                break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
