"""SSRN speed/memory benchmark (``make bench-ssrn``).

For each shape (``common.tsg.bench.SHAPES``: Charades 64 clips, batch 32, I3D 1024-d; ActivityNet
200 clips, batch 32, C3D 500-d; on CPU 200-clip shapes run at ``--cpu-clips``) with the
paper-scale model (the DEFAULTS of ssrn/config.py: d = 512, BiGRU, 1 + 2 transformer layers):

* training samples/s of the full SSRN step (anchor + S siamese sequences through the shared
  network in one forward, GT losses, reasoning, backward, AdamW) at S = 2 and at S = 0: the
  training cost of siamese sampling (expected ~(1 + S)x);
* achieved FLOP/s of the S = 2 step (torch.utils.flop_counter: matmuls/attention) as a fraction of a
  dense-matmul peak measured in the same process, same device and dtype;
* inference queries/s (anchor only + top-5 decoding) of the S = 2 and the S = 0 model (the same
  network: equal cost expected), and with ``fuse_siamese`` (the siamese sequences are then needed
  at inference too); peak memory;
* a torch.profiler table of the top ops of one training step (why the fraction is what it is).

    python -m ssrn.bench [--device cuda] [--amp] [--shapes charades activitynet] [--iters 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
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
from ssrn.config import DEFAULTS, RULES
from ssrn.losses import Objective
from ssrn.model import build_model, decode
from ssrn.sampling import grid_labels, sequence_offsets

BENCH_SHAPES = ("charades", "activitynet")


def bench_batch(shape: dict, siamese: int, device, seed: int = 0) -> dict:
    """``common.tsg.bench.fake_batch`` with ``1 + siamese`` sequences per video: Gaussian clips,
    times at the training offsets of query ``i`` (``ssrn.sampling.sequence_offsets``), labels on
    each sequence's grid (``grid_labels``)."""
    base = fake_batch(shape, "cpu", seed)
    b, n = shape["batch"], shape["clips"]
    g = torch.Generator().manual_seed(seed + 1)
    video = torch.cat([base["video"][:, None], torch.randn(b, siamese, n, shape["feat"], generator=g)], 1)
    times = np.stack([[(np.arange(n) + 0.5 + o) / n for o in sequence_offsets(siamese, train=True, seed=seed, index=i)]
                      for i in range(b)]).clip(0, 1).astype(np.float32)
    mask = np.ones((b, 1 + siamese, n), dtype=bool)
    labels = [[grid_labels(times[i, m], mask[i, m], float(base["start"][i]), float(base["end"][i]))
               for m in range(1 + siamese)] for i in range(b)]
    batch = {"video": video, "video_mask": torch.from_numpy(mask), "times": torch.from_numpy(times),
             "label_start": torch.tensor([[x[0] for x in row] for row in labels]),
             "label_end": torch.tensor([[x[1] for x in row] for row in labels]),
             "inside": torch.from_numpy(np.stack([np.stack([x[2] for x in row]) for row in labels])),
             "words": base["words"], "word_mask": base["word_mask"]}
    return {k: v.to(device) for k, v in batch.items()}


def _model(cfg, shape, device):
    seed_everything(0)
    return build_model(cfg, shape["vocab"], shape["feat"]).to(device)


def bench_train(cfg, shape, device, amp: bool, iters: int, profile: bool = False) -> dict:
    model = _model(cfg, shape, device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    batch = bench_batch(shape, cfg.ssrn.siamese, device)
    objective = Objective(cfg.ssrn)

    def step():
        with autocast(device, amp):
            out = model(batch["video"], batch["video_mask"], batch["times"], batch["words"], batch["word_mask"])
        loss = objective(out, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_peak_memory(device)
    flops = count_flops(step)  # also the warm-up step
    c0 = cpu_seconds()
    t = time_fn(step, device, warmup=0, iters=iters)
    rec = {"train_step_s": t, "train_cpu_s_per_step": (cpu_seconds() - c0) / iters,
           "train_samples_per_s": shape["batch"] / t, "train_flops_per_step": flops, "train_flops_per_s": flops / t,
           "peak_memory_bytes": peak_memory_bytes(device)}
    rec["train_flops_per_cpu_s"] = flops / rec["train_cpu_s_per_step"]
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprof

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with tprof(activities=acts) as prof:
            step()
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        rec["profile_top_ops"] = prof.key_averages().table(sort_by=key, row_limit=12)
    return rec


@torch.no_grad()
def bench_infer(cfg, shape, device, amp: bool, iters: int) -> float:
    """Queries/s of inference: the anchor only (all siamese sequences too with fuse_siamese) + decoding."""
    model = _model(cfg, shape, device).eval()
    m = 1 + (cfg.ssrn.siamese if cfg.ssrn.fuse_siamese else 0)
    batch = bench_batch(shape, m - 1, device)

    def infer():
        with autocast(device, amp):
            out = model(batch["video"], batch["video_mask"], batch["times"], batch["words"], batch["word_mask"])
        decode(out, batch["video_mask"], batch["times"], k=5)

    return shape["batch"] / time_fn(infer, device, warmup=1, iters=max(iters, 3))


# SHARED-CANDIDATE: this parser and the CPU/wall matmul-peak pair below are ecrl/bench.py's too; a
# common.tsg.bench.bench_parser() + peak_pair() would hold them once.
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: on for CUDA, off for CPU)")
    ap.add_argument("--config", default=None, help="a config whose model widths to use (default: DEFAULTS, the paper scale)")
    ap.add_argument("--shapes", nargs="+", default=list(BENCH_SHAPES), choices=list(SHAPES))
    ap.add_argument("--cpu-clips", type=int, default=128,
                    help="on CPU, 200-clip shapes (ActivityNet, TACoS) run at this many clips to stay short")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--runs-root", default=None)
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    amp = (device.type == "cuda") if a.amp is None else a.amp
    cfg = load_config(a.config, [], DEFAULTS, RULES)
    s = cfg.ssrn.siamese or 2
    cfgs = {f"S={s}": load_config(a.config, [f"ssrn.siamese={s}"], DEFAULTS, RULES),
            "S=0": load_config(a.config, ["ssrn.siamese=0"], DEFAULTS, RULES),
            "fuse": load_config(a.config, [f"ssrn.siamese={s}", "ssrn.fuse_siamese=true"], DEFAULTS, RULES)}
    dtype = amp_dtype(device) if amp else torch.float32
    c0 = cpu_seconds()
    peak = matmul_peak(device, dtype)
    n_mm = 1024 if device.type == "cpu" else 8192
    peak_cpu = 13 * 2.0 * n_mm**3 / max(cpu_seconds() - c0, 1e-9)  # the same 13 matmuls per CPU-second
    rec = {"project": "ssrn", "device": str(device), "amp": amp, "dtype": str(dtype),
           "torch_threads": torch.get_num_threads(), "matmul_peak_flops": peak, "matmul_peak_flops_per_cpu_s": peak_cpu,
           "model": cfg.model.to_dict(), "siamese": s, "shapes": {}}
    print(f"device {device} amp={amp} threads={torch.get_num_threads()} matmul peak {peak / 1e9:.1f} GFLOP/s wall, "
          f"{peak_cpu / 1e9:.1f} GFLOP per CPU-second ({dtype})")
    for name in a.shapes:
        shape = dict(SHAPES[name])
        if device.type == "cpu" and shape["clips"] > a.cpu_clips:
            shape["clips"] = a.cpu_clips
        t0 = time.perf_counter()
        r = {"clips": shape["clips"], "batch": shape["batch"], "feature_dim": shape["feat"]}
        r["train"] = bench_train(cfgs[f"S={s}"], shape, device, amp, a.iters, a.profile and name == a.shapes[0])
        r["train_s0"] = bench_train(cfgs["S=0"], shape, device, amp, a.iters)
        r["train_cost_vs_s0"] = r["train"]["train_step_s"] / r["train_s0"]["train_step_s"]
        r["train_cpu_cost_vs_s0"] = r["train"]["train_cpu_s_per_step"] / r["train_s0"]["train_cpu_s_per_step"]
        r["fraction_of_matmul_peak"] = r["train"]["train_flops_per_s"] / peak
        if device.type == "cpu":
            r["fraction_of_matmul_peak_cpu_time"] = r["train"]["train_flops_per_cpu_s"] / peak_cpu
        r["infer_queries_per_s"] = bench_infer(cfgs[f"S={s}"], shape, device, amp, a.iters)
        r["infer_queries_per_s_s0"] = bench_infer(cfgs["S=0"], shape, device, amp, a.iters)
        r["infer_queries_per_s_fuse"] = bench_infer(cfgs["fuse"], shape, device, amp, a.iters)
        r["peak_memory_bytes"] = peak_memory_bytes(device)
        rec["shapes"][name] = r
        tr = r["train"]
        print(f"{name}: {shape['clips']} clips x batch {shape['batch']}, S={s}: train {tr['train_samples_per_s']:.1f} "
              f"samples/s ({tr['train_step_s'] * 1e3:.0f} ms/step, {tr['train_cpu_s_per_step']:.2f} CPU-s/step; "
              f"{r['train_cost_vs_s0']:.2f}x the S=0 step wall, {r['train_cpu_cost_vs_s0']:.2f}x CPU), "
              f"{tr['train_flops_per_step'] / 1e9:.1f} GFLOP/step -> {tr['train_flops_per_s'] / 1e9:.1f} GFLOP/s = "
              f"{100 * r['fraction_of_matmul_peak']:.1f}% of the matmul peak (wall)"
              + (f", {100 * r['fraction_of_matmul_peak_cpu_time']:.1f}% per CPU-second" if device.type == "cpu" else "")
              + f"; inference {r['infer_queries_per_s']:.0f} queries/s (S=0 model {r['infer_queries_per_s_s0']:.0f}, "
              f"fuse_siamese {r['infer_queries_per_s_fuse']:.0f}); peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB "
              f"({time.perf_counter() - t0:.0f}s)")
        if "profile_top_ops" in tr:
            print(tr["profile_top_ops"])
    path = write_bench("ssrn", rec, a.runs_root)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
