"""A fake ``pynvml`` (nvidia-ml-py) module emulating MIG-capable GPUs, for tests without a GPU.

``make_module(gpus)`` returns a module object exposing the subset of the nvidia-ml-py API that
migperf calls, with the same names, signatures, constants and error classes. State is plain
Python: each :class:`FakeGpu` has a MIG mode, the profile table of its model (from
``migperf.profiles``), MIG devices (GI/CI ids, UUIDs, memory) and counters driven by a
controllable clock (power constant per GPU, energy = power × elapsed). Behaviour follows the
NVML reference: utilisation rates raise NotSupported on MIG-enabled GPUs, MIG handles have no
power/energy of their own, GPM is supported only where ``gpm=True`` (Hopper).
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

from migperf.profiles import GPUS

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12


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


@dataclass
class FakeGpu:
    model: str                      # key of migperf.profiles.GPUS, or a non-MIG name
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
    gpm_sm_util: float = 42.0
    energy_supported: bool = True


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
        self.metrics = [_Metric() for _ in range(8)]


# NVML profile constant → compute slices (the 1-slice variants map to the table's profiles)
_CONST = {"NVML_GPU_INSTANCE_PROFILE_1_SLICE": (0, "1g", 1), "NVML_GPU_INSTANCE_PROFILE_2_SLICE": (1, "2g", 2),
          "NVML_GPU_INSTANCE_PROFILE_3_SLICE": (2, "3g", 3), "NVML_GPU_INSTANCE_PROFILE_4_SLICE": (3, "4g", 4),
          "NVML_GPU_INSTANCE_PROFILE_7_SLICE": (4, "7g", 7), "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1": (7, "1g+me", 1),
          "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2": (9, "1g.2x", 1)}


def a100_80gb(mig: bool = True, layout=("3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"), index: int = 0) -> FakeGpu:
    g = FakeGpu("A100-80GB", "NVIDIA A100-SXM4-80GB", f"GPU-5a2b6c1d-0000-4000-8000-00000000000{index}", 81920,
                mig_mode=[1, 1] if mig else [0, 0])
    if mig:
        mem = {p.name: int(p.memory_gib * 1024) for p in GPUS["A100-80GB"].profiles}
        for k, prof in enumerate(layout):
            g.migs.append(FakeMig(prof, gi_id=[2, 3, 9, 10, 11, 12, 13][k], ci_id=0,
                                  uuid=f"MIG-0e1f2a3b-4c5d-5e6f-8a9b-{index:04d}0000{k:04d}", memory_total_mib=mem[prof],
                                  memory_used_mib=100 * (k + 1)))
    return g


def h100_80gb(mig: bool = False) -> FakeGpu:
    g = FakeGpu("H100-80GB", "NVIDIA H100 80GB HBM3", "GPU-9f8e7d6c-0000-4000-8000-000000000001", 81559,
                mig_mode=[1, 1] if mig else [0, 0], power_mw=350_000, gpm=True, gpm_sm_util=63.5)
    if mig:
        g.migs.append(FakeMig("1g.10gb", 9, 0, "MIG-aaaabbbb-cccc-5ddd-8eee-ffff00000001", 9984))
    return g


def make_module(gpus: list[FakeGpu], clock=None, init_error: type[NVMLError] | None = None,
                driver: str = "550.54.15", cuda: int = 12040) -> types.ModuleType:
    """The fake module. ``clock()`` (seconds) drives the energy counter."""
    m = types.ModuleType("pynvml")
    state = {"t": 0.0}
    clock = clock or (lambda: state["t"])
    m._state, m._gpus, m._calls = state, gpus, []
    m.NVMLError = NVMLError
    m.NVMLError_NotSupported = NVMLError_NotSupported
    m.NVMLError_InvalidArgument = NVMLError_InvalidArgument
    m.NVMLError_NotFound = NVMLError_NotFound
    m.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    for k, (v, _, _) in _CONST.items():
        setattr(m, k, v)
    m.NVML_DEVICE_MIG_ENABLE, m.NVML_DEVICE_MIG_DISABLE = 1, 0
    m.NVML_TEMPERATURE_GPU, m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM = 0, 1, 2
    m.NVML_GPM_METRIC_GRAPHICS_UTIL, m.NVML_GPM_METRIC_SM_UTIL = 1, 2
    m.NVML_GPM_METRICS_GET_VERSION = 1
    m.c_nvmlGpmMetricsGet_t = c_nvmlGpmMetricsGet_t

    def log(name):
        m._calls.append(name)

    def nvmlInit():
        log("nvmlInit")
        if init_error is not None:
            raise init_error()

    def nvmlShutdown():
        log("nvmlShutdown")

    m.nvmlInit, m.nvmlShutdown = nvmlInit, nvmlShutdown
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
    m.nvmlDeviceGetName = lambda h: (f"{h.gpu.name} MIG {h.mig.profile}" if h.mig else h.gpu.name)
    m.nvmlDeviceGetUUID = lambda h: h.mig.uuid if h.mig else h.gpu.uuid

    def mig_mode(h):
        if h.mig is not None or h.gpu.model not in GPUS:
            raise NVMLError_NotSupported()
        return list(h.gpu.mig_mode)

    m.nvmlDeviceGetMigMode = mig_mode

    def profile_info(h, const, version=2):
        if h.gpu.model not in GPUS:
            raise NVMLError_NotSupported()
        code = {v: (tag, c) for _, (v, tag, c) in _CONST.items()}.get(const)
        if code is None:
            raise NVMLError_InvalidArgument()
        tag, compute = code
        model = GPUS[h.gpu.model]
        cands = [p for p in model.profiles if p.compute == compute]
        if tag == "1g+me":
            cands = [p for p in cands if p.name.endswith("+me")]
        elif tag == "1g.2x":
            cands = [p for p in cands if p.size == 2 and not p.name.endswith("+me")]
        else:
            cands = [p for p in cands if not p.name.endswith("+me") and (compute != 1 or p.size == 1)]
        if not cands:
            raise NVMLError_NotSupported()
        p = cands[0]
        return _ProfileInfo(p.id, p.compute, p.max_count, p.sms, int(p.memory_gib * 1024), f"MIG {p.name}".encode())

    m.nvmlDeviceGetGpuInstanceProfileInfo = profile_info
    m.nvmlDeviceGetMaxMigDeviceCount = lambda h: 7 if h.gpu.mig_mode[0] and h.gpu.model in GPUS else 0

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
        if h.mig:
            t, u = h.mig.memory_total_mib, h.mig.memory_used_mib
        else:
            t, u = h.gpu.memory_total_mib, h.gpu.memory_used_mib
        return _Mem(t * 2**20, u * 2**20, (t - u) * 2**20)

    m.nvmlDeviceGetMemoryInfo = mem

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
        if not board_only(h).gpm:
            raise NVMLError_NotSupported()
        s.update(t=clock(), gpu=h.gpu, gi=None)
        return s

    def gpm_mig_get(h, gi, s):
        g = board_only(h)
        if not g.gpm or not any(mg.gi_id == gi for mg in g.migs):
            raise NVMLError_NotSupported()
        s.update(t=clock(), gpu=g, gi=gi)
        return s

    def metrics_get(mg):
        g = mg.sample2["gpu"]
        for k in range(mg.numMetrics):
            if mg.metrics[k].metricId != m.NVML_GPM_METRIC_SM_UTIL:
                raise NVMLError_NotSupported()
            mg.metrics[k].value = g.gpm_sm_util
        return mg

    m.nvmlGpmSampleGet, m.nvmlGpmMigSampleGet, m.nvmlGpmMetricsGet = gpm_get, gpm_mig_get, metrics_get
    m.nvmlGpmSampleFree = lambda s: None
    return m
