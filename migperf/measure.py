"""Timing and statistics: closed-loop and open-loop (Poisson) measurement, the stop rule, and
latency statistics.

Conventions (stated in every result record):

* warm-up iterations run first and are excluded from every statistic;
* each timed region ends with the device's synchronise (``torch.cuda.synchronize`` on CUDA),
  so a latency covers the kernels it launched; on CPU the sync is a no-op;
* throughput = samples / second = batch × measured iterations / wall time of the measured loop;
* percentiles use the **nearest-rank** method (the ⌈q/100·n⌉-th smallest sample, no
  interpolation), as MLPerf LoadGen does; std is the sample std (n−1);
* stop rule (perf_analyzer style): run at least ``min_iters`` iterations and ``min_time_s``
  seconds, then stop as soon as the last ``windows`` windows of ``window_iters`` iterations agree
  within ``tolerance`` (relative spread of their mean and median latency), or at ``max_time_s`` /
  ``max_iters``; the record says which.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILE_METHOD = "nearest-rank (ceil(q/100*n)-th smallest sample; no interpolation; as MLPerf LoadGen)"
QUANTILES = (50, 90, 95, 99)


def percentile(sorted_vals, q: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    n = len(sorted_vals)
    if n == 0:
        raise ValueError("percentile of an empty sample")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    return float(sorted_vals[max(1, math.ceil(q / 100.0 * n)) - 1])


def latency_stats(lat_s) -> dict:
    """mean, std (n−1), min, max and p50/p90/p95/p99 in milliseconds, plus n."""
    a = np.sort(np.asarray(lat_s, dtype=float)) * 1000.0
    if a.size == 0:
        raise ValueError("no latency samples")
    if not np.all(np.isfinite(a)):
        raise ValueError("non-finite latency sample")
    out = {"n": int(a.size), "mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0,
           "min_ms": float(a[0]), "max_ms": float(a[-1])}
    for q in QUANTILES:
        out[f"p{q}_ms"] = percentile(a, q)
    return out


@dataclass
class StopRule:
    min_iters: int = 20
    min_time_s: float = 1.0
    window_iters: int = 10
    windows: int = 3
    tolerance: float = 0.10
    max_time_s: float = 30.0
    max_iters: int = 100_000

    def __post_init__(self):
        if self.min_iters < 1 or self.window_iters < 1 or self.windows < 2:
            raise ValueError("stop rule needs min_iters >= 1, window_iters >= 1, windows >= 2")
        if self.max_time_s < self.min_time_s or self.max_iters < self.min_iters:
            raise ValueError("stop rule: max_time_s/max_iters must not be below min_time_s/min_iters")

    def check(self, lat: list[float], elapsed: float) -> str | None:
        """``None`` to continue, else the reason to stop: "stable", "max_time" or "max_iters"."""
        n = len(lat)
        if n >= self.max_iters:
            return "max_iters"
        if elapsed >= self.max_time_s:
            return "max_time"
        if n < self.min_iters or elapsed < self.min_time_s or n < self.window_iters * self.windows:
            return None
        if n % self.window_iters:
            return None
        ws = [lat[n - (k + 1) * self.window_iters: n - k * self.window_iters] for k in range(self.windows)]
        for stat in (statistics.fmean, statistics.median):  # pure Python: µs on short windows
            v = [stat(w) for w in ws]
            if (max(v) - min(v)) > self.tolerance * (sum(v) / len(v)):
                return None
        return "stable"

    def to_dict(self) -> dict:
        return asdict(self)


def _noop():
    return None


def closed_loop(step: Callable[[], object], batch: int, *, warmup: int = 5, stop: StopRule | None = None,
                sync: Callable[[], None] = _noop, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Run ``step`` back to back: ``warmup`` untimed iterations, then timed iterations until the
    stop rule fires. Returns latencies (s), stats, throughput and the stop reason."""
    stop = stop or StopRule()
    for _ in range(warmup):
        step()
    sync()
    lat: list[float] = []
    t_start = clock()
    reason = None
    while reason is None:
        t0 = clock()
        step()
        sync()
        t1 = clock()
        lat.append(t1 - t0)
        reason = stop.check(lat, t1 - t_start)
    wall = clock() - t_start
    return {"latencies_s": lat, "latency": latency_stats(lat), "iterations": len(lat), "wall_s": wall,
            "throughput_sps": batch * len(lat) / wall, "stop_reason": reason, "warmup_iters": warmup}


def poisson_arrivals(rate: float, duration_s: float, seed: int) -> np.ndarray:
    """Arrival times (s) of a Poisson process of ``rate``/s over ``duration_s`` (exponential gaps)."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    rng = np.random.default_rng(seed)
    n = max(16, int(rate * duration_s * 1.5) + 16)
    t = np.cumsum(rng.exponential(1.0 / rate, size=n))
    while t[-1] < duration_s:  # extremely unlikely; extend
        t = np.concatenate([t, t[-1] + np.cumsum(rng.exponential(1.0 / rate, size=n))])
    return t[t < duration_s]


def open_loop(step: Callable[[], object], batch: int, rate: float, duration_s: float, *, seed: int = 0,
              warmup: int = 5, sync: Callable[[], None] = _noop, clock: Callable[[], float] = time.perf_counter,
              sleep: Callable[[float], None] = time.sleep, drain_factor: float = 2.0) -> dict:
    """One server, FIFO, Poisson arrivals of ``rate`` queries/s (each query = one ``step`` on a
    batch of ``batch`` samples) for ``duration_s``. Latency = queueing + service, measured from
    the query's scheduled arrival. Queries still waiting at ``drain_factor × duration_s`` are not
    run and are counted in ``unserved`` (the rate is then reported as not sustainable)."""
    arrivals = poisson_arrivals(rate, duration_s, seed)
    for _ in range(warmup):
        step()
    sync()
    q, s, lat = [], [], []
    t0 = clock()
    unserved = 0
    for k, a in enumerate(arrivals):
        now = clock() - t0
        if now > drain_factor * duration_s:
            unserved = len(arrivals) - k
            break
        if now < a:
            sleep(a - now)
        start = clock() - t0
        step()
        sync()
        end = clock() - t0
        q.append(max(0.0, start - a))
        s.append(end - start)
        lat.append(end - a)
    end_all = clock() - t0
    served = len(lat)
    return {"offered_qps": rate, "duration_s": duration_s, "queries": int(len(arrivals)), "served": served,
            "unserved": unserved, "achieved_qps": served / end_all if end_all > 0 else 0.0,
            "throughput_sps": batch * served / end_all if end_all > 0 else 0.0,
            "latency": latency_stats(lat) if lat else None, "queueing": latency_stats(q) if q else None,
            "service": latency_stats(s) if s else None, "latencies_s": lat, "seed": seed, "warmup_iters": warmup}


def max_rate_meeting(results: list[dict], p99_bound_ms: float) -> float | None:
    """LoadGen "Server" style: the highest offered rate whose p99 latency is within the bound
    and which served every query; ``None`` if no rate qualifies."""
    ok = [r["offered_qps"] for r in results
          if r["latency"] is not None and r["unserved"] == 0 and r["latency"]["p99_ms"] <= p99_bound_ms]
    return max(ok) if ok else None
