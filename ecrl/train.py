"""Train ECRL (transform-equivariant consistency learning for temporal sentence grounding).

    python ecrl/train.py                                   # the embedded synthetic set (configs/synthetic.yaml)
    python ecrl/train.py --config ecrl/configs/charades_i3d.yaml --data-root /data/tsg
    torchrun --standalone --nproc_per_node=2 ecrl/train.py  # DDP (gloo on CPU, nccl on GPUs)

Each step: augment the batch (exactly known transformed labels and time map), refine the
augmented video, run the shared network on both videos and minimise
L_ground + w_aug L_ground' + w_sscl SSCL + w_refine L_refine (see ecrl/model.py: ECRL).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # `python ecrl/train.py` / torchrun: make `ecrl` importable
    sys.path.insert(0, str(HERE.parent))

from common.checkpoint import load_training_state, save_training_state  # noqa: E402
from common.cli import base_parser, parse  # noqa: E402
from common.data import build_loader, set_epoch  # noqa: E402
from common.log import progress  # noqa: E402
from common.run import start_run  # noqa: E402
from common.runtime import all_reduce_mean, autocast, check_finite, cleanup_distributed, wrap_ddp  # noqa: E402
from common.tsg import collate_tsg  # noqa: E402
from ecrl.augment import AugConfig, augment  # noqa: E402
from ecrl.data import load_data  # noqa: E402
from ecrl.model import ECRL, ECRLNet  # noqa: E402
from ecrl.refine import SelfRefine  # noqa: E402

DEFAULTS = {
    "data": {
        "dataset": "tsg_synthetic",      # name recorded in results.json (paper datasets: charades_sta, ...)
        "subdir": "tsg_synthetic",       # folder under the data root
        "train": "charades_sta_train.txt",
        "test": "charades_sta_test.txt",
        "durations": "charades.json",    # Charades-STA only; "" for ActivityNet/TACoS
        "features": "features.h5",       # .h5/.hdf5 keyed by video id, or a folder of <vid>.npy
        "glove": "glove.txt",            # GloVe text format (glove.840B.300d.txt for the real sets)
        "format": "charades",            # charades | activitynet | tacos
        "feature_dim": 0,                # 0: whatever the store holds; else checked
        "num_clips": 64,
        "max_words": 20,
        "min_word_freq": 1,
        "resample": "mean",
        "on_bad_record": "error",        # error | skip (skipped records are counted and logged, never silent)
    },
    "model": {
        "word_dim": 300, "d": 512, "heads": 4, "query_layers": 1, "video_layers": 1, "fusion_layers": 2,
        "dropout": 0.2, "max_clips": 512, "freeze_words": True,
    },
    "ecrl": {
        "augment": True,                 # augmentation + equivariant grounding on the augmented video
        "refine": True,                  # self-refine module (needs augment)
        "w_aug": 1.0,                    # weight of the grounding loss on the augmented video
        "w_sscl": 1.0,                   # SSCL weight (0 turns SSCL off)
        "w_refine": 1.0,
        "w_inside": 1.0,                 # inside-BCE weight within each grounding loss
        "label_sigma": 1.0,              # soft boundary labels, in clips
        "sscl_sigma": 0.05,              # Gaussian prior width, fraction of the video
        "sscl_kappa": 0.1,               # similarity temperature
        "sscl_foreground_only": False,   # SSCL rows: only the moved foreground's clips
        "refine_hidden": 128,
        "refine_p_drop": 0.15,
        "refine_smooth": 0.1,
        "aug": {
            "p_temporal": 1.0, "speed_min": 0.5, "speed_max": 2.0, "crop_max": 0.3, "p_foreign": 0.5,
            "foreign_max": 0.4, "relocate": True, "noise_std": 0.1, "clip_dropout": 0.1,
        },
    },
    "train": {
        "epochs": 20, "batch_size": 32, "lr": 4e-4, "weight_decay": 1e-4, "warmup_steps": 300,
        "schedule": "cosine",            # cosine | inverse_sqrt (the group's released code)
        "grad_clip": 1.0, "num_workers": 0,
    },
    "eval": {"k": 5, "nms": 0.5, "max_len_frac": 1.0, "inside_weight": 1.0, "batch_size": 64},
}


def build_model(cfg, vocab_size: int, feat_dim: int, embeddings=None) -> ECRL:
    m = cfg.model
    net = ECRLNet(vocab_size=vocab_size, word_dim=m.word_dim, feat_dim=feat_dim, d=m.d, heads=m.heads,
                  query_layers=m.query_layers, video_layers=m.video_layers, fusion_layers=m.fusion_layers,
                  dropout=m.dropout, max_clips=max(m.max_clips, cfg.data.num_clips), embeddings=embeddings,
                  freeze_words=m.freeze_words)
    refine = SelfRefine(feat_dim, cfg.ecrl.refine_hidden) if (cfg.ecrl.augment and cfg.ecrl.refine) else None
    return ECRL(net, refine)


def lr_lambda(cfg, total_steps: int):
    warm = max(1, int(cfg.train.warmup_steps))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.train.schedule == "inverse_sqrt":
            return math.sqrt(warm / (step + 1))
        prog = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1 + math.cos(math.pi * prog))

    return f


def aug_inputs(batch: dict, cfg, seed: int, rank: int, step: int) -> dict:
    """Augmented batch for one step; its randomness is a pure function of (seed, rank, step), so
    resuming reproduces it without saving any augmentation state."""
    rng = np.random.default_rng([seed, rank, step])
    gen = torch.Generator().manual_seed(seed * 1_000_003 + rank * 7919 + step)
    acfg = AugConfig(**cfg.ecrl.aug.to_dict())
    video, start, end, plan = augment(batch, acfg, rng, gen)
    dev = video.device
    n = batch["video_mask"].shape[1]
    idx = np.arange(n)[None, :]
    fg_rows = (idx >= plan.fg[:, :1]) & (idx <= plan.fg[:, 1:])
    return {"video": video, "start": start, "end": end,
            "tau": torch.as_tensor(plan.tau, dtype=torch.float32, device=dev),
            "splice": torch.as_tensor(plan.splice, device=dev), "dropped": torch.as_tensor(plan.dropped, device=dev),
            "fg_rows": torch.as_tensor(fg_rows, device=dev)}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def loss_kwargs(cfg) -> dict:
    e = cfg.ecrl
    return {"weights": {"aug": e.w_aug, "sscl": e.w_sscl, "refine": e.w_refine, "inside": e.w_inside},
            "label_sigma": e.label_sigma, "sscl_sigma": e.sscl_sigma, "sscl_kappa": e.sscl_kappa,
            "sscl_foreground_only": e.sscl_foreground_only, "refine_p_drop": e.refine_p_drop,
            "refine_smooth": e.refine_smooth}


def main(argv=None) -> Path:
    run, _ = train(argv)
    return run.run_dir


def train(argv=None):
    """Parse, train, checkpoint every epoch; returns (run, model)."""
    args, cfg = parse(base_parser(__doc__, HERE / "configs" / "synthetic.yaml"), argv, DEFAULTS)
    if cfg.ecrl.refine and not cfg.ecrl.augment:
        cfg.ecrl.refine = False  # the refine module works on augmented videos only
    run = start_run("ecrl", args, cfg)
    log, dist = run.log, run.dist
    data = load_data(cfg, args.data_root, glove_cache=run.run_dir / "glove_cache.npy" if run.is_main else None)
    if run.is_main:
        data.vocab.save(run.run_dir / "vocab.json")
    loader = build_loader(data.train_set, cfg.train.batch_size, shuffle=True, seed=args.seed, dist=dist,
                          num_workers=cfg.train.num_workers, collate_fn=collate_tsg, drop_last=False)
    model = build_model(cfg, len(data.vocab), data.features.dim, data.embeddings).to(run.device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("ECRL: %d trainable parameters; augment=%s refine=%s w_sscl=%g", n_params, cfg.ecrl.augment,
             cfg.ecrl.refine, cfg.ecrl.w_sscl)
    model = wrap_ddp(model, dist, run.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    total = cfg.train.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, total))
    start_epoch, step = 0, 0
    if run.resume_from:
        st = load_training_state(run.resume_from, model=model, optimizer=opt, scheduler=sched,
                                 map_location=run.device)
        start_epoch, step = st["epoch"], st["step"]
        log.info("resumed at epoch %d step %d", start_epoch, step)
    kw = loss_kwargs(cfg)
    for epoch in range(start_epoch, cfg.train.epochs):
        model.train()
        set_epoch(loader, epoch)
        sums: dict[str, float] = {}
        nb, t0 = 0, time.perf_counter()
        for batch in progress(loader, dist.rank, desc=f"epoch {epoch}"):
            batch = to_device(batch, run.device)
            aug = aug_inputs(batch, cfg, args.seed, dist.rank, step) if cfg.ecrl.augment else None
            gen = torch.Generator().manual_seed(args.seed * 7_000_003 + dist.rank * 131 + step)
            with autocast(run.device, args.amp):
                parts = model(batch, aug, generator=gen, **kw)
            loss = parts["loss"]
            check_finite(loss, step, epoch, parts)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
            opt.step()
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
        if run.is_main:
            save_training_state(run.ckpt_dir / "last.pt", model=model, optimizer=opt, scheduler=sched,
                                epoch=epoch + 1, step=step, config=cfg.to_dict(),
                                extra={"vocab_size": len(data.vocab), "feat_dim": data.features.dim,
                                       "config_name": run.config_name, "seed": args.seed})
        if args.stop_after_epoch == epoch + 1:
            log.info("--stop-after-epoch %d: stopping", epoch + 1)
            break
    run.close()
    cleanup_distributed()
    return run, model


if __name__ == "__main__":
    main()
