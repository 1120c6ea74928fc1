"""`make bench-pros` runs and its fractions are fractions: the per-wall-second and per-CPU-second
matmul peaks (common.bench.matmul_peak_pair) divide the same step's FLOPs."""

import json

from common.testing import run_module


def test_bench_runs_on_the_tiny_vit_and_reports_fractions_below_one(tmp_path):
    run_module("pros.bench", ["--config", "pros/configs/synthetic.yaml", "--batch", "2", "--iters", "2",
                              "--device", "cpu", "--runs-root", str(tmp_path)])
    rec = json.loads(next((tmp_path / "pros" / "bench").glob("*.json")).read_text())
    assert rec["train_samples_per_s"] > 0 and rec["train_flops_per_step"] > 0
    assert 0 < rec["fraction_of_matmul_peak"] < 1.2, rec["fraction_of_matmul_peak"]
    assert 0 < rec["fraction_of_matmul_peak_cpu_time"] < 1.2, rec["fraction_of_matmul_peak_cpu_time"]
    assert rec["finetune_images_per_s"] > 0 and rec["infer_images_per_s"] > 0 and rec["peak_memory_bytes"] > 0
