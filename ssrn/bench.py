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

The command line, the timing and the report are common.tsg.bench's (bench_parser, Bench).
"""

from __future__ import annotations

import numpy as np
import torch

from common.bench import peak_memory_bytes
from common.config import load_config
from common.runtime import autocast
from common.tsg.bench import Bench, bench_parser, fake_batch, measure_train, profile_table, queries_per_s, seeded_model
from ssrn.config import DEFAULTS, RULES
from ssrn.losses import Objective
from ssrn.model import build_model, decode
from ssrn.sampling import grid_labels, sequence_offsets


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


def bench_train(cfg, shape, device, amp: bool, iters: int, profile: bool = False) -> dict:
    model = seeded_model(build_model, cfg, shape, device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = bench_batch(shape, cfg.ssrn.siamese, device)
    objective = Objective(cfg.ssrn)

    def step():
        with autocast(device, amp):
            out = model(batch["video"], batch["video_mask"], batch["times"], batch["words"], batch["word_mask"])
        loss = objective(out, batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rec = measure_train(step, device, iters, shape["batch"])
    rec["peak_memory_bytes"] = peak_memory_bytes(device)
    if profile:
        rec["profile_top_ops"] = profile_table(step, device)
    return rec


@torch.no_grad()
def bench_infer(cfg, shape, device, amp: bool, iters: int) -> float:
    """Queries/s of inference: the anchor only (all siamese sequences too with fuse_siamese) + decoding."""
    model = seeded_model(build_model, cfg, shape, device).eval()
    m = 1 + (cfg.ssrn.siamese if cfg.ssrn.fuse_siamese else 0)
    batch = bench_batch(shape, m - 1, device)

    def infer():
        with autocast(device, amp):
            out = model(batch["video"], batch["video_mask"], batch["times"], batch["words"], batch["word_mask"])
        decode(out, batch["video_mask"], batch["times"], k=5)

    return queries_per_s(infer, device, shape["batch"], iters)


def main(argv=None) -> int:
    a = bench_parser(__doc__).parse_args(argv)
    b = Bench("ssrn", a)
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    s = cfg.ssrn.siamese or 2
    cfgs = {f"S={s}": load_config(a.config, [*a.overrides, f"ssrn.siamese={s}"], DEFAULTS, RULES),
            "S=0": load_config(a.config, [*a.overrides, "ssrn.siamese=0"], DEFAULTS, RULES),
            "fuse": load_config(a.config, [*a.overrides, f"ssrn.siamese={s}", "ssrn.fuse_siamese=true"], DEFAULTS, RULES)}
    b.record.update(model=cfg.model.to_dict(), siamese=s)
    for name, shape in b.shapes():
        r = {"clips": shape["clips"], "batch": shape["batch"], "feature_dim": shape["feat"]}
        r["train"] = tr = bench_train(cfgs[f"S={s}"], shape, b.device, b.amp, a.iters, b.profile(name))
        r["train_s0"] = bench_train(cfgs["S=0"], shape, b.device, b.amp, a.iters)
        r["train_cost_vs_s0"] = tr["train_step_s"] / r["train_s0"]["train_step_s"]
        r["train_cpu_cost_vs_s0"] = tr["train_cpu_s_per_step"] / r["train_s0"]["train_cpu_s_per_step"]
        r.update(b.peak_fractions(tr))
        r["infer_queries_per_s"] = bench_infer(cfgs[f"S={s}"], shape, b.device, b.amp, a.iters)
        r["infer_queries_per_s_s0"] = bench_infer(cfgs["S=0"], shape, b.device, b.amp, a.iters)
        r["infer_queries_per_s_fuse"] = bench_infer(cfgs["fuse"], shape, b.device, b.amp, a.iters)
        r["peak_memory_bytes"] = peak_memory_bytes(b.device)
        vs_s0 = f"; {r['train_cost_vs_s0']:.2f}x the S=0 step wall, {r['train_cpu_cost_vs_s0']:.2f}x CPU"
        others = f" (S=0 model {r['infer_queries_per_s_s0']:.0f}, fuse_siamese {r['infer_queries_per_s_fuse']:.0f})"
        b.report(name, r, f"{name}: {shape['clips']} clips x batch {shape['batch']}, S={s}: "
                          f"{b.train_summary(tr, step_note=vs_s0)}; {b.infer_summary(r, note=others)}")
    b.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
