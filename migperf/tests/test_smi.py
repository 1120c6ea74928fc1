import json
import sys
from pathlib import Path

import pytest

from migperf.cli import main
from migperf.fakes import write_script
from migperf.profiles import GPUS, plan_layout
from migperf.smi import SmiError, apply_layout, parse_lgi, parse_list, parse_mig_mode_csv, reset_layout

FIX = Path(__file__).parents[1] / "captures"
ROOT = Path(__file__).resolve().parents[2]


def test_parse_list_and_lgi():
    gpus = parse_list((FIX / "a100_80gb_L.txt").read_text())
    assert [g["index"] for g in gpus] == [0, 1]
    assert [m["profile"] for m in gpus[0]["mig"]] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]
    assert gpus[0]["mig"][3]["uuid"] == "MIG-0e1f2a3b-4c5d-5e6f-8a9b-000000000003" and gpus[1]["mig"] == []
    gis = parse_lgi((FIX / "a100_80gb_lgi.txt").read_text())
    assert [(g["name"], g["profile_id"], g["gi_id"], g["start"], g["size"]) for g in gis] == [
        ("3g.40gb", 9, 2, 4, 4), ("2g.20gb", 14, 3, 0, 2), ("1g.10gb", 19, 9, 2, 1), ("1g.10gb", 19, 10, 3, 1)]
    # the recorded layout is what `plan` computes for the same profiles
    pl = plan_layout(GPUS["A100-80GB"], [g["name"] for g in gis])
    assert [p.start for p in pl] == [g["start"] for g in gis]


def test_parse_mig_mode_csv():
    m = parse_mig_mode_csv((FIX / "query_mig_mode.csv").read_text())
    assert [(x["index"], x["current"], x["pending"], x["supported"]) for x in m] == [
        (0, True, True, True), (1, False, True, True), (2, False, False, False)]
    with pytest.raises(SmiError, match="unexpected --query-gpu line 0"):
        parse_mig_mode_csv("0, A100")


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    st = tmp_path / "state.json"
    st.write_text(json.dumps({"gpus": [{"name": "NVIDIA A100-SXM4-80GB", "mig": True, "gis": []},
                                       {"name": "NVIDIA A100-SXM4-80GB", "mig": False, "gis": []}]}))
    exe = write_script(tmp_path / "nvidia-smi", "smi_main", sys.executable, [str(ROOT)])
    monkeypatch.setenv("MIGPERF_NVIDIA_SMI", str(exe))
    monkeypatch.setenv("FAKE_SMI_STATE", str(st))
    return st


def _calls(st):
    return [json.loads(line) for line in Path(str(st) + ".log").read_text().splitlines()]


def test_apply_then_reset(fake_smi):
    plan = lambda g: plan_layout(g, "3g.40gb,2g.20gb,1g.10gb,1g.10gb")
    changes = apply_layout(0, None, plan, yes=True, is_root=True)
    assert [c for c in changes if c.startswith("+ created")] == [
        "+ created GI 1 (3g.40gb at slice 4)", "+ created GI 2 (2g.20gb at slice 0)",
        "+ created GI 3 (1g.10gb at slice 2)", "+ created GI 4 (1g.10gb at slice 3)"]
    assert sum(c.startswith("+ MIG device") for c in changes) == 4
    assert ["mig", "-i", "0", "-cgi", "9:4,14:0,19:2,19:3", "-C"] in _calls(fake_smi)
    with pytest.raises(SmiError, match="already has 4 GPU instance"):
        apply_layout(0, None, plan, yes=True, is_root=True)
    changes = reset_layout(0, yes=True, is_root=True)
    assert len([c for c in changes if c.startswith("- removed GI")]) == 4
    calls = _calls(fake_smi)
    assert calls.index(["mig", "-i", "0", "-dci"]) < calls.index(["mig", "-i", "0", "-dgi"])
    assert reset_layout(0, yes=True, is_root=True) == ["(no GPU instances on GPU 0; nothing to do)"]


def test_apply_refuses(fake_smi, capsys):
    plan = lambda g: plan_layout(g, "7g.80gb")
    with pytest.raises(SmiError, match="without --yes"):
        apply_layout(0, None, plan, yes=False, is_root=True)
    with pytest.raises(SmiError, match="needs root"):
        apply_layout(0, None, plan, yes=True, is_root=False)
    with pytest.raises(SmiError, match=r"MIG mode is not enabled on GPU 1 .*enable it with: nvidia-smi -i 1 -mig 1"):
        apply_layout(1, None, plan, yes=True, is_root=True)
    assert not any("-cgi" in c for c in _calls(fake_smi))
    assert main(["apply", "--layout", "7g.80gb"]) == 2  # no --yes
    assert "refusing to change MIG configuration without --yes" in capsys.readouterr().err


def test_missing_binary(monkeypatch):
    monkeypatch.setenv("MIGPERF_NVIDIA_SMI", "/nonexistent/nvidia-smi")
    with pytest.raises(SmiError, match="not found on PATH"):
        reset_layout(0, yes=True, is_root=True)
