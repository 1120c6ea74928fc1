"""Timing and statistics: closed-loop and open-loop (Poisson) measurement, the stop rule, the
latency statistics, and MLPerf LoadGen's Server-scenario rules.

Conventions (stated in every result record):

* warm-up iterations run first and are excluded from every statistic;
* each timed region ends with the device's synchronise (``torch.cuda.synchronize`` on CUDA),
  so a latency covers the kernels it launched; on CPU the sync is a no-op;
* throughput = samples / second = batch × measured iterations / wall time of the measured loop;
* percentiles as MLPerf LoadGen computes them: the sample at 0-based index ⌊q/100·n⌋ of the
  sorted samples, no interpolation (mlcommons/inference loadgen/results.cc, ProcessLatencies);
* a percentile is **reported only when at least** ``min_tail`` **samples lie above it** (else
  "n/a (n=…)": with n = 100, LoadGen's p99 *is* the maximum), each with a percentile-bootstrap
  confidence interval (``stats.bootstrap`` resamples, seeded); std is the sample std (n−1);
* stop rule: at least ``min_iters`` iterations and ``min_time_s`` seconds; then "stable" when the
  last ``windows`` windows of ``window_iters`` iterations agree within ``tolerance`` (relative
  spread of window mean and median; Triton perf_analyzer's rule) **and** the target
  ``percentile`` has ``min_tail`` samples above it and a distribution-free 95 % CI (binomial
  order-statistic ranks, normal approximation) within ``ci_tolerance`` of its value; otherwise
  at ``max_time_s`` / ``max_iters``; the record says which.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILE_METHOD = ("LoadGen nearest rank: sorted sample at index floor(q/100*n) (mlcommons/inference "
                     "loadgen/results.cc), reported only with >= min_tail samples above it, percentile-bootstrap CI")
QUANTILES = (50, 90, 95, 99)


# DEVIATION: the original tool used np.percentile (linear interpolation) on every sample count;
# here LoadGen's nearest rank, reported only with enough samples above it, with a bootstrap CI.
def percentile(sorted_vals, q: float) -> float:
    """LoadGen's percentile of an ascending sequence: the element at index ⌊q/100·n⌋."""
    n = len(sorted_vals)
    if n == 0:
        raise ValueError("percentile of an empty sample")
    if not 0 < q <= 100:
        raise ValueError(f"q must be in (0, 100], got {q}")
    return float(sorted_vals[min(n - 1, math.floor(q / 100.0 * n))])


def tail_count(n: int, q: float) -> int:
    """How many samples lie above LoadGen's q-th percentile of n samples."""
    return n - 1 - min(n - 1, math.floor(q / 100.0 * n))


def min_samples(q: float, min_tail: int) -> int:
    """The smallest n for which the q-th percentile has ``min_tail`` samples above it."""
    n = max(1, min_tail + 1)
    while tail_count(n, q) < min_tail:
        n += 1
    return n


def bootstrap_ci(sorted_vals, q: float, reps: int = 1000, confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of LoadGen's q-th percentile (resampling with replacement, seeded;
    chunked so memory stays ~32 MB whatever n)."""
    a = np.asarray(sorted_vals, dtype=float)
    n = a.size
    k = min(n - 1, math.floor(q / 100.0 * n))
    rng = np.random.default_rng(seed)
    est = np.empty(reps)
    chunk = max(1, int(4_000_000 // n))
    for s in range(0, reps, chunk):
        b = min(chunk, reps - s)
        est[s:s + b] = np.partition(a[rng.integers(0, n, size=(b, n))], k, axis=1)[:, k]
    lo, hi = np.quantile(est, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def order_stat_ci(sorted_vals, q: float, z: float = 1.96) -> tuple[float, float]:
    """Distribution-free CI of the q-th percentile from binomial order-statistic ranks (normal
    approximation): cheap enough for the stop rule's window checks."""
    n = len(sorted_vals)
    p = q / 100.0
    half = z * math.sqrt(n * p * (1 - p))
    lo = max(0, math.floor(n * p - half) - 1)
    hi = min(n - 1, math.ceil(n * p + half))
    return float(sorted_vals[lo]), float(sorted_vals[hi])


def latency_stats(lat_s, min_tail: int = 10, reps: int = 1000, confidence: float = 0.95, seed: int = 0,
                  quantiles=QUANTILES) -> dict:
    """mean, std (n−1), min, max and, per quantile, the value with its bootstrap CI, or ``None``
    with the sample count it would need (``pNN_ms``, ``pNN_ci_ms``, ``pNN_needs_n``), in ms."""
    a = np.sort(np.asarray(lat_s, dtype=float)) * 1000.0
    if a.size == 0:
        raise ValueError("no latency samples")
    if not np.all(np.isfinite(a)):
        raise ValueError("non-finite latency sample")
    n = int(a.size)
    out = {"n": n, "mean_ms": float(a.mean()), "std_ms": float(a.std(ddof=1)) if n > 1 else None,
           "min_ms": float(a[0]), "max_ms": float(a[-1]), "min_tail": min_tail, "confidence": confidence}
    for q in quantiles:
        if tail_count(n, q) >= min_tail:
            out[f"p{q}_ms"] = percentile(a, q)
            out[f"p{q}_ci_ms"] = list(bootstrap_ci(a, q, reps, confidence, seed + q)) if reps else None
        else:
            out[f"p{q}_ms"] = None
            out[f"p{q}_needs_n"] = min_samples(q, min_tail)
    return out


def fmt_percentile(st: dict | None, q: int, nd: int = 2, unit: str = "") -> str:
    """"12.30 [11.90, 12.80] (n=540)" (``unit`` after the value) or "n/a (n=120 < 1100)"."""
    if not st:
        return "—"
    v = st.get(f"p{q}_ms")
    if v is None:
        need = st.get(f"p{q}_needs_n")
        return f"n/a (n={st['n']}" + (f" < {need}" if need else "") + ")"
    ci = st.get(f"p{q}_ci_ms")
    c = f" [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]" if ci else ""
    return f"{v:.{nd}f}{unit}{c} (n={st['n']})"


@dataclass
class StopRule:
    min_iters: int = 20
    min_time_s: float = 1.0
    window_iters: int = 10
    windows: int = 3
    tolerance: float = 0.10
    percentile: float | None = 99.0
    ci_tolerance: float = 0.10
    min_tail: int = 10
    max_time_s: float = 30.0
    max_iters: int = 100_000

    def __post_init__(self):
        if self.min_iters < 1 or self.window_iters < 1 or self.windows < 2:
            raise ValueError("stop rule needs min_iters >= 1, window_iters >= 1, windows >= 2")
        if self.max_time_s < self.min_time_s or self.max_iters < self.min_iters:
            raise ValueError("stop rule: max_time_s/max_iters must not be below min_time_s/min_iters")
        if self.percentile is not None and not 0 < self.percentile < 100:
            raise ValueError("stop rule: percentile must be in (0, 100) or null")
        self._sorted: list[float] = []

    def _tail_ok(self, lat: list[float]) -> bool:
        if not self.percentile:
            return True
        n = len(lat)
        if tail_count(n, self.percentile) < self.min_tail:
            return False
        import bisect
        for x in lat[len(self._sorted):]:  # keep a sorted copy incrementally
            bisect.insort(self._sorted, x)
        v = percentile(self._sorted, self.percentile)
        lo, hi = order_stat_ci(self._sorted, self.percentile)
        return v > 0 and max(v - lo, hi - v) <= self.ci_tolerance * v

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
        return "stable" if self._tail_ok(lat) else None

    def to_dict(self) -> dict:
        return asdict(self)


def _noop():
    return None


def closed_loop(step: Callable[[], object], batch: int, *, warmup: int = 5, stop: StopRule | None = None,
                sync: Callable[[], None] = _noop, clock: Callable[[], float] = time.perf_counter,
                stats: dict | None = None, seed: int = 0) -> dict:
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
    st = stats or {}
    return {"latencies_s": lat, "latency": latency_stats(lat, stop.min_tail, st.get("bootstrap", 1000),
                                                         st.get("confidence", 0.95), seed),
            "iterations": len(lat), "wall_s": wall,
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


def loadgen_early_stopping(latencies_s, bound_s: float, percentile: float = 99.0, confidence: float = 0.99,
                           tolerance: float = 0.0) -> dict:
    """MLPerf LoadGen's Server early-stopping test (mlcommons/inference loadgen/results.cc,
    early_stopping.cc): with ``t`` queries over the bound, the run is valid when at least
    ``h + t`` queries were processed, ``h`` the smallest count with
    P[Binomial(h + t, 1 − p + d) ≤ t] ≤ 1 − confidence (p = percentile/100, d = tolerance)."""
    from scipy.stats import binom

    n = len(latencies_s)
    t = int(sum(1 for x in latencies_s if x > bound_s))
    q = 1.0 - percentile / 100.0 + tolerance

    def ok(h):
        return binom.cdf(t, h + t, q) <= 1.0 - confidence

    lo, hi = 1, 1
    while not ok(hi):
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return {"overlatency_queries": t, "queries": n, "queries_needed": lo + t, "satisfied": n >= lo + t,
            "confidence": confidence, "percentile": percentile}


def loadgen_verdict(res: dict, ol: dict) -> dict:
    """Whether one open-loop rate meets LoadGen's Server rules: minimum duration, minimum query
    count, every query served, and (with a latency bound) early stopping on the p99 bound.
    ``rules: quick`` runs say they do not meet them, whatever the numbers."""
    checks = {"min_duration": res["duration_s"] >= 600.0 - 1e-9,
              "min_queries": res["queries"] >= ol.get("min_queries", 100),
              "all_served": res["unserved"] == 0}
    es = None
    if ol.get("p99_bound_ms") is not None and res["latencies_s"]:
        es = loadgen_early_stopping(res["latencies_s"], ol["p99_bound_ms"] / 1000.0, ol.get("percentile", 99.0),
                                    ol.get("confidence", 0.99))
        checks["early_stopping"] = es["satisfied"]
    met = all(checks.values())
    quick = ol.get("rules") == "quick"
    why = [k for k, v in checks.items() if not v]
    note = ("quick mode: does NOT meet MLPerf LoadGen Server rules (min duration 600 s, min query count, "
            "early stopping); numbers are indicative only" if quick else
            "meets MLPerf LoadGen Server rules" if met else "does NOT meet MLPerf LoadGen Server rules: " + ", ".join(why))
    return {"rules": "quick" if quick else "loadgen", "valid": met and not quick, "checks": checks,
            "early_stopping": es, "note": note}


# DEVIATION: the original served queries over HTTP (Sanic server + client); here the server runs
# in-process (no serialisation or network time), which isolates the device's queueing behaviour.
def open_loop(step: Callable[[int], object], batch: int, rate: float, duration_s: float, *, seed: int = 0,
              warmup: int = 5, sync: Callable[[], None] = _noop, clock: Callable[[], float] = time.perf_counter,
              sleep: Callable[[float], None] = time.sleep, drain_factor: float = 2.0, max_batch: int = 1,
              max_delay_s: float = 0.0, workers: int = 1, min_tail: int = 10, stats: dict | None = None) -> dict:
    """An inference server under Poisson arrivals of ``rate`` queries/s (each query = ``batch``
    samples) for ``duration_s``. ``step(n)`` runs the model on ``n`` samples. Dynamic batching as
    inference servers do it (Triton's max batch / max queue delay): a free worker takes the
    oldest waiting query and waits until ``max_batch`` queries are waiting or the oldest has
    waited ``max_delay_s``, then runs them as one batch; ``workers`` batches may run at once
    (threads). ``max_batch=1, workers=1`` is a single FIFO server. Latency = queueing + service,
    from each query's scheduled arrival. Queries still waiting at ``drain_factor × duration_s``
    are not run and are counted ``unserved``."""
    arrivals = poisson_arrivals(rate, duration_s, seed)
    for _ in range(warmup):
        step(batch)
    sync()
    n_q = len(arrivals)
    lat = [None] * n_q
    queue_t = [None] * n_q
    service = [None] * n_q
    batches: list[int] = []
    lock = threading.Lock()
    st = {"next": 0, "unserved": 0}
    t0 = clock()

    def serve():
        while True:
            with lock:
                i = st["next"]
                if i >= n_q:
                    return
                now = clock() - t0
                if now > drain_factor * duration_s:
                    st["unserved"] += n_q - i
                    st["next"] = n_q
                    return
                a0 = arrivals[i]
                j = i
                while j < n_q and j - i < max_batch and arrivals[j] <= now:
                    j += 1
                wait = None
                if j == i:
                    wait = a0 - now                               # nothing has arrived yet
                elif j - i < max_batch and now < a0 + max_delay_s:
                    nxt = arrivals[j] if j < n_q else math.inf    # wait for the batch to fill or the delay
                    wait = min(a0 + max_delay_s, nxt) - now
                if wait is None:
                    st["next"] = j
            if wait is not None:
                sleep(max(wait, 0.0))
                continue
            start = clock() - t0
            step(batch * (j - i))
            sync()
            end = clock() - t0
            with lock:
                batches.append(j - i)
                for k in range(i, j):
                    queue_t[k], service[k], lat[k] = max(0.0, start - arrivals[k]), end - start, end - arrivals[k]

    if workers <= 1:
        serve()
    else:
        ths = [threading.Thread(target=serve, name=f"migperf-server-{w}", daemon=True) for w in range(workers)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
    end_all = clock() - t0
    lat_s = [x for x in lat if x is not None]
    q_s = [x for x in queue_t if x is not None]
    s_s = [x for x in service if x is not None]
    served = len(lat_s)
    so = stats or {}
    ls = (lambda v, sd: latency_stats(v, min_tail, so.get("bootstrap", 1000), so.get("confidence", 0.95), sd)
          if v else None)
    return {"offered_qps": rate, "duration_s": duration_s, "queries": int(n_q), "served": served,
            "unserved": st["unserved"], "achieved_qps": served / end_all if end_all > 0 else 0.0,
            "throughput_sps": batch * served / end_all if end_all > 0 else 0.0,
            "latency": ls(lat_s, seed), "queueing": ls(q_s, seed + 1), "service": ls(s_s, seed + 2),
            "latencies_s": lat_s, "seed": seed, "warmup_iters": warmup,
            "server": {"max_batch": max_batch, "max_delay_ms": max_delay_s * 1000.0, "workers": workers,
                       "mean_batch": (sum(batches) / len(batches)) if batches else None}}


def max_rate_meeting(results: list[dict], p99_bound_ms: float) -> float | None:
    """LoadGen "Server" style: the highest offered rate whose p99 latency is within the bound,
    that served every query, and whose p99 had enough samples to be reported (and, under
    LoadGen rules, passed early stopping); ``None`` if no rate qualifies."""
    ok = []
    for r in results:
        lat = r["latency"]
        if lat is None or r["unserved"] or lat.get("p99_ms") is None or lat["p99_ms"] > p99_bound_ms:
            continue
        v = r.get("loadgen")
        if v and v["rules"] == "loadgen" and not v["valid"]:
            continue
        ok.append(r["offered_qps"])
    return max(ok) if ok else None
