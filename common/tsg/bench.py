"""``python -m common.tsg.bench`` (``make bench-tsg``): evaluator time on a 17,505-query input
(ActivityNet Captions val_1 when ../shared/data/tsg is present, else random moments of the same
count), with 100 ranked proposals per query, with and without NMS; and TSGDataset loader
throughput (samples/s) from the HDF5 features of the default synthetic set with 0 and 2
DataLoader workers. Writes ``runs/tsg/bench/<time>.json`` via :func:`common.bench.write_bench`.

For the projects' own benchmarks (``python -m <p>.bench``, ``make bench-<p>``): :data:`SHAPES` (the
real benchmarks' input shapes), :func:`fake_batch` (a collated batch of that shape) and the driver
they share: :func:`bench_parser` (the command line), :class:`Bench` (device and AMP, the matmul peak
per wall- and per CPU-second measured first, the shape loop, the report line, the record),
:func:`seeded_model` (the benchmarked model), and :func:`measure_train` /
:func:`profile_table` / :func:`queries_per_s` / :func:`queries_per_cpu_s` (the timing of one training step and of inference). A project's ``bench.py`` keeps only its own: the model, the
train and inference steps, and any extra row::

    a = bench_parser(__doc__).parse_args(argv)
    b = Bench("ecrl", a)                                   # prints the matmul peak line
    cfg = load_config(a.config, a.overrides, DEFAULTS, RULES)
    for name, shape in b.shapes():                         # --shapes, clips capped at --cpu-clips on CPU
        r = bench_shape(shape, cfg, b.device, b.amp, a.iters, b.profile(name))   # measure_train(...) + own rows
        r.update(b.peak_fractions(r))
        b.report(name, r, f"{name}: ...: {b.train_summary(r)}; {b.infer_summary(r)}")
    b.write()                                              # runs/<p>/bench/<time>.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from common.bench import count_flops, cpu_seconds, matmul_peak_pair, reset_peak_memory, time_fn, write_bench
from common.data import REPO_ROOT, build_loader
from common.runtime import amp_dtype, resolve_device, seed_everything
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


# ------------------------------------------------------------------ the projects' bench driver

BENCH_SHAPES = ("charades", "activitynet")   # the default --shapes of every project's bench


def bench_parser(doc: str, *, iters: int = 2) -> argparse.ArgumentParser:
    """The command line every TSG project's ``bench.py`` shares; a project adds its own flags to it."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                    help="bf16 autocast (default: on for CUDA, off for CPU)")
    ap.add_argument("--config", default=None, help="a config whose model widths to use (default: DEFAULTS, the paper scale)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override (repeatable)")
    ap.add_argument("--shapes", nargs="+", default=list(BENCH_SHAPES), choices=list(SHAPES))
    ap.add_argument("--cpu-clips", type=int, default=128,
                    help="on CPU, 200-clip shapes (ActivityNet, TACoS) run at this many clips to stay short")
    ap.add_argument("--iters", type=int, default=iters, help="timed training steps per shape")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="no torch.profiler table of a training step (otherwise one, for the first shape)")
    ap.add_argument("--runs-root", default=None)
    return ap


def seeded_model(build: Callable[..., torch.nn.Module], cfg, shape: dict, device: torch.device,
                 seed: int = 0) -> torch.nn.Module:
    """``build(cfg, shape["vocab"], shape["feat"])`` on ``device`` after ``seed_everything(seed)``:
    the same initial weights in every run of the benchmark."""
    seed_everything(seed)
    return build(cfg, shape["vocab"], shape["feat"]).to(device)


def measure_train(step: Callable[[], object], device: torch.device, iters: int, batch: int) -> dict:
    """One training ``step`` counted (``common.bench.count_flops``; also the warm-up) and timed over
    ``iters`` calls after resetting the peak-memory counter: ``train_step_s`` (median wall),
    ``train_cpu_s_per_step``, ``train_samples_per_s`` (``batch`` / step), ``train_flops_per_step``,
    ``train_flops_per_s`` and ``train_flops_per_cpu_s``."""
    reset_peak_memory(device)
    flops = count_flops(step)
    c0 = cpu_seconds()
    t = time_fn(step, device, warmup=0, iters=iters)
    cpu_per_step = (cpu_seconds() - c0) / iters
    return {"train_step_s": t, "train_cpu_s_per_step": cpu_per_step, "train_samples_per_s": batch / t,
            "train_flops_per_step": flops, "train_flops_per_s": flops / t,
            "train_flops_per_cpu_s": flops / max(cpu_per_step, 1e-9)}


def profile_table(step: Callable[[], object], device: torch.device, rows: int = 12) -> str:
    """A torch.profiler table of one call of ``step``: the ``rows`` ops with the most self time
    (CUDA time on a GPU), i.e. why the fraction of the matmul peak is what it is."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)


def queries_per_s(infer: Callable[[], object], device: torch.device, batch: int, iters: int) -> float:
    """``batch`` / the median wall time of ``infer()`` (1 warm-up call, at least 3 timed)."""
    return batch / time_fn(infer, device, warmup=1, iters=max(iters, 3))


def queries_per_cpu_s(infer: Callable[[], object], batch: int, iters: int) -> float:
    """``batch`` x calls / the process CPU time (user + system) of ``max(iters, 3)`` calls of
    ``infer()`` after one warm-up call: on a shared CPU the wall-clock rate of :func:`queries_per_s`
    measures the other jobs as much as the model (CPU only: a GPU's work is not in this process's
    CPU time)."""
    infer()
    n = max(iters, 3)
    t0 = cpu_seconds()
    for _ in range(n):
        infer()
    return batch * n / max(cpu_seconds() - t0, 1e-9)


class Bench:
    """One run of a project's benchmark from its :func:`bench_parser` arguments: resolves the device
    and AMP (``--amp`` defaults to on for CUDA), measures the matmul peak first
    (:func:`matmul_peak_pair`) and prints it, walks the shapes (:meth:`shapes`), formats the
    shared part of each shape's line (:meth:`train_summary`), collects ``record`` and writes it
    (:meth:`write`: ``runs/<project>/bench/<time>.json``)."""

    def __init__(self, project: str, args: argparse.Namespace):
        self.project, self.args = project, args
        self.device = resolve_device(args.device)
        self.amp = (self.device.type == "cuda") if args.amp is None else bool(args.amp)
        self.dtype = amp_dtype(self.device) if self.amp else torch.float32
        self.peak, self.peak_cpu = matmul_peak_pair(self.device, self.dtype)
        self.record = {"project": project, "device": str(self.device), "amp": self.amp, "dtype": str(self.dtype),
                       "torch_threads": torch.get_num_threads(), "matmul_peak_flops": self.peak,
                       "matmul_peak_flops_per_cpu_s": self.peak_cpu, "shapes": {}}
        self._t0 = time.perf_counter()
        print(f"device {self.device} amp={self.amp} threads={torch.get_num_threads()} matmul peak "
              f"{self.peak / 1e9:.1f} GFLOP/s wall, {self.peak_cpu / 1e9:.1f} GFLOP per CPU-second ({self.dtype})")

    def shapes(self) -> Iterator[tuple[str, dict]]:
        """``(name, shape)`` for each ``--shapes`` entry (a copy of :data:`SHAPES`' entry; on CPU its
        clips capped at ``--cpu-clips``); starts the clock that :meth:`elapsed` reads."""
        for name in self.args.shapes:
            shape = dict(SHAPES[name])
            if self.device.type == "cpu" and shape["clips"] > self.args.cpu_clips:
                shape["clips"] = self.args.cpu_clips
            self._t0 = time.perf_counter()
            yield name, shape

    def profile(self, name: str) -> bool:
        """Whether this shape's training step gets a profiler table (the first shape, unless --no-profile)."""
        return bool(self.args.profile) and name == self.args.shapes[0]

    def elapsed(self) -> float:
        """Wall seconds since the current shape started."""
        return time.perf_counter() - self._t0

    def peak_fractions(self, train: dict) -> dict:
        """A :func:`measure_train` record's FLOP/s as fractions of the matmul peak: per wall-second
        and, on CPU, per CPU-second."""
        out = {"fraction_of_matmul_peak": train["train_flops_per_s"] / self.peak}
        if self.device.type == "cpu":
            out["fraction_of_matmul_peak_cpu_time"] = train["train_flops_per_cpu_s"] / self.peak_cpu
        return out

    def train_summary(self, train: dict, *, step_note: str = "", gflop_digits: int = 1) -> str:
        """``train S samples/s (T ms/step, C CPU-s/step<step_note>), G GFLOP/step -> F GFLOP/s = P% of
        the matmul peak (wall)[, Q% per CPU-second]`` for a :func:`measure_train` record."""
        fr = self.peak_fractions(train)
        return (f"train {train['train_samples_per_s']:.1f} samples/s ({train['train_step_s'] * 1e3:.0f} ms/step, "
                f"{train['train_cpu_s_per_step']:.2f} CPU-s/step{step_note}), "
                f"{train['train_flops_per_step'] / 1e9:.{gflop_digits}f} GFLOP/step -> "
                f"{train['train_flops_per_s'] / 1e9:.1f} GFLOP/s = {100 * fr['fraction_of_matmul_peak']:.1f}% of the "
                f"matmul peak (wall)"
                + (f", {100 * fr['fraction_of_matmul_peak_cpu_time']:.1f}% per CPU-second"
                   if "fraction_of_matmul_peak_cpu_time" in fr else ""))

    def infer_summary(self, rec: dict, *, note: str = "") -> str:
        """``inference Q queries/s<note>; peak memory M MiB (Ts)`` (``rec``'s ``infer_queries_per_s``
        and ``peak_memory_bytes``; T = :meth:`elapsed`)."""
        return (f"inference {rec['infer_queries_per_s']:.0f} queries/s{note}; peak memory "
                f"{rec['peak_memory_bytes'] / 2**20:.0f} MiB ({self.elapsed():.0f}s)")

    def report(self, name: str, rec: dict, line: str) -> None:
        """Keep ``rec`` as ``record["shapes"][name]``, print ``line`` and any profiler table in ``rec``
        (at its top level or one dict down)."""
        self.record["shapes"][name] = rec
        print(line)
        for d in (rec, *(v for v in rec.values() if isinstance(v, dict))):
            if "profile_top_ops" in d:
                print(d["profile_top_ops"])

    def write(self) -> Path:
        """Write ``record`` (``common.bench.write_bench``) and print where."""
        path = write_bench(self.project, self.record, self.args.runs_root)
        print(f"written {path}")
        return path


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
