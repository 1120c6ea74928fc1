import sys

import pytest

from migperf import nvml
from migperf.cli import main
from migperf.tests import fake_pynvml as fake


@pytest.fixture
def install(monkeypatch):
    def _install(mod):
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        return mod
    return _install


def test_load_nvml_without_driver(install, capsys):
    install(fake.make_module([], init_error=fake.NVMLError_LibraryNotFound))
    nv, why = nvml.load_nvml()
    assert nv is None and "NVML Shared Library Not Found" in why
    assert main(["info"]) == 0
    assert "no NVIDIA GPU visible" in capsys.readouterr().out


def test_discover_a100_mig(install, capsys):
    install(fake.make_module([fake.a100_80gb(mig=True), fake.a100_80gb(mig=False, index=1)]))
    nv, _ = nvml.load_nvml()
    d = nvml.discover(nv)
    assert d["driver"] == "550.54.15" and d["cuda_driver"] == "12.4"
    g0, g1 = d["gpus"]
    assert g0["mig_current"] and not g1["mig_current"] and g1["mig_devices"] == []
    profs = {p["name"]: p for p in g0["profiles"]}
    assert profs["1g.10gb"]["id"] == 19 and profs["1g.10gb"]["instances"] == 7
    assert profs["7g.80gb"]["sms"] == 98 and profs["1g.20gb"]["slices"] == 1 and "1g.10gb+me" in profs
    assert [(m["name"].split("MIG ")[1], m["gi_id"], m["ci_id"]) for m in g0["mig_devices"]] == [
        ("3g.40gb", 2, 0), ("2g.20gb", 3, 0), ("1g.10gb", 9, 0), ("1g.10gb", 10, 0)]
    assert nvml.list_mig_uuids(nv) == [m["uuid"] for m in g0["mig_devices"]]
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "MIG current=Enabled pending=Enabled" in out and g0["mig_devices"][3]["uuid"] in out
    assert "| 1g.10gb | 19 | 1 | 7 |" in out


def test_mig_sampler_scopes_and_energy(install):
    clock = {"t": 0.0}
    gpu = fake.a100_80gb(mig=True)
    nv = install(fake.make_module([gpu], clock=lambda: clock["t"]))
    uuid = gpu.migs[2].uuid
    s = nvml.gpu_sampler(nv, uuid, interval_s=0.0)
    s.clock = lambda: clock["t"]
    s.start()  # interval 0: no thread, ticks driven by hand
    for _ in range(3):
        clock["t"] += 0.5
        s.tick()
    summ = s.stop()
    m = summ["metrics"]
    assert m["memory_used_mib"]["mean"] == pytest.approx(300.0) and m["memory_used_mib"]["scope"] == "mig-instance"
    assert m["power_w"]["mean"] == 250.0 and m["power_w"]["scope"] == "whole-board"
    assert m["energy_j"]["value"] == pytest.approx(250.0 * 1.5) and m["energy_j"]["scope"] == "whole-board"
    assert "gpu_util_pct" not in m and "not supported on MIG" in summ["notes"]["utilization"]
    assert "gpm_sm_util_pct" not in m and "GPM not supported" in summ["notes"]["gpm"]   # A100: no GPM
    assert "nvmlDeviceGetUtilizationRates" not in nv._calls
    env = nvml.device_environment(nv, uuid)
    assert env["mig_profile"] == "1g.10gb" and env["gi_id"] == 9 and env["gpu_name"] == "NVIDIA A100-SXM4-80GB"


def test_whole_gpu_sampler_and_gpm_on_h100(install):
    gpu = fake.h100_80gb(mig=False)
    nv = install(fake.make_module([gpu]))
    s = nvml.gpu_sampler(nv, "cuda:0", interval_s=0.0)
    s.start()
    s.tick()
    s.tick()
    m = s.stop()["metrics"]
    assert m["gpu_util_pct"]["mean"] == 37 and m["gpu_util_pct"]["scope"] == "device"
    assert m["gpm_sm_util_pct"]["mean"] == pytest.approx(63.5) and m["power_w"]["mean"] == 350.0
    mig = fake.h100_80gb(mig=True)
    nv = install(fake.make_module([mig]))
    s = nvml.gpu_sampler(nv, mig.migs[0].uuid, interval_s=0.0)
    s.start()
    s.tick()
    m = s.stop()["metrics"]
    assert m["gpm_sm_util_pct"]["scope"] == "mig-instance" and m["gpm_sm_util_pct"]["mean"] == pytest.approx(63.5)


def test_unsupported_counter_is_reported_not_zero(install):
    gpu = fake.a100_80gb(mig=False)
    gpu.energy_supported = False
    nv = install(fake.make_module([gpu]))
    s = nvml.gpu_sampler(nv, "cuda:0", interval_s=0.0)
    s.probes.append(nvml.Probe("broken", lambda: (_ for _ in ()).throw(fake.NVMLError_NotSupported()), "device", ""))
    s.samples["broken"] = []
    s.start()
    for k in range(3):
        s.clock = lambda k=k: float(k)
        s.tick()
    summ = s.stop()
    assert "broken" not in summ["metrics"] and "Not Supported" in summ["unsupported"]["broken"]
    assert "Not Supported" in summ["unsupported"]["energy_j"]
    # energy falls back to integrating power over the samples (t = 0, 1, 2 s at 250 W)
    assert summ["metrics"]["energy_j"]["value"] == pytest.approx(500.0)
    assert "trapezoid" in summ["metrics"]["energy_j"]["method"]


def test_sampler_thread_runs_at_interval():
    s = nvml.cpu_sampler(0.01)
    import time
    s.start()
    time.sleep(0.15)
    summ = s.stop()
    assert summ["ticks"] >= 5 and summ["metrics"]["process_rss_mib"]["mean"] > 10
    assert summ["metrics"]["process_rss_mib"]["scope"] == "process"


def test_info_json(install, capsys):
    import json
    install(fake.make_module([fake.h100_80gb(mig=True)]))
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    g = d["gpus"][0]
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["mig_current"]
    assert g["mig_devices"][0]["uuid"] == "MIG-aaaabbbb-cccc-5ddd-8eee-ffff00000001"
