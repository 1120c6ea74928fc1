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

The command line, the timing and the report are common.tsg.bench's (bench_parser, Bench).
"""

from __future__ import annotations

import time

import torch

from common.bench import cpu_seconds, peak_memory_bytes
from common.config import load_config
from common.runtime import autocast
from common.tsg.bench import Bench, bench_parser, fake_batch, measure_train, profile_table, queries_per_s, seeded_model
from dscnet.cluster import kmeans
from dscnet.config import DEFAULTS, RULES
from dscnet.losses import Objective
from dscnet.model import build_model, decode

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


def bench_shape(shape: dict, cfg, device, amp: bool, iters: int, profile: bool) -> dict:
    model = seeded_model(build_model, cfg, shape, device)
    k, z_dim = cfg.dscnet.clusters, cfg.model.z_dim
    g = torch.Generator().manual_seed(1)
    model.set_clusters(torch.nn.functional.layer_norm(torch.randn(k, z_dim, generator=g), (z_dim,)).to(device),
                       torch.rand(k, generator=g).add(0.1).to(device))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
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

    rec = {"clips": shape["clips"], "batch": shape["batch"], "query_batch": cfg.train.query_batch_size,
           "feature_dim": shape["feat"], "clusters": k, **measure_train(train_step, device, iters, shape["batch"])}
    if profile:
        rec["profile_top_ops"] = profile_table(train_step, device)
    model.eval()

    @torch.no_grad()
    def infer():
        with autocast(device, amp):
            out = model.ground(vb["video"], vb["video_mask"], vb["words"], vb["word_mask"])
        decode(out, vb["video_mask"], k=5)

    rec["infer_queries_per_s"] = queries_per_s(infer, device, shape["batch"], iters)
    rec["peak_memory_bytes"] = peak_memory_bytes(device)
    return rec


def main(argv=None) -> int:
    ap = bench_parser(__doc__)
    ap.add_argument("--kmeans-iters", type=int, default=None, help="Lloyd rounds timed (default: 50 on CUDA, 5 on CPU)")
    a = ap.parse_args(argv)
    b = Bench("dscnet", a)
    base = load_config(a.config, a.overrides, DEFAULTS, RULES)
    kit = a.kmeans_iters or (50 if b.device.type == "cuda" else 5)
    cl = bench_clustering(ANET_TRAIN_QUERIES, base.model.z_dim, CLUSTERS["activitynet"], kit)
    b.record["clustering"] = cl
    print(f"clustering: {cl['queries']} x {cl['z_dim']}-d into K={cl['clusters']}: k-means++ + 1 round "
          f"{cl['seed_plus_one_iter_s']:.2f}s ({cl['seed_plus_one_iter_cpu_s']:.2f} CPU-s), "
          f"{cl['lloyd_s_per_iter']:.3f}s ({cl['lloyd_cpu_s_per_iter']:.3f} CPU-s) per Lloyd round (float64 distances)")
    for name, shape in b.shapes():
        k = CLUSTERS.get(name, base.dscnet.clusters)
        cfg = load_config(a.config, [*a.overrides, f"dscnet.clusters={k}"], DEFAULTS, RULES)
        r = bench_shape(shape, cfg, b.device, b.amp, a.iters, b.profile(name))
        r.update(b.peak_fractions(r))
        b.report(name, r, f"{name}: {shape['clips']} clips x batch {shape['batch']} (+{r['query_batch']} sentences), "
                          f"K={r['clusters']}: {b.train_summary(r, gflop_digits=2)}; {b.infer_summary(r)}")
    b.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
