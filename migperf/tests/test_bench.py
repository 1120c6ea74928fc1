import json
import os

import pytest


@pytest.mark.slow
def test_bench_quick_writes_record(tmp_path):
    from migperf.bench import main
    assert main(["--quick", "--reps", "1"]) == 0
    files = list((tmp_path / "runs" / "migperf" / "bench").glob("*.json"))
    assert len(files) == 1 and os.environ["RUNS_ROOT"] == str(tmp_path / "runs")
    rec = json.loads(files[0].read_text())
    assert rec["empty_step"]["overhead_us"] < 100
    assert set(rec["sampler"]) >= {"cpu@10ms", "cpu@100ms", "nvml_fake_mig@10ms", "nvml_fake_mig@100ms"}
    w = rec["resnet18_64px_bs16"]
    assert 0 < w["train_fraction_of_matmul_peak"] < 2 and w["inference_samples_per_s"] > 0


def test_harness_loop_counts_exactly():
    from migperf.bench import bare_loop, harness_loop
    calls = []
    step = lambda: calls.append(1)
    assert bare_loop(step, 50) > 0 and len(calls) == 50
    assert harness_loop(step, 70) > 0 and len(calls) == 120
