"""DAL-GAN speed: one full training step (generator on both paths, both discriminators, the perceptual
network and the frozen identity embedder; pix2pix's update order) and generator inference, at the real
benchmark's shapes (256 x 256, DEFAULTS' widths), with FLOPs counted and compared with a dense-matmul
peak measured in the same run. Writes runs/dal_gan/bench/<stamp>.json.

    python -m dal_gan.bench                       # CPU: 256 px, batch 1 and 8
    python -m dal_gan.bench --device cuda --amp   # a GPU, bf16 autocast
    python -m dal_gan.bench --size 32 --set model.ngf=32 --set model.max_mult=4   # the embedded set's shape
"""

from __future__ import annotations

import argparse
import time

import torch

from common.bench import count_flops, matmul_peak, peak_memory_bytes, reset_peak_memory, sync, time_fn, write_bench
from common.config import load_config
from common.runtime import autocast, resolve_device
from dal_gan.config import DEFAULTS, RULES
from dal_gan.losses import Objective, Perceptual
from dal_gan.model import Embedder, build_discriminators, build_model


def build(cfg, device, n_classes: int = 100):
    g = build_model(cfg, n_classes).to(device)
    dg, dl, pt = build_discriminators(cfg)
    dg, dl, pt = dg.to(device), dl.to(device) if dl else None, pt.to(device) if pt else None
    perc = None
    if cfg.loss.perc > 0:
        try:
            perc = Perceptual(cfg.loss.perc_layers)
        except ImportError:  # MissingAsset: the same network with random weights costs the same
            import torchvision

            perc = Perceptual(cfg.loss.perc_layers, net=torchvision.models.mobilenet_v2().features[:max(cfg.loss.perc_layers) + 1])
    emb = Embedder(cfg.embedders.loss_arch, cfg.embedders.width, cfg.embedders.dim) if cfg.loss.id > 0 else None
    obj = Objective(cfg, perc, emb).to(device)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([*dg.parameters(), *(dl.parameters() if dl else [])], 2e-4, betas=(0.5, 0.999))
    return g, dg, dl, pt, obj, opt_g, opt_d


def make_step(cfg, parts, batch: dict, device, amp: bool):
    g, dg, dl, pt, obj, opt_g, opt_d = parts
    b = len(batch["thermal"])

    def step():
        inp = torch.cat([batch["thermal"], batch["visible"]]) if cfg.dual.enabled else batch["thermal"]
        with autocast(device, amp):
            out = g(inp * 2 - 1)
            d = obj.discriminator(batch, out["fake"][:b], dg, dl, pt)
        opt_d.zero_grad(set_to_none=True)
        d["loss"].backward()
        opt_d.step()
        for m in (dg, dl):
            if m is not None:
                m.requires_grad_(False)
        with autocast(device, amp):
            gl = obj.generator(out, batch, dg, dl, pt)
        opt_g.zero_grad(set_to_none=True)
        gl["loss"].backward()
        opt_g.step()
        for m in (dg, dl):
            if m is not None:
                m.requires_grad_(True)
    return step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="a dal_gan config (default: DEFAULTS, the full-size recipe)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--size", type=int, default=256, help="image size (pix2pix / Axial-GAN: 256)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--iters", type=int, default=0, help="timed iterations (0: 2 on CPU, 20 on GPU)")
    ap.add_argument("--runs-root", default=None)
    a = ap.parse_args(argv)
    cfg = load_config(a.config, [f"data.size={a.size}", *a.overrides], DEFAULTS, RULES)
    device = resolve_device(a.device)
    iters = a.iters or (20 if device.type == "cuda" else 2)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if a.amp else torch.float32
    peak = matmul_peak(device, dtype)
    rec = {"device": str(device), "amp_bf16": a.amp, "size": a.size, "config": a.config or "DEFAULTS",
           "overrides": a.overrides, "matmul_peak_tflops": peak / 1e12, "threads": torch.get_num_threads(),
           "train": {}, "inference": {}}
    for b in a.batches:
        parts = build(cfg, device)
        batch = {k: torch.rand(b, 3, a.size, a.size, device=device) for k in ("thermal", "visible", "target")}
        batch["label"] = torch.randint(0, 100, (b,), device=device)
        step = make_step(cfg, parts, batch, device, a.amp)
        step()  # warm-up (allocations, lazy init) before counting
        flops = count_flops(step)
        reset_peak_memory(device)
        sec = time_fn(step, device, warmup=1, iters=iters)
        rec["train"][str(b)] = {"samples_per_s": b / sec, "step_s": sec, "flop_per_step": flops,
                                "achieved_tflops": flops / sec / 1e12, "fraction_of_matmul_peak": flops / sec / peak,
                                "peak_memory_bytes": peak_memory_bytes(device)}
        print(f"train  batch {b}: {b / sec:.2f} samples/s, {flops / b / 1e9:.1f} GFLOP/sample, "
              f"{flops / sec / peak:.1%} of the matmul peak, peak memory {peak_memory_bytes(device) / 2**20:.0f} MiB")
    g = parts[0].eval()
    for b in (8, 32):
        x = torch.rand(b, 3, a.size, a.size, device=device) * 2 - 1

        def infer(x=x):
            with torch.no_grad(), autocast(device, a.amp):
                g(x)
        infer()
        flops = count_flops(infer)
        sec = time_fn(infer, device, warmup=1, iters=iters)
        sync(device)
        rec["inference"][str(b)] = {"images_per_s": b / sec, "flop_per_image": flops / b,
                                    "fraction_of_matmul_peak": flops / sec / peak}
        print(f"infer  batch {b}: {b / sec:.1f} img/s ({flops / sec / peak:.1%} of the matmul peak)")
    rec["wall_s"] = time.perf_counter() - t0
    print(f"matmul peak {peak / 1e12:.3f} TFLOP/s ({dtype}); wrote {write_bench('dal_gan', rec, a.runs_root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
