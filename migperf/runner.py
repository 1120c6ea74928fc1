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
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common.run import environment
from migperf import dcgm, host, nvml
from migperf.measure import (
    PERCENTILE_METHOD,
    StopRule,
    closed_loop,
    fmt_percentile,
    loadgen_verdict,
    max_rate_meeting,
    open_loop,
)
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


def _sampler(cell: dict, nv, env: dict):
    """NVML (+ DCGM) sampler for a GPU cell, the CPU sampler otherwise."""
    if nv is None:
        return nvml.cpu_sampler(cell["sample_interval_s"])
    target = dcgm.Target(env.get("gpu_uuid"), env.get("gpu_index"), env.get("gi_id"), env.get("mig_uuid"))
    probe, why = dcgm.dcgm_probe(cell["dcgm"], target)
    s = nvml.gpu_sampler(nv, cell["device"], cell["sample_interval_s"], extra=[probe] if probe else [])
    if why:
        s.notes["dcgm"] = why
    return s


def run_cell(cell: dict, make=make_workload) -> dict:
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
                "torch_threads": torch.get_num_threads(), "pid": os.getpid()})
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
    open_loop_cell = cell["mode"] == "open_loop"
    train_or_infer = "train" if cell["mode"] == "train" else "inference"
    srv = cell["open_loop"]["server"] if open_loop_cell else {}
    wl = make(cell["model"], cell["batch_size"], train_or_infer, device, seq_len=cell.get("seq_len") or 64,
              image_size=cell["image_size"], num_classes=cell["num_classes"], amp=cell["amp"],
              channels_last=cell["channels_last"], optimizer=cell["optimizer"], lr=cell["lr"], seed=cell["seed"],
              input_mode=cell["input"], max_samples=cell["batch_size"] * int(srv.get("max_batch", 1)))
    rec["params"] = wl.params
    if gpu:
        torch.cuda.reset_peak_memory_stats(device)
    # ============================ warm-up (never timed) ============================
    for _ in range(cell["warmup_iters"]):
        wl.step()
    sync()
    sampler = _sampler(cell, nv, env)
    group_pids = [os.getpid()]
    if cell.get("barrier"):
        rec["barrier_wait_s"], group_pids = wait_barrier(cell)
    monitor = host.ContentionMonitor(
        cpus=cores if cores else None, pids=group_pids, thresholds=cell["contention"],
        gpu_processes=(lambda: nvml.gpu_processes(nv, cell["device"])) if nv is not None else None)
    # ============================ measured window ============================
    t_measure = time.time()
    monitor.start()
    sampler.start()
    stats = cell["stats"]
    try:
        if open_loop_cell:
            ol = cell["open_loop"]
            per_rate = []
            for k, r in enumerate(ol["rates"]):
                res = open_loop(wl.step_n, cell["batch_size"], r, ol["duration_s"], seed=cell["seed"] * 1000 + k,
                                warmup=0, sync=sync, drain_factor=ol["drain_factor"],
                                max_batch=int(srv["max_batch"]), max_delay_s=float(srv["max_delay_ms"]) / 1000.0,
                                workers=int(srv["workers"]), min_tail=cell["stop"]["min_tail"], stats=stats)
                res["loadgen"] = loadgen_verdict(res, ol)
                per_rate.append(res)
            samples = sum(r["served"] for r in per_rate) * cell["batch_size"]
            result = {"rates": [{k: v for k, v in r.items() if k != "latencies_s"} for r in per_rate],
                      "raw_latency_ms": {str(r["offered_qps"]): [x * 1000 for x in r["latencies_s"][:RAW_KEEP]]
                                         for r in per_rate},
                      "p99_bound_ms": ol["p99_bound_ms"], "rules": ol["rules"]}
            if ol["p99_bound_ms"] is not None:
                result["max_rate_meeting_p99_qps"] = max_rate_meeting(per_rate, ol["p99_bound_ms"])
        else:
            stop = StopRule(**cell["stop"])
            res = closed_loop(wl.step, cell["batch_size"], warmup=0, stop=stop, sync=sync, stats=stats,
                              seed=cell["seed"])
            samples = res["iterations"] * cell["batch_size"]
            result = {k: v for k, v in res.items() if k != "latencies_s"}
            result["raw_latency_ms"] = [x * 1000 for x in res["latencies_s"][:RAW_KEEP]]
            result["stop_rule"] = stop.to_dict()
            result["warmup_iters"] = cell["warmup_iters"]
    finally:
        metrics = sampler.stop()
        contention = monitor.stop()
    result["measure_window"] = [t_measure, time.time()]
    if cell.get("barrier"):
        rec["held_load_iters"] = hold_load(cell, wl.step, sync)
    rec["contention"] = contention
    result["percentile_method"] = PERCENTILE_METHOD
    result["timing"] = "torch.cuda.synchronize after each timed region + perf_counter" if gpu else "perf_counter (CPU)"
    result["samples"] = samples
    result["input"] = {"mode": wl.input_mode, "copy_bytes_per_step": wl.copy_bytes}
    loss = wl.last_loss()
    if loss is not None:
        if loss != loss or loss in (float("inf"), float("-inf")):
            raise FloatingPointError(f"cell {cell['cell']}: training loss became {loss}")
        result["last_loss"] = loss
    e = metrics["metrics"].get("energy_j")
    if e is not None and samples:
        # per-cell J/sample only when nothing else ran on the board: a concurrent group's energy is
        # the group's (report.energy_groups); another process on the board makes it unattributable
        alone = not cell.get("concurrent_devices") or len(cell["concurrent_devices"]) == 1
        board_procs = nvml.gpu_processes(nv, env["gpu_uuid"]) if nv is not None and env.get("gpu_uuid") else None
        others = [p for p in (board_procs or []) if p["pid"] != os.getpid()]
        if alone and not others:
            result["energy_per_sample_j"] = e["value"] / samples
            result["energy_scope"] = "board, this cell alone" if e["scope"] == "whole-board" else e["scope"]
        else:
            result["energy_note"] = ("board shared with the other cells of its concurrent group: see the group's "
                                     "J/sample" if not alone else f"board shared with {len(others)} other process(es)")
    if gpu:
        result["peak_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    rec["result"] = result
    rec["gpu_metrics" if gpu else "host_metrics"] = metrics
    if gpu:
        rec["activity"] = dcgm.availability(metrics["metrics"], metrics["unsupported"], metrics["notes"],
                                            env.get("gi_id") is not None)
    rec["metric_series"] = sampler.series()
    rec["wall_s"] = time.time() - t_begin
    return rec


def wait_barrier(cell: dict, poll_s: float = 0.005) -> tuple[float, list[int]]:
    """Concurrent cells: announce "warmed up" (with this process's pid) and wait until every cell
    of the group has, so that their measured regions start together. Returns the seconds waited
    and the group's pids (their CPU/GPU use is the group's own, not host contention)."""
    b = cell["barrier"]
    d = Path(b["dir"])
    tmp = d / f".ready-{cell['cell']}"
    tmp.write_text(str(os.getpid()))
    tmp.replace(d / f"ready-{cell['cell']}")
    t0 = time.time()
    while not all((d / f"ready-{c}").exists() for c in b["cells"]):
        if (d / "abort").exists():
            raise RuntimeError(f"cell {cell['cell']}: another cell of its concurrent group failed before measuring")
        if time.time() - t0 > b.get("timeout_s", 900):
            raise TimeoutError(f"cell {cell['cell']}: concurrent group not ready after {b.get('timeout_s', 900)} s")
        time.sleep(poll_s)
    waited = time.time() - t0
    pids = []
    for c in b["cells"]:
        try:
            pids.append(int((d / f"ready-{c}").read_text()))
        except (OSError, ValueError):
            pass
    return waited, pids or [os.getpid()]


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


def error_cause(tail: str) -> str:
    """The line that says why a cell failed: the exception line of a Python traceback (its last
    ``SomeError: message`` line), else the last non-empty line."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b", ln):
            return ln
    return lines[-1] if lines else "(no output)"


def board_of(nv, device: str) -> str | None:
    """The parent board's UUID of a GPU device (None for CPU cells or without NVML)."""
    if nv is None or device_kind(device) == "cpu":
        return None
    try:
        _, parent, _ = nvml.resolve_handle(nv, device)
        return nvml._s(nv.nvmlDeviceGetUUID(parent))
    except Exception:
        return None


def idle_power(nv, boards: list[str], seconds: float, interval_s: float = 0.1, clock=time.monotonic,
               sleep=time.sleep) -> dict[str, float | None]:
    """Mean board power (W) over ``seconds`` with nothing of ours running: the idle power a
    group's energy is reported beside (MIG cannot split board power between instances)."""
    out = {}
    handles = {}
    for b in boards:
        try:
            handles[b] = nv.nvmlDeviceGetHandleByUUID(b)
        except Exception:
            out[b] = None
    vals: dict[str, list[float]] = {b: [] for b in handles}
    t_end = clock() + seconds
    while True:
        for b, h in handles.items():
            try:
                vals[b].append(nv.nvmlDeviceGetPowerUsage(h) / 1000.0)
            except Exception:
                pass
        if clock() >= t_end:
            break
        sleep(interval_s)
    out.update({b: (sum(v) / len(v) if v else None) for b, v in vals.items()})
    return out


def run_group(cells: list[dict], out: Path, python: str = sys.executable, timeout_s: float | None = None,
              log=print, group_id: int = 0) -> list[dict]:
    """Start one process per cell (all at once), wait, and append their records to ``out``.
    Before a group with GPU cells, the boards' idle power is sampled for ``idle_s`` seconds."""
    nv = None
    if any(device_kind(c["device"]) != "cpu" for c in cells):
        nv, _ = nvml.load_nvml()
    boards = {c["cell"]: board_of(nv, c["device"]) for c in cells}
    idle = idle_power(nv, sorted({b for b in boards.values() if b}), cells[0].get("idle_s", 2.0)) if nv else {}
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
        rcs: dict[int, object] = {}
        t0 = time.time()
        while len(rcs) < len(procs):  # poll all: a failure releases the others from the barrier at once
            for c, p, _, _ in procs:
                if c["cell"] in rcs:
                    continue
                rc = p.poll()
                if rc is None and timeout_s is not None and time.time() - t0 > timeout_s:
                    p.kill()
                    p.wait()
                    rc = "timeout"
                if rc is not None:
                    rcs[c["cell"]] = rc
                    if rc != 0:
                        (Path(td) / "abort").touch()
            time.sleep(0.05)
        recs = []
        for c, _p, cout, err in procs:
            rc = rcs[c["cell"]]
            err.seek(0)
            tail = err.read()[-4000:]
            err.close()
            if rc == 0 and cout.is_file():
                rec = json.loads(cout.read_text())
            else:
                status = "oom" if "OutOfMemoryError" in tail or "out of memory" in tail else "failed"
                rec = _failure(c, status, f"exit {rc}: {tail.strip()}")
                rec["cause"] = error_cause(tail) if rc != "timeout" else f"timed out after {timeout_s} s"
            rec["group"] = {"id": group_id, "cells": [x["cell"] for x in cells], "board": boards[c["cell"]],
                            "idle_power_w": idle.get(boards[c["cell"]]) if boards[c["cell"]] else None}
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
        return f"{head}: {rec['status'].upper()}: {rec.get('cause') or error_cause(rec.get('error', ''))}"
    r = rec["result"]
    flag = ""
    if rec.get("contention", {}).get("contended"):
        flag = " [CONTENDED: " + "; ".join(rec["contention"]["reasons"]) + "]"
    if c["mode"] == "open_loop":
        parts = [f"{x['offered_qps']:g}/s→p99 {fmt_percentile(x['latency'], 99, unit=' ms')}"
                 + (f" ({x['unserved']} unserved)" if x["unserved"] else "") for x in r["rates"] if x["latency"]]
        return (f"{head}: " + ", ".join(parts) + f"; max rate within p99 bound: {r.get('max_rate_meeting_p99_qps')}"
                + (" (quick: not LoadGen-valid)" if r.get("rules") == "quick" else "") + flag)
    lat = r["latency"]
    return (f"{head}: {r['throughput_sps']:.1f} samples/s, p50 {fmt_percentile(lat, 50, unit=' ms')}, "
            f"p99 {fmt_percentile(lat, 99, unit=' ms')} ({r['stop_reason']}){flag}")


def pending_groups(groups: list[list[dict]], out: Path) -> list[list[dict]]:
    """Groups not yet completed in ``out`` (``run --resume``): a group is done when every one of
    its cells has an ``ok`` record whose spec equals the cell's. Concurrent groups rerun whole,
    since their numbers depend on running together."""
    from migperf.report import ReportError, json_lines

    done = {}
    if out.is_file():
        drop_cut_tail(out)
        for n, r in json_lines(out):
            if not isinstance(r, dict) or not isinstance(r.get("spec"), dict) or "cell" not in r["spec"]:
                raise ReportError(f"{out}:{n}: not a migperf cell record (no spec.cell)")
            if r.get("status") == "ok":
                done[r["spec"]["cell"]] = r["spec"]
    return [g for g in groups if not all(done.get(c["cell"]) == c for c in g)]


def drop_cut_tail(out: Path, log=print) -> bool:
    """A run killed while appending leaves a last line without its newline that is not JSON: drop
    it (its cell reruns) and say so. A bad line anywhere else is left for the reader to report."""
    data = out.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    head, _, tail = data.rpartition(b"\n")
    try:
        json.loads(tail)
        return False
    except ValueError:
        pass
    line = head.count(b"\n") + (2 if head else 1)
    out.write_bytes(head + b"\n" if head else b"")
    log(f"{out}: line {line} was cut off ({len(tail)} bytes, a run stopped while writing it): dropped; "
        f"its cell runs again")
    return True


def run_spec(spec: dict, out: Path, mig_uuids: list[str] | None = None, timeout_s: float | None = None,
             log=print, resume: bool = False, quick: bool = False) -> list[dict]:
    groups = expand(spec, mig_uuids, quick=quick)
    todo = pending_groups(groups, out) if resume else groups
    log(f"{sum(len(g) for g in groups)} cells in {len(groups)} group(s) → {out}"
        + (f"; resuming: {len(groups) - len(todo)} group(s) already done" if resume else ""))
    recs = []
    for g in todo:
        recs += run_group(g, out, timeout_s=timeout_s, log=log, group_id=groups.index(g))
    return recs
