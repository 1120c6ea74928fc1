"""ProS speed/memory benchmark (``make bench-pros``), at DINO's shapes by default: ViT-S/16, 2
global crops at 224 px + 8 local crops at 96 px, K = 8192 prototypes (pros/config.py DEFAULTS).

* pretraining samples/s of the full step (multi-crop augmentation on uint8 images + student on
  every view + teacher on the global views + prototype matching loss with Sinkhorn or centring +
  backward + AdamW + EMA update), and the share of the step spent in the augmentation
  (the "data wait" of a loader that augments in the training process, as train.py does);
* achieved FLOP/s of the step (torch.utils.flop_counter) as a fraction of a dense-matmul peak
  measured in the same process, same device and dtype;
* fine-tuning images/s (backbone + landmark head, backward, AdamW) and inference images/s
  (teacher forward at the downstream size), peak memory.

    python -m pros.bench [--device cuda] [--amp] [--batch 64] [--iters 5]
    python -m pros.bench --config pros/configs/synthetic.yaml     # the embedded set's tiny ViT
"""

from __future__ import annotations

import argparse
import time

import torch

from common.bench import (
    count_flops,
    cpu_seconds,
    matmul_peak_pair,
    peak_memory_bytes,
    reset_peak_memory,
    time_fn,
    write_bench,
)
from common.config import load_config
from common.runtime import amp_dtype, autocast, resolve_device, seed_everything
from pros.augment import MultiCrop, normalize, step_generator
from pros.config import DEFAULTS, RULES
from pros.losses import Objective
from pros.model import TaskHead, build_model, encode


def bench(cfg, device, amp: bool, batch: int, iters: int) -> dict:
    seed_everything(0)
    model = build_model(cfg, weights=None).to(device)
    objective = Objective(cfg).to(device)
    opt = torch.optim.AdamW(model.trainable_groups(0.04), lr=1e-4)
    crops = MultiCrop(cfg.crops)
    size = int(cfg.data.image_size)
    images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    n = [0]
    t_aug = []

    def augment():
        t0 = time.perf_counter()
        g, loc = crops(images, step_generator(0, 0, n[0]))
        out = [v.to(device, non_blocking=True) for v in g], [v.to(device, non_blocking=True) for v in loc]
        t_aug.append(time.perf_counter() - t0)
        return out

    def step():
        g, loc = augment()
        n[0] += 1
        with autocast(device, amp):
            out = model(g, loc)
        loss = objective(out, n[0])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_teacher(0.996)

    reset_peak_memory(device)
    flops = count_flops(step)                    # also the warm-up step
    t_aug.clear()
    c0 = cpu_seconds()
    t = time_fn(step, device, warmup=0, iters=iters)
    cpu_step = (cpu_seconds() - c0) / iters
    t_aug_med = sorted(t_aug)[len(t_aug) // 2]
    rec = {"batch": batch, "views": f"{cfg.crops.n_global}x{cfg.crops.global_size} + {cfg.crops.n_local}x{cfg.crops.local_size}",
           "prototypes": int(cfg.head.prototypes), "balance": cfg.loss.balance, "train_step_s": t,
           "train_cpu_s_per_step": cpu_step, "train_samples_per_s": batch / t, "train_flops_per_step": flops,
           "train_flops_per_s": flops / t, "train_flops_per_cpu_s": flops / cpu_step,
           "augment_share": t_aug_med / t}
    # fine-tuning: teacher backbone + landmark head on the downstream size, end to end
    bb = model.teacher.backbone
    for p in bb.parameters():
        p.requires_grad_(True)
    ds = int(cfg.data.downstream_size)
    patch = int(bb.patch_embed.patch_size[0])
    grid = (ds // patch, ds // patch) if cfg.downstream.landmark_linear else None
    head = TaskHead("landmarks", bb.embed_dim, 68, patch, grid).to(device)
    ft_opt = torch.optim.AdamW(list(bb.parameters()) + list(head.parameters()), lr=1e-5)
    x = normalize(torch.rand(batch, 3, ds, ds)).to(device)
    y = torch.rand(batch, 68, 2, device=device) * ds

    def finetune_step():
        with autocast(device, amp):
            pred = head(encode(bb, x))
        loss = (pred.float() - y).abs().mean()
        ft_opt.zero_grad(set_to_none=True)
        loss.backward()
        ft_opt.step()

    rec["finetune_images_per_s"] = batch / time_fn(finetune_step, device, warmup=1, iters=max(2, iters // 2))
    bb.eval()

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            encode(bb, x)

    rec["infer_images_per_s"] = batch / time_fn(infer, device, warmup=1, iters=max(3, iters))
    rec["peak_memory_bytes"] = peak_memory_bytes(device)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: on for CUDA, off for CPU)")
    ap.add_argument("--config", default=None, help="a config whose model and crops to use (default: DEFAULTS, DINO's shapes)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--batch", type=int, default=None, help="images per step (default: 64 on CUDA, 4 on CPU)")
    ap.add_argument("--iters", type=int, default=None, help="timed steps (default: 10 on CUDA, 2 on CPU)")
    ap.add_argument("--runs-root", default=None)
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    amp = (device.type == "cuda") if a.amp is None else a.amp
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    batch = a.batch or (64 if device.type == "cuda" else 4)
    iters = a.iters or (10 if device.type == "cuda" else 2)
    dtype = amp_dtype(device) if amp else torch.float32
    peak, peak_cpu = matmul_peak_pair(device, dtype)   # per wall-second (fastest call) and per CPU-second
    rec = {"project": "pros", "device": str(device), "amp": amp, "dtype": str(dtype),
           "torch_threads": torch.get_num_threads(), "matmul_peak_flops": peak, "matmul_peak_flops_per_cpu_s": peak_cpu,
           "model": cfg.model.to_dict(), "head": cfg.head.to_dict()}
    t0 = time.perf_counter()
    r = bench(cfg, device, amp, batch, iters)
    r["fraction_of_matmul_peak"] = r["train_flops_per_s"] / peak
    if device.type == "cpu":
        r["fraction_of_matmul_peak_cpu_time"] = r["train_flops_per_cpu_s"] / peak_cpu
    rec.update(r)
    print(f"device {device} amp={amp} threads={torch.get_num_threads()} matmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"{cfg.model.arch} views {r['views']}, batch {batch}, K={r['prototypes']}: pretrain "
          f"{r['train_samples_per_s']:.1f} samples/s ({r['train_step_s']:.2f} s/step, {r['train_cpu_s_per_step']:.1f} CPU-s/step), "
          f"{r['train_flops_per_step'] / 1e9:.0f} GFLOP/step = {100 * r['fraction_of_matmul_peak']:.1f}% of the matmul peak"
          + (f" ({100 * r['fraction_of_matmul_peak_cpu_time']:.1f}% per CPU-second)" if device.type == "cpu" else "")
          + f"; augmentation {100 * r['augment_share']:.0f}% of the step; fine-tune {r['finetune_images_per_s']:.1f} img/s; "
          f"inference {r['infer_images_per_s']:.1f} img/s; peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB "
          f"({time.perf_counter() - t0:.0f} s)")
    path = write_bench("pros", rec, a.runs_root)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
