import json

import pytest
import torch

from common.bench import count_flops, matmul_peak, peak_memory_bytes, time_fn, write_bench


def test_count_flops_of_linear_forward_and_backward():
    lin = torch.nn.Linear(32, 16, bias=False)
    x = torch.randn(8, 32, requires_grad=True)
    assert count_flops(lambda: lin(x)) == 2 * 8 * 32 * 16
    # backward of a matmul is two matmuls of the same size (grad wrt input and weight)
    assert count_flops(lambda: lin(x).sum().backward()) == 3 * 2 * 8 * 32 * 16


def test_peak_time_memory_and_bench_record(tmp_path):
    cpu = torch.device("cpu")
    assert matmul_peak(cpu, n=128, iters=3) > 1e6
    calls = []
    t = time_fn(lambda: calls.append(1), cpu, warmup=2, iters=5)
    assert len(calls) == 7 and t >= 0
    assert peak_memory_bytes(cpu) > 10 * 2**20
    p = write_bench("demo", {"device": "cpu", "samples_per_s": 1.0}, runs_root=tmp_path)
    rec = json.loads(p.read_text())
    assert p.parent == tmp_path / "demo" / "bench" and rec["samples_per_s"] == 1.0 and "git_sha" in rec["env"]


def test_time_fn_median_or_fastest_call_and_a_peak_robust_to_a_slow_start(monkeypatch):
    import common.bench as bench

    cpu = torch.device("cpu")
    durations = iter([9.0, 9.0, 5.0, 1.0, 3.0, 2.0, 4.0])     # 2 warm-up calls, then 5 timed
    clock = [0.0]

    def fake_clock():
        return clock[0]

    def call():
        clock[0] += next(durations)

    monkeypatch.setattr(bench.time, "perf_counter", fake_clock)
    assert bench.time_fn(call, cpu, warmup=2, iters=5) == 3.0                       # median of 5 1 3 2 4
    durations = iter([9.0, 9.0, 5.0, 1.0, 3.0, 2.0, 4.0])
    assert bench.time_fn(call, cpu, warmup=2, iters=5, stat="min") == 1.0
    with pytest.raises(ValueError, match="stat"):
        bench.time_fn(call, cpu, stat="mean")
    # the peak is the fastest matmul over at least 1 s of calls on CPU, so a brief slow spell (another
    # process starting beside the benchmark) cannot lower it
    monkeypatch.undo()
    real = bench.time_fn
    seen = {}

    def spy(fn, device, **kw):
        seen.update(kw)
        return real(fn, device, **kw)

    monkeypatch.setattr(bench, "time_fn", spy)
    assert bench.matmul_peak(cpu, n=64, iters=3) > 0
    assert seen["stat"] == "min" and seen["min_time_s"] == 1.0            # CPU: at least 1 s of calls


def test_cpu_seconds_counts_this_process_work():
    from common.bench import cpu_seconds

    c0 = cpu_seconds()
    x = torch.randn(256, 256)
    for _ in range(20):
        x = torch.tanh(x @ x)
    assert cpu_seconds() > c0
