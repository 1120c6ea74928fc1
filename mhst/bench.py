"""MHST speed/memory benchmark (``make bench-mhst``).

For each shape (common.tsg.bench.SHAPES: Charades 64 clips, batch 32, I3D 1024-d; ActivityNet
200 clips, batch 32, C3D 500-d; on CPU the 200-clip shape runs at ``--cpu-clips`` clips) with the
paper-scale model (the DEFAULTS of mhst/config.py: d=512, 2+1 conv blocks, BiGRU):

* training samples/s of the full MHST step (encoders, leaves, the tree of every video, the
  hypothesis scores, the four losses, backward, AdamW step);
* the tree's share of the step: the wall time of ``mhst.tree.build_tree`` on the step's leaves
  divided by the step's wall time (the tree is built without gradients, its cost is the
  sequential merge loop: up to N-1 vectorised merge steps per batch);
* achieved FLOP/s of that step (torch.utils.flop_counter: matmuls/convolutions) as a fraction of
  a dense-matmul peak measured in the same process, same device and dtype;
* inference queries/s (forward with the merge history + top-5 decoding with NMS), peak memory;
* a torch.profiler table of the top ops of one training step (why the fraction is what it is).

    python -m mhst.bench [--device cuda] [--amp] [--shapes charades activitynet] [--iters 3]
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
from mhst.config import DEFAULTS, RULES
from mhst.losses import Objective
from mhst.model import build_model, decode
from mhst.tree import build_tree

BENCH_SHAPES = ("charades", "activitynet")


def bench_shape(shape: dict, cfg, device, amp: bool, iters: int, profile: bool) -> dict:
    seed_everything(0)
    model = build_model(cfg, shape["vocab"], shape["feat"]).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    batch = fake_batch(shape, device)
    objective = Objective(cfg.mhst, model.net.has_tree)

    def train_step():
        with autocast(device, amp):
            loss = objective(model(batch), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_peak_memory(device)
    flops = count_flops(train_step)  # also the warm-up step
    c0 = cpu_seconds()
    t = time_fn(train_step, device, warmup=0, iters=iters)
    cpu_per_step = (cpu_seconds() - c0) / iters
    rec = {"clips": shape["clips"], "batch": shape["batch"], "feature_dim": shape["feat"],
           "train_step_s": t, "train_cpu_s_per_step": cpu_per_step,
           "train_samples_per_s": shape["batch"] / t, "train_flops_per_step": flops,
           "train_flops_per_s": flops / t, "train_flops_per_cpu_s": flops / cpu_per_step}
    if model.net.has_tree:
        with torch.no_grad(), autocast(device, amp):
            out = model(batch)
        kw = model.net.tree_kw
        t_tree = time_fn(lambda: build_tree(out["h"], out["r"], batch["video_mask"], mode=model.net.tree_mode, **kw),
                         device, warmup=1, iters=max(iters, 3))
        rec["tree_s"] = t_tree
        rec["tree_share_of_step"] = t_tree / t
        rec["tree_roots_per_video"] = float(out["tree"].num_roots.float().mean())
        rec["tree_merge_steps"] = int(out["tree"].node_valid.shape[1])
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprof

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with tprof(activities=acts) as prof:
            train_step()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        rec["profile_top_ops"] = prof.key_averages().table(sort_by=key, row_limit=12)
    net = model.net.eval()

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"], history=True)
        decode(out, batch["video_mask"], cfg)

    ti = time_fn(infer, device, warmup=1, iters=max(iters, 3))
    rec["infer_queries_per_s"] = shape["batch"] / ti
    rec["peak_memory_bytes"] = peak_memory_bytes(device)
    model.train()
    return rec


# SHARED-CANDIDATE: this command line (device/amp/shapes/cpu-clips, the matmul peak per wall- and
# per CPU-second, the per-shape print and write_bench) is ecrl/bench.py's nearly line for line; a
# `common.tsg.bench.run_project_bench(project, bench_shape, cfg)` would serve both.
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: on for CUDA, off for CPU)")
    ap.add_argument("--config", default=None, help="a config whose model widths to use (default: DEFAULTS, the paper scale)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="a config override (repeatable)")
    ap.add_argument("--shapes", nargs="+", default=list(BENCH_SHAPES), choices=list(SHAPES))
    ap.add_argument("--cpu-clips", type=int, default=128,
                    help="on CPU, 200-clip shapes (ActivityNet, TACoS) run at this many clips to stay short")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--runs-root", default=None)
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    amp = (device.type == "cuda") if a.amp is None else a.amp
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    dtype = amp_dtype(device) if amp else torch.float32
    c0 = cpu_seconds()
    peak = matmul_peak(device, dtype)
    n_mm = 1024 if device.type == "cpu" else 8192
    # the same 13 matmuls (3 warm-up + 10 timed) per CPU-second: robust to other processes on a shared CPU
    peak_cpu = 13 * 2.0 * n_mm**3 / max(cpu_seconds() - c0, 1e-9)
    rec = {"project": "mhst", "device": str(device), "amp": amp, "dtype": str(dtype), "torch_threads": torch.get_num_threads(),
           "matmul_peak_flops": peak, "matmul_peak_flops_per_cpu_s": peak_cpu, "model": cfg.model.to_dict(),
           "mhst": cfg.mhst.to_dict(), "shapes": {}}
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
        rec["shapes"][name] = r
        print(f"{name}: {shape['clips']} clips x batch {shape['batch']}: train {r['train_samples_per_s']:.1f} samples/s "
              f"({r['train_step_s'] * 1e3:.0f} ms/step, {r['train_cpu_s_per_step']:.2f} CPU-s/step), "
              f"{r['train_flops_per_step'] / 1e9:.1f} GFLOP/step -> {r['train_flops_per_s'] / 1e9:.1f} GFLOP/s = "
              f"{100 * r['fraction_of_matmul_peak']:.1f}% of the matmul peak (wall)"
              + (f", {100 * r['fraction_of_matmul_peak_cpu_time']:.1f}% per CPU-second" if device.type == "cpu" else "")
              + (f"; tree {r['tree_s'] * 1e3:.0f} ms = {100 * r['tree_share_of_step']:.1f}% of the step "
                 f"({r['tree_merge_steps']} merge steps, {r['tree_roots_per_video']:.1f} roots/video)" if "tree_s" in r else "")
              + f"; inference {r['infer_queries_per_s']:.0f} queries/s; peak memory "
              f"{r['peak_memory_bytes'] / 2**20:.0f} MiB ({time.perf_counter() - t0:.0f}s)")
        if "profile_top_ops" in r:
            print(r["profile_top_ops"])
    path = write_bench("mhst", rec, a.runs_root)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
