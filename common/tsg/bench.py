"""``python -m common.tsg.bench`` (``make bench-tsg``): evaluator time on a 17,505-query input
(ActivityNet Captions val_1 when ../shared/data/tsg is present, else random moments of the same
count), with 100 ranked proposals per query, with and without NMS; and TSGDataset loader
throughput (samples/s) from the HDF5 features of the default synthetic set with 0 and 2
DataLoader workers. Writes ``runs/tsg/bench/<time>.json`` via :func:`common.bench.write_bench`.

For the projects' own benchmarks: :data:`SHAPES` (the real benchmarks' input shapes) and
:func:`fake_batch` (a collated batch of that shape).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.bench import write_bench
from common.data import REPO_ROOT, build_loader
from common.tsg.dataset import TSGDataset, collate_tsg
from common.tsg.evaluate import evaluate
from common.tsg.features import FeatureStore
from common.tsg.records import read_annotations
from common.tsg.text import Vocab

ANET_VAL1 = REPO_ROOT.parent / "shared" / "data" / "tsg" / "activitynet_captions" / "val_1.json"

# The real benchmarks' input shapes, for every TSG project's bench.py: clips per video and
# feature dims of the standard features (FEATURE_DIMS), the usual batch, and the train-split
# vocabulary (common.tsg.text tokenizer, + PAD/UNK) counted on the public annotation files.
SHAPES = {
    "charades": {"clips": 64, "batch": 32, "feat": 1024, "words": 20, "vocab": 1105},      # I3D
    "activitynet": {"clips": 200, "batch": 32, "feat": 500, "words": 20, "vocab": 10554},  # C3D-PCA
    "tacos": {"clips": 200, "batch": 32, "feat": 4096, "words": 20, "vocab": 1489},        # TALL C3D
}


def fake_batch(shape: dict, device: torch.device | str = "cpu", seed: int = 0) -> dict:
    """A collated batch like :func:`common.tsg.dataset.collate_tsg`'s at ``shape`` (a
    :data:`SHAPES` entry, keys ``clips batch feat words vocab``): Gaussian features, every clip
    valid, 6..``words`` word ids per query, moments of 10-30 % of the video, 30 s videos; seeded."""
    g = torch.Generator().manual_seed(seed)
    b, n, lw = shape["batch"], shape["clips"], shape["words"]
    s = torch.rand(b, generator=g) * 0.7
    e = (s + 0.1 + torch.rand(b, generator=g) * 0.2).clamp(max=1.0)
    wm = torch.arange(lw)[None, :] < torch.randint(min(6, lw), lw + 1, (b, 1), generator=g)
    batch = {"video": torch.randn(b, n, shape["feat"], generator=g), "video_mask": torch.ones(b, n, dtype=torch.bool),
             "words": torch.randint(2, shape["vocab"], (b, lw), generator=g) * wm, "word_mask": wm,
             "start": s, "end": e, "glance": (s + e) / 2, "duration": torch.full((b,), 30.0),
             "query_id": torch.arange(b)}
    out = {k: v.to(device) for k, v in batch.items()}
    out["vid"] = [f"FAKE{i:05d}" for i in range(b)]
    return out


def _timed(fn, repeats: int = 3) -> tuple[float, float]:
    """(median wall s, median CPU s) of ``fn()``."""
    walls, cpus = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls)), float(np.median(cpus))


def bench_evaluator(n_props: int = 100, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    if ANET_VAL1.exists():
        ann = read_annotations(ANET_VAL1)
        gts = np.array([[q.start, q.end] for q in ann.queries])
        dur = np.array([q.duration for q in ann.queries])
        source = str(ANET_VAL1.name)
    else:
        dur = rng.uniform(20, 200, 17505)
        gts = np.sort(rng.random((17505, 2)), axis=1) * dur[:, None]
        source = "random moments (../shared absent)"
    props = np.sort(rng.random((len(gts), n_props, 2)), axis=-1) * dur[:, None, None]
    as_list = list(props)
    rec = {"input": source, "queries": len(gts), "proposals_per_query": n_props}
    for name, fn in (("dense_array", lambda: evaluate(props, gts)),
                     ("list_of_arrays", lambda: evaluate(as_list, gts)),
                     ("list_of_arrays_nms0.5", lambda: evaluate(as_list, gts, nms=0.5))):
        wall, cpu = _timed(fn)
        rec[f"{name}_wall_s"] = wall
        rec[f"{name}_cpu_s"] = cpu
    return rec


def bench_loader(data_dir: Path, workers=(0, 2), num_clips: int = 64, batch_size: int = 32, epochs: int = 2) -> dict:
    tr = read_annotations(data_dir / "charades_sta_train.txt")
    ds = TSGDataset(tr, FeatureStore(data_dir / "features.h5"), Vocab.build(q.sentence for q in tr.queries),
                    num_clips, 20)
    rec = {"dataset": str(data_dir), "samples": len(ds), "num_clips": num_clips, "batch_size": batch_size}
    for w in workers:
        loader = build_loader(ds, batch_size, shuffle=True, seed=0, num_workers=w, collate_fn=collate_tsg)
        n = 0
        w0, c0 = time.perf_counter(), time.process_time()
        for _ in range(epochs):
            for b in loader:
                n += len(b["vid"])
        wall = time.perf_counter() - w0
        rec[f"workers{w}_samples_per_s"] = n / wall
        if w == 0:  # in-process: CPU time is the whole cost, independent of machine load
            rec["workers0_samples_per_cpu_s"] = n / (time.process_time() - c0)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m common.tsg.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO_ROOT / "data" / "tsg_synthetic"),
                    help="synthetic set for the loader benchmark (generated into a temp dir when absent)")
    ap.add_argument("--proposals", type=int, default=100)
    a = ap.parse_args(argv)
    rec = {"project": "tsg", "device": "cpu", "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    rec["evaluator"] = bench_evaluator(a.proposals)
    data = Path(a.data)
    with tempfile.TemporaryDirectory() as tmp:
        if not (data / "features.h5").exists():
            from common.tsg.synthetic import generate

            data = generate(Path(tmp) / "tsg_synthetic", seed=0)
        rec["loader"] = bench_loader(data)
    path = write_bench("tsg", rec)
    rec["written_to"] = str(path)
    print(json.dumps(rec, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
