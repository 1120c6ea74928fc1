"""The bench's inference rate per CPU-second (robust to other jobs on a shared CPU)."""

from mgslnet import bench


def test_queries_per_cpu_second_counts_only_the_timed_calls(monkeypatch):
    clock = [0.0]
    calls = []

    def infer():                       # each call costs 0.5 CPU-s
        calls.append(1)
        clock[0] += 0.5

    monkeypatch.setattr(bench, "cpu_seconds", lambda: clock[0])
    # 1 warm-up call (not timed), then max(iters, 3) = 3 timed calls: 4 queries x 3 / 1.5 s
    assert bench.queries_per_cpu_s(infer, batch=4, iters=2) == 8.0 and len(calls) == 4
    calls.clear()
    assert bench.queries_per_cpu_s(infer, batch=4, iters=5) == 8.0 and len(calls) == 6
