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

The command line, the timing and the report are common.tsg.bench's (bench_parser, Bench).
"""

from __future__ import annotations

import torch

from common.bench import peak_memory_bytes, time_fn
from common.config import load_config
from common.runtime import autocast
from common.tsg.bench import Bench, bench_parser, fake_batch, measure_train, profile_table, queries_per_s, seeded_model
from mhst.config import DEFAULTS, RULES
from mhst.losses import Objective
from mhst.model import build_model, decode
from mhst.tree import build_tree


def bench_shape(shape: dict, cfg, device, amp: bool, iters: int, profile: bool) -> dict:
    model = seeded_model(build_model, cfg, shape, device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = fake_batch(shape, device)
    objective = Objective(cfg.mhst, model.net.has_tree)

    def train_step():
        with autocast(device, amp):
            loss = objective(model(batch), batch)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rec = {"clips": shape["clips"], "batch": shape["batch"], "feature_dim": shape["feat"],
           **measure_train(train_step, device, iters, shape["batch"])}
    if model.net.has_tree:
        with torch.no_grad(), autocast(device, amp):
            out = model(batch)
        kw = model.net.tree_kw
        t_tree = time_fn(lambda: build_tree(out["h"], out["r"], batch["video_mask"], mode=model.net.tree_mode, **kw),
                         device, warmup=1, iters=max(iters, 3))
        rec["tree_s"] = t_tree
        rec["tree_share_of_step"] = t_tree / rec["train_step_s"]
        rec["tree_roots_per_video"] = float(out["tree"].num_roots.float().mean())
        rec["tree_merge_steps"] = int(out["tree"].node_valid.shape[1])
    if profile:
        rec["profile_top_ops"] = profile_table(train_step, device)
    net = model.net.eval()

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            out = net(batch["video"], batch["video_mask"], batch["words"], batch["word_mask"], history=True)
        decode(out, batch["video_mask"], cfg)

    rec["infer_queries_per_s"] = queries_per_s(infer, device, shape["batch"], iters)
    rec["peak_memory_bytes"] = peak_memory_bytes(device)
    model.train()
    return rec


def main(argv=None) -> int:
    a = bench_parser(__doc__).parse_args(argv)
    b = Bench("mhst", a)
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    b.record.update(model=cfg.model.to_dict(), mhst=cfg.mhst.to_dict())
    for name, shape in b.shapes():
        r = bench_shape(shape, cfg, b.device, b.amp, a.iters, b.profile(name))
        r.update(b.peak_fractions(r))
        tree = (f"; tree {r['tree_s'] * 1e3:.0f} ms = {100 * r['tree_share_of_step']:.1f}% of the step "
                f"({r['tree_merge_steps']} merge steps, {r['tree_roots_per_video']:.1f} roots/video)" if "tree_s" in r else "")
        b.report(name, r, f"{name}: {shape['clips']} clips x batch {shape['batch']}: {b.train_summary(r)}{tree}; "
                          f"{b.infer_summary(r)}")
    b.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
