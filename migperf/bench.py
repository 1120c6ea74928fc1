"""``make bench``: the harness's own cost, and the usual speed numbers of one workload.

1. Harness overhead per iteration: :func:`measure.closed_loop` (timing, device sync call, stop
   rule) against a bare ``perf_counter`` loop, (a) on an empty step, which isolates the
   per-iteration cost in µs, and (b) on a ~10 ms matmul step, A/B interleaved, median of the
   ratios; the target is < 1 % at 10 ms per iteration.
2. The sampler thread's cost at 10 ms and 100 ms intervals: CPU µs per tick (CPU probes, and
   the NVML probes against :mod:`migperf.fakes`' pynvml, i.e. migperf's Python side only) and the
   slowdown of the 10 ms step while the thread runs.
3. ResNet-18 (64 px, batch 16): training samples/s, inference samples/s, peak memory, achieved
   FLOP/s as a fraction of a matmul peak measured in the same process (common.bench).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common.bench import count_flops, matmul_peak, peak_memory_bytes, time_fn, write_bench
from migperf import nvml
from migperf.measure import StopRule, closed_loop


def bare_loop(step, iters: int) -> float:
    lat = []
    t_start = time.perf_counter()
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        lat.append(time.perf_counter() - t0)
    return (time.perf_counter() - t_start) / iters


def harness_loop(step, iters: int) -> float:
    # windows of 10 evaluated from iteration 30 on, never "stable" (tolerance < 0): the stop
    # rule's full cost is paid on every window boundary until max_iters
    stop = StopRule(min_iters=min(30, iters), min_time_s=0.0, window_iters=10, windows=3, tolerance=-1.0,
                    max_time_s=1e9, max_iters=iters)
    r = closed_loop(step, 1, warmup=0, stop=stop, sync=lambda: None)
    return r["wall_s"] / r["iterations"]


def matmul_step(target_s: float = 0.010):
    n = 64
    while True:
        a = torch.randn(n, n)
        t = time_fn(lambda a=a: a @ a, torch.device("cpu"), warmup=1, iters=5)
        if t >= target_s or n >= 4096:
            return (lambda a=a: a @ a), n, t
        n = int(n * min(2.0, max(1.1, (target_s / t) ** (1 / 3))))


def ab(fa, fb, reps: int) -> tuple[float, float, float]:
    """Interleaved A/B; medians of per-iteration time and of the B/A ratio."""
    ta, tb, ratio = [], [], []
    for _ in range(reps):
        a, b = fa(), fb()
        ta.append(a)
        tb.append(b)
        ratio.append(b / a)
    return statistics.median(ta), statistics.median(tb), statistics.median(ratio)


def cpu_time_of(fn):
    """``fn`` → the CPU seconds this thread spent in it (with one torch thread the matmul runs
    on this thread, so CPU time is far less disturbed by other jobs than wall time)."""
    def run():
        c0 = time.thread_time()
        fn()
        return time.thread_time() - c0
    return run


def sampler_cost(make, interval: float, seconds: float = 1.0) -> dict:
    s = make(interval)
    c0, t0 = time.thread_time(), time.perf_counter()
    ticks_main = 0
    for _ in range(200):  # per-tick cost measured on this thread
        s.tick()
        ticks_main += 1
    per_tick = (time.thread_time() - c0) / ticks_main
    s = make(interval)
    p0 = time.process_time()
    t0 = time.perf_counter()
    s.start()
    time.sleep(seconds)
    s.stop()
    wall = time.perf_counter() - t0
    return {"interval_s": interval, "tick_cpu_us": per_tick * 1e6, "ticks_per_s": s.n_ticks / wall,
            "thread_cpu_fraction": (time.process_time() - p0) / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    dev = torch.device("cpu")
    out: dict = {"device": "cpu", "torch_threads": 1, "note": "CPU wall and CPU time; see README for the machine"}
    cpu0 = time.process_time()

    # 1a. empty step: the harness's fixed cost per iteration
    n_empty = 2000 if a.quick else 20000
    noop = lambda: None
    tb, th, _ = ab(lambda: bare_loop(noop, n_empty), lambda: harness_loop(noop, n_empty), a.reps)
    out["empty_step"] = {"bare_us": tb * 1e6, "harness_us": th * 1e6, "overhead_us": (th - tb) * 1e6,
                         "overhead_at_10ms_pct": (th - tb) / 0.010 * 100}
    # 1b. a ~10 ms step
    step, n, t = matmul_step()
    iters = 20 if a.quick else 50
    tb, th, ratio = ab(lambda: bare_loop(step, iters), lambda: harness_loop(step, iters), a.reps)
    cb, ch, cratio = ab(cpu_time_of(lambda: bare_loop(step, iters)), cpu_time_of(lambda: harness_loop(step, iters)), a.reps)
    out["step_10ms"] = {"matmul_n": n, "calibrated_ms": t * 1e3, "bare_ms": tb * 1e3, "harness_ms": th * 1e3,
                        "overhead_pct": (ratio - 1) * 100, "bare_cpu_ms": cb / iters * 1e3,
                        "harness_cpu_ms": ch / iters * 1e3, "overhead_cpu_pct": (cratio - 1) * 100}

    # 2. sampler cost
    from migperf import fakes as fake
    gpu = fake.a100_80gb(mig=True)
    fake_nv = fake.make_module([gpu], clock=time.perf_counter)
    samplers = {"cpu": nvml.cpu_sampler,
                "nvml_fake_mig": lambda iv: nvml.gpu_sampler(fake_nv, gpu.migs[0].uuid, iv)}
    out["sampler"] = {}
    for name, make in samplers.items():
        for iv in (0.010, 0.100):
            out["sampler"][f"{name}@{int(iv * 1000)}ms"] = sampler_cost(make, iv, 0.5 if a.quick else 1.0)
    for iv in (0.010, 0.100):
        def with_sampler(iv=iv):
            s = nvml.cpu_sampler(iv).start()
            try:
                return bare_loop(step, iters)
            finally:
                s.stop()
        tb, ts, ratio = ab(lambda: bare_loop(step, iters), with_sampler, a.reps)
        out["sampler"][f"step_slowdown@{int(iv * 1000)}ms_pct"] = (ratio - 1) * 100
        _, _, cratio = ab(cpu_time_of(lambda: bare_loop(step, iters)), cpu_time_of(with_sampler), a.reps)
        out["sampler"][f"step_cpu_slowdown@{int(iv * 1000)}ms_pct"] = (cratio - 1) * 100

    # 3. a workload's speed numbers
    from migperf.workloads import make_workload
    peak = matmul_peak(dev)
    bs = 16
    tr = make_workload("resnet18", bs, "train", dev, image_size=64, num_classes=100)
    inf = make_workload("resnet18", bs, "inference", dev, image_size=64, num_classes=100)
    flops_train = count_flops(tr.step)
    flops_inf = count_flops(inf.step)
    t_tr = time_fn(tr.step, dev, warmup=2, iters=3 if a.quick else 8)
    t_inf = time_fn(inf.step, dev, warmup=2, iters=5 if a.quick else 15)
    out["resnet18_64px_bs16"] = {
        "train_samples_per_s": bs / t_tr, "inference_samples_per_s": bs / t_inf,
        "train_flop_per_s": flops_train / t_tr, "inference_flop_per_s": flops_inf / t_inf,
        "matmul_peak_flop_per_s": peak, "train_fraction_of_matmul_peak": flops_train / t_tr / peak,
        "inference_fraction_of_matmul_peak": flops_inf / t_inf / peak, "peak_memory_bytes": peak_memory_bytes(dev)}
    out["process_cpu_s"] = time.process_time() - cpu0
    path = write_bench("migperf", out)

    e, s10 = out["empty_step"], out["step_10ms"]
    print(f"harness overhead: {e['overhead_us']:.2f} µs/iteration on an empty step "
          f"(= {e['overhead_at_10ms_pct']:.4f} % of a 10 ms iteration)")
    print(f"~10 ms matmul step (n={s10['matmul_n']}, {s10['calibrated_ms']:.1f} ms when calibrated): wall: bare "
          f"{s10['bare_ms']:.3f} ms, harness {s10['harness_ms']:.3f} ms, overhead {s10['overhead_pct']:+.2f} %; "
          f"thread CPU: bare {s10['bare_cpu_ms']:.3f} ms, harness {s10['harness_cpu_ms']:.3f} ms, overhead "
          f"{s10['overhead_cpu_pct']:+.2f} % (medians of {a.reps} interleaved A/B pairs; target < 1 %)")
    print("| sampler | interval | CPU µs/tick | ticks/s | thread CPU share |\n|---|---|---|---|---|")
    for k, v in out["sampler"].items():
        if isinstance(v, dict):
            name, iv = k.split("@")
            print(f"| {name} | {iv} | {v['tick_cpu_us']:.1f} | {v['ticks_per_s']:.1f} | {v['thread_cpu_fraction'] * 100:.2f} % |")
    for iv in ("10ms", "100ms"):
        print(f"10 ms step slowed by the CPU sampler @{iv}: wall {out['sampler'][f'step_slowdown@{iv}_pct']:+.2f} %, "
              f"thread CPU {out['sampler'][f'step_cpu_slowdown@{iv}_pct']:+.2f} %")
    w = out["resnet18_64px_bs16"]
    print(f"resnet18 64px bs16 (1 thread): train {w['train_samples_per_s']:.1f} samples/s "
          f"({w['train_fraction_of_matmul_peak'] * 100:.1f} % of matmul peak {peak / 1e9:.1f} GFLOP/s), inference "
          f"{w['inference_samples_per_s']:.1f} samples/s ({w['inference_fraction_of_matmul_peak'] * 100:.1f} %), "
          f"peak RSS {w['peak_memory_bytes'] / 2**20:.0f} MiB")
    print(f"process CPU time {out['process_cpu_s']:.1f} s; written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
