import csv
import json

import pytest

from common.compare import render_project
from migperf.measure import latency_stats
from migperf.report import (
    ReportError,
    energy_groups,
    load_records,
    markdown,
    paper_comparisons,
    ratios,
    rows,
    sharing,
    write_report,
    write_results_json,
)

N = 0


def rec(model, bs, profile, thr, mode="inference", gpu="NVIDIA A100-SXM4-80GB", devices=None, device="MIG-x",
        repeat=0, status="ok", experiment="e", energy=None, n_lat=400):
    global N
    N += 1
    lat = bs / thr * 1000 if thr else 0.0
    spec = {"experiment": experiment, "model": model, "mode": mode, "batch_size": bs, "seq_len": None,
            "device": device, "amp": False, "repeat": repeat, "cell": N}
    if devices:
        spec["concurrent_devices"] = devices
    r = {"schema": "migperf.cell/1", "spec": spec, "status": status, "profile": profile, "env": {"gpu_name": gpu}}
    if status == "ok":
        raw = [lat * (0.9 + 0.2 * k / n_lat) for k in range(n_lat)]
        r["result"] = {"throughput_sps": thr, "iterations": n_lat, "stop_reason": "stable",
                       "percentile_method": "LoadGen", "raw_latency_ms": raw,
                       "latency": latency_stats([x / 1000 for x in raw], 10, 50)}
        if energy is not None:
            r["result"].update(energy_per_sample_j=energy, energy_scope="whole-board")
    else:
        r["error"] = "exit 1: CUDA out of memory"
    return r


def _write(tmp_path, recs, name="r.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return p


REPO = [rec("resnet50", 1, "7g.80gb", 192.0), rec("resnet50", 1, "1g.10gb", 127.0),
        rec("resnet50", 256, "7g.80gb", 3070.0), rec("resnet50", 256, "1g.10gb", 420.0)]


def test_a100_ratio_from_isolated_cells_matches_repo_data_derivation():
    rt = {x["metric"]: x for x in ratios(REPO)}
    assert rt["resnet50_inference_ratio_7x1g_over_7g_bs1"]["value"] == pytest.approx(7 * 127 / 192)
    assert rt["resnet50_inference_ratio_7x1g_over_7g_bs256"]["value"] == pytest.approx(7 * 420 / 3070)
    assert rt["resnet50_inference_ratio_7x1g_over_7g_bs1"]["how"] == "7 × isolated 1g.10gb / 7g.80gb"
    # other hardware with the same profile names is not the paper's A100-80GB
    h = [dict(r, env={"gpu_name": "NVIDIA H100 80GB HBM3"}) for r in REPO]
    assert ratios(h) == []
    # DGX A100 80GB reports itself as "A100-SXM-80GB": an alias, not a silent skip
    dgx = [dict(r, env={"gpu_name": "NVIDIA A100-SXM-80GB"}) for r in REPO]
    assert len(ratios(dgx)) == 2


def test_concurrent_cells_are_summed_and_preferred():
    devs = [f"MIG-{k}" for k in range(7)]
    con = [rec("resnet50", 1, "1g.10gb", 100.0 + k, devices=devs, device=devs[k], experiment="c") for k in range(7)]
    sh = sharing(con)
    assert len(sh) == 1 and sh[0]["instances"] == 7 and sh[0]["total_sps"] == pytest.approx(721.0)
    rt = {x["metric"]: x for x in ratios(REPO + con)}
    assert rt["resnet50_inference_ratio_7x1g_over_7g_bs1"]["value"] == pytest.approx(721.0 / 192)
    assert rt["resnet50_inference_ratio_7x1g_over_7g_bs1"]["how"] == "7 concurrent 1g.10gb / 7g.80gb"


def test_cpu_analogue_ratio_mean_std_over_repeats():
    ol = rec("resnet18", 1, "cpu-1core", 0.0, mode="open_loop", gpu=None, device="cpu:0")
    ol["result"] = {"rates": [], "percentile_method": "LoadGen"}            # open-loop cells have no throughput_sps
    recs = [ol]
    for rep, (a, b, whole) in enumerate([(10, 12, 20), (11, 11, 20), (12, 12, 20)]):
        recs += [rec("resnet18", 1, "cpu-1core", a, devices=["cpu:0", "cpu:1"], device="cpu:0", repeat=rep, gpu=None),
                 rec("resnet18", 1, "cpu-1core", b, devices=["cpu:0", "cpu:1"], device="cpu:1", repeat=rep, gpu=None),
                 rec("resnet18", 1, "cpu-2core", whole, device="cpu:0-1", repeat=rep, gpu=None)]
    rt = ratios(recs)
    assert len(rt) == 1 and rt[0]["metric"] == "resnet18_inference_ratio_2x1core_over_2core_bs1"
    # concurrent totals 22, 22, 24 over a 2-core throughput of 20 in each repeat
    assert rt[0]["value"] == pytest.approx(68 / 3 / 20) and rt[0]["n"] == 3
    assert rt[0]["std"] == pytest.approx((4 / 3) ** 0.5 / 20)
    # per-repeat pairing: a different whole-device throughput in repeat 2 changes only that ratio
    recs[-1]["result"]["throughput_sps"] = 40.0
    rt = ratios(recs)
    per = [22 / 20, 22 / 20, 24 / 40]
    m = sum(per) / 3
    assert rt[0]["value"] == pytest.approx(m)
    assert rt[0]["std"] == pytest.approx((sum((x - m) ** 2 for x in per) / 2) ** 0.5)


def test_rows_aggregate_repeats_and_keep_failures(tmp_path):
    recs = [rec("resnet50", 64, "whole-gpu", 100.0, repeat=0), rec("resnet50", 64, "whole-gpu", 110.0, repeat=1),
            rec("resnet50", 128, "1g.10gb", 0, status="oom")]
    rs = rows(recs)
    assert rs[0]["n"] == 0 and rs[0]["status"] == "oom"
    assert rs[1]["throughput_sps"] == pytest.approx(105.0) and rs[1]["throughput_std"] == pytest.approx(7.0710678)
    assert rs[1]["latency"]["n"] == 800 and rs[1]["latency"]["pooled_repeats"] == 2   # percentiles pooled
    md = markdown(recs)
    assert "1 cell(s) did not complete" in md and "oom" in md
    out = write_report([_write(tmp_path, recs)], tmp_path / "rep", plot=False)
    with open(tmp_path / "rep" / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["status"] for r in table] == ["oom", "ok"] and float(table[1]["throughput_sps"]) == pytest.approx(105.0)
    assert out["pngs"] == []


def test_plots_written(tmp_path):
    recs = REPO + [rec("resnet50", 8, "7g.80gb", 900.0, energy=0.5), rec("resnet50", 8, "1g.10gb", 300.0, energy=1.2)]
    from migperf.report import _whole_ref
    assert _whole_ref({"1g.10gb": 400.0, "7g.80gb": 300.0}) == ("7g.80gb", 300.0)   # the 7g, not the best bar
    assert _whole_ref({"1g.10gb": 400.0, "2g.20gb": 300.0}) is None
    out = write_report([_write(tmp_path, recs)], tmp_path / "rep")
    names = sorted(p.name for p in out["pngs"])
    assert names == ["profiles_vs_whole.png", "resnet50_inference_vs_batch.png"]
    assert all(p.stat().st_size > 1000 for p in out["pngs"])


def test_malformed_input_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps(REPO[0]) + "\n{not json\n")
    with pytest.raises(ReportError, match=r"bad.jsonl:2: not a JSON record"):
        load_records([p])
    p.write_text('{"schema": "other"}\n')
    with pytest.raises(ReportError, match=r"bad.jsonl:1: not a migperf cell record"):
        load_records([p])
    with pytest.raises(ReportError, match="results file not found"):
        load_records([tmp_path / "none.jsonl"])


def test_results_json_meets_paper_yaml(tmp_path, monkeypatch):
    from pathlib import Path

    import common.compare as cc
    runs = tmp_path / "runs"
    d = runs / "migperf" / "mig" / "x-s0"
    d.mkdir(parents=True)
    paths = write_results_json(REPO, d, "mig", 0, 1.0)
    assert [p.parent.name for p in paths] == ["x-s0", "a100_80gb"]
    table = render_project("migperf", Path(cc.REPO_ROOT), runs)
    line = next(ln for ln in table.splitlines() if "ratio_7x1g_over_7g_bs1 " in ln)
    assert "reproduced" in line and "4.63" in line


def test_percentile_columns_carry_ci_and_n_or_say_na():
    md = markdown([rec("resnet50", 1, "7g.80gb", 192.0, n_lat=400), rec("resnet50", 8, "7g.80gb", 900.0, n_lat=40)])
    row1 = next(ln for ln in md.splitlines() if "| 1 |" in ln)
    assert "(n=400)" in row1 and "[" in row1 and "n/a (n=400 < 1001)" in row1      # p50 with CI, p99 n/a
    assert "192.0 (n=1)" in row1 and "± 0.0" not in row1
    row8 = next(ln for ln in md.splitlines() if "| 8 |" in ln)
    assert "n/a (n=40 < 1001)" in row8


def test_all_ten_paper_values_or_a_loud_reason():
    full = REPO + [rec("vit_b_16", 256, "7g.80gb", 422.0), rec("vit_b_16", 256, "1g.10gb", 59.8),
                   rec("resnet50", 64, "7g.80gb", 806.0, mode="train"), rec("resnet50", 64, "1g.10gb", 132.0, mode="train")]
    pc = {x["metric"]: x for x in paper_comparisons(full)}
    assert len(pc) == 10 and all("value" in x for x in pc.values())
    assert pc["vit_b_16_inference_ratio_7x1g_over_7g_bs256"]["value"] == pytest.approx(7 * 59.8 / 422)
    assert pc["resnet50_train_bs64_1g.10gb_sps"]["value"] == pytest.approx(132.0)
    # only layout A was run: every 1g-dependent value says which spec and layout produce it
    half = {x["metric"]: x for x in paper_comparisons([r for r in full if r["profile"] == "7g.80gb"])}
    assert "value" in half["resnet50_inference_bs1_7g.80gb_sps"]
    assert "mig_a100_80gb_1g.yaml on layout 7 x 1g.10gb" in half["resnet50_inference_ratio_7x1g_over_7g_bs1"]["missing"]
    unknown = [dict(r, env={"gpu_name": "NVIDIA A100-SXM4-81GB"}) for r in full]
    why = paper_comparisons(unknown)[0]["missing"]
    assert "not in migperf.profiles" in why and "A100-SXM4-81GB" in why
    md = markdown([r for r in full if r["profile"] == "7g.80gb"])
    assert md.count("**CANNOT COMPUTE**") == 7 and "3 of 10 values computable" in md


def _erec(cell, thr, w0, w1, e0, e1, group=0, board="GPU-b", idle=60.0, profile="1g.10gb"):
    r = rec("resnet50", 8, profile, thr, devices=["MIG-a", "MIG-b"] if group == 0 else None)
    r["spec"]["cell"] = cell
    r["group"] = {"id": group, "board": board, "idle_power_w": idle}
    r["gpu_metrics"] = {"metrics": {"energy_j": {"value": (e1 - e0) / 1000, "scope": "whole-board",
                                                 "counter_mj": [e0, e1], "wall": [w0, w1]}}}
    return r


def test_group_energy_is_not_multiplied_by_the_number_of_cells():
    """Guards the energy attribution: two concurrent cells on one board share one board energy.
    Board at 200 W; cell A measures 10-20 s, cell B 11-21 s; together 11-20 s (9 s, 1800 J)."""
    a = _erec(1, 100.0, 10.0, 20.0, 0.0, 2_000_000.0)
    b = _erec(2, 50.0, 11.0, 21.0, 200_000.0, 2_200_000.0)
    (g,) = energy_groups([a, b])
    assert g["window_s"] == pytest.approx(9.0) and g["energy_j"] == pytest.approx(1800.0)
    assert g["j_per_sample"] == pytest.approx(1800.0 / (150.0 * 9.0))          # 1.333 J/sample for the group
    naive = 2000.0 / (100.0 * 10.0)                                             # cell A alone: 2 J/sample
    assert g["j_per_sample"] < naive
    assert g["idle_j_per_sample"] == pytest.approx(60.0 * 9 / 1350) and g["dynamic_j_per_sample"] == pytest.approx(
        (1800 - 540) / 1350)
    alone = _erec(3, 100.0, 0.0, 10.0, 0.0, 1_000_000.0, group=1)
    (g1,) = energy_groups([alone])
    assert g1["alone"] and g1["j_per_sample"] == pytest.approx(1.0)
