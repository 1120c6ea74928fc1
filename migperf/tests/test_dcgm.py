"""DCGM: exporter scrapes and dcgmi output recorded in NVIDIA's formats (captures/README.md),
mapped to the right GPU instance; missing sources say why."""

import sys

import pytest

from migperf import dcgm, fakes, nvml
from migperf.fakes import read_capture

A100 = "GPU-5a2b6c1d-0000-4000-8000-000000000000"


def test_exporter_current_format_maps_gpu_instances():
    s = dcgm.parse_exporter(read_capture("dcgm_exporter_a100_mig.prom"))
    # only the DCP fields; board fields such as power (labelled per instance) are never read here
    assert {x["key"] for x in s} == set(dcgm.KEYS)
    v = dcgm.select(s, dcgm.Target(A100, 0, 9))
    assert v["dcgm_gract_pct"] == pytest.approx(91.2345) and v["dcgm_drama_pct"] == pytest.approx(51.7733)
    assert dcgm.select(s, dcgm.Target(A100, 0, 2))["dcgm_gract_pct"] == pytest.approx(55.321)
    # the whole GPU 1 (no GPU_I_ID) is not confused with an instance
    whole = dcgm.select(s, dcgm.Target("GPU-5a2b6c1d-0000-4000-8000-000000000001", 1, None))
    assert whole["dcgm_gract_pct"] == pytest.approx(64.0012)
    assert dcgm.select(s, dcgm.Target(A100, 0, 4)) == {}


def test_exporter_old_formats():
    old = dcgm.parse_exporter(read_capture("dcgm_exporter_a30_v2.prom"))       # 2.x: Hostname, pod labels
    v = dcgm.select(old, dcgm.Target("GPU-603a8873-0edd-c157-ce48-2078e8b1a935", 0, 1))
    assert v == {"dcgm_gract_pct": pytest.approx(11.7468), "dcgm_drama_pct": pytest.approx(5.8734)}
    nomig = dcgm.parse_exporter(read_capture("dcgm_exporter_nomig.prom"))    # MIG off: no GPU_I labels
    v = dcgm.select(nomig, dcgm.Target("GPU-45984919-9e67-f2ec-9b84-a96fefa525ff", 0, None))
    assert v["dcgm_gract_pct"] == pytest.approx(87.3311) and "dcgm_smocc_pct" not in v


def test_exporter_scraped_over_http_with_missing_fields_named():
    with fakes.ExporterServer(read_capture("dcgm_exporter_a30_v2.prom")) as url:
        src = dcgm.ExporterSource(url, dcgm.Target("GPU-603a8873-0edd-c157-ce48-2078e8b1a935", 0, 4), interval_s=0)
        src.start()
        v = src.read()
    assert v["dcgm_gract_pct"] == pytest.approx(95.821)
    assert "DCGM_FI_PROF_SM_ACTIVE" in src.failures["dcgm_smact_pct"]
    # an instance the exporter does not know, and an exporter that is not there
    with fakes.ExporterServer(read_capture("dcgm_exporter_a30_v2.prom")) as url:
        with pytest.raises(dcgm.DcgmUnavailable, match=r"no DCP series for GPU instance 7 .*GPU_I_ID \[1, 3, 4\]"):
            dcgm.ExporterSource(url, dcgm.Target("GPU-603a8873-0edd-c157-ce48-2078e8b1a935", 0, 7)).start()
    with pytest.raises(dcgm.DcgmUnavailable, match="unreachable"):
        dcgm.ExporterSource("http://127.0.0.1:9/metrics", dcgm.Target(A100, 0, 9), timeout_s=0.5).start()


def test_dmon_and_discovery_parsers():
    rows = dcgm.parse_dmon(read_capture("dcgmi_dmon_a100_mig.txt").splitlines())
    assert [(g, e) for g, e, _ in rows] == [("GPU-I", 2)] * 5
    assert rows[0][2]["gract"] == pytest.approx(0.911) and rows[0][2]["fp32"] == pytest.approx(0.356)
    assert rows[3][2]["gract"] is None                                       # "N/A" is a blank, not 0
    m = dcgm.parse_discovery(read_capture("dcgmi_discovery_c_a100.txt"))
    assert m == {(0, 2): 0, (0, 3): 1, (0, 9): 2, (0, 10): 3}


def test_dmon_subprocess_maps_gi_to_entity(tmp_path, monkeypatch):
    exe = fakes.write_script(tmp_path / "dcgmi", "dcgmi_main")
    log = tmp_path / "log"
    monkeypatch.setenv("FAKE_DCGMI_LOG", str(log))
    src = dcgm.DmonSource(dcgm.Target(A100, 0, 9), dcgmi=str(exe), delay_ms=100)
    src.start()
    src.thread.join(timeout=30)
    v = src.read()
    src.stop()
    assert v["dcgm_gract_pct"] == pytest.approx(100 * (0.911 + 0.915 + 0.908 + 0.914) / 4)
    assert "N/A" in src.failures["dcgm_gract_pct"]
    calls = [line for line in log.read_text().splitlines()]
    assert '"dmon", "-e", "1001,1002,1003,1004,1005,1006,1007,1008", "-d", "100", "-i", "0/9"' in calls[1]
    # GI 3 is DCGM entity 1: the rows of entity 2 are not its
    other = dcgm.DmonSource(dcgm.Target(A100, 0, 3), dcgmi=str(exe))
    other.start()
    other.thread.join(timeout=30)
    assert other.read() is None
    other.stop()
    with pytest.raises(dcgm.DcgmUnavailable, match="lists no GPU instance 0/5"):
        dcgm.DmonSource(dcgm.Target(A100, 0, 5), dcgmi=str(exe)).start()


def test_dcgm_in_the_sampler_and_availability(monkeypatch):
    """A100 under MIG: no NVML utilisation, no GPM; GRACT comes from DCGM for the cell's instance."""
    gpu = fakes.a100_80gb(mig=True)
    nv = fakes.make_module([gpu])
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    uuid = gpu.migs[2].uuid                                                 # GI 9
    env = nvml.device_environment(nv, uuid)
    assert (env["gpu_index"], env["gi_id"]) == (0, 9)
    target = dcgm.Target(env["gpu_uuid"], env["gpu_index"], env["gi_id"])
    with fakes.ExporterServer(read_capture("dcgm_exporter_a100_mig.prom")) as url:
        probe, why = dcgm.dcgm_probe({"source": "exporter", "url": url, "interval_s": 0.0}, target)
        s = nvml.gpu_sampler(nv, uuid, 0.0, extra=[probe])
        s.start()
        s.tick()
        summ = s.stop()
    m = summ["metrics"]
    assert m["dcgm_gract_pct"]["mean"] == pytest.approx(91.2345) and m["dcgm_gract_pct"]["scope"] == "mig-instance"
    av = dcgm.availability(m, summ["unsupported"], summ["notes"], mig=True)
    assert av["gract"]["source"] == "DCGM via dcgm-exporter" and set(av) == set(dcgm.KEYS)
    # nothing reachable: every metric says which sources were tried and why they failed
    probe, why = dcgm.dcgm_probe({"source": "auto", "url": "http://127.0.0.1:9/metrics",
                                  "dcgmi": "/nonexistent/dcgmi", "interval_s": 1.0}, target)
    assert probe is None and "unreachable" in why[0] and "not on PATH" in why[1]
    s = nvml.gpu_sampler(nv, uuid, 0.0)
    s.notes["dcgm"] = why
    s.start()
    summ = s.stop()
    av = dcgm.availability(summ["metrics"], summ["unsupported"], summ["notes"], mig=True)
    assert "unreachable" in av["gract"]["missing"] and "GPM is Hopper and newer" in av["gract"]["missing"]
