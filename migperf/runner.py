"""Run the benchmark matrix: every cell in its own process, pinned to its device.

The parent (:func:`run_spec`) expands the spec into groups, starts one ``python -m migperf
_cell`` process per cell of a group at the same time with ``CUDA_VISIBLE_DEVICES`` set to that
cell's device (``MIG-<uuid>``, ``GPU-<uuid>`` or an index; empty for CPU cells), waits for the
group, and appends one JSON record per cell to ``results.jsonl`` — a failed or out-of-memory
cell gets a record saying so (with its stderr tail), so nothing disappears from the matrix.

The child (:func:`run_cell`) pins CPU cores if asked, builds the workload, runs the warm-up,
starts the metric sampler, measures (closed loop, or open loop at each arrival rate), stops the
sampler and writes its record. Cells of a concurrent group wait for each other after warm-up
(start barrier) and keep running their workload untimed until the whole group has finished
measuring, so every measured window is under the group's full contention.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common.run import environment
from migperf import nvml
from migperf.measure import PERCENTILE_METHOD, StopRule, closed_loop, max_rate_meeting, open_loop
from migperf.spec import device_kind, expand, parse_cpu_device
from migperf.workloads import make_workload

SCHEMA = "migperf.cell/1"
RAW_KEEP = 20000  # raw latency samples kept per cell (all of them unless a run is huge)


def cell_env(cell: dict, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    kind = device_kind(cell["device"])
    if kind == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif cell["device"].startswith(("MIG-", "GPU-")):
        env["CUDA_VISIBLE_DEVICES"] = cell["device"]
    else:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env["CUDA_VISIBLE_DEVICES"] = cell["device"].split(":", 1)[1] if ":" in cell["device"] else "0"
    return env


def _pin(cell: dict) -> list[int] | None:
    cores = parse_cpu_device(cell["device"]) if device_kind(cell["device"]) == "cpu" else None
    if cores is not None:
        allowed = os.sched_getaffinity(0)
        missing = [c for c in cores if c not in allowed]
        if missing:
            raise RuntimeError(f"cell {cell['cell']}: device {cell['device']} asks for cores {missing}, "
                               f"but this process may use only {sorted(allowed)}")
        os.sched_setaffinity(0, cores)
    threads = cell.get("threads") or (len(cores) if cores else None)
    if threads:
        torch.set_num_threads(threads)
    return cores


def run_cell(cell: dict) -> dict:
    """Measure one cell in this process (``CUDA_VISIBLE_DEVICES`` already set by the parent)."""
    t_begin = time.time()
    cores = _pin(cell)
    gpu = device_kind(cell["device"]) != "cpu"
    if gpu and not torch.cuda.is_available():
        raise RuntimeError(f"cell {cell['cell']}: device {cell['device']} requested but CUDA is not available")
    device = torch.device("cuda:0" if gpu else "cpu")
    spec = {k: v for k, v in cell.items() if k != "barrier"}  # the barrier is per-run plumbing
    rec: dict = {"schema": SCHEMA, "spec": spec, "status": "ok", "started": t_begin}
    env = environment(device)
    env.update({"torch": torch.__version__, "cuda_runtime": torch.version.cuda, "cpu_cores_pinned": cores,
                "torch_threads": torch.get_num_threads()})
    nv = None
    if gpu:
        nv, why = nvml.load_nvml()
        if nv is None:
            env["nvml"] = why
        else:
            env.update(nvml.device_environment(nv, cell["device"]))
        env["cuda_device_name"] = torch.cuda.get_device_name(0)
    rec["env"] = env
    profile = env.get("mig_profile") or ("whole-gpu" if gpu else f"cpu-{len(cores)}core" if cores else "cpu")
    rec["profile"] = profile

    sync = (lambda: torch.cuda.synchronize(device)) if gpu else (lambda: None)
    train_or_infer = "train" if cell["mode"] == "train" else "inference"
    wl = make_workload(cell["model"], cell["batch_size"], train_or_infer, device, seq_len=cell.get("seq_len") or 64,
                       image_size=cell["image_size"], num_classes=cell["num_classes"], amp=cell["amp"],
                       channels_last=cell["channels_last"], optimizer=cell["optimizer"], lr=cell["lr"],
                       seed=cell["seed"])
    rec["params"] = wl.params
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(cell["warmup_iters"]):
        wl.step()
    sync()
    sampler = (nvml.gpu_sampler(nv, cell["device"], cell["sample_interval_s"]) if nv is not None
               else nvml.cpu_sampler(cell["sample_interval_s"]))
    if cell.get("barrier"):
        rec["barrier_wait_s"] = wait_barrier(cell)
    t_measure = time.time()
    sampler.start()
    try:
        if cell["mode"] == "open_loop":
            ol = cell["open_loop"]
            per_rate = []
            for k, r in enumerate(ol["rates"]):
                res = open_loop(wl.step, cell["batch_size"], r, ol["duration_s"], seed=cell["seed"] * 1000 + k,
                                warmup=0, sync=sync, drain_factor=ol["drain_factor"])
                per_rate.append(res)
            samples = sum(r["served"] for r in per_rate) * cell["batch_size"]
            result = {"rates": [{k: v for k, v in r.items() if k != "latencies_s"} for r in per_rate],
                      "raw_latency_ms": {str(r["offered_qps"]): [x * 1000 for x in r["latencies_s"][:RAW_KEEP]]
                                         for r in per_rate},
                      "p99_bound_ms": ol["p99_bound_ms"]}
            if ol["p99_bound_ms"] is not None:
                result["max_rate_meeting_p99_qps"] = max_rate_meeting(per_rate, ol["p99_bound_ms"])
        else:
            stop = StopRule(**cell["stop"])
            res = closed_loop(wl.step, cell["batch_size"], warmup=0, stop=stop, sync=sync)
            samples = res["iterations"] * cell["batch_size"]
            result = {k: v for k, v in res.items() if k != "latencies_s"}
            result["raw_latency_ms"] = [x * 1000 for x in res["latencies_s"][:RAW_KEEP]]
            result["stop_rule"] = stop.to_dict()
            result["warmup_iters"] = cell["warmup_iters"]
    finally:
        metrics = sampler.stop()
    result["measure_window"] = [t_measure, time.time()]
    if cell.get("barrier"):
        rec["held_load_iters"] = hold_load(cell, wl.step, sync)
    result["percentile_method"] = PERCENTILE_METHOD
    result["timing"] = "torch.cuda.synchronize after each timed region + perf_counter" if gpu else "perf_counter (CPU)"
    result["samples"] = samples
    loss = wl.last_loss()
    if loss is not None:
        if loss != loss or loss in (float("inf"), float("-inf")):
            raise FloatingPointError(f"cell {cell['cell']}: training loss became {loss}")
        result["last_loss"] = loss
    e = metrics["metrics"].get("energy_j")
    if e is not None and samples:
        result["energy_per_sample_j"] = e["value"] / samples
        result["energy_scope"] = e["scope"]
    if gpu:
        result["peak_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    rec["result"] = result
    rec["gpu_metrics" if gpu else "host_metrics"] = metrics
    rec["metric_series"] = sampler.series()
    rec["wall_s"] = time.time() - t_begin
    return rec


def wait_barrier(cell: dict, poll_s: float = 0.005) -> float:
    """Concurrent cells: announce "warmed up" and wait until every cell of the group has, so
    that their measured regions start together. Returns the seconds waited."""
    b = cell["barrier"]
    d = Path(b["dir"])
    (d / f"ready-{cell['cell']}").touch()
    t0 = time.time()
    while not all((d / f"ready-{c}").exists() for c in b["cells"]):
        if (d / "abort").exists():
            raise RuntimeError(f"cell {cell['cell']}: another cell of its concurrent group failed before measuring")
        if time.time() - t0 > b.get("timeout_s", 900):
            raise TimeoutError(f"cell {cell['cell']}: concurrent group not ready after {b.get('timeout_s', 900)} s")
        time.sleep(poll_s)
    return time.time() - t0


def hold_load(cell: dict, step, sync, max_s: float = 900) -> int:
    """Concurrent cells: after measuring, keep running the workload (untimed) until every cell
    of the group has finished measuring, so each measured window is fully under the group's
    contention. Returns the number of extra iterations."""
    d = Path(cell["barrier"]["dir"])
    (d / f"done-{cell['cell']}").touch()
    n, t0 = 0, time.time()
    while not all((d / f"done-{c}").exists() for c in cell["barrier"]["cells"]):
        if (d / "abort").exists() or time.time() - t0 > max_s:
            break
        step()
        sync()
        n += 1
    return n


def _failure(cell: dict, status: str, message: str) -> dict:
    return {"schema": SCHEMA, "spec": cell, "status": status, "error": message, "started": time.time()}


def run_group(cells: list[dict], out: Path, python: str = sys.executable, timeout_s: float | None = None,
              log=print) -> list[dict]:
    """Start one process per cell (all at once), wait, and append their records to ``out``."""
    with tempfile.TemporaryDirectory(prefix="migperf-") as td:
        procs = []
        for c in cells:
            cin, cout = Path(td) / f"{c['cell']}.in.json", Path(td) / f"{c['cell']}.out.json"
            cell_in = dict(c)
            if len(cells) > 1:
                cell_in["barrier"] = {"dir": td, "cells": [x["cell"] for x in cells]}
            cin.write_text(json.dumps(cell_in))
            err = open(Path(td) / f"{c['cell']}.err", "w+")  # noqa: SIM115 (closed below)
            p = subprocess.Popen([python, "-m", "migperf", "_cell", str(cin), str(cout)],
                                 env=cell_env(c), stdout=err, stderr=subprocess.STDOUT)
            procs.append((c, p, cout, err))
        recs = []
        for c, p, cout, err in procs:
            try:
                rc = p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                rc = "timeout"
            if rc != 0:  # release the group's other cells from the start barrier
                (Path(td) / "abort").touch()
            err.seek(0)
            tail = err.read()[-2000:]
            err.close()
            if rc == 0 and cout.is_file():
                rec = json.loads(cout.read_text())
            else:
                status = "oom" if "OutOfMemoryError" in tail or "out of memory" in tail else "failed"
                rec = _failure(c, status, f"exit {rc}: {tail.strip()}")
            recs.append(rec)
        with open(out, "a") as f:
            for rec in recs:
                f.write(json.dumps(rec) + "\n")
        for rec in recs:
            log(summary_line(rec))
        return recs


def summary_line(rec: dict) -> str:
    c = rec["spec"]
    head = (f"[{c['cell']}] {c['experiment']}: {c['model']} {c['mode']} bs={c['batch_size']}"
            + (f" seq={c['seq_len']}" if c.get("seq_len") else "") + f" on {c['device']}")
    if rec["status"] != "ok":
        return f"{head}: {rec['status'].upper()} {rec.get('error', '')[:300]}"
    r = rec["result"]
    if c["mode"] == "open_loop":
        parts = [f"{x['offered_qps']:g}/s→p99 {x['latency']['p99_ms']:.1f}ms" + (f" ({x['unserved']} unserved)" if x["unserved"] else "")
                 for x in r["rates"] if x["latency"]]
        return f"{head}: " + ", ".join(parts) + f"; max rate within p99 bound: {r.get('max_rate_meeting_p99_qps')}"
    lat = r["latency"]
    return (f"{head}: {r['throughput_sps']:.1f} samples/s, p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms "
            f"({r['iterations']} iters, {r['stop_reason']})")


def pending_groups(groups: list[list[dict]], out: Path) -> list[list[dict]]:
    """Groups not yet completed in ``out`` (``run --resume``): a group is done when every one of
    its cells has an ``ok`` record whose spec equals the cell's. Concurrent groups rerun whole,
    since their numbers depend on running together."""
    done = {}
    if out.is_file():
        for line in out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("status") == "ok":
                    done[r["spec"]["cell"]] = r["spec"]
    return [g for g in groups if not all(done.get(c["cell"]) == c for c in g)]


def run_spec(spec: dict, out: Path, mig_uuids: list[str] | None = None, timeout_s: float | None = None,
             log=print, resume: bool = False) -> list[dict]:
    groups = expand(spec, mig_uuids)
    todo = pending_groups(groups, out) if resume else groups
    log(f"{sum(len(g) for g in groups)} cells in {len(groups)} group(s) → {out}"
        + (f"; resuming: {len(groups) - len(todo)} group(s) already done" if resume else ""))
    recs = []
    for g in todo:
        recs += run_group(g, out, timeout_s=timeout_s, log=log)
    return recs
