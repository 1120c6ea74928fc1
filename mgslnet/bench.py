"""MGSL-Net speed/memory benchmark (``make bench-mgslnet``).

For each shape (common.tsg.bench.SHAPES: Charades 64 clips, batch 32, I3D 1024-d; ActivityNet 200
clips, batch 32, C3D 500-d) with the paper-scale model (the DEFAULTS of mgslnet/config.py: d=512,
K=128 slots per domain, 2 GCN layers):

* training samples/s of a full step (forward, the whole objective, backward, Adam step);
* achieved FLOP/s of that step (torch.utils.flop_counter: matmuls/attention; elementwise ops
  are free) as a fraction of a dense-matmul peak measured in the same process, same device and
  dtype;
* inference queries/s (forward + top-5 decoding) and parameters, **with and without the memory**
  (``mgsl.memory=none``), for the abstract's efficiency claim; peak memory;
* a torch.profiler table of the top ops of one training step (why the fraction is what it is).

    python -m mgslnet.bench [--device cuda] [--amp] [--shapes charades activitynet] [--iters 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from common.bench import (
    count_flops,
    cpu_seconds,
    matmul_peak,
    peak_memory_bytes,
    reset_peak_memory,
    time_fn,
    write_bench,
)
from common.config import load_config
from common.runtime import amp_dtype, autocast, resolve_device, seed_everything
from common.tsg.bench import SHAPES, fake_batch
from mgslnet.config import DEFAULTS, RULES
from mgslnet.losses import Objective
from mgslnet.model import build_model, decode, n_params

BENCH_SHAPES = ("charades", "activitynet")


def bench_shape(shape: dict, cfg, device, amp: bool, iters: int, profile: bool) -> dict:
    seed_everything(0)
    model = build_model(cfg, shape["vocab"], shape["feat"]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    batch = fake_batch(shape, device)
    objective = Objective(cfg.mgsl)

    def train_step():
        with autocast(device, amp):
            out = model(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
        loss = objective(out, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    reset_peak_memory(device)
    flops = count_flops(train_step)  # also the warm-up step
    c0 = cpu_seconds()
    t = time_fn(train_step, device, warmup=0, iters=iters)
    cpu_per_step = (cpu_seconds() - c0) / iters
    rec = {"clips": shape["clips"], "batch": shape["batch"], "feature_dim": shape["feat"],
           "params": n_params(model), "train_step_s": t, "train_cpu_s_per_step": cpu_per_step,
           "train_samples_per_s": shape["batch"] / t, "train_flops_per_step": flops,
           "train_flops_per_s": flops / t, "train_flops_per_cpu_s": flops / max(cpu_per_step, 1e-9)}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprof

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with tprof(activities=acts) as prof:
            train_step()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        rec["profile_top_ops"] = prof.key_averages().table(sort_by=key, row_limit=12)
    rec["peak_memory_bytes"] = peak_memory_bytes(device)
    model.eval()

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            out = model(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
        decode(out, batch["video_mask"], k=5)

    rec["infer_queries_per_s"] = shape["batch"] / time_fn(infer, device, warmup=1, iters=max(iters, 3))
    return rec


def infer_only(shape: dict, cfg, device, amp: bool, iters: int) -> dict:
    """Parameters and inference queries/s of a model built from ``cfg`` (the no-memory row)."""
    seed_everything(0)
    model = build_model(cfg, shape["vocab"], shape["feat"]).to(device).eval()
    batch = fake_batch(shape, device)

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            out = model(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
        decode(out, batch["video_mask"], k=5)

    return {"params": n_params(model), "infer_queries_per_s": shape["batch"] / time_fn(infer, device, warmup=1,
                                                                                         iters=max(iters, 3))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: on for CUDA, off for CPU)")
    ap.add_argument("--config", default=None, help="a config whose model widths to use (default: DEFAULTS, the paper scale)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--shapes", nargs="+", default=list(BENCH_SHAPES), choices=list(SHAPES))
    ap.add_argument("--cpu-clips", type=int, default=128,
                    help="on CPU, 200-clip shapes (ActivityNet, TACoS) run at this many clips to stay short")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--runs-root", default=None)
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    amp = (device.type == "cuda") if a.amp is None else a.amp
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    no_mem = load_config(a.config, [*a.overrides, "mgsl.memory=none"], DEFAULTS, RULES)
    dtype = amp_dtype(device) if amp else torch.float32
    c0 = cpu_seconds()
    peak = matmul_peak(device, dtype)
    n_mm = 1024 if device.type == "cpu" else 8192
    # the same 13 matmuls (3 warm-up + 10 timed) per CPU-second: robust to other processes on a shared CPU
    peak_cpu = 13 * 2.0 * n_mm**3 / max(cpu_seconds() - c0, 1e-9)
    rec = {"project": "mgslnet", "device": str(device), "amp": amp, "dtype": str(dtype),
           "torch_threads": torch.get_num_threads(), "matmul_peak_flops": peak, "matmul_peak_flops_per_cpu_s": peak_cpu,
           "model": cfg.model.to_dict(), "mgsl": cfg.mgsl.to_dict(), "shapes": {}}
    print(f"device {device} amp={amp} threads={torch.get_num_threads()} matmul peak {peak / 1e9:.1f} GFLOP/s wall, "
          f"{peak_cpu / 1e9:.1f} GFLOP per CPU-second ({dtype})")
    for name in a.shapes:
        shape = dict(SHAPES[name])
        if device.type == "cpu" and shape["clips"] > a.cpu_clips:
            shape["clips"] = a.cpu_clips
        t0 = time.perf_counter()
        r = bench_shape(shape, cfg, device, amp, a.iters, a.profile and name == a.shapes[0])
        r["fraction_of_matmul_peak"] = r["train_flops_per_s"] / peak
        if device.type == "cpu":
            r["fraction_of_matmul_peak_cpu_time"] = r["train_flops_per_cpu_s"] / peak_cpu
        r["without_memory"] = infer_only(shape, no_mem, device, amp, a.iters)
        rec["shapes"][name] = r
        nm = r["without_memory"]
        print(f"{name}: {shape['clips']} clips x batch {shape['batch']}: train {r['train_samples_per_s']:.1f} samples/s "
              f"({r['train_step_s'] * 1e3:.0f} ms/step, {r['train_cpu_s_per_step']:.2f} CPU-s/step), "
              f"{r['train_flops_per_step'] / 1e9:.1f} GFLOP/step -> {r['train_flops_per_s'] / 1e9:.1f} GFLOP/s = "
              f"{100 * r['fraction_of_matmul_peak']:.1f}% of the matmul peak (wall)"
              + (f", {100 * r['fraction_of_matmul_peak_cpu_time']:.1f}% per CPU-second" if device.type == "cpu" else "")
              + f"; peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB; inference {r['infer_queries_per_s']:.0f} "
              f"queries/s with memory ({r['params'] / 1e6:.2f} M parameters), {nm['infer_queries_per_s']:.0f} without "
              f"({nm['params'] / 1e6:.2f} M) ({time.perf_counter() - t0:.0f}s)")
        if "profile_top_ops" in r:
            print(r["profile_top_ops"])
    path = write_bench("mgslnet", rec, a.runs_root)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
