from pathlib import Path

import pytest

from migperf.cli import main
from migperf.profiles import GPUS, GpuModel, LayoutError, Profile, gpu_model, plan_commands, plan_layout
from migperf.smi import parse_lgip, parse_lgipp

FIX = Path(__file__).parent / "fixtures"


def test_issue_example_layout_places_3g_at_slice_4():
    pl = plan_layout(GPUS["A100-80GB"], "3g.40gb,2g.20gb,1g.10gb,1g.10gb")
    assert [(p.profile.name, p.start) for p in pl] == [("3g.40gb", 4), ("2g.20gb", 0), ("1g.10gb", 2), ("1g.10gb", 3)]
    assert plan_commands(pl, 0) == [["nvidia-smi", "mig", "-i", "0", "-cgi", "9:4,14:0,19:2,19:3", "-C"]]


@pytest.mark.parametrize("layout,expected", [
    ("7g.80gb", [0]), ("4g.40gb,3g.40gb", [0, 4]), ("3g.40gb,3g.40gb", [0, 4]),
    ("1g.10gb," * 6 + "1g.20gb", [0, 1, 2, 3, 4, 5, 6]),
    ("2g.20gb,2g.20gb,2g.20gb,1g.10gb", [0, 2, 4, 6]),
])
def test_valid_layouts(layout, expected):
    assert [p.start for p in plan_layout(GPUS["A100-80GB"], layout.rstrip(","))] == expected


@pytest.mark.parametrize("gpu,layout,msg", [
    ("A100-80GB", "4g.40gb,3g.40gb,1g.10gb", "needs 8 compute slices; A100-80GB has 7"),
    ("A100-80GB", "3g.40gb,3g.40gb,1g.10gb", "needs 9 memory slices; A100-80GB has 8"),
    ("A100-80GB", "1g.20gb,1g.20gb,1g.20gb,1g.20gb,1g.20gb", "5 × 1g.20gb requested; A100-80GB allows at most 4"),
    ("A100-80GB", "1g.10gb+me,1g.10gb+me", "allows at most 1"),
    ("A100-80GB", "1g.5gb", "A100-80GB has no MIG profile '1g.5gb'"),
    ("A30", "2g.12gb,2g.12gb,1g.6gb", "needs 5 compute slices; A30 has 4"),
    ("A100-40GB", "", "empty layout"),
])
def test_invalid_layouts_say_why(gpu, layout, msg):
    with pytest.raises(LayoutError, match=msg.replace("+", r"\+")):
        plan_layout(GPUS[gpu], layout)


def test_placement_failure_is_reported_with_allowed_starts():
    # two profiles that fit by slice counts but not by placement (both may only start at 0)
    g = GpuModel("toy", 4, 4, (Profile("2g.x", 1, 2, 2, (0,), 2, 1.0, 2),))
    with pytest.raises(LayoutError, match=r"no placement fits 2g.x,2g.x on toy: allowed starts are 2g.x \{0\}:2"):
        plan_layout(g, "2g.x,2g.x")


def test_names_from_nvml_resolve():
    assert gpu_model("NVIDIA A100-SXM4-80GB").name == "A100-80GB"
    assert gpu_model("NVIDIA H100 80GB HBM3").name == "H100-80GB"
    assert gpu_model("h200").name == "H200"
    with pytest.raises(LayoutError, match="unknown GPU"):
        gpu_model("RTX 3090")


@pytest.mark.parametrize("gpu,stem", [("A100-80GB", "a100_80gb"), ("A30", "a30")])
def test_tables_match_recorded_nvidia_smi_output(gpu, stem):
    model = GPUS[gpu]
    lgip = {p["id"]: p for p in parse_lgip((FIX / f"{stem}_lgip.txt").read_text())}
    lgipp = {p["id"]: p for p in parse_lgipp((FIX / f"{stem}_lgipp.txt").read_text())}
    assert set(lgip) == set(lgipp) == {p.id for p in model.profiles}
    for p in model.profiles:
        assert lgip[p.id]["name"] == p.name and lgip[p.id]["total"] == p.max_count
        assert lgip[p.id]["sms"] == p.sms and lgip[p.id]["memory_gib"] == pytest.approx(p.memory_gib)
        assert lgipp[p.id]["starts"] == p.starts and lgipp[p.id]["size"] == p.size


def test_plan_cli(capsys):
    assert main(["plan", "--gpu", "A100-80GB", "--layout", "3g.40gb,2g.20gb,1g.10gb,1g.10gb", "--gpu-index", "1"]) == 0
    out = capsys.readouterr().out
    assert "nvidia-smi mig -i 1 -cgi 9:4,14:0,19:2,19:3 -C" in out
    assert "memory map: [1 1 2 3 0 0 0 0]" in out
    assert main(["plan", "--gpu", "A30", "--layout", "4g.24gb,1g.6gb"]) == 2
    assert "invalid layout: layout needs 5 compute slices; A30 has 4" in capsys.readouterr().err
