"""DSCNet speed/memory benchmark (``make bench-dscnet``).

At the real benchmarks' shapes (common.tsg.bench.SHAPES: Charades-STA 64 clips, I3D 1024-d;
ActivityNet Captions 200 clips, C3D 500-d; batch 32 videos + 128 train sentences per step) with
the paper-scale model (the DEFAULTS of dscnet/config.py: d=256, z=256, K=128; ActivityNet K=256):

* deep semantic clustering time: k-means (k-means++ seeding + Lloyd iterations) of 37,421 query
  vectors (the ActivityNet Captions train query count) into K centres, per iteration and per epoch's
  refresh (``--kmeans-iters`` rounds);
* training samples/s (videos/s) of one full DSCNet step (query autoencoder + aggregation over all K
  centres + Sinkhorn selection + pseudo segments + head + foreground + backward + AdamW);
* achieved FLOP/s of that step (torch.utils.flop_counter) as a fraction of a dense-matmul peak
  measured in the same process, same device and dtype; a profiler table says where the time goes;
* inference queries/s (query encoding + grounding head + top-5 decoding), peak memory.

    python -m dscnet.bench [--device cuda] [--amp] [--shapes charades activitynet] [--iters 3]
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
from dscnet.cluster import kmeans
from dscnet.config import DEFAULTS
from dscnet.losses import Objective
from dscnet.model import build_model, decode

BENCH_SHAPES = ("charades", "activitynet")
ANET_TRAIN_QUERIES = 37421   # ActivityNet Captions train.json sentences
CLUSTERS = {"charades": 128, "activitynet": 256}   # configs/charades_i3d.yaml (DEFAULTS), activitynet_c3d.yaml


def bench_clustering(n: int, z_dim: int, k: int, iters: int) -> dict:
    """Seconds for k-means++ seeding and ``iters`` Lloyd rounds on ``n`` random unit-variance vectors."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, z_dim, generator=g)
    t0, c0 = time.perf_counter(), cpu_seconds()
    c, _ = kmeans(x, k, generator=g, iters=1, tol=-1.0)
    t_seed_one, c_seed_one = time.perf_counter() - t0, cpu_seconds() - c0
    t1, c1 = time.perf_counter(), cpu_seconds()
    kmeans(x, k, generator=g, init=c, iters=iters, tol=-1.0)
    t_lloyd, c_lloyd = time.perf_counter() - t1, cpu_seconds() - c1
    return {"queries": n, "z_dim": z_dim, "clusters": k, "lloyd_iters": iters,
            "seed_plus_one_iter_s": t_seed_one, "seed_plus_one_iter_cpu_s": c_seed_one,
            "lloyd_s_per_iter": t_lloyd / iters, "lloyd_cpu_s_per_iter": c_lloyd / iters,
            "refresh_s": t_seed_one + t_lloyd}


def bench_shape(name: str, shape: dict, cfg, device, amp: bool, iters: int, profile: bool) -> dict:
    seed_everything(0)
    model = build_model(cfg, shape["vocab"], shape["feat"]).to(device)
    k, z_dim = cfg.dscnet.clusters, cfg.model.z_dim
    g = torch.Generator().manual_seed(1)
    model.set_clusters(torch.nn.functional.layer_norm(torch.randn(k, z_dim, generator=g), (z_dim,)).to(device),
                       torch.rand(k, generator=g).add(0.1).to(device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    vb = fake_batch(shape, device)
    qb = fake_batch(dict(shape, batch=cfg.train.query_batch_size), device, seed=1)
    objective = Objective(cfg.dscnet)

    def train_step():
        with autocast(device, amp):
            out = model(words=qb["words"], word_mask=qb["word_mask"], video=vb["video"], video_mask=vb["video_mask"])
            loss = objective(out, qb, vb)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_peak_memory(device)
    flops = count_flops(train_step)  # also the warm-up step
    c0 = cpu_seconds()
    t = time_fn(train_step, device, warmup=0, iters=iters)
    cpu_per_step = (cpu_seconds() - c0) / iters
    rec = {"clips": shape["clips"], "batch": shape["batch"], "query_batch": cfg.train.query_batch_size,
           "feature_dim": shape["feat"], "clusters": k, "train_step_s": t, "train_cpu_s_per_step": cpu_per_step,
           "train_samples_per_s": shape["batch"] / t, "train_flops_per_step": flops,
           "train_flops_per_s": flops / t, "train_flops_per_cpu_s": flops / cpu_per_step}
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprof

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with tprof(activities=acts) as prof:
            train_step()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        rec["profile_top_ops"] = prof.key_averages().table(sort_by=key, row_limit=12)
    model.eval()

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            out = model.ground(vb["video"], vb["video_mask"], vb["words"], vb["word_mask"])
        decode(out, vb["video_mask"], k=5)

    ti = time_fn(infer, device, warmup=1, iters=max(iters, 3))
    rec["infer_queries_per_s"] = shape["batch"] / ti
    rec["peak_memory_bytes"] = peak_memory_bytes(device)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: on for CUDA, off for CPU)")
    ap.add_argument("--config", default=None, help="a config whose model widths to use (default: DEFAULTS, the paper scale)")
    ap.add_argument("--shapes", nargs="+", default=list(BENCH_SHAPES), choices=list(SHAPES))
    ap.add_argument("--cpu-clips", type=int, default=128,
                    help="on CPU, 200-clip shapes (ActivityNet) run at this many clips to stay short")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--kmeans-iters", type=int, default=None, help="Lloyd rounds timed (default: 50 on CUDA, 5 on CPU)")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--runs-root", default=None)
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    amp = (device.type == "cuda") if a.amp is None else a.amp
    dtype = amp_dtype(device) if amp else torch.float32
    c0 = cpu_seconds()
    peak = matmul_peak(device, dtype)
    n_mm = 1024 if device.type == "cpu" else 8192
    peak_cpu = 13 * 2.0 * n_mm**3 / max(cpu_seconds() - c0, 1e-9)   # 3 warm-up + 10 timed matmuls per CPU-second
    rec = {"project": "dscnet", "device": str(device), "amp": amp, "dtype": str(dtype),
           "torch_threads": torch.get_num_threads(), "matmul_peak_flops": peak,
           "matmul_peak_flops_per_cpu_s": peak_cpu, "shapes": {}}
    print(f"device {device} amp={amp} threads={torch.get_num_threads()} matmul peak {peak / 1e9:.1f} GFLOP/s wall, "
          f"{peak_cpu / 1e9:.1f} GFLOP per CPU-second ({dtype})")
    base = load_config(a.config, [], DEFAULTS)
    kit = a.kmeans_iters or (50 if device.type == "cuda" else 5)
    cl = bench_clustering(ANET_TRAIN_QUERIES, base.model.z_dim, CLUSTERS["activitynet"], kit)
    rec["clustering"] = cl
    print(f"clustering: {cl['queries']} x {cl['z_dim']}-d into K={cl['clusters']}: k-means++ + 1 round "
          f"{cl['seed_plus_one_iter_s']:.2f}s ({cl['seed_plus_one_iter_cpu_s']:.2f} CPU-s), "
          f"{cl['lloyd_s_per_iter']:.3f}s ({cl['lloyd_cpu_s_per_iter']:.3f} CPU-s) per Lloyd round (float64 distances)")
    for name in a.shapes:
        shape = dict(SHAPES[name])
        if device.type == "cpu" and shape["clips"] > a.cpu_clips:
            shape["clips"] = a.cpu_clips
        cfg = load_config(a.config, [f"dscnet.clusters={CLUSTERS.get(name, base.dscnet.clusters)}"], DEFAULTS)
        t0 = time.perf_counter()
        r = bench_shape(name, shape, cfg, device, amp, a.iters, a.profile and name == a.shapes[0])
        r["fraction_of_matmul_peak"] = r["train_flops_per_s"] / peak
        if device.type == "cpu":
            r["fraction_of_matmul_peak_cpu_time"] = r["train_flops_per_cpu_s"] / peak_cpu
        rec["shapes"][name] = r
        print(f"{name}: {shape['clips']} clips x batch {shape['batch']} (+{r['query_batch']} sentences), K={r['clusters']}: "
              f"train {r['train_samples_per_s']:.1f} samples/s ({r['train_step_s'] * 1e3:.0f} ms/step, "
              f"{r['train_cpu_s_per_step']:.2f} CPU-s/step), {r['train_flops_per_step'] / 1e9:.2f} GFLOP/step -> "
              f"{r['train_flops_per_s'] / 1e9:.1f} GFLOP/s = {100 * r['fraction_of_matmul_peak']:.1f}% of the matmul "
              f"peak (wall)" + (f", {100 * r['fraction_of_matmul_peak_cpu_time']:.1f}% per CPU-second"
                               if device.type == "cpu" else "")
              + f"; inference {r['infer_queries_per_s']:.0f} queries/s; peak memory "
              f"{r['peak_memory_bytes'] / 2**20:.0f} MiB ({time.perf_counter() - t0:.0f}s)")
        if "profile_top_ops" in r:
            print(r["profile_top_ops"])
    path = write_bench("dscnet", rec, a.runs_root)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
