"""NVML layer (nvidia-ml-py, imported as ``pynvml``): device/MIG discovery for ``migperf info``
and the background metric sampler used by every benchmark cell.

All NVML access goes through a module object ``nv`` (the real ``pynvml`` or the fake in
:mod:`migperf.fakes`), so every path here is unit-tested without a GPU.

Scope of each metric under MIG (NVML reference; research note §11): memory info works on a MIG
device handle (per instance); power, energy, temperature and clocks exist only for the parent
board (reported with ``scope: "whole-board"``); utilisation rates are not supported on
MIG-enabled GPUs (recorded as unsupported, never as 0); per-instance activity comes from GPM
(Hopper+) via ``nvmlGpmMigSampleGet`` when the driver offers it, or from DCGM
(:mod:`migperf.dcgm`, A100/A30 and newer) when an exporter or ``dcgmi`` is reachable.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def load_nvml():
    """``(pynvml, None)`` after ``nvmlInit()``, or ``(None, reason)`` when there is no driver."""
    try:
        import pynvml as nv  # noqa: PLC0415  (sys.modules lookup: tests install a fake)
    except ImportError as e:
        return None, f"nvidia-ml-py is not installed ({e})"
    try:
        nv.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML unavailable: {e}"
    return nv, None


def _try(fn: Callable, *a, default=None):
    try:
        return fn(*a)
    except Exception:
        return default


PROFILE_CONSTS = ("NVML_GPU_INSTANCE_PROFILE_1_SLICE", "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1",
                  "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2", "NVML_GPU_INSTANCE_PROFILE_2_SLICE",
                  "NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1",  # A30's 2g.12gb+me
                  "NVML_GPU_INSTANCE_PROFILE_3_SLICE", "NVML_GPU_INSTANCE_PROFILE_4_SLICE",
                  "NVML_GPU_INSTANCE_PROFILE_6_SLICE", "NVML_GPU_INSTANCE_PROFILE_7_SLICE",
                  "NVML_GPU_INSTANCE_PROFILE_8_SLICE")


def supported_profiles(nv, h) -> list[dict]:
    out = []
    for const in PROFILE_CONSTS:
        if not hasattr(nv, const):
            continue
        info = _try(nv.nvmlDeviceGetGpuInstanceProfileInfo, h, getattr(nv, const))
        if info is None:
            continue
        out.append({"name": _s(info.name).replace("MIG ", ""), "id": int(info.id),
                    "slices": int(info.sliceCount), "instances": int(info.instanceCount),
                    "memory_mib": int(info.memorySizeMB), "sms": int(info.multiprocessorCount)})
    return out


def mig_devices(nv, h) -> list[dict]:
    out = []
    n = _try(nv.nvmlDeviceGetMaxMigDeviceCount, h, default=0) or 0
    for i in range(n):
        m = _try(nv.nvmlDeviceGetMigDeviceHandleByIndex, h, i)
        if m is None:  # unused slot
            continue
        mem = _try(nv.nvmlDeviceGetMemoryInfo, m)
        out.append({"index": i, "uuid": _s(nv.nvmlDeviceGetUUID(m)), "name": _s(nv.nvmlDeviceGetName(m)),
                    "gi_id": int(nv.nvmlDeviceGetGpuInstanceId(m)),
                    "ci_id": int(nv.nvmlDeviceGetComputeInstanceId(m)),
                    "memory_total_mib": int(mem.total // 2**20) if mem is not None else None})
    return out


def discover(nv) -> dict:
    """Everything ``migperf info`` prints, as a dict."""
    cuda = _try(nv.nvmlSystemGetCudaDriverVersion)
    res = {"driver": _try(lambda: _s(nv.nvmlSystemGetDriverVersion())),
           "cuda_driver": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None, "gpus": []}
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        mode = _try(nv.nvmlDeviceGetMigMode, h)
        mem = _try(nv.nvmlDeviceGetMemoryInfo, h)
        g = {"index": i, "name": _s(nv.nvmlDeviceGetName(h)), "uuid": _s(nv.nvmlDeviceGetUUID(h)),
             "memory_total_mib": int(mem.total // 2**20) if mem is not None else None,
             "mig_supported": mode is not None,
             "mig_current": bool(mode[0]) if mode else False, "mig_pending": bool(mode[1]) if mode else False,
             "profiles": supported_profiles(nv, h) if mode else [],
             "mig_devices": mig_devices(nv, h) if mode and mode[0] else []}
        res["gpus"].append(g)
    return res


def format_info(d: dict) -> str:
    lines = [f"driver {d['driver']}  CUDA (driver) {d['cuda_driver']}  GPUs: {len(d['gpus'])}"]
    for g in d["gpus"]:
        mig = ("not supported" if not g["mig_supported"] else
               f"current={'Enabled' if g['mig_current'] else 'Disabled'} "
               f"pending={'Enabled' if g['mig_pending'] else 'Disabled'}")
        lines += ["", f"GPU {g['index']}: {g['name']}  {g['uuid']}  {g['memory_total_mib']} MiB  MIG {mig}"]
        if g["profiles"]:
            lines += ["  supported GPU-instance profiles:", "  | profile | ID | slices | instances | memory MiB | SMs |",
                      "  |---|---|---|---|---|---|"]
            lines += [f"  | {p['name']} | {p['id']} | {p['slices']} | {p['instances']} | {p['memory_mib']} | {p['sms']} |"
                      for p in g["profiles"]]
        if g["mig_devices"]:
            lines += ["  MIG devices (GPU instance / compute instance):", "  | # | name | GI | CI | memory MiB | UUID |",
                      "  |---|---|---|---|---|---|"]
            lines += [f"  | {m['index']} | {m['name']} | {m['gi_id']} | {m['ci_id']} | {m['memory_total_mib']} | {m['uuid']} |"
                      for m in g["mig_devices"]]
        elif g["mig_current"]:
            lines.append("  MIG enabled, but no GPU/compute instances exist (see `migperf plan`)")
    return "\n".join(lines)


# ---- sampling --------------------------------------------------------------------------------
@dataclass
class Probe:
    """One source of samples. ``fn`` returns a number, ``None`` (no sample this tick) or a dict
    ``{metric: number}`` (a source that reads several metrics at once, e.g. GPM or DCGM).
    ``on_start`` runs when the sampler starts (a first GPM sample, a dmon subprocess);
    ``on_stop`` when it stops; ``unsupported`` returns per-metric failures ``{metric: why}``."""
    name: str
    fn: Callable[[], object]
    scope: str                 # "mig-instance" | "whole-board" | "device" | "process"
    unit: str
    note: str = ""
    on_start: Callable[[], None] | None = None
    on_stop: Callable[[], None] | None = None
    unsupported: Callable[[], dict] | None = None


@dataclass
class Sampler:
    """Calls every probe each ``interval_s`` in a daemon thread between :meth:`start` and
    :meth:`stop`. A probe that raises is dropped and recorded in ``unsupported`` with the error,
    so a missing counter is reported as missing, never as zero. ``energy`` (a monotonically
    increasing counter in mJ) is read at start and stop for an exact delta."""

    probes: list[Probe]
    interval_s: float = 0.1
    energy: Callable[[], float] | None = None
    energy_scope: str = "whole-board"
    notes: dict = field(default_factory=dict)
    clock: Callable[[], float] = time.perf_counter

    def __post_init__(self):
        self.samples: dict[str, list[tuple[float, float]]] = {p.name: [] for p in self.probes}
        self.meta: dict[str, Probe] = {p.name: p for p in self.probes}
        self.unsupported: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._e0 = self._e1 = None
        self.t0 = self.t1 = None
        self.n_ticks = 0

    def tick(self) -> None:
        t = self.clock()
        for p in list(self.probes):
            try:
                v = p.fn()
            except Exception as e:  # NVMLError_NotSupported etc.
                self.unsupported[p.name] = f"{type(e).__name__}: {e}"
                self.probes.remove(p)
                continue
            if v is None:
                continue
            if isinstance(v, dict):
                for k, x in v.items():
                    self.samples.setdefault(k, []).append((t, float(x)))
                    self.meta[k] = p
            else:
                self.samples[p.name].append((t, float(v)))
        self.n_ticks += 1

    def _loop(self):
        while not self._stop.is_set():
            self.tick()
            self._stop.wait(self.interval_s)

    def start(self) -> Sampler:
        self.t0 = self.clock()
        for p in list(self.probes):
            if p.on_start is None:
                continue
            try:
                p.on_start()
            except Exception as e:  # the first GPM sample, a dmon that will not start, ...
                self.unsupported[p.name] = f"{type(e).__name__}: {e}"
                self.probes.remove(p)
        if self.energy is not None:
            try:
                self._e0, self._w0 = float(self.energy()), time.time()
            except Exception as e:
                self.unsupported["energy_j"] = f"{type(e).__name__}: {e}"
                self.energy = None
        if self.probes and self.interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name="migperf-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.t1 = self.clock()
        for p in self.probes:
            if p.on_stop is not None:
                try:
                    p.on_stop()
                except Exception as e:
                    self.unsupported[p.name] = f"{type(e).__name__}: {e}"
        if self.energy is not None:
            try:
                self._e1, self._w1 = float(self.energy()), time.time()
            except Exception as e:
                self.unsupported["energy_j"] = f"{type(e).__name__}: {e}"
        return self.summary()

    def summary(self) -> dict:
        out: dict = {"interval_s": self.interval_s, "ticks": self.n_ticks, "metrics": {},
                     "unsupported": dict(self.unsupported), "notes": dict(self.notes)}
        for p in self.meta.values():
            if p.unsupported is not None:
                for k, why in p.unsupported().items():
                    if not self.samples.get(k):
                        out["unsupported"][k] = why
        for name, s in self.samples.items():
            if not s:
                continue
            vals = [v for _, v in s]
            p = self.meta.get(name)
            out["metrics"][name] = {"mean": sum(vals) / len(vals), "min": min(vals), "max": max(vals),
                                    "n": len(vals), "scope": p.scope if p else "unknown",
                                    "unit": p.unit if p else ""}
            if p and p.note:
                out["metrics"][name]["note"] = p.note
        if self._e0 is not None and self._e1 is not None:
            out["metrics"]["energy_j"] = {"value": (self._e1 - self._e0) / 1000.0, "scope": self.energy_scope,
                                          "unit": "J", "method": "NVML total-energy counter delta",
                                          "counter_mj": [self._e0, self._e1], "wall": [self._w0, self._w1]}
        elif "power_w" in self.samples and len(self.samples["power_w"]) >= 2:
            s = self.samples["power_w"]
            e = sum((t1 - t0) * (v0 + v1) / 2 for (t0, v0), (t1, v1) in zip(s, s[1:]))
            out["metrics"]["energy_j"] = {"value": e, "scope": self.energy_scope, "unit": "J",
                                          "method": "trapezoid over power samples (counter unsupported)"}
        return out

    def series(self) -> dict:
        return {k: [[round(t - (self.t0 or 0), 4), v] for t, v in s] for k, s in self.samples.items()}


# ---- targets ---------------------------------------------------------------------------------
def _cpu_probes() -> list[Probe]:
    """CPU backend: this process's CPU utilisation (cores busy) and resident memory."""
    last = {"t": time.perf_counter(), "c": time.process_time()}
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def cpu_util():
        t, c = time.perf_counter(), time.process_time()
        dt = t - last["t"]
        u = (c - last["c"]) / dt * 100.0 if dt > 0 else 0.0
        last["t"], last["c"] = t, c
        return u

    statm = os.open("/proc/self/statm", os.O_RDONLY) if sys.platform.startswith("linux") else None

    def rss_mib():
        if statm is not None:  # one pread on a kept-open fd: ~2 µs instead of ~30 µs for open/read
            return int(os.pread(statm, 128, 0).split()[1]) * page / 2**20
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak, where /proc is absent

    return [Probe("process_cpu_util_pct", cpu_util, "process", "% of one core"),
            Probe("process_rss_mib", rss_mib, "process", "MiB")]


def cpu_sampler(interval_s: float) -> Sampler:
    return Sampler(_cpu_probes(), interval_s, notes={"backend": "cpu: no NVML; process CPU and RSS only"})


# GPM metrics collected on Hopper+ (nvidia-ml-py NVML_GPM_METRIC_* names) and the DCGM field
# each corresponds to (migperf.dcgm.FIELDS): graphics-engine activity is the GRACT analogue.
GPM_METRICS = {"gract": "GRAPHICS_UTIL", "smact": "SM_UTIL", "smocc": "SM_OCCUPANCY", "tensor": "ANY_TENSOR_UTIL",
               "drama": "DRAM_BW_UTIL", "fp64": "FP64_UTIL", "fp32": "FP32_UTIL", "fp16": "FP16_UTIL"}
GPM_MIN_INTERVAL_S = 0.1   # NVML reference, nvmlGpmMetricsGet: samples must be more than 100 ms apart


class GpmReader:
    """GPM between consecutive samples, per GPU instance on MIG (``nvmlGpmMigSampleGet``) or for
    the whole device. The first sample is taken in :meth:`start` (a failure there disables GPM
    for the cell and says why, it never fails the cell); :meth:`read` returns ``None`` until
    ``min_interval_s`` has passed since the previous sample, so every interval NVML sees is
    > 100 ms whatever the sampler's interval; each metric's own return code is checked, and a
    failed metric is left out of that interval (and reported), never entered as 0."""

    def __init__(self, nv, parent, gi_id: int | None, metrics: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.perf_counter, min_interval_s: float = GPM_MIN_INTERVAL_S):
        self.nv, self.parent, self.gi_id, self.clock, self.min_interval_s = nv, parent, gi_id, clock, min_interval_s
        self.metrics = {k: getattr(nv, f"NVML_GPM_METRIC_{v}") for k, v in (metrics or GPM_METRICS).items()
                        if hasattr(nv, f"NVML_GPM_METRIC_{v}")}
        self.prev = None
        self.prev_t = None
        self.failures: dict[str, str] = {}

    def _take(self):
        s = self.nv.nvmlGpmSampleAlloc()
        try:
            if self.gi_id is None:
                self.nv.nvmlGpmSampleGet(self.parent, s)
            else:
                self.nv.nvmlGpmMigSampleGet(self.parent, self.gi_id, s)
        except Exception:
            _try(self.nv.nvmlGpmSampleFree, s)
            raise
        return s

    def start(self) -> None:
        self.prev, self.prev_t = self._take(), self.clock()

    def read(self) -> dict | None:
        now = self.clock()
        if self.prev is None or now - self.prev_t < self.min_interval_s:
            return None
        cur = self._take()
        names = list(self.metrics)
        mg = self.nv.c_nvmlGpmMetricsGet_t()
        mg.version = self.nv.NVML_GPM_METRICS_GET_VERSION
        mg.numMetrics = len(names)
        mg.sample1, mg.sample2 = self.prev, cur
        for k, n in enumerate(names):
            mg.metrics[k].metricId = self.metrics[n]
        try:
            self.nv.nvmlGpmMetricsGet(mg)
        finally:
            _try(self.nv.nvmlGpmSampleFree, self.prev)
            self.prev, self.prev_t = cur, now
        out = {}
        for k, n in enumerate(names):
            rc = int(mg.metrics[k].nvmlReturn)
            if rc != 0:
                self.failures[f"gpm_{n}_pct"] = f"nvmlGpmMetricsGet returned {rc} for {GPM_METRICS.get(n, n)}"
                continue
            out[f"gpm_{n}_pct"] = float(mg.metrics[k].value)
        return out

    def stop(self) -> None:
        if self.prev is not None:
            _try(self.nv.nvmlGpmSampleFree, self.prev)
            self.prev = None


def gpm_probe(nv, parent, gi_id: int | None, clock=time.perf_counter) -> tuple[Probe | None, str | None]:
    """A probe over :class:`GpmReader`, or ``(None, why)`` where the device has no GPM."""
    try:
        sup = nv.nvmlGpmQueryDeviceSupport(parent)
    except Exception as e:
        return None, f"GPM query failed ({type(e).__name__}: {e})"
    if not sup.isSupportedDevice:
        return None, "GPM not supported on this device (GPM is Hopper and newer; A100/A30 have none)"
    r = GpmReader(nv, parent, gi_id, clock=clock)
    scope = "mig-instance" if gi_id is not None else "device"
    return Probe("gpm", r.read, scope, "%", "NVML GPM" + (f", GPU instance {gi_id}" if gi_id is not None else ""),
                 on_start=r.start, on_stop=r.stop, unsupported=lambda: dict(r.failures)), None


def resolve_handle(nv, device: str):
    """``device`` is ``cuda:N``, ``GPU-<uuid>`` or ``MIG-<uuid>`` → (handle, parent, gi_id)."""
    if device.startswith(("GPU-", "MIG-")):
        h = nv.nvmlDeviceGetHandleByUUID(device)
    else:
        idx = int(device.split(":", 1)[1]) if ":" in device else 0
        h = nv.nvmlDeviceGetHandleByIndex(idx)
    if _try(nv.nvmlDeviceIsMigDeviceHandle, h, default=False):
        return h, nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(h), int(nv.nvmlDeviceGetGpuInstanceId(h))
    return h, h, None


def gpu_sampler(nv, device: str, interval_s: float, extra: list[Probe] = (), clock=time.perf_counter) -> Sampler:
    """NVML probes for ``device`` (+ ``extra``, e.g. the DCGM probe of :mod:`migperf.dcgm`)."""
    h, parent, gi = resolve_handle(nv, device)
    mig = gi is not None
    board = "whole-board" if mig else "device"
    bnote = "MIG: the parent board's value, shared by every instance" if mig else ""
    probes = [
        Probe("memory_used_mib", lambda: nv.nvmlDeviceGetMemoryInfo(h).used / 2**20,
              "mig-instance" if mig else "device", "MiB"),
        Probe("power_w", lambda: nv.nvmlDeviceGetPowerUsage(parent) / 1000.0, board, "W", bnote),
        Probe("temperature_c", lambda: nv.nvmlDeviceGetTemperature(parent, nv.NVML_TEMPERATURE_GPU), board, "C", bnote),
        Probe("sm_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(parent, nv.NVML_CLOCK_SM), board, "MHz", bnote),
        Probe("mem_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(parent, nv.NVML_CLOCK_MEM), board, "MHz", bnote),
    ]
    notes = {"backend": "nvml", "device": device}
    if mig:
        notes["utilization"] = ("nvmlDeviceGetUtilizationRates is not supported on MIG-enabled GPUs; "
                                "per-instance activity comes from GPM (Hopper+) or DCGM (migperf.dcgm)")
        notes["mig_gi_id"] = gi
    else:
        probes.append(Probe("gpu_util_pct", lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu, "device", "%"))
        probes.append(Probe("mem_util_pct", lambda: nv.nvmlDeviceGetUtilizationRates(h).memory, "device", "%"))
    gpm, why = gpm_probe(nv, parent, gi, clock=clock)
    if gpm is not None:
        probes.append(gpm)
    else:
        notes["gpm"] = why
    probes += list(extra)
    s = Sampler(probes, interval_s, energy=lambda: nv.nvmlDeviceGetTotalEnergyConsumption(parent),
                energy_scope=board, notes=notes, clock=clock)
    if mig:
        s.notes["energy"] = "whole-board energy: includes every other instance's work during the cell"
    return s


def device_environment(nv, device: str) -> dict:
    """Driver, GPU name, MIG profile and GI/CI ids of a device, for the result record."""
    h, parent, gi = resolve_handle(nv, device)
    env = {"driver": _try(lambda: _s(nv.nvmlSystemGetDriverVersion())), "gpu_name": _s(nv.nvmlDeviceGetName(parent)),
           "gpu_uuid": _s(nv.nvmlDeviceGetUUID(parent)), "gpu_index": _try(nv.nvmlDeviceGetIndex, parent),
           "mig": gi is not None,
           "power_limit_w": _try(lambda: nv.nvmlDeviceGetPowerManagementLimit(parent) / 1000.0)}
    if gi is not None:
        name = _s(nv.nvmlDeviceGetName(h))
        env.update({"mig_uuid": _s(nv.nvmlDeviceGetUUID(h)), "mig_name": name,
                    "mig_profile": name.split("MIG ")[-1] if "MIG " in name else name,
                    "gi_id": gi, "ci_id": int(nv.nvmlDeviceGetComputeInstanceId(h))})
    return env


def list_mig_uuids(nv) -> list[str]:
    out = []
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        mode = _try(nv.nvmlDeviceGetMigMode, h)
        if mode and mode[0]:
            out += [m["uuid"] for m in mig_devices(nv, h)]
    return out


def gpu_processes(nv, device: str) -> list[dict] | None:
    """Compute processes NVML sees on ``device`` (a MIG device: that instance only), or ``None``
    when NVML cannot say (MIG process queries need root on some drivers)."""
    try:
        h, _, _ = resolve_handle(nv, device)
        return [{"pid": int(p.pid), "used_mib": (int(p.usedGpuMemory) // 2**20) if p.usedGpuMemory else None}
                for p in nv.nvmlDeviceGetComputeRunningProcesses(h)]
    except Exception:
        return None
