import math

import numpy as np
import pytest

from migperf.measure import (
    StopRule,
    closed_loop,
    latency_stats,
    max_rate_meeting,
    open_loop,
    percentile,
    poisson_arrivals,
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


def test_nearest_rank_percentiles():
    a = list(range(1, 101))
    assert [percentile(a, q) for q in (50, 90, 95, 99, 100)] == [50, 90, 95, 99, 100]
    b = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert percentile(b, 50) == 50 and percentile(b, 91) == 100 and percentile(b, 90) == 90 and percentile(b, 1) == 10
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_stats_ms_and_sample_std():
    s = latency_stats([0.001, 0.002, 0.003, 0.004])
    assert s["n"] == 4 and s["mean_ms"] == pytest.approx(2.5) and s["std_ms"] == pytest.approx(math.sqrt(5 / 3))
    assert (s["p50_ms"], s["p90_ms"], s["p99_ms"], s["min_ms"], s["max_ms"]) == pytest.approx((2, 4, 4, 1, 4))
    with pytest.raises(ValueError, match="non-finite"):
        latency_stats([0.1, float("nan")])


def test_stop_rule():
    r = StopRule(min_iters=6, min_time_s=0.0, window_iters=2, windows=3, tolerance=0.1, max_time_s=100, max_iters=50)
    assert r.check([1.0] * 5, 5) is None                       # below min_iters
    assert r.check([1.0] * 6, 6) == "stable"
    assert r.check([1.0, 1.0, 1.0, 1.0, 2.0, 2.0], 8) is None  # windows disagree by 100%
    assert r.check([1.0] * 7, 7) is None                       # only at window boundaries
    assert r.check([1.0, 2.0] * 3, 1000) == "max_time"
    assert r.check([1.0, 2.0] * 25, 10) == "max_iters"
    with pytest.raises(ValueError):
        StopRule(min_iters=10, max_iters=5)


def test_closed_loop_excludes_warmup_and_computes_throughput():
    clk = FakeClock()
    calls = []

    def step():
        calls.append(clk.t)
        clk.t += 0.010 if len(calls) > 3 else 1.0  # three slow warm-up iterations

    r = closed_loop(step, batch=8, warmup=3, clock=clk,
                    stop=StopRule(min_iters=10, min_time_s=0.05, window_iters=5, windows=2, tolerance=0.01))
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

    def step():
        clk.t += 0.010

    low = open_loop(step, 1, rate=5.0, duration_s=20.0, seed=0, warmup=0, clock=clk, sleep=clk.sleep)
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

    def slow():
        clk2.t += 0.010

    over = open_loop(slow, 1, rate=200.0, duration_s=2.0, seed=0, warmup=0, clock=clk2, sleep=clk2.sleep, drain_factor=1.5)
    assert over["unserved"] > 0 and over["served"] + over["unserved"] == over["queries"]
    assert over["achieved_qps"] == pytest.approx(100.0, rel=0.02)  # capacity of a 10 ms server
    assert max_rate_meeting([low, over], p99_bound_ms=50.0) == 5.0
    assert max_rate_meeting([over], p99_bound_ms=1e9) is None        # unserved queries disqualify
