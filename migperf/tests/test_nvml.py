import sys

import pytest

from migperf import fakes as fake
from migperf import nvml
from migperf.cli import main


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
    assert main(["info", "--json"]) == 0                      # JSON even without a driver
    import json
    d = json.loads(capsys.readouterr().out)
    assert d["nvml"] is False and d["gpus"] == [] and "Library Not Found" in d["why"]


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
    assert "gpm_smact_pct" not in m and "GPM not supported" in summ["notes"]["gpm"]   # A100: no GPM
    assert "nvmlDeviceGetUtilizationRates" not in nv._calls
    env = nvml.device_environment(nv, uuid)
    assert env["mig_profile"] == "1g.10gb" and env["gi_id"] == 9 and env["gpu_name"] == "NVIDIA A100-SXM4-80GB"


def _drive(s, clock, steps, dt):
    s.start()
    for _ in range(steps):
        clock["t"] += dt
        s.tick()
    return s.stop()


def test_whole_gpu_sampler_and_gpm_on_hopper(install):
    clock = {"t": 0.0}
    gpu = fake.h100_nvl(mig=False)
    nv = install(fake.make_module([gpu], clock=lambda: clock["t"]))
    m = _drive(nvml.gpu_sampler(nv, "cuda:0", 0.0, clock=lambda: clock["t"]), clock, 3, 0.2)["metrics"]
    assert m["gpu_util_pct"]["mean"] == 37 and m["gpu_util_pct"]["scope"] == "device"
    assert m["gpm_gract_pct"]["mean"] == pytest.approx(71.0) and m["gpm_smact_pct"]["mean"] == pytest.approx(63.5)
    assert m["gpm_gract_pct"]["scope"] == "device" and m["power_w"]["mean"] == 350.0


def test_gpm_is_per_instance_on_mig(install):
    """Guards the science: a MIG cell's GPM comes from its own GPU instance (nvmlGpmMigSampleGet),
    not the whole device, whose values differ in the fake (as they do on a shared board)."""
    clock = {"t": 0.0}
    gpu = fake.h100_nvl(mig=True)
    nv = install(fake.make_module([gpu], clock=lambda: clock["t"]))
    for mg in gpu.migs:
        summ = _drive(nvml.gpu_sampler(nv, mg.uuid, 0.0, clock=lambda: clock["t"]), clock, 3, 0.2)
        m = summ["metrics"]
        assert m["gpm_gract_pct"]["mean"] == pytest.approx(mg.gpm[1]) != gpu.gpm_device[1]
        assert m["gpm_smact_pct"]["mean"] == pytest.approx(mg.gpm[2]) and m["gpm_gract_pct"]["scope"] == "mig-instance"
    assert "nvmlGpmMigSampleGet" in nv._calls and "nvmlGpmSampleGet" not in nv._calls


def test_gpm_keeps_samples_100ms_apart_and_checks_each_metric(install):
    clock = {"t": 0.0}
    gpu = fake.h100_nvl(mig=True)
    gpu.gpm_unsupported = {3}                                  # SM occupancy: per-metric NOT_SUPPORTED
    nv = install(fake.make_module([gpu], clock=lambda: clock["t"]))
    s = nvml.gpu_sampler(nv, gpu.migs[0].uuid, 0.0, clock=lambda: clock["t"])
    summ = _drive(s, clock, 25, 0.01)                          # a 10 ms sampler: GPM only every 100 ms
    m = summ["metrics"]
    assert m["gpm_gract_pct"]["n"] == 2 and m["gpm_gract_pct"]["min"] == pytest.approx(91.0)  # never a 0 entered
    assert "gpm_smocc_pct" not in m and "returned 3" in summ["unsupported"]["gpm_smocc_pct"]


def test_gpm_first_sample_failure_does_not_fail_the_cell(install, monkeypatch):
    gpu = fake.h100_nvl(mig=True)
    nv = install(fake.make_module([gpu]))

    def boom(*a):
        raise fake.NVMLError_NotSupported()
    monkeypatch.setattr(nv, "nvmlGpmMigSampleGet", boom)
    s = nvml.gpu_sampler(nv, gpu.migs[0].uuid, 0.0)
    s.start()
    s.tick()
    summ = s.stop()
    assert "gpm" in summ["unsupported"] and "memory_used_mib" in summ["metrics"]


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
    install(fake.make_module([fake.h100_nvl(mig=True)]))
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    g = d["gpus"][0]
    assert g["name"] == "NVIDIA H100 NVL" and g["mig_current"]
    assert g["mig_devices"][0]["uuid"] == "MIG-aaaabbbb-cccc-5ddd-8eee-ffff00000001"
    assert {p["name"]: p["sms"] for p in g["profiles"]} == {"1g.12gb": 16, "1g.12gb+me": 16, "1g.24gb": 26,
                                                            "2g.24gb": 32}  # the capture's rows
