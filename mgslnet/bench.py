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

The command line, the timing and the report are common.tsg.bench's (bench_parser, Bench).
"""

from __future__ import annotations

import torch

from common.bench import peak_memory_bytes
from common.config import load_config
from common.runtime import autocast
from common.tsg.bench import (
    Bench,
    bench_parser,
    fake_batch,
    measure_train,
    profile_table,
    queries_per_cpu_s,
    queries_per_s,
    seeded_model,
)
from mgslnet.config import DEFAULTS, RULES
from mgslnet.losses import Objective
from mgslnet.model import build_model, decode, n_params


def bench_shape(shape: dict, cfg, device, amp: bool, iters: int, profile: bool) -> dict:
    model = seeded_model(build_model, cfg, shape, device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
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
    rec = {"clips": shape["clips"], "batch": shape["batch"], "feature_dim": shape["feat"], "params": n_params(model),
           **measure_train(train_step, device, iters, shape["batch"])}
    if profile:
        rec["profile_top_ops"] = profile_table(train_step, device)
    rec["peak_memory_bytes"] = peak_memory_bytes(device)
    rec.update(infer_rates(model.eval(), batch, device, amp, iters))
    return rec


def infer_rates(model, batch: dict, device, amp: bool, iters: int) -> dict:
    """Queries/s (wall) of the forward + top-5 decoding, and on CPU queries per CPU-second."""

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            out = model(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
        decode(out, batch["video_mask"], k=5)

    rec = {"infer_queries_per_s": queries_per_s(infer, device, len(batch["vid"]), iters)}
    if device.type == "cpu":
        rec["infer_queries_per_cpu_s"] = queries_per_cpu_s(infer, len(batch["vid"]), iters)
    return rec


def infer_only(shape: dict, cfg, device, amp: bool, iters: int) -> dict:
    """Parameters and inference rates of a model built from ``cfg`` (the no-memory row)."""
    model = seeded_model(build_model, cfg, shape, device).eval()
    return {"params": n_params(model), **infer_rates(model, fake_batch(shape, device), device, amp, iters)}


def main(argv=None) -> int:
    a = bench_parser(__doc__, iters=3).parse_args(argv)
    b = Bench("mgslnet", a)
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    no_mem = load_config(a.config, [*a.overrides, "mgsl.memory=none"], DEFAULTS, RULES)
    b.record.update(model=cfg.model.to_dict(), mgsl=cfg.mgsl.to_dict())
    for name, shape in b.shapes():
        r = bench_shape(shape, cfg, b.device, b.amp, a.iters, b.profile(name))
        r.update(b.peak_fractions(r))
        r["without_memory"] = nm = infer_only(shape, no_mem, b.device, b.amp, a.iters)
        b.report(name, r, f"{name}: {shape['clips']} clips x batch {shape['batch']}: {b.train_summary(r)}; peak memory "
                          f"{r['peak_memory_bytes'] / 2**20:.0f} MiB; inference {r['infer_queries_per_s']:.0f} queries/s "
                          f"with memory ({r['params'] / 1e6:.2f} M parameters), {nm['infer_queries_per_s']:.0f} without "
                          f"({nm['params'] / 1e6:.2f} M)" + (f"; per CPU-second {r['infer_queries_per_cpu_s']:.1f} with, "
                          f"{nm['infer_queries_per_cpu_s']:.1f} without" if "infer_queries_per_cpu_s" in r else "")
                          + f" ({b.elapsed():.0f}s)")
    b.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
