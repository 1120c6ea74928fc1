"""The bench helpers: fake batches look like collated dataset batches, at the real shapes; the
projects' shared driver (command line, training-step measurement, peak fractions, report, record)."""

import json

import pytest
import torch

from common.tsg import bench as tsg_bench
from common.tsg.bench import (
    SHAPES,
    Bench,
    bench_parser,
    fake_batch,
    measure_train,
    queries_per_s,
    seeded_model,
)
from common.tsg.dataset import to_device


def test_fake_batch_matches_collate_tsg_layout():
    shape = dict(SHAPES["charades"], batch=4)
    b = fake_batch(shape, seed=1)
    assert b["video"].shape == (4, 64, 1024) and b["video_mask"].all()
    assert b["words"].shape == (4, 20) and b["words"].dtype == torch.long
    assert torch.equal(b["word_mask"], b["words"] != 0) and b["word_mask"].sum(1).min() >= 6
    assert ((0 <= b["start"]) & (b["start"] < b["end"]) & (b["end"] <= 1)).all()
    assert len(b["vid"]) == 4 and b["query_id"].tolist() == [0, 1, 2, 3]
    assert torch.equal(fake_batch(shape, seed=1)["video"], b["video"])  # seeded
    moved = to_device(b, "cpu")
    assert moved["vid"] == b["vid"] and set(moved) == set(b)
    assert set(SHAPES) == {"charades", "activitynet", "tacos"}


def test_bench_parser_defaults_and_a_project_flag():
    ap = bench_parser("doc", iters=3)
    ap.add_argument("--kmeans-iters", type=int, default=None)
    a = ap.parse_args([])
    assert (a.device, a.amp, a.config, a.overrides, a.shapes) == ("auto", None, None, [], ["charades", "activitynet"])
    assert (a.cpu_clips, a.iters, a.profile, a.runs_root, a.kmeans_iters) == (128, 3, True, None, None)
    a = ap.parse_args(["--no-amp", "--set", "model.d=8", "--set", "x=1", "--shapes", "tacos", "--no-profile"])
    assert (a.amp, a.overrides, a.shapes, a.profile) == (False, ["model.d=8", "x=1"], ["tacos"], False)
    with pytest.raises(SystemExit):
        ap.parse_args(["--shapes", "kinetics"])


def test_measure_train_counts_the_flops_of_one_step_and_times_it(monkeypatch):
    # common.bench.count_flops itself is tested in tests/test_bench.py (its first use costs seconds of imports)
    def count_flops(fn):
        fn()
        return 192

    monkeypatch.setattr(tsg_bench, "count_flops", count_flops)
    calls = []
    rec = measure_train(lambda: calls.append(1), torch.device("cpu"), iters=3, batch=4)
    assert len(calls) == 1 + 3                                   # the counted step is the warm-up
    assert rec["train_flops_per_step"] == 192
    assert rec["train_samples_per_s"] == pytest.approx(4 / rec["train_step_s"])
    assert rec["train_flops_per_s"] == pytest.approx(192 / rec["train_step_s"])
    assert rec["train_flops_per_cpu_s"] == pytest.approx(192 / max(rec["train_cpu_s_per_step"], 1e-9))
    assert queries_per_s(lambda: None, torch.device("cpu"), 32, iters=1) > 0


def test_bench_driver_fractions_report_line_shapes_and_record(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(tsg_bench, "matmul_peak_pair", lambda device, dtype: (1e10, 2e10))
    a = bench_parser("doc").parse_args(["--device", "cpu", "--cpu-clips", "100", "--runs-root", str(tmp_path),
                                        "--shapes", "charades", "tacos"])
    b = Bench("toy", a)
    assert capsys.readouterr().out.startswith("device cpu amp=False threads=")
    assert (b.amp, b.dtype, b.record["matmul_peak_flops"], b.record["matmul_peak_flops_per_cpu_s"]) == (
        False, torch.float32, 1e10, 2e10)
    shapes = list(b.shapes())
    assert [(n, s["clips"]) for n, s in shapes] == [("charades", 64), ("tacos", 100)]   # 200 clips capped on CPU
    assert SHAPES["tacos"]["clips"] == 200 and b.profile("charades") and not b.profile("tacos")
    train = {"train_samples_per_s": 12.5, "train_step_s": 2.56, "train_cpu_s_per_step": 3.0,
             "train_flops_per_step": 5e9, "train_flops_per_s": 2.5e9, "train_flops_per_cpu_s": 1e9}
    assert b.peak_fractions(train) == {"fraction_of_matmul_peak": 0.25, "fraction_of_matmul_peak_cpu_time": 0.05}
    assert b.train_summary(train, step_note="; x") == (
        "train 12.5 samples/s (2560 ms/step, 3.00 CPU-s/step; x), 5.0 GFLOP/step -> 2.5 GFLOP/s = 25.0% of the "
        "matmul peak (wall), 5.0% per CPU-second")
    assert "5.00 GFLOP/step" in b.train_summary(train, gflop_digits=2)
    b._t0 -= 7.0                                                 # 7 s into this shape
    assert b.infer_summary({"infer_queries_per_s": 99.6, "peak_memory_bytes": 3 * 2**20}, note=" (x)") == (
        "inference 100 queries/s (x); peak memory 3 MiB (7s)")
    b.report("charades", {"train": {"profile_top_ops": "TABLE"}, "x": 1}, "LINE")
    assert capsys.readouterr().out == "LINE\nTABLE\n"
    path = b.write()
    assert path.parent == tmp_path / "toy" / "bench" and capsys.readouterr().out == f"written {path}\n"
    rec = json.loads(path.read_text())
    assert rec["project"] == "toy" and rec["shapes"]["charades"]["x"] == 1 and rec["env"]


def test_seeded_model_gives_the_same_weights_every_time():
    def build(cfg, vocab, feat):
        return torch.nn.Sequential(torch.nn.Embedding(vocab, 4), torch.nn.Linear(4, cfg["out"] * feat))

    shape = {"vocab": 10, "feat": 3}
    a = seeded_model(build, {"out": 2}, shape, torch.device("cpu"))
    torch.randn(5)                                               # whatever ran in between
    b = seeded_model(build, {"out": 2}, shape, torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_queries_per_cpu_second_counts_only_the_timed_calls(monkeypatch):
    clock = [0.0]
    calls = []

    def infer():                       # each call costs 0.5 CPU-s
        calls.append(1)
        clock[0] += 0.5

    monkeypatch.setattr(tsg_bench, "cpu_seconds", lambda: clock[0])
    # 1 warm-up call (not timed), then max(iters, 3) = 3 timed calls: 4 queries x 3 / 1.5 s
    assert tsg_bench.queries_per_cpu_s(infer, batch=4, iters=2) == 8.0 and len(calls) == 4
    calls.clear()
    assert tsg_bench.queries_per_cpu_s(infer, batch=4, iters=5) == 8.0 and len(calls) == 6
