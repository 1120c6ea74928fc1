"""Benchmark helpers shared by every ``make bench-<name>``: a matmul peak measured in the same
process, FLOP counting, synchronised timing and peak memory.

Achieved FLOP/s is reported as a fraction of the *measured* dense-matmul peak on the same device
and dtype (not a datasheet number), so the fraction says how well a workload uses the hardware
it ran on. Speed targets belong in benchmarks, never in timed tests.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far. On a shared machine, FLOPs per
    CPU-second are far less disturbed by other jobs than FLOPs per wall-second."""
    return time.process_time()


def time_fn(fn: Callable[[], object], device: torch.device, warmup: int = 2, iters: int = 10,
            min_time_s: float = 0.0, stat: str = "median") -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls (device-synchronised), over at least
    ``iters`` calls and ``min_time_s`` seconds: the median (a workload's typical step) or, with
    ``stat="min"``, the fastest call (a peak: what the hardware can do when nothing else runs)."""
    if stat not in ("median", "min"):
        raise ValueError(f"time_fn: stat must be 'median' or 'min', not {stat!r}")
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    t_start = time.perf_counter()
    while len(times) < iters or (time.perf_counter() - t_start) < min_time_s:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[0] if stat == "min" else times[len(times) // 2]


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                iters: int = 10, min_time_s: float | None = None) -> float:
    """Achieved FLOP/s of the fastest n×n @ n×n matmul (2n³ FLOPs) on ``device`` over at least
    ``iters`` calls and ``min_time_s`` seconds (default 1 s on CPU, where other processes come and
    go; 0 on CUDA): the reference peak. The fastest call, not the median, so that a process
    starting beside the benchmark cannot lower the reference and push fractions above 1."""
    if n is None:
        n = 8192 if device.type == "cuda" else 1024
    if min_time_s is None:
        min_time_s = 0.0 if device.type == "cuda" else 1.0
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_fn(lambda: a @ b, device, warmup=3, iters=iters, min_time_s=min_time_s, stat="min")
    return 2.0 * n**3 / t


def matmul_peak_pair(device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """(FLOP/s per wall-second of the fastest call, FLOP per CPU-second over all calls) of
    :func:`matmul_peak` (n = 1024 on CPU, 8192 on CUDA; exactly 3 warm-up + 10 timed matmuls, so
    the CPU-seconds divide a known FLOP count). Per CPU-second, the same 13 matmuls are robust to
    other processes on a shared CPU."""
    n = 8192 if device.type == "cuda" else 1024
    c0 = cpu_seconds()
    peak = matmul_peak(device, dtype, n=n, iters=10, min_time_s=0.0)  # exactly 13 calls: the CPU-second count
    return peak, 13 * 2.0 * n**3 / max(cpu_seconds() - c0, 1e-9)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (forward and, if ``fn`` calls backward, backward) as counted
    by ``torch.utils.flop_counter`` (matmuls/convolutions/attention; elementwise ops are free)."""
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: peak allocated by torch since the last reset. CPU: the process's peak RSS
    (ru_maxrss; a high-water mark for the whole process, not reset between measurements)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def write_bench(project: str, record: dict, runs_root: str | Path | None = None) -> Path:
    from common.run import environment
    from common.run import runs_root as _runs_root

    d = _runs_root(runs_root) / project / "bench"
    d.mkdir(parents=True, exist_ok=True)
    rec = dict(record)
    rec.setdefault("env", environment(record.get("device")))
    path = d / (time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + ".json")
    path.write_text(json.dumps(rec, indent=2) + "\n")
    return path
