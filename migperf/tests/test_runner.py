"""run_cell in-process with stand-in workloads: warm-up is never timed; concurrent cells start
measuring together (barrier) and keep loading until all have finished (hold-load); host
contention marks a cell; a failed cell's line shows its cause."""

import json
import threading
import time

import pytest
import torch

from migperf.host import ContentionMonitor
from migperf.runner import error_cause, run_cell, summary_line
from migperf.spec import expand, validate_spec
from migperf.workloads import Workload


def cells(devices, concurrent=False, **fields):
    spec = validate_spec({"experiments": [{"workloads": ["resnet18"], "devices": devices, "batch_sizes": [1],
                                           "modes": ["inference"], "concurrent": concurrent, **fields}]})
    return [c for g in expand(spec) for c in g]


def fake_maker(plan):
    """plan(cell index, call number) -> seconds that call sleeps; records every call."""
    def make(model, batch, mode, device, **kw):
        calls = []

        def step():
            calls.append(time.time())
            time.sleep(plan(len(calls)))
        wl = Workload(step, torch.nn.Identity(), torch.zeros(1), lambda: None, 0, lambda n: step())
        wl.calls = calls
        make.last = wl
        return wl
    return make


def test_warmup_iterations_are_never_timed():
    """Guards the science: 4 slow warm-up steps (0.3 s) must not appear in any statistic."""
    (c,) = cells(["cpu"], warmup_iters=4, sample_interval_s=0.0,
                 stop={"min_iters": 30, "min_time_s": 0.0, "window_iters": 10, "tolerance": 10.0,
                       "percentile": None, "max_time_s": 5.0})
    make = fake_maker(lambda k: 0.3 if k <= 4 else 0.002)
    rec = run_cell(c, make=make)
    r = rec["result"]
    assert r["warmup_iters"] == 4 and len(make.last.calls) == 4 + r["iterations"]
    assert max(r["raw_latency_ms"]) < 100 and r["latency"]["max_ms"] < 100
    assert r["throughput_sps"] > 50


def _run_pair(tmp_path, slow_warmup_s=0.4):
    """Two concurrent cells: cell 0 warms up instantly and measures briefly; cell 1 warms up for
    ``slow_warmup_s`` and measures longer."""
    c0, c1 = cells(["cpu", "cpu"], concurrent=True, warmup_iters=1, sample_interval_s=0.0,
                   stop={"min_iters": 5, "min_time_s": 0.0, "window_iters": 5, "tolerance": 10.0, "percentile": None,
                         "max_time_s": 5.0})
    barrier = {"dir": str(tmp_path), "cells": [c0["cell"], c1["cell"]]}
    out = {}

    def go(c, plan, stop):
        c = dict(c, barrier=barrier, stop=dict(c["stop"], **stop))
        make = fake_maker(plan)
        out[c["cell"]] = run_cell(c, make=make)
        out[c["cell"]]["_calls"] = make.last.calls

    t0 = threading.Thread(target=go, args=(c0, lambda k: 0.005, {"min_iters": 5, "max_iters": 5}))
    t1 = threading.Thread(target=go, args=(c1, lambda k: slow_warmup_s if k == 1 else 0.01,
                                           {"min_iters": 30, "max_iters": 30}))
    t0.start(), t1.start()
    t0.join(60), t1.join(60)
    return out[c0["cell"]], out[c1["cell"]]


def test_barrier_starts_concurrent_cells_together(tmp_path):
    """Guards the science: without the barrier the fast cell would measure alone while the
    other is still warming up."""
    a, b = _run_pair(tmp_path)
    assert a["barrier_wait_s"] > 0.25                       # the fast cell waited for the slow warm-up
    assert abs(a["result"]["measure_window"][0] - b["result"]["measure_window"][0]) < 0.1


def test_hold_load_keeps_loading_until_all_finish(tmp_path):
    """Guards the science: the cell that finishes first keeps running its workload (untimed)
    until the other has finished measuring, so no measured window runs without contention."""
    a, b = _run_pair(tmp_path)
    end_a, end_b = a["result"]["measure_window"][1], b["result"]["measure_window"][1]
    assert end_a < end_b - 0.1
    # the fast cell's workload really ran (untimed) while the slow cell was still measuring
    assert sum(end_a < t < end_b for t in a["_calls"]) >= 10 and a["held_load_iters"] >= 10
    assert b["held_load_iters"] == 0


def test_contention_marks_the_cell(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\n")
    clock = {"t": 0.0}
    m = ContentionMonitor(cpus=[0], pids=[], stat_path=str(stat), clock=lambda: clock["t"],
                          gpu_processes=lambda: [{"pid": 4242, "used_mib": 100}])
    m.start()
    # 1 s later: 80 jiffies busy on cpu0 (none of it ours: pids=[] has no CPU time), 5 stolen
    stat.write_text("cpu  0 0 0 0 0 0 0 0\ncpu0 180 0 0 915 0 0 0 5\n")
    clock["t"] = 1.0
    out = m.stop()
    assert out["contended"] and out["other_cores"] == pytest.approx(80 / 100)
    assert out["steal_pct"] == pytest.approx(5.0) and len(out["reasons"]) == 3
    assert "4242" in out["reasons"][2]
    quiet = ContentionMonitor(cpus=[0], pids=[], stat_path=str(stat), clock=lambda: clock["t"])
    quiet.start()
    clock["t"] = 2.0
    assert not quiet.stop()["contended"]


def test_failed_cell_line_shows_the_cause():
    tail = ("Traceback (most recent call last):\n  File \"x.py\", line 3, in <module>\n    f()\n"
            "RuntimeError: cell 3: device cpu:9 asks for cores [9], but this process may use only [0, 1]\n")
    assert error_cause(tail).startswith("RuntimeError: cell 3: device cpu:9 asks for cores [9]")
    rec = {"spec": {"cell": 3, "experiment": "e", "model": "resnet18", "mode": "inference", "batch_size": 1,
                    "device": "cpu:9"}, "status": "failed", "error": "exit 1: " + tail}
    assert "FAILED: RuntimeError: cell 3" in summary_line(rec) and "Traceback" not in summary_line(rec)


def test_resume_drops_a_cut_last_line_and_reports_a_bad_one(tmp_path):
    from migperf.report import ReportError
    from migperf.runner import drop_cut_tail, pending_groups

    cell = {"cell": 0, "model": "resnet18"}
    ok = json.dumps({"schema": "migperf.cell/1", "spec": cell, "status": "ok"})
    out = tmp_path / "results.jsonl"
    out.write_text(ok + "\n" + '{"schema": "migperf.cell/1", "sp')  # killed while writing line 2
    said = []
    assert drop_cut_tail(out, log=said.append)
    assert out.read_text() == ok + "\n" and "line 2 was cut off" in said[0]
    assert not drop_cut_tail(out, log=said.append) and len(said) == 1  # a complete file is left alone
    assert pending_groups([[cell]], out) == []                         # the finished cell is not rerun
    out.write_text(ok + "\nnot json\n" + ok + "\n")                    # damage in the middle: an error, file:line
    with pytest.raises(ReportError, match="results.jsonl:2"):
        pending_groups([[cell]], out)
    out.write_text(ok + "\n" + json.dumps({"status": "ok"}) + "\n")  # a record without its cell
    with pytest.raises(ReportError, match="results.jsonl:2: not a migperf cell record"):
        pending_groups([[cell]], out)
