"""End to end on CPU: `run` starts one process per cell (two at once for a concurrent group),
pins each to its core, appends one record per cell, and `report` reads them back."""

import json
import os

import pytest
import yaml

from migperf.cli import main

SPEC = {"name": "e2e", "seed": 0,
        "defaults": {"warmup_iters": 1, "sample_interval_s": 0.02, "image_size": 32, "num_classes": 4,
                     "stop": {"min_iters": 3, "min_time_s": 0.0, "window_iters": 1, "windows": 2,
                              "tolerance": 10.0, "percentile": None, "max_time_s": 5.0},
                     "stats": {"bootstrap": 50}},
        "experiments": [{"name": "pair", "workloads": ["resnet18"], "devices": ["cpu:0", "cpu"],
                         "batch_sizes": [2], "modes": ["inference"], "concurrent": True},
                        {"name": "ol", "workloads": ["resnet18"], "devices": ["cpu"], "batch_sizes": [1],
                         "modes": [{"open_loop": {"rates": [2.0], "duration_s": 0.5, "p99_bound_ms": 10000}}]}]}


@pytest.mark.slow
def test_run_and_report(tmp_path, capsys):
    if 0 not in os.sched_getaffinity(0):
        pytest.skip("core 0 not available to this process")
    spec = tmp_path / "e2e.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    rd = tmp_path / "run"
    assert main(["run", str(spec), "--run-dir", str(rd), "--report", "--quick"]) == 0
    recs = [json.loads(line) for line in (rd / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in recs] == ["ok"] * 3, [r.get("error") for r in recs]
    a, b, ol = recs
    assert a["spec"]["concurrent_devices"] == ["cpu:0", "cpu"] == b["spec"]["concurrent_devices"]
    assert a["env"]["cpu_cores_pinned"] == [0] and a["profile"] == "cpu-1core" and b["profile"] == "cpu"
    assert a["env"]["torch_threads"] == 1
    # the two cells started measuring together (start barrier after warm-up)
    assert a["barrier_wait_s"] >= 0 and b["barrier_wait_s"] >= 0
    assert abs(a["result"]["measure_window"][0] - b["result"]["measure_window"][0]) < 0.5
    assert "barrier" not in a["spec"] and "barrier" not in ol
    # ... and the first to finish kept loading its core until the other had finished measuring
    wa, wb = a["result"]["measure_window"], b["result"]["measure_window"]
    first = a if wa[1] <= wb[1] else b
    assert first["held_load_iters"] >= 0 and "held_load_iters" not in ol
    r = a["result"]
    assert r["iterations"] >= 3 and len(r["raw_latency_ms"]) == r["iterations"]
    assert r["throughput_sps"] == pytest.approx(2 * r["iterations"] / r["wall_s"])
    assert r["samples"] == 2 * r["iterations"] and "LoadGen" in r["percentile_method"]
    assert a["host_metrics"]["metrics"]["process_rss_mib"]["n"] >= 1
    assert "contended" in a["contention"] and a["contention"]["group_pids"] == sorted(a["contention"]["group_pids"]) \
        or len(a["contention"]["group_pids"]) == 2
    x = ol["result"]["rates"][0]
    assert x["offered_qps"] == 2.0 and x["loadgen"]["rules"] == "quick" and not x["loadgen"]["valid"]
    assert x["latency"]["p99_ms"] is None          # a 1 s run: too few samples for a p99, reported n/a
    assert ol["result"]["max_rate_meeting_p99_qps"] is None
    assert (rd / "report" / "report.md").is_file() and (rd / "report" / "report.csv").is_file()
    res = json.loads((rd / "results.json").read_text())
    assert res["dataset"] == "synthetic" and res["split"] == "cpu"
    out = capsys.readouterr().out
    assert "Sharing" in out and "quick mode: does NOT meet MLPerf LoadGen" in out


def test_failed_cell_is_recorded(tmp_path):
    s = dict(SPEC, experiments=[{"name": "bad", "workloads": ["resnet18"], "devices": ["cpu:4096"],
                                 "batch_sizes": [1], "modes": ["inference"]}])
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(s))
    assert main(["run", str(spec), "--run-dir", str(tmp_path / "r")]) == 1
    rec = json.loads((tmp_path / "r" / "results.jsonl").read_text())
    assert rec["status"] == "failed" and rec["cause"].startswith("RuntimeError: cell 0: device cpu:4096 asks")
