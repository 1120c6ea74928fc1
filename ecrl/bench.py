"""ECRL speed/memory benchmark (``make bench-ecrl``).

For each shape (common.tsg.bench.SHAPES: Charades 64 clips, batch 32, I3D 1024-d; ActivityNet
200 clips, batch 32, C3D 500-d; TACoS 200 clips, C3D 4096-d) with the paper-scale model (the
DEFAULTS of ecrl/config.py: d=512, 2+2 layers):

* training samples/s of the full ECRL step (augmentation + self-refine + both videos through
  the shared network + SSCL + backward + AdamW step);
* achieved FLOP/s of that step (torch.utils.flop_counter: matmuls/attention) as a fraction of
  a dense-matmul peak measured in the same process, same device and dtype;
* inference queries/s (forward + top-5 decoding), peak memory;
* a torch.profiler table of the top ops of one training step (why the fraction is what it is).

    python -m ecrl.bench [--device cuda] [--amp] [--shapes charades activitynet tacos] [--iters 5]

The command line, the timing and the report are common.tsg.bench's (bench_parser, Bench).
"""

from __future__ import annotations

import torch

from common.bench import peak_memory_bytes
from common.config import load_config
from common.runtime import autocast
from common.tsg.bench import Bench, bench_parser, fake_batch, measure_train, profile_table, queries_per_s, seeded_model
from ecrl.augment import augment_step
from ecrl.config import DEFAULTS, RULES
from ecrl.losses import Objective
from ecrl.model import build_model, decode


def bench_shape(shape: dict, cfg, device, amp: bool, iters: int, profile: bool) -> dict:
    model = seeded_model(build_model, cfg, shape, device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = fake_batch(shape, device)
    objective = Objective(cfg.ecrl)
    step_no = [0]

    def train_step():
        aug = augment_step(batch, cfg.ecrl.aug, 0, 0, step_no[0])
        gen = torch.Generator().manual_seed(step_no[0])
        step_no[0] += 1
        with autocast(device, amp):
            loss = objective(model(batch, aug, generator=gen), batch, aug)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rec = {"clips": shape["clips"], "batch": shape["batch"], "feature_dim": shape["feat"],
           **measure_train(train_step, device, iters, shape["batch"])}
    if profile:
        rec["profile_top_ops"] = profile_table(train_step, device)
    net = model.net.eval()

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"])
        decode(out, batch["video_mask"], k=5)

    rec["infer_queries_per_s"] = queries_per_s(infer, device, shape["batch"], iters)
    rec["peak_memory_bytes"] = peak_memory_bytes(device)
    model.train()
    return rec


def main(argv=None) -> int:
    a = bench_parser(__doc__).parse_args(argv)
    b = Bench("ecrl", a)
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    b.record["model"] = cfg.model.to_dict()
    for name, shape in b.shapes():
        r = bench_shape(shape, cfg, b.device, b.amp, a.iters, b.profile(name))
        r.update(b.peak_fractions(r))
        b.report(name, r, f"{name}: {shape['clips']} clips x batch {shape['batch']}: {b.train_summary(r)}; "
                          f"{b.infer_summary(r)}")
    b.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
