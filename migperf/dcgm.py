"""Per-instance activity from NVIDIA DCGM: the paper's key metric (GRACT) on A100/A30, where
NVML utilisation is unsupported under MIG and GPM does not exist.

Two sources, tried in this order by ``dcgm.source: auto`` (a cell field, :mod:`migperf.config`):

1. **dcgm-exporter** (what the original MIGProfiler used): an HTTP scrape of its Prometheus text
   (``/metrics``, port 9400 by default), parsed with ``prometheus_client``'s text parser. Each
   series carries ``gpu`` (NVML index), ``UUID`` (parent GPU; ``uuid`` when the exporter runs with
   ``--use-old-namespace=false``), and, for MIG instances, ``GPU_I_ID`` (the NVML GPU-instance id,
   ``NvmlInstanceId`` in NVIDIA/dcgm-exporter@d5e5f51 internal/pkg/collector/gpu_collector.go) and
   ``GPU_I_PROFILE``. A cell on ``MIG-<uuid>`` selects the series whose parent UUID (or index)
   and ``GPU_I_ID`` equal the instance's NVML parent and GI id; profile names are not used to
   match (exporters have printed ``7g.79gb`` for a ``7g.80gb``, NVIDIA/dcgm-exporter#713).
2. **dcgmi dmon** as a subprocess (argument list): ``dcgmi dmon -e 1001,...,1008 -d <ms> -i
   <gpu>/<gi>`` (the ``gpu/gi`` MIG syntax of dcgmi's entity parser), rows ``GPU-I <entity id>``
   mapped back to (GPU, GI) with ``dcgmi discovery -c`` (``-> I 0/9 | GPU Instance (EntityID: 2)``).

Fields (DCGM profiling "DCP" metrics, ratios 0..1, stored here as percent): 1001 GRACT
(graphics-engine activity), 1002 SMACT, 1003 SMOCC, 1004 TENSO, 1005 DRAMA, 1006-1008 FP64A/
FP32A/FP16A. Board-level fields an exporter attaches to MIG series (power, energy, clocks) are
the parent board's and are never read from here: NVML gives them with the right scope.

When no source answers, :func:`availability` says for each metric which source was tried and why
it failed, so a result never silently lacks GRACT.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from migperf.nvml import GPM_METRICS, Probe

# field id: (dmon short name, exporter metric name, our key)
FIELDS = {1001: ("GRACT", "DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gract"),
          1002: ("SMACT", "DCGM_FI_PROF_SM_ACTIVE", "smact"),
          1003: ("SMOCC", "DCGM_FI_PROF_SM_OCCUPANCY", "smocc"),
          1004: ("TENSO", "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "tensor"),
          1005: ("DRAMA", "DCGM_FI_PROF_DRAM_ACTIVE", "drama"),
          1006: ("FP64A", "DCGM_FI_PROF_PIPE_FP64_ACTIVE", "fp64"),
          1007: ("FP32A", "DCGM_FI_PROF_PIPE_FP32_ACTIVE", "fp32"),
          1008: ("FP16A", "DCGM_FI_PROF_PIPE_FP16_ACTIVE", "fp16")}
KEYS = tuple(k for _, _, k in FIELDS.values())
BY_EXPORTER = {name: key for _, name, key in FIELDS.values()}
BY_SHORT = {short: key for short, _, key in FIELDS.values()}


class DcgmUnavailable(RuntimeError):
    """No DCGM source: the message says what was tried and why it failed."""


@dataclass
class Target:
    """The entity a cell's activity is read for: a parent GPU (UUID and NVML index) and, on MIG,
    the NVML GPU-instance id."""
    gpu_uuid: str | None
    gpu_index: int | None
    gi_id: int | None
    mig_uuid: str | None = None


# ---- dcgm-exporter -----------------------------------------------------------------------------
def parse_exporter(text: str) -> list[dict]:
    """Prometheus text → ``[{key, gpu, uuid, gi_id, profile, value}]`` for the DCP fields only."""
    from prometheus_client.parser import text_string_to_metric_families

    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = BY_EXPORTER.get(s.name)
            if key is None:
                continue
            lb = s.labels
            gi = lb.get("GPU_I_ID")
            out.append({"key": key, "gpu": int(lb["gpu"]) if lb.get("gpu", "").isdigit() else None,
                        "uuid": lb.get("UUID") or lb.get("uuid") or lb.get("gpu_uuid"),
                        "gi_id": int(gi) if gi not in (None, "") else None,
                        "profile": lb.get("GPU_I_PROFILE") or None, "value": float(s.value)})
    return out


def select(samples: list[dict], t: Target) -> dict[str, float]:
    """Values for ``t``: parent matched by UUID when the series has one, else by index; MIG
    series by ``GPU_I_ID``; a whole GPU by the series without one. Returns ``{dcgm_<key>_pct}``."""
    out = {}
    for s in samples:
        same_gpu = (s["uuid"] == t.gpu_uuid) if (s["uuid"] and t.gpu_uuid) else (s["gpu"] == t.gpu_index)
        if same_gpu and s["gi_id"] == t.gi_id:
            out[f"dcgm_{s['key']}_pct"] = 100.0 * s["value"]
    return out


class ExporterSource:
    """Scrapes ``url`` at most every ``interval_s`` (timeout ``timeout_s``)."""

    name = "dcgm-exporter"

    def __init__(self, url: str, target: Target, interval_s: float = 1.0, timeout_s: float = 2.0,
                 fetch=None, clock=time.perf_counter):
        self.url, self.target, self.interval_s, self.timeout_s, self.clock = url, target, interval_s, timeout_s, clock
        self.fetch = fetch or self._fetch
        self.last_t = None
        self.failures: dict[str, str] = {}

    def _fetch(self) -> str:
        with urllib.request.urlopen(self.url, timeout=self.timeout_s) as r:  # noqa: S310 (a user-named URL)
            return r.read().decode()

    def scrape(self) -> dict[str, float]:
        try:
            text = self.fetch()
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise DcgmUnavailable(f"dcgm-exporter at {self.url} unreachable ({e})") from None
        samples = parse_exporter(text)
        vals = select(samples, self.target)
        if not vals:
            gis = sorted({s["gi_id"] for s in samples if s["gi_id"] is not None})
            where = f"GPU instance {self.target.gi_id}" if self.target.gi_id is not None else "the whole GPU"
            raise DcgmUnavailable(
                f"dcgm-exporter at {self.url} has no DCP series for {where} of GPU {self.target.gpu_uuid} "
                f"(series for GPU_I_ID {gis or 'none'}; an exporter started before the MIG layout must be "
                "restarted, and DCP fields must be enabled in its counters CSV)")
        for k in KEYS:
            if f"dcgm_{k}_pct" not in vals:
                self.failures[f"dcgm_{k}_pct"] = f"not exported by {self.url} (add {FIELDS_BY_KEY[k]} to its counters CSV)"
        return vals

    def start(self) -> None:
        self.scrape()
        self.last_t = self.clock()

    def read(self) -> dict | None:
        now = self.clock()
        if self.last_t is not None and now - self.last_t < self.interval_s:
            return None
        self.last_t = now
        return self.scrape()

    def stop(self) -> None:
        pass


FIELDS_BY_KEY = {k: name for _, name, k in FIELDS.values()}


# ---- dcgmi ---------------------------------------------------------------------------------------
_DISC = re.compile(r"^\|\s*->\s*I\s+(\d+)/(\d+)\s*\|\s*GPU Instance \(EntityID:\s*(\d+)\)")


def parse_discovery(text: str) -> dict[tuple[int, int], int]:
    """``dcgmi discovery -c`` → ``{(gpu index, NVML GI id): DCGM GPU-I entity id}``."""
    return {(int(m[1]), int(m[2])): int(m[3]) for line in text.splitlines() if (m := _DISC.match(line.strip()))}


def parse_dmon(lines) -> list[tuple[str, int, dict[str, float | None]]]:
    """``dcgmi dmon`` output → ``[(entity group, entity id, {key: value or None for N/A})]``."""
    return list(iter_dmon(lines))


def iter_dmon(lines):
    """Rows of ``dcgmi dmon`` output as they come (lines may be a live pipe). The header
    (``#Entity GRACT SMACT ...``, repeated every 14 rows) gives the column order; rows are
    ``GPU 0 ...``, ``GPU-I 2 ...``, ``GPU-CI 5 ...`` (NVIDIA/DCGM dcgmi/DeviceMonitor.cpp)."""
    cols: list[str] = []
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "#Entity":
            cols = parts[1:]
            continue
        if parts[0] in ("ID",) or parts[0].startswith("#") or not cols:
            continue
        if parts[0] not in ("GPU", "GPU-I", "GPU-CI") or len(parts) < 2 or not parts[1].isdigit():
            continue
        vals = {}
        for c, v in zip(cols, parts[2:]):
            if c in BY_SHORT:
                try:
                    vals[BY_SHORT[c]] = float(v)
                except ValueError:
                    vals[BY_SHORT[c]] = None  # "N/A": a blank value
        yield parts[0], int(parts[1]), vals


class DmonSource:
    """``dcgmi dmon`` for one entity, read line by line in a thread."""

    name = "dcgmi dmon"

    def __init__(self, target: Target, dcgmi: str = "dcgmi", delay_ms: int = 100, run=subprocess.run,
                 popen=subprocess.Popen):
        self.target, self.dcgmi, self.delay_ms, self.run, self.popen = target, dcgmi, delay_ms, run, popen
        self.proc = None
        self.thread = None
        self.buf: list[dict] = []
        self.lock = threading.Lock()
        self.entity = None
        self.failures: dict[str, str] = {}

    def argv(self) -> list[str]:
        ids = ",".join(str(f) for f in FIELDS)
        ent = (f"{self.target.gpu_index}/{self.target.gi_id}" if self.target.gi_id is not None
               else str(self.target.gpu_index))
        return [self.dcgmi, "dmon", "-e", ids, "-d", str(int(self.delay_ms)), "-i", ent]

    def start(self) -> None:
        exe = shutil.which(self.dcgmi)
        if exe is None:
            raise DcgmUnavailable(f"{self.dcgmi!r} not on PATH (DCGM not installed)")
        if self.target.gpu_index is None:
            raise DcgmUnavailable("the cell's GPU index is unknown (NVML did not report it)")
        if self.target.gi_id is not None:
            p = self.run([exe, "discovery", "-c"], capture_output=True, text=True, timeout=20)
            if p.returncode != 0:
                raise DcgmUnavailable(f"dcgmi discovery -c failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[:200]}")
            mapping = parse_discovery(p.stdout)
            key = (self.target.gpu_index, self.target.gi_id)
            if key not in mapping:
                raise DcgmUnavailable(f"dcgmi discovery -c lists no GPU instance {key[0]}/{key[1]} "
                                      f"(it lists {sorted(mapping)}); is the host engine's view current?")
            self.entity = ("GPU-I", mapping[key])
        else:
            self.entity = ("GPU", self.target.gpu_index)
        self.proc = self.popen([exe, *self.argv()[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.thread = threading.Thread(target=self._pump, name="migperf-dmon", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for grp, eid, vals in iter_dmon(self.proc.stdout):
            if (grp, eid) != self.entity:
                continue
            good = {f"dcgm_{k}_pct": 100.0 * v for k, v in vals.items() if v is not None}
            for k, v in vals.items():
                if v is None:
                    self.failures[f"dcgm_{k}_pct"] = "dcgmi dmon printed N/A (field blank for this entity)"
            with self.lock:
                self.buf.append(good)

    def read(self) -> dict | None:
        with self.lock:
            if not self.buf:
                return None
            rows, self.buf = self.buf, []
        keys = {k for r in rows for k in r}  # mean of the rows dmon printed since the last tick
        return {k: sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in keys}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.thread is not None:
            self.thread.join(timeout=5)


# ---- the probe and the availability report -------------------------------------------------------
def dcgm_probe(cfg: dict, target: Target, clock=time.perf_counter) -> tuple[Probe | None, list[str]]:
    """A probe for the first source that answers (``cfg``: the cell's ``dcgm`` section), or
    ``(None, reasons)`` naming every source tried and why it failed."""
    mode = cfg.get("source", "auto")
    if mode == "off":
        return None, ["DCGM disabled (dcgm.source: off)"]
    tried = []
    cands = []
    if mode in ("auto", "exporter"):
        cands.append(ExporterSource(cfg.get("url", "http://localhost:9400/metrics"), target,
                                    cfg.get("interval_s", 1.0), clock=clock))
    if mode in ("auto", "dmon"):
        cands.append(DmonSource(target, cfg.get("dcgmi", "dcgmi"), int(1000 * cfg.get("interval_s", 1.0))))
    for src in cands:
        try:
            src.start()
        except DcgmUnavailable as e:
            tried.append(str(e))
            continue
        scope = "mig-instance" if target.gi_id is not None else "device"
        return Probe("dcgm", src.read, scope, "%", f"DCGM via {src.name}", on_stop=src.stop,
                     unsupported=lambda src=src: dict(src.failures)), tried
    return None, tried


def availability(metrics: dict, unsupported: dict, notes: dict, mig: bool) -> dict[str, dict]:
    """For each activity metric (GRACT, SMACT, SMOCC, DRAMA, TENSOR, FP16/32/64): where it came
    from, or why it is missing. ``metrics``/``unsupported``/``notes``: a sampler summary."""
    out = {}
    for key in KEYS:
        d, g = f"dcgm_{key}_pct", f"gpm_{key}_pct"
        if d in metrics:
            out[key] = {"source": metrics[d].get("note", "DCGM"), "metric": d, "scope": metrics[d]["scope"]}
        elif g in metrics:
            out[key] = {"source": "NVML GPM", "metric": g, "scope": metrics[g]["scope"]}
        else:
            why = []
            if d in unsupported:
                why.append(unsupported[d])
            elif notes.get("dcgm"):
                why.append("DCGM: " + "; ".join(notes["dcgm"]))
            if key in GPM_METRICS and g in unsupported:
                why.append(unsupported[g])
            elif notes.get("gpm"):
                why.append("GPM: " + notes["gpm"])
            if not mig and key == "gract" and "gpu_util_pct" in metrics:
                why.append("whole GPU: nvmlDeviceGetUtilizationRates (gpu_util_pct) is the nearest NVML metric")
            out[key] = {"missing": "; ".join(why) or "no source configured"}
    return out
