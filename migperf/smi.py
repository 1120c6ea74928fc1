"""``nvidia-smi`` text parsing and the ``apply`` / ``reset`` runner.

Every call is an argument list (never a shell string) to the binary named by
``$MIGPERF_NVIDIA_SMI`` (default ``nvidia-smi``), so tests substitute a fake script. Parsers
accept the human-readable formats NVIDIA documents for ``-L``, ``mig -lgip``, ``mig -lgipp``,
``mig -lgi`` and ``--query-gpu ... --format=csv,noheader``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from migperf.profiles import GpuModel, Placement, gpu_model, plan_commands, reset_commands


class SmiError(RuntimeError):
    pass


def smi_binary() -> str:
    return os.environ.get("MIGPERF_NVIDIA_SMI", "nvidia-smi")


def run_smi(args: list[str], check: bool = True, timeout: float = 60) -> str:
    """Run nvidia-smi with an argument list; returns stdout. ``args[0]`` may be "nvidia-smi"."""
    if args and args[0] == "nvidia-smi":
        args = args[1:]
    exe = smi_binary()
    if shutil.which(exe) is None:
        raise SmiError(f"{exe!r} not found on PATH (no NVIDIA driver here?)")
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise SmiError(f"nvidia-smi {' '.join(args)} failed (exit {p.returncode}): "
                       f"{(p.stderr or p.stdout).strip()}")
    return p.stdout


# ---- parsers ---------------------------------------------------------------------------------
_L_GPU = re.compile(r"^GPU (\d+): (.+?) \(UUID: (GPU-[0-9a-fA-F-]+)\)")
_L_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[0-9a-fA-F-]+(?:/\d+/\d+)?)\)")


def parse_list(text: str) -> list[dict]:
    """``nvidia-smi -L`` → [{index, name, uuid, mig: [{profile, index, uuid}]}]."""
    gpus: list[dict] = []
    for line in text.splitlines():
        if m := _L_GPU.match(line):
            gpus.append({"index": int(m[1]), "name": m[2], "uuid": m[3], "mig": []})
        elif m := _L_MIG.match(line):
            if not gpus:
                raise SmiError(f"MIG line before any GPU line: {line!r}")
            gpus[-1]["mig"].append({"profile": m[1], "index": int(m[2]), "uuid": m[3]})
    return gpus


_LGIP = re.compile(r"^\|\s+(\d+)\s+MIG (\S+)\s+(\d+)\s+(\d+)/(\d+)\s+([\d.]+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\|")


def parse_lgip(text: str) -> list[dict]:
    """``nvidia-smi mig -lgip`` → [{gpu, name, id, free, total, memory_gib, sms}]."""
    out = []
    for line in text.splitlines():
        if m := _LGIP.match(line):
            out.append({"gpu": int(m[1]), "name": m[2], "id": int(m[3]), "free": int(m[4]),
                        "total": int(m[5]), "memory_gib": float(m[6]), "sms": int(m[8])})
    return out


_LGIPP = re.compile(r"^GPU\s+(\d+)\s+Profile ID\s+(\d+)\s+Placements?\s*:\s*\{([\d,]*)\}:(\d+)")


def parse_lgipp(text: str) -> list[dict]:
    """``nvidia-smi mig -lgipp`` → [{gpu, id, starts, size}]."""
    out = []
    for line in text.splitlines():
        if m := _LGIPP.match(line.strip()):
            out.append({"gpu": int(m[1]), "id": int(m[2]),
                        "starts": tuple(int(x) for x in m[3].split(",") if x), "size": int(m[4])})
    return out


_LGI = re.compile(r"^\|\s+(\d+)\s+MIG (\S+)\s+(\d+)\s+(\d+)\s+(\d+):(\d+)\s+\|")


def parse_lgi(text: str) -> list[dict]:
    """``nvidia-smi mig -lgi`` → [{gpu, name, profile_id, gi_id, start, size}]."""
    out = []
    for line in text.splitlines():
        if m := _LGI.match(line):
            out.append({"gpu": int(m[1]), "name": m[2], "profile_id": int(m[3]), "gi_id": int(m[4]),
                        "start": int(m[5]), "size": int(m[6])})
    return out


def parse_mig_mode_csv(text: str) -> list[dict]:
    """``--query-gpu=index,name,mig.mode.current,mig.mode.pending --format=csv,noheader``."""
    out = []
    for n, line in enumerate(text.strip().splitlines()):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4:
            raise SmiError(f"unexpected --query-gpu line {n}: {line!r}")
        out.append({"index": int(parts[0]), "name": parts[1],
                    "current": parts[2] == "Enabled", "pending": parts[3] == "Enabled",
                    "supported": parts[2] != "[N/A]"})
    return out


# ---- apply / reset ---------------------------------------------------------------------------
@dataclass
class GpuState:
    index: int
    name: str
    mig_current: bool
    mig_pending: bool
    instances: list[dict]
    devices: list[dict]


def gpu_state(index: int) -> GpuState:
    modes = {m["index"]: m for m in parse_mig_mode_csv(run_smi(
        ["--query-gpu=index,name,mig.mode.current,mig.mode.pending", "--format=csv,noheader"]))}
    if index not in modes:
        raise SmiError(f"no GPU {index}; GPUs: {sorted(modes)}")
    m = modes[index]
    gis = []
    if m["current"]:
        gis = [g for g in parse_lgi(run_smi(["mig", "-i", str(index), "-lgi"], check=False)) if g["gpu"] == index]
    devs = next((g["mig"] for g in parse_list(run_smi(["-L"])) if g["index"] == index), [])
    return GpuState(index, m["name"], m["current"], m["pending"], gis, devs)


def _preflight(index: int, yes: bool, is_root: bool | None) -> GpuState:
    if not yes:
        raise SmiError("refusing to change MIG configuration without --yes (run `migperf plan` to preview)")
    if is_root is None:
        is_root = os.geteuid() == 0
    if not is_root:
        raise SmiError("creating/destroying MIG instances needs root: rerun as root (e.g. with sudo)")
    st = gpu_state(index)
    if not st.mig_current:
        hint = " (enabled but pending: reset the GPU or reboot)" if st.mig_pending else \
            f" (enable it with: nvidia-smi -i {index} -mig 1, then reset the GPU)"
        raise SmiError(f"MIG mode is not enabled on GPU {index} ({st.name}){hint}")
    return st


def describe_change(before: GpuState, after: GpuState) -> list[str]:
    b = {(g["gi_id"], g["name"], g["start"]) for g in before.instances}
    a = {(g["gi_id"], g["name"], g["start"]) for g in after.instances}
    lines = [f"- removed GI {gi} ({name} at slice {s})" for gi, name, s in sorted(b - a)]
    lines += [f"+ created GI {gi} ({name} at slice {s})" for gi, name, s in sorted(a - b)]
    bu = {d["uuid"] for d in before.devices}
    lines += [f"+ MIG device {d['profile']} {d['uuid']}" for d in after.devices if d["uuid"] not in bu]
    return lines or ["(no change)"]


def apply_layout(index: int, gpu: GpuModel | None, placements_for, yes: bool,
                 is_root: bool | None = None) -> list[str]:
    """Create a layout on GPU ``index``. ``placements_for(gpu_model) -> list[Placement]``."""
    before = _preflight(index, yes, is_root)
    gpu = gpu or gpu_model(before.name)
    if before.instances:
        raise SmiError(f"GPU {index} already has {len(before.instances)} GPU instance(s) "
                       f"({', '.join(g['name'] for g in before.instances)}); run `migperf reset` first")
    placements: list[Placement] = placements_for(gpu)
    for cmd in plan_commands(placements, index):
        out = run_smi(cmd)
        if "Failed" in out or "Unable" in out:  # nvidia-smi prints per-instance failures
            raise SmiError(f"{' '.join(cmd)}: {out.strip()}")
    return describe_change(before, gpu_state(index))


def reset_layout(index: int, yes: bool, is_root: bool | None = None) -> list[str]:
    before = _preflight(index, yes, is_root)
    if not before.instances:
        return [f"(no GPU instances on GPU {index}; nothing to do)"]
    for cmd in reset_commands(index):
        run_smi(cmd)
    return describe_change(before, gpu_state(index))
