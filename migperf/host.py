"""Host contention: what else used the cell's CPU cores (and GPU) while it measured.

MIG isolates compute slices and memory, not the host: a cell whose input pipeline, kernel
launches or Python loop shares cores with other work is slowed by it, and a partitioned-vs-whole
ratio measured on a loaded host says more about the host than about MIG (a loaded 2-core host
gave a 7x1g-analogue ratio of 34.5). Each cell therefore records, over its measured window:

* ``other_cores``: CPU time used on the cell's allowed cores by processes outside its concurrent
  group (per-CPU busy time from ``/proc/stat`` minus the group's own CPU time from
  ``/proc/<pid>/stat``), in cores;
* ``steal_pct``: time the hypervisor gave the cell's cores to other guests (``/proc/stat`` steal);
* ``load1`` at start and end (``os.getloadavg``, for the record);
* ``gpu_processes``: compute processes NVML lists on the cell's device that are not the group's.

The cell is marked ``contended`` with the reasons when any exceeds the spec's ``contention``
thresholds (:mod:`migperf.config`). Linux only; elsewhere the fields say "unavailable".
"""

from __future__ import annotations

import os
import time

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def read_proc_stat(path: str = "/proc/stat") -> dict[int, tuple[int, int, int]]:
    """``{cpu index: (busy jiffies, total jiffies, steal jiffies)}`` from ``/proc/stat``."""
    out = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            parts = line.split()
            v = [int(x) for x in parts[1:]]
            v += [0] * (8 - len(v))
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            total = user + nice + system + idle + iowait + irq + softirq + steal  # guest is inside user
            out[int(parts[0][3:])] = (total - idle - iowait - steal, total, steal)
    return out


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads), seconds; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


class ContentionMonitor:
    """Snapshot at :meth:`start`, compare at :meth:`stop` (``pids``: the cell's concurrent group,
    itself included, whose CPU time is not counted as contention)."""

    def __init__(self, cpus=None, pids=(), thresholds: dict | None = None, stat_path: str = "/proc/stat",
                 gpu_processes=None, clock=time.monotonic):
        self.cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        self.pids = list(pids) or [os.getpid()]
        self.th = {"max_other_cores": 0.10, "max_steal_pct": 2.0, "gpu_processes": True, **(thresholds or {})}
        self.stat_path, self.gpu_processes, self.clock = stat_path, gpu_processes, clock
        self.s0 = None

    def _snap(self):
        try:
            stat = read_proc_stat(self.stat_path)
        except OSError:
            stat = None
        return {"t": self.clock(), "stat": stat, "pids": {p: proc_cpu_s(p) for p in self.pids},
                "load": os.getloadavg() if hasattr(os, "getloadavg") else None}

    def start(self, pids=None) -> None:
        if pids:
            self.pids = list(pids)
        self.s0 = self._snap()

    def stop(self) -> dict:
        s1 = self._snap()
        s0 = self.s0
        out: dict = {"cpus": self.cpus, "group_pids": self.pids, "load1_start": s0["load"][0] if s0["load"] else None,
                     "load1_end": s1["load"][0] if s1["load"] else None, "reasons": []}
        wall = s1["t"] - s0["t"]
        if s0["stat"] is None or s1["stat"] is None or wall <= 0:
            out.update(other_cores=None, steal_pct=None, note="/proc/stat unavailable: contention not measured")
        else:
            cpus = [c for c in self.cpus if c in s0["stat"] and c in s1["stat"]]
            busy = sum(s1["stat"][c][0] - s0["stat"][c][0] for c in cpus) / CLK_TCK
            total = sum(s1["stat"][c][1] - s0["stat"][c][1] for c in cpus)
            steal = sum(s1["stat"][c][2] - s0["stat"][c][2] for c in cpus)
            own = 0.0
            for p in self.pids:
                a, b = s0["pids"].get(p), s1["pids"].get(p)
                if a is not None and b is not None:
                    own += b - a
            # group processes may also run on other cores (unpinned threads): never below zero
            out["busy_cores"] = busy / wall
            out["group_cores"] = own / wall
            out["other_cores"] = max(0.0, (busy - own) / wall)
            out["steal_pct"] = 100.0 * steal / total if total else 0.0
            cap = self.th["max_other_cores"] * len(cpus)
            if out["other_cores"] > cap:
                out["reasons"].append(f"other processes used {out['other_cores']:.2f} of the cell's {len(cpus)} "
                                      f"core(s) (threshold {cap:.2f})")
            if out["steal_pct"] > self.th["max_steal_pct"]:
                out["reasons"].append(f"CPU steal {out['steal_pct']:.1f} % (threshold {self.th['max_steal_pct']} %)")
        if self.gpu_processes is not None and self.th.get("gpu_processes", True):
            procs = self.gpu_processes()
            if procs is None:
                out["gpu_processes"] = "unavailable (NVML process query not permitted or unsupported)"
            else:
                others = [p for p in procs if p["pid"] not in self.pids]
                out["gpu_processes"] = others
                if others:
                    out["reasons"].append(f"{len(others)} other compute process(es) on the device: "
                                          + ", ".join(str(p["pid"]) for p in others))
        out["contended"] = bool(out["reasons"])
        return out
