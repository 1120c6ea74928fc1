from pathlib import Path

import pytest

from migperf.cli import main
from migperf.profiles import GPUS, GpuModel, LayoutError, Profile, gpu_model, plan_commands, plan_layout
from migperf.smi import parse_lgip, parse_lgipp

FIX = Path(__file__).parents[1] / "captures"


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
    assert gpu_model("NVIDIA A100-SXM-80GB").name == "A100-80GB"      # DGX A100 80GB's NVML name
    assert gpu_model("NVIDIA H100 80GB HBM3").name == "H100-80GB"
    assert gpu_model("NVIDIA H100 NVL").name == "H100-NVL-94GB"
    assert gpu_model("NVIDIA GH200 480GB").name == "GH200-96GB"
    assert gpu_model("NVIDIA H20").name == "H20"
    assert gpu_model("h200").name == "H200"
    with pytest.raises(LayoutError, match="unknown GPU"):
        gpu_model("RTX 3090")


@pytest.mark.parametrize("gpu,stem", [("A100-80GB", "a100_80gb"), ("A30", "a30"), ("H200", "h200"),
                                      ("H100-NVL-94GB", "h100_nvl")])
def test_tables_match_recorded_nvidia_smi_output(gpu, stem):
    """Guards the profile table: every row a capture shows (ID, count, SMs, memory, placements)
    equals the table's; a profile ID changed in profiles.py fails here."""
    model = GPUS[gpu]
    lgip = {p["id"]: p for p in parse_lgip((FIX / f"{stem}_lgip.txt").read_text())}
    pp = FIX / f"{stem}_lgipp.txt"
    lgipp = {p["id"]: p for p in parse_lgipp(pp.read_text())} if pp.is_file() else {}
    by_name = {p.name: p for p in model.profiles}
    assert lgip and all(r["name"] in by_name for r in lgip.values())
    if len(lgip) == len(model.profiles):                       # a complete capture: the same profile set
        assert set(lgip) == {p.id for p in model.profiles}
    for r in lgip.values():
        p = by_name[r["name"]]
        assert (p.id, p.max_count, p.sms) == (r["id"], r["total"], r["sms"]) and p.confirmed
        assert r["memory_gib"] == pytest.approx(p.memory_gib)
        if r["id"] in lgipp:
            assert (lgipp[r["id"]]["starts"], lgipp[r["id"]]["size"]) == (p.starts, p.size)


def test_hopper_display_values_and_reconstructed_marks():
    sms = {g: [p.sms for p in GPUS[g].profiles] for g in ("H100-80GB", "H200", "H100-NVL-94GB", "GH200-96GB")}
    assert all(v == [16, 16, 26, 32, 60, 64, 132] for v in sms.values())
    assert [p.memory_gib for p in GPUS["H200"].profiles] == [16.0, 16.0, 32.25, 32.25, 69.5, 69.5, 139.75]
    assert not GPUS["H200"].reconstructed and not GPUS["A100-80GB"].reconstructed
    assert GPUS["H20"].reconstructed and GPUS["H20"].profiles[0].sms is None
    assert [p.name for p in GPUS["H100-NVL-94GB"].profiles] == [
        "1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"]
    for g in ("H100-NVL-94GB", "GH200-96GB", "H20", "H200"):                 # plan accepts the new boards
        assert [p.start for p in plan_layout(GPUS[g], [GPUS[g].profiles[4].name] * 2)] == [0, 4]


def test_fake_nvml_answers_come_from_captures(monkeypatch):
    """The fake's profile IDs are read from the -lgip capture, so a wrong ID in profiles.py makes
    `plan`'s command disagree with what the (fake) driver reports."""
    import sys

    from migperf import fakes, nvml
    a30 = fakes.FakeGpu("a30", "NVIDIA A30", "GPU-a3000000-0000-4000-8000-000000000000", 24576)
    nv = fakes.make_module([fakes.a100_80gb(mig=False), fakes.h200(mig=False), a30])
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    d = nvml.discover(nv)["gpus"]
    assert "2g.12gb+me" in {p["name"] for p in d[2]["profiles"]}           # NVML's 2_SLICE_REV1 constant
    for g in d:
        model = gpu_model(g["name"])
        for p in g["profiles"]:
            assert model.profile(p["name"]).id == p["id"] and model.profile(p["name"]).sms == p["sms"]


def test_plan_cli(capsys):
    assert main(["plan", "--gpu", "A100-80GB", "--layout", "3g.40gb,2g.20gb,1g.10gb,1g.10gb", "--gpu-index", "1"]) == 0
    out = capsys.readouterr().out
    assert "nvidia-smi mig -i 1 -cgi 9:4,14:0,19:2,19:3 -C" in out
    assert "memory map: [1 1 2 3 0 0 0 0]" in out
    assert main(["plan", "--gpu", "A30", "--layout", "4g.24gb,1g.6gb"]) == 2
    assert "invalid layout: layout needs 5 compute slices; A30 has 4" in capsys.readouterr().err
