"""Speed and memory of the DeepStationing networks at the real benchmark's shapes.

    python -m lns_parsing.bench                 # CPU: 48^3 and 96^3 training patches, 192x192x128 sliding window
    python -m lns_parsing.bench --device cuda --amp --patches 128
    python -m lns_parsing.bench --quick         # tiny shapes (smoke test)

Reports training voxels/s (DynUNet fwd + bwd + AdamW, batch 2, CT + 6 organ channels -> 13
classes), sliding-window seconds per 192x192x128 volume (Gaussian, overlap 0.5), peak memory and
the achieved FLOP/s as a fraction of a dense matmul peak measured in the same run; written to
runs/lns_parsing/bench/<stamp>.json.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from common.bench import (
    count_flops,
    cpu_seconds,
    matmul_peak_pair,
    peak_memory_bytes,
    reset_peak_memory,
    sync,
    time_fn,
    write_bench,
)
from common.config import load_config
from common.runtime import autocast, resolve_device
from lns_parsing.config import DEFAULTS
from lns_parsing.losses import Objective
from lns_parsing.model import build_model, predict_logits


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--patches", type=int, nargs="+", default=[48, 96])
    ap.add_argument("--volume", type=int, nargs=3, default=[192, 192, 128])
    ap.add_argument("--roi", type=int, default=96, help="sliding-window size")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs-root", default=None)
    a = ap.parse_args(argv)
    if a.quick:
        a.patches, a.volume, a.roi, a.iters = [32], [48, 48, 48], 32, 1
    device = resolve_device(a.device)
    cfg = load_config(None, [], DEFAULTS)
    torch.manual_seed(0)
    rec: dict = {"device": str(device), "amp": a.amp, "threads": torch.get_num_threads(), "train": {}}
    peak, peak_cpu = matmul_peak_pair(device, torch.float32)   # per wall-second (fastest call) and per CPU-second
    rec["matmul_peak_flops"], rec["matmul_peak_flops_per_cpu_s"] = peak, peak_cpu
    for p in a.patches:
        model = build_model(cfg, 7, 13).to(device)
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        obj = Objective()
        x = torch.rand(2, 7, p, p, p, device=device)
        y = torch.randint(0, 13, (2, p, p, p), device=device)

        def step(model=model, opt=opt, obj=obj, x=x, y=y):
            with autocast(device, a.amp):
                parts = obj(model(x), y)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()

        flops = count_flops(step)
        reset_peak_memory(device)
        c0 = cpu_seconds()
        t = time_fn(step, device, warmup=1, iters=a.iters)
        cpu_step = (cpu_seconds() - c0) / (a.iters + 1)
        # per CPU-second (robust to other processes on a shared CPU) beside the wall-clock fraction
        rec["train"][str(p)] = {"s_per_step": t, "voxels_per_s": 2 * p**3 / t, "gflop_per_step": flops / 1e9,
                                "flop_fraction_of_matmul_peak": flops / t / peak,
                                "flop_fraction_of_matmul_peak_cpu_time": flops / cpu_step / peak_cpu,
                                "cpu_s_per_step": cpu_step, "peak_memory_bytes": peak_memory_bytes(device)}
    model = build_model(cfg, 7, 13).to(device).eval()
    vol = torch.rand(1, 7, *a.volume, device=device)
    with autocast(device, a.amp):
        predict_logits(model, vol[..., : a.roi, : a.roi, : a.roi], (a.roi,) * 3)
        sync(device)
        t0 = time.perf_counter()
        predict_logits(model, vol, (a.roi,) * 3, overlap=0.5, sw_batch_size=cfg.eval.sw_batch_size)
        sync(device)
    rec["sliding_window"] = {"volume": a.volume, "roi": a.roi, "s_per_volume": time.perf_counter() - t0,
                             "peak_memory_bytes": peak_memory_bytes(device)}
    path = write_bench("lns_parsing", rec, a.runs_root)
    print(json.dumps({k: v for k, v in rec.items() if k != "env"}, indent=1))
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
