"""Stand-ins for the GPU-side tools, for running migperf's GPU paths without a GPU: a fake
``pynvml`` (nvidia-ml-py) module, a fake ``nvidia-smi`` and a fake ``dcgmi`` (scripts writing
recorded text), and a local dcgm-exporter endpoint serving a recorded scrape.

Used by the tests and by ``bench.py`` (the sampler's cost against NVML's Python side), so it
lives in the package, not under ``tests/``.

Every answer about a board comes from a recorded capture in ``captures/`` (see its README for
where each file comes from), **never** from :mod:`migperf.profiles`: the profile table is code
under test, and a fake derived from it would agree with a wrong profile ID. Profile info (ID,
instance count, SMs, memory) is parsed from the board's ``nvidia-smi mig -lgip`` capture, MIG
device names/memory from the same rows. Behaviour follows the NVML reference: utilisation
rates raise NotSupported on MIG-enabled GPUs, MIG handles have no power/energy of their own,
GPM exists only where ``gpm=True`` (Hopper), samples closer than 100 ms give a per-metric error,
and each GPU instance has its own GPM values, different from the device's.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import sys
import threading
import types
from dataclasses import dataclass, field
from pathlib import Path

CAPTURES = Path(__file__).resolve().parent / "captures"

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
GPM_MIN_INTERVAL_S = 0.1  # NVML: GPM samples must be > 100 ms apart (nvmlGpmMetricsGet docs)


def read_capture(name: str) -> str:
    return (CAPTURES / name).read_text()


def capture_profiles(stem: str) -> list[dict]:
    """Rows of ``captures/<stem>_lgip.txt`` (+ placements from ``<stem>_lgipp.txt`` if recorded)."""
    from migperf.smi import parse_lgip, parse_lgipp  # the parsers, tested against the same files

    rows = parse_lgip(read_capture(f"{stem}_lgip.txt"))
    pp = CAPTURES / f"{stem}_lgipp.txt"
    place = {p["id"]: p for p in parse_lgipp(pp.read_text())} if pp.is_file() else {}
    for r in rows:
        if r["id"] in place:
            r["starts"], r["size"] = place[r["id"]]["starts"], place[r["id"]]["size"]
    return rows


class NVMLError(Exception):
    _names = {1: "Uninitialized", 2: "Invalid Argument", 3: "Not Supported", 4: "Insufficient Permissions",
              6: "Not Found", 12: "NVML Shared Library Not Found"}

    def __init__(self, value):
        super().__init__(value)
        self.value = value

    def __str__(self):
        return self._names.get(self.value, f"error {self.value}")


class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's names)
    def __init__(self):
        super().__init__(NVML_ERROR_NOT_SUPPORTED)


class NVMLError_InvalidArgument(NVMLError):  # noqa: N801
    def __init__(self):
        super().__init__(NVML_ERROR_INVALID_ARGUMENT)


class NVMLError_NotFound(NVMLError):  # noqa: N801
    def __init__(self):
        super().__init__(NVML_ERROR_NOT_FOUND)


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801
    def __init__(self):
        super().__init__(NVML_ERROR_LIBRARY_NOT_FOUND)


@dataclass
class FakeMig:
    profile: str
    gi_id: int
    ci_id: int
    uuid: str
    memory_total_mib: int
    memory_used_mib: int = 0
    gpm: dict = field(default_factory=dict)       # GPM metric id -> value for this GPU instance
    processes: list = field(default_factory=list)  # (pid, used MiB) running on this instance


@dataclass
class FakeGpu:
    capture: str                    # captures/<capture>_lgip.txt ("" for a board without MIG)
    name: str
    uuid: str
    memory_total_mib: int
    mig_mode: list = field(default_factory=lambda: [0, 0])
    migs: list = field(default_factory=list)
    power_mw: int = 250_000
    energy0_mj: int = 1_000_000
    temperature: int = 45
    sm_clock: int = 1410
    mem_clock: int = 1593
    util: tuple = (37, 12)
    memory_used_mib: int = 1024
    gpm: bool = False
    gpm_device: dict = field(default_factory=dict)  # GPM metric id -> whole-device value
    gpm_unsupported: set = field(default_factory=set)  # metric ids answered with NOT_SUPPORTED
    energy_supported: bool = True
    processes: list = field(default_factory=list)


@dataclass
class _Handle:
    gpu: FakeGpu
    mig: FakeMig | None = None


@dataclass
class _Mem:
    total: int
    used: int
    free: int


@dataclass
class _ProfileInfo:
    id: int
    sliceCount: int  # noqa: N815 (pynvml field names)
    instanceCount: int  # noqa: N815
    multiprocessorCount: int  # noqa: N815
    memorySizeMB: int  # noqa: N815
    name: bytes
    isP2pSupported: int = 0  # noqa: N815


@dataclass
class _Support:
    isSupportedDevice: int  # noqa: N815


@dataclass
class _Proc:
    pid: int
    usedGpuMemory: int  # noqa: N815


class _Metric:
    def __init__(self):
        self.metricId = 0
        self.value = 0.0
        self.nvmlReturn = 0


class c_nvmlGpmMetricsGet_t:  # noqa: N801
    def __init__(self):
        self.version = 0
        self.numMetrics = 0
        self.sample1 = self.sample2 = None
        self.metrics = [_Metric() for _ in range(16)]


# NVML profile constants (nvidia-ml-py names and values) and which -lgip row each selects:
# (compute slices, "+me", two memory slices for a 1g)
_CONSTS = {"NVML_GPU_INSTANCE_PROFILE_1_SLICE": (0, 1, False, False),
           "NVML_GPU_INSTANCE_PROFILE_2_SLICE": (1, 2, False, False),
           "NVML_GPU_INSTANCE_PROFILE_3_SLICE": (2, 3, False, False),
           "NVML_GPU_INSTANCE_PROFILE_4_SLICE": (3, 4, False, False),
           "NVML_GPU_INSTANCE_PROFILE_7_SLICE": (4, 7, False, False),
           "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1": (7, 1, True, False),
           "NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1": (8, 2, True, False),
           "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2": (9, 1, False, True)}
GPM_IDS = {"GRAPHICS_UTIL": 1, "SM_UTIL": 2, "SM_OCCUPANCY": 3, "ANY_TENSOR_UTIL": 5, "DRAM_BW_UTIL": 10,
           "FP64_UTIL": 11, "FP32_UTIL": 12, "FP16_UTIL": 13}


def _pick_row(rows: list[dict], compute: int, me: bool, double: bool) -> dict | None:
    """The -lgip row an NVML profile constant stands for, read from the row's name only."""
    def mem(r):
        return float(re.match(r"\d+g\.(\d+)gb", r["name"])[1])
    cands = [r for r in rows if int(r["name"].split("g.")[0]) == compute and r["name"].endswith("+me") == me]
    if not cands:
        return None
    cands.sort(key=mem)
    return cands[-1] if double and len(cands) > 1 else cands[0] if not double else None


def a100_80gb(mig: bool = True, layout=("3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"), index: int = 0) -> FakeGpu:
    """An A100-SXM4-80GB; GI ids 2, 3, 9, 10 as in captures/a100_80gb_lgi.txt."""
    g = FakeGpu("a100_80gb", "NVIDIA A100-SXM4-80GB", f"GPU-5a2b6c1d-0000-4000-8000-00000000000{index}", 81920,
                mig_mode=[1, 1] if mig else [0, 0])
    if mig:
        rows = {r["name"]: r for r in capture_profiles("a100_80gb")}
        for k, prof in enumerate(layout):
            g.migs.append(FakeMig(prof, gi_id=[2, 3, 9, 10, 11, 12, 13][k], ci_id=0,
                                  uuid=f"MIG-0e1f2a3b-4c5d-5e6f-8a9b-{index:04d}0000{k:04d}",
                                  memory_total_mib=int(rows[prof]["memory_gib"] * 1024), memory_used_mib=100 * (k + 1)))
    return g


def h100_nvl(mig: bool = False, layout=("1g.12gb", "1g.24gb")) -> FakeGpu:
    """An H100 NVL (Hopper: GPM); per-instance GPM values differ from each other and the device's."""
    g = FakeGpu("h100_nvl", "NVIDIA H100 NVL", "GPU-9f8e7d6c-0000-4000-8000-000000000001", 95830,
                mig_mode=[1, 1] if mig else [0, 0], power_mw=350_000, gpm=True,
                gpm_device={1: 71.0, 2: 63.5, 3: 40.0, 5: 20.0, 10: 33.0, 11: 0.0, 12: 12.0, 13: 3.0})
    if mig:
        rows = {r["name"]: r for r in capture_profiles("h100_nvl")}
        for k, prof in enumerate(layout):
            g.migs.append(FakeMig(prof, gi_id=[9, 5, 3][k], ci_id=0, uuid=f"MIG-aaaabbbb-cccc-5ddd-8eee-ffff0000000{k + 1}",
                                  memory_total_mib=int(rows[prof]["memory_gib"] * 1024),
                                  gpm={1: 91.0 - 30 * k, 2: 88.0 - 30 * k, 3: 50.0, 5: 44.0, 10: 25.0, 11: 0.0,
                                       12: 30.0, 13: 7.0}))
    return g


def h200(mig: bool = True, layout=("3g.71gb", "1g.18gb")) -> FakeGpu:
    g = FakeGpu("h200", "NVIDIA H200", "GPU-77776666-0000-4000-8000-000000000002", 143771,
                mig_mode=[1, 1] if mig else [0, 0], power_mw=420_000, gpm=True,
                gpm_device={1: 55.0, 2: 50.0, 3: 30.0, 5: 10.0, 10: 20.0, 11: 0.0, 12: 8.0, 13: 2.0})
    if mig:
        rows = {r["name"]: r for r in capture_profiles("h200")}
        for k, prof in enumerate(layout):
            g.migs.append(FakeMig(prof, gi_id=[1, 7][k], ci_id=0, uuid=f"MIG-12121212-3434-5565-8787-00000000000{k}",
                                  memory_total_mib=int(rows[prof]["memory_gib"] * 1024),
                                  gpm={1: 80.0 - 40 * k, 2: 75.0 - 40 * k}))
    return g


def make_module(gpus: list[FakeGpu], clock=None, init_error: type[NVMLError] | None = None,
                driver: str = "550.54.15", cuda: int = 12040) -> types.ModuleType:
    """The fake module. ``clock()`` (seconds) drives the energy counter and GPM sample times."""
    m = types.ModuleType("pynvml")
    state = {"t": 0.0}
    clock = clock or (lambda: state["t"])
    m._state, m._gpus, m._calls = state, gpus, []
    m.NVMLError = NVMLError
    m.NVMLError_NotSupported = NVMLError_NotSupported
    m.NVMLError_InvalidArgument = NVMLError_InvalidArgument
    m.NVMLError_NotFound = NVMLError_NotFound
    m.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    m.NVML_SUCCESS = NVML_SUCCESS
    for k, (v, *_rest) in _CONSTS.items():
        setattr(m, k, v)
    m.NVML_DEVICE_MIG_ENABLE, m.NVML_DEVICE_MIG_DISABLE = 1, 0
    m.NVML_TEMPERATURE_GPU, m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM = 0, 1, 2
    for k, v in GPM_IDS.items():
        setattr(m, f"NVML_GPM_METRIC_{k}", v)
    m.NVML_GPM_METRICS_GET_VERSION = 1
    m.c_nvmlGpmMetricsGet_t = c_nvmlGpmMetricsGet_t

    def log(name):
        m._calls.append(name)

    def nvmlInit():
        log("nvmlInit")
        if init_error is not None:
            raise init_error()

    m.nvmlInit, m.nvmlShutdown = nvmlInit, lambda: log("nvmlShutdown")
    m.nvmlSystemGetDriverVersion = lambda: driver
    m.nvmlSystemGetCudaDriverVersion = lambda: cuda
    m.nvmlDeviceGetCount = lambda: len(gpus)

    def by_index(i):
        if not 0 <= i < len(gpus):
            raise NVMLError_InvalidArgument()
        return _Handle(gpus[i])

    def by_uuid(u):
        u = u.decode() if isinstance(u, bytes) else u
        for g in gpus:
            if g.uuid == u:
                return _Handle(g)
            for mg in g.migs:
                if mg.uuid == u:
                    return _Handle(g, mg)
        raise NVMLError_NotFound()

    m.nvmlDeviceGetHandleByIndex, m.nvmlDeviceGetHandleByUUID = by_index, by_uuid
    m.nvmlDeviceGetIndex = lambda h: gpus.index(h.gpu)
    m.nvmlDeviceGetName = lambda h: (f"{h.gpu.name} MIG {h.mig.profile}" if h.mig else h.gpu.name)
    m.nvmlDeviceGetUUID = lambda h: h.mig.uuid if h.mig else h.gpu.uuid

    def mig_mode(h):
        if h.mig is not None or not h.gpu.capture:
            raise NVMLError_NotSupported()
        return list(h.gpu.mig_mode)

    m.nvmlDeviceGetMigMode = mig_mode
    const_of = {v: (c, me, dbl) for v, c, me, dbl in _CONSTS.values()}

    def profile_info(h, const, version=2):
        if not h.gpu.capture:
            raise NVMLError_NotSupported()
        if const not in const_of:
            raise NVMLError_InvalidArgument()
        row = _pick_row(capture_profiles(h.gpu.capture), *const_of[const])
        if row is None:
            raise NVMLError_NotSupported()
        return _ProfileInfo(row["id"], int(row["name"].split("g.")[0]), row["total"], row["sms"],
                            int(row["memory_gib"] * 1024), f"MIG {row['name']}".encode())

    m.nvmlDeviceGetGpuInstanceProfileInfo = profile_info
    m.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7 if h.gpu.mig_mode[0] and h.gpu.capture else 0

    def mig_by_index(h, i):
        if not h.gpu.mig_mode[0] or i >= 7:
            raise NVMLError_InvalidArgument()
        if i >= len(h.gpu.migs):
            raise NVMLError_NotFound()
        return _Handle(h.gpu, h.gpu.migs[i])

    m.nvmlDeviceGetMigDeviceHandleByIndex = mig_by_index
    m.nvmlDeviceIsMigDeviceHandle = lambda h: h.mig is not None

    def need_mig(h):
        if h.mig is None:
            raise NVMLError_InvalidArgument()
        return h.mig

    m.nvmlDeviceGetGpuInstanceId = lambda h: need_mig(h).gi_id
    m.nvmlDeviceGetComputeInstanceId = lambda h: need_mig(h).ci_id
    m.nvmlDeviceGetDeviceHandleFromMigDeviceHandle = lambda h: _Handle(need_mig(h) and h.gpu)

    def mem(h):
        t, u = (h.mig.memory_total_mib, h.mig.memory_used_mib) if h.mig else (h.gpu.memory_total_mib,
                                                                              h.gpu.memory_used_mib)
        return _Mem(t * 2**20, u * 2**20, (t - u) * 2**20)

    m.nvmlDeviceGetMemoryInfo = mem

    def procs(h):
        lst = h.mig.processes if h.mig else h.gpu.processes + [p for mg in h.gpu.migs for p in mg.processes]
        return [_Proc(pid, used * 2**20) for pid, used in lst]

    m.nvmlDeviceGetComputeRunningProcesses = procs

    def board_only(h):
        if h.mig is not None:
            raise NVMLError_NotSupported()
        return h.gpu

    def util(h):
        g = board_only(h)
        log("nvmlDeviceGetUtilizationRates")
        if g.mig_mode[0]:
            raise NVMLError_NotSupported()
        return types.SimpleNamespace(gpu=g.util[0], memory=g.util[1])

    m.nvmlDeviceGetUtilizationRates = util
    m.nvmlDeviceGetPowerUsage = lambda h: board_only(h).power_mw
    m.nvmlDeviceGetPowerManagementLimit = lambda h: 400_000

    def energy(h):
        g = board_only(h)
        if not g.energy_supported:
            raise NVMLError_NotSupported()
        return int(g.energy0_mj + g.power_mw * clock())  # mW × s = mJ

    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetTemperature = lambda h, sensor: board_only(h).temperature
    m.nvmlDeviceGetClockInfo = lambda h, kind: {1: board_only(h).sm_clock, 2: board_only(h).mem_clock}[kind]

    m.nvmlGpmQueryDeviceSupport = lambda h: _Support(int(board_only(h).gpm))
    m.nvmlGpmSampleAlloc = lambda: {"t": None}

    def gpm_get(h, s):
        log("nvmlGpmSampleGet")
        if not board_only(h).gpm:
            raise NVMLError_NotSupported()
        s.update(t=clock(), gpu=h.gpu, gi=None)
        return s

    def gpm_mig_get(h, gi, s):
        log("nvmlGpmMigSampleGet")
        g = board_only(h)
        if not g.gpm or not any(mg.gi_id == gi for mg in g.migs):
            raise NVMLError_NotSupported()
        s.update(t=clock(), gpu=g, gi=gi)
        return s

    def metrics_get(mg):
        a, b = mg.sample1, mg.sample2
        if a is None or b is None or a.get("t") is None or b.get("t") is None or a.get("gi") != b.get("gi"):
            raise NVMLError_InvalidArgument()
        g = b["gpu"]
        values = g.gpm_device if b["gi"] is None else next(x.gpm for x in g.migs if x.gi_id == b["gi"])
        too_close = b["t"] - a["t"] < GPM_MIN_INTERVAL_S
        for k in range(mg.numMetrics):
            mid = mg.metrics[k].metricId
            if too_close:
                mg.metrics[k].nvmlReturn, mg.metrics[k].value = NVML_ERROR_INVALID_ARGUMENT, 0.0
            elif mid in g.gpm_unsupported or mid not in values:
                mg.metrics[k].nvmlReturn, mg.metrics[k].value = NVML_ERROR_NOT_SUPPORTED, 0.0
            else:
                mg.metrics[k].nvmlReturn, mg.metrics[k].value = NVML_SUCCESS, values[mid]
        return mg

    m.nvmlGpmSampleGet, m.nvmlGpmMigSampleGet, m.nvmlGpmMetricsGet = gpm_get, gpm_mig_get, metrics_get
    m.nvmlGpmSampleFree = lambda s: None
    return m


# ---- fake command-line tools -------------------------------------------------------------------
SCRIPT = """#!/bin/sh
PYTHONPATH={root} exec {python} -m migperf.fakes {entry} "$@"
"""


def write_script(path: Path, entry: str, python: str = sys.executable, syspath=None) -> Path:
    """An executable running ``python -m migperf.fakes <entry> ARGS`` (``smi_main`` or ``dcgmi_main``)."""
    import shlex

    root = (syspath or [str(Path(__file__).resolve().parents[1])])[0]
    path.write_text(SCRIPT.format(python=shlex.quote(python), root=shlex.quote(root), entry=entry))
    path.chmod(0o755)
    return path


def smi_main(argv) -> int:
    """A fake ``nvidia-smi`` keeping MIG state in ``$FAKE_SMI_STATE`` (JSON) and appending each argv
    to ``$FAKE_SMI_STATE.log``: ``--query-gpu=...``, ``-L``, ``mig -i N -lgi|-cgi ID:START,... -C|-dci|-dgi``,
    printing text in the formats of ``captures/`` and taking profiles from the board's -lgip capture."""
    st_path = os.environ["FAKE_SMI_STATE"]
    with open(st_path + ".log", "a") as f:
        f.write(json.dumps(argv) + "\n")
    with open(st_path) as f:
        st = json.load(f)
    if argv and argv[0].startswith("--query-gpu="):
        for i, g in enumerate(st["gpus"]):
            mode = "Enabled" if g["mig"] else "Disabled"
            print(f"{i}, {g['name']}, {mode}, {mode}")
        return 0
    if argv == ["-L"]:
        for i, g in enumerate(st["gpus"]):
            print(f"GPU {i}: {g['name']} (UUID: GPU-00000000-0000-4000-8000-00000000000{i})")
            for k, gi in enumerate(g["gis"]):
                print(f"  MIG {gi['name']:<12}Device {k:>2}: (UUID: MIG-11111111-2222-5333-8444-{i:04d}{gi['id']:08d})")
        return 0
    if argv[:2] == ["mig", "-i"]:
        i = int(argv[2])
        g = st["gpus"][i]
        op = argv[3]
        if op == "-lgi":
            if not g["gis"]:
                print("No GPU instances found: Not Found")
                return 6
            print("| GPU instances:                                        |")
            print("|=======================================================|")
            for gi in g["gis"]:
                print(f"|   {i}  MIG {gi['name']:<14}{gi['pid']:>3}{gi['id']:>9}{gi['start']:>11}:{gi['size']}     |")
            return 0
        if op == "-cgi":
            rows = {r["id"]: r for r in capture_profiles(g.get("capture", "a100_80gb"))}
            for item in argv[4].split(","):
                pid, start = (int(x) for x in item.split(":"))
                if pid not in rows:
                    print(f"Unable to create a GPU instance on GPU {i:>2} using profile {pid}: Invalid Argument")
                    return 2
                r = rows[pid]
                gid = max([0] + [x["id"] for x in g["gis"]]) + 1
                g["gis"].append({"name": r["name"], "pid": pid, "id": gid, "start": start, "size": r["size"]})
                print(f"Successfully created GPU instance ID {gid:>2} on GPU {i:>2} using profile MIG {r['name']} (ID {pid:>2})")
                print(f"Successfully created compute instance ID  0 on GPU {i:>2} GPU instance ID {gid:>2} using profile "
                      f"MIG {r['name']} (ID  0)")
        elif op == "-dci":
            for gi in g["gis"]:
                print(f"Successfully destroyed compute instance ID  0 from GPU {i:>2} GPU instance ID {gi['id']:>2}")
        elif op == "-dgi":
            for gi in g["gis"]:
                print(f"Successfully destroyed GPU instance ID {gi['id']:>2} from GPU {i:>2}")
            g["gis"] = []
        with open(st_path, "w") as f:
            json.dump(st, f)
        return 0
    print(f"fake nvidia-smi: unsupported arguments {argv}", file=sys.stderr)
    return 2


def dcgmi_main(argv) -> int:
    """A fake ``dcgmi``: ``discovery -c`` prints ``$FAKE_DCGMI_DISCOVERY`` (a capture), ``dmon ...``
    prints ``$FAKE_DCGMI_DMON`` (a capture) and appends its argv to ``$FAKE_DCGMI_LOG``."""
    if os.environ.get("FAKE_DCGMI_LOG"):
        with open(os.environ["FAKE_DCGMI_LOG"], "a") as f:
            f.write(json.dumps(argv) + "\n")
    if argv[:2] == ["discovery", "-c"]:
        sys.stdout.write(read_capture(os.environ.get("FAKE_DCGMI_DISCOVERY", "dcgmi_discovery_c_a100.txt")))
        return 0
    if argv and argv[0] == "dmon":
        sys.stdout.write(read_capture(os.environ.get("FAKE_DCGMI_DMON", "dcgmi_dmon_a100_mig.txt")))
        sys.stdout.flush()
        return 0
    print(f"fake dcgmi: unsupported arguments {argv}", file=sys.stderr)
    return 2


class ExporterServer:
    """A local HTTP endpoint serving recorded dcgm-exporter text at ``/metrics`` (127.0.0.1, a free
    port), as ``dcgm-exporter`` does on :9400. ``with ExporterServer(text) as url: ...``"""

    def __init__(self, text: str):
        body = text.encode()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv=None) -> int:
    """``python -m migperf.fakes smi_main|dcgmi_main ARGS``: the fake tools' entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    entries = {"smi_main": smi_main, "dcgmi_main": dcgmi_main}
    if not argv or argv[0] not in entries:
        print(f"usage: python -m migperf.fakes {{{','.join(entries)}}} ARGS", file=sys.stderr)
        return 2
    return entries[argv[0]](argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
