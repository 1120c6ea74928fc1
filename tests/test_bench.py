import json

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


def test_cpu_seconds_counts_this_process_work():
    from common.bench import cpu_seconds

    c0 = cpu_seconds()
    x = torch.randn(256, 256)
    for _ in range(20):
        x = torch.tanh(x @ x)
    assert cpu_seconds() > c0
