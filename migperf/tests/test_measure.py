import math

import numpy as np
import pytest

from migperf.measure import (
    StopRule,
    bootstrap_ci,
    closed_loop,
    fmt_percentile,
    latency_stats,
    loadgen_early_stopping,
    loadgen_verdict,
    max_rate_meeting,
    min_samples,
    open_loop,
    percentile,
    poisson_arrivals,
    tail_count,
)


class FakeClock:
    """Time advances only when the workload 'runs' or the harness sleeps."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, dt):
        assert dt >= 0
        self.t += dt


def test_loadgen_percentile_index():
    # LoadGen: sorted[floor(q/100 * n)] (mlcommons/inference loadgen/results.cc)
    a = list(range(1, 101))
    assert [percentile(a, q) for q in (50, 90, 95, 99, 100)] == [51, 91, 96, 100, 100]
    b = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert percentile(b, 50) == 60 and percentile(b, 90) == 100 and percentile(b, 1) == 10
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_min_samples_rule():
    assert tail_count(100, 99) == 0            # with 100 samples LoadGen's p99 IS the maximum
    assert min_samples(99, 10) == 1001 and tail_count(1001, 99) == 10 and tail_count(1000, 99) == 9
    assert min_samples(50, 10) == 21 and min_samples(90, 10) == 101


def test_p99_is_not_the_maximum():
    """Guards the science: p99 must never be computed as (or silently fall back to) the maximum."""
    rng = np.random.default_rng(0)
    lat = rng.exponential(0.010, size=2000)
    lat[-1] = 10.0                               # one huge outlier
    s = latency_stats(lat, min_tail=10, reps=200)
    srt = np.sort(lat) * 1000
    assert s["p99_ms"] == pytest.approx(srt[1980]) and s["p99_ms"] < s["max_ms"] / 100
    lo, hi = s["p99_ci_ms"]
    assert lo <= s["p99_ms"] <= hi < s["max_ms"]
    # too few samples: reported as n/a with the count it needs, never as the maximum
    few = latency_stats(lat[:150], min_tail=10, reps=100)
    assert few["p99_ms"] is None and few["p99_needs_n"] == 1001 and few["p50_ms"] is not None
    assert fmt_percentile(few, 99) == "n/a (n=150 < 1001)"


def test_latency_stats_ms_and_sample_std():
    s = latency_stats([0.001, 0.002, 0.003, 0.004], min_tail=1, reps=0)
    assert s["n"] == 4 and s["mean_ms"] == pytest.approx(2.5) and s["std_ms"] == pytest.approx(math.sqrt(5 / 3))
    assert (s["p50_ms"], s["min_ms"], s["max_ms"]) == pytest.approx((3, 1, 4))
    assert s["p99_ms"] is None                  # 0 samples above it
    with pytest.raises(ValueError, match="non-finite"):
        latency_stats([0.1, float("nan")])


def test_bootstrap_ci_covers_and_is_seeded():
    rng = np.random.default_rng(1)
    a = np.sort(rng.normal(10, 1, 400))
    lo, hi = bootstrap_ci(a, 50, reps=400, seed=3)
    assert lo < 10.0 < hi and hi - lo < 0.5
    assert (lo, hi) == bootstrap_ci(a, 50, reps=400, seed=3)


def test_stop_rule():
    r = StopRule(min_iters=6, min_time_s=0.0, window_iters=2, windows=3, tolerance=0.1, percentile=None,
                 max_time_s=100, max_iters=50)
    assert r.check([1.0] * 5, 5) is None                       # below min_iters
    assert r.check([1.0] * 6, 6) == "stable"
    assert r.check([1.0, 1.0, 1.0, 1.0, 2.0, 2.0], 8) is None  # windows disagree by 100%
    assert r.check([1.0] * 7, 7) is None                       # only at window boundaries
    assert r.check([1.0, 2.0] * 3, 1000) == "max_time"
    assert r.check([1.0, 2.0] * 25, 10) == "max_iters"
    with pytest.raises(ValueError):
        StopRule(min_iters=10, max_iters=5)


def test_stop_rule_is_percentile_aware():
    """Stable windows are not enough: the target percentile needs its tail samples and a tight CI."""
    r = StopRule(min_iters=10, min_time_s=0.0, window_iters=10, windows=3, tolerance=0.5, percentile=99.0,
                 ci_tolerance=0.2, min_tail=10, max_time_s=1e9, max_iters=10**6)
    rng = np.random.default_rng(0)
    lat = list(0.01 + 0.001 * rng.random(1000))
    assert r.check(lat, 100.0) is None          # 1000 samples: only 9 above p99
    lat += list(0.01 + 0.001 * rng.random(10))
    assert r.check(lat, 100.0) == "stable"
    heavy = list(rng.exponential(0.01, 1010))      # a heavy tail: the p99's CI is wide
    assert StopRule(**{**r.to_dict(), "tolerance": 10.0, "ci_tolerance": 0.05}).check(heavy, 100.0) is None
    assert StopRule(**{**r.to_dict(), "tolerance": 10.0, "ci_tolerance": 5.0}).check(heavy, 100.0) == "stable"


def test_closed_loop_excludes_warmup_and_computes_throughput():
    clk = FakeClock()
    calls = []

    def step():
        calls.append(clk.t)
        clk.t += 0.010 if len(calls) > 3 else 1.0  # three slow warm-up iterations

    r = closed_loop(step, batch=8, warmup=3, clock=clk,
                    stop=StopRule(min_iters=10, min_time_s=0.05, window_iters=5, windows=2, tolerance=0.01,
                                  percentile=None))
    assert r["iterations"] == 10 and r["stop_reason"] == "stable" and len(calls) == 13
    assert r["throughput_sps"] == pytest.approx(8 / 0.010)
    assert r["latency"]["max_ms"] == pytest.approx(10.0)   # warm-up's 1 s never counted


def test_poisson_arrivals_rate_and_determinism():
    a = poisson_arrivals(200.0, 50.0, seed=3)
    assert np.all(np.diff(a) > 0) and a[-1] < 50.0
    assert abs(len(a) / 50.0 - 200.0) < 200.0 * 0.05
    assert np.array_equal(a, poisson_arrivals(200.0, 50.0, seed=3))
    gaps = np.diff(a)
    assert np.std(gaps) / np.mean(gaps) == pytest.approx(1.0, abs=0.05)  # exponential: CV = 1


def test_open_loop_queueing_plus_service():
    clk = FakeClock()

    def step(n=1):
        clk.t += 0.010

    low = open_loop(step, 1, rate=5.0, duration_s=20.0, seed=0, warmup=0, clock=clk, sleep=clk.sleep, min_tail=0)
    arr = poisson_arrivals(5.0, 20.0, 0)
    assert low["served"] == len(arr) and low["unserved"] == 0
    assert low["service"]["p99_ms"] == pytest.approx(10.0)
    # reproduce the FIFO queue by hand: start = max(arrival, previous finish)
    fin, lat = 0.0, []
    for a in arr:
        fin = max(a, fin) + 0.010
        lat.append(fin - a)
    assert low["latency"]["p99_ms"] == pytest.approx(percentile(sorted(x * 1000 for x in lat), 99))
    assert low["latency"]["mean_ms"] == pytest.approx(np.mean(lat) * 1000)
    clk2 = FakeClock()

    def slow(n=1):
        clk2.t += 0.010

    over = open_loop(slow, 1, rate=200.0, duration_s=2.0, seed=0, warmup=0, clock=clk2, sleep=clk2.sleep,
                     drain_factor=1.5, min_tail=0)
    assert over["unserved"] > 0 and over["served"] + over["unserved"] == over["queries"]
    assert over["achieved_qps"] == pytest.approx(100.0, rel=0.02)  # capacity of a 10 ms server
    assert max_rate_meeting([low, over], p99_bound_ms=50.0) == 5.0
    assert max_rate_meeting([over], p99_bound_ms=1e9) is None        # unserved queries disqualify


def test_dynamic_batching_server():
    """max_batch/max_delay: a server that batches serves an overload a 1-query server cannot."""
    def run(max_batch, delay):
        clk = FakeClock()
        sizes = []

        def step(n):
            sizes.append(n)
            clk.t += 0.010 + 0.001 * n              # 10 ms fixed cost + 1 ms per sample

        r = open_loop(step, 1, rate=200.0, duration_s=5.0, seed=1, warmup=0, clock=clk, sleep=clk.sleep,
                      max_batch=max_batch, max_delay_s=delay, min_tail=0, stats={"bootstrap": 0})
        return r, sizes

    fifo, s1 = run(1, 0.0)
    batched, s8 = run(8, 0.005)
    assert set(s1) == {1} and fifo["unserved"] > 0
    assert max(s8) == 8 and batched["unserved"] == 0 and batched["served"] == batched["queries"]
    assert batched["server"]["mean_batch"] > 1 and batched["latency"]["p99_ms"] < 200


def test_loadgen_early_stopping_matches_the_binomial_rule():
    from scipy.stats import binom
    lat = [0.001] * 2000 + [1.0] * 5             # 5 queries over a 10 ms bound
    es = loadgen_early_stopping(lat, 0.010, 99.0, 0.99)
    h = es["queries_needed"] - 5
    assert es["overlatency_queries"] == 5 and es["satisfied"]
    assert binom.cdf(5, h + 5, 0.01) <= 0.01 < binom.cdf(5, h - 1 + 5, 0.01)
    assert not loadgen_early_stopping([0.001] * 100, 0.010)["satisfied"]   # 0 over: needs 459 queries
    res = {"duration_s": 2.0, "queries": 2005, "unserved": 0, "latencies_s": lat}
    v = loadgen_verdict(res, {"p99_bound_ms": 10.0, "rules": "quick"})
    assert not v["valid"] and "does NOT meet MLPerf LoadGen" in v["note"]
    v = loadgen_verdict(res, {"p99_bound_ms": 10.0, "rules": "loadgen"})
    assert not v["valid"] and v["checks"] == {"min_duration": False, "min_queries": True, "all_served": True,
                                              "early_stopping": True}
