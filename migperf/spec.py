"""The ``migperf run`` spec: a YAML file describing the benchmark matrix.

    name: cpu_suite
    seed: 0
    defaults:                      # any cell field below, for every experiment
      warmup_iters: 5
      sample_interval_s: 0.1
      stop: {min_iters: 20, min_time_s: 1, window_iters: 10, windows: 3, tolerance: 0.1, max_time_s: 10}
    experiments:
      - name: cv_inference
        workloads: [resnet50, {model: vit_b_16, image_size: 224}]
        devices: [cuda:0, mig:all, MIG-<uuid>, cpu, cpu:0, cpu:0-1]
        batch_sizes: [1, 8, 64]
        seq_lens: [64]             # NLP workloads only
        modes: [train, inference, {open_loop: {rates: [25, 50], duration_s: 10, p99_bound_ms: 50}}]
        concurrent: false          # true: cells differing only in device run at the same time
        repeats: 1

Cell fields: ``warmup_iters``, ``sample_interval_s``, ``stop`` (see :class:`measure.StopRule`),
``amp``, ``channels_last``, ``optimizer``, ``lr``, ``image_size``, ``num_classes``, ``threads``
(CPU threads; default = cores pinned, else torch's default), ``seq_len``.

Devices: ``cuda:N`` (whole GPU N), ``GPU-<uuid>``, ``MIG-<uuid>``, ``mig:all`` (every MIG device
NVML lists when the run starts), ``cpu`` (no pinning), ``cpu:K`` / ``cpu:K-M`` / ``cpu:K,L``
(process pinned to those cores — the CPU analogue of an instance).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import yaml

from migperf.measure import StopRule
from migperf.workloads import MODELS, is_nlp

CELL_FIELDS = {"warmup_iters": int, "sample_interval_s": (int, float), "stop": dict, "amp": bool,
               "channels_last": bool, "optimizer": str, "lr": (int, float), "image_size": int,
               "num_classes": int, "threads": int, "seq_len": int}
CELL_DEFAULTS = {"warmup_iters": 5, "sample_interval_s": 0.1, "stop": {}, "amp": False, "channels_last": False,
                 "optimizer": None, "lr": None, "image_size": 224, "num_classes": None, "threads": None,
                 "seq_len": 64}
EXP_KEYS = {"name", "workloads", "devices", "batch_sizes", "seq_lens", "modes", "concurrent", "repeats",
            *CELL_FIELDS}
TOP_KEYS = {"name", "seed", "defaults", "experiments", "description"}
OPEN_LOOP_KEYS = {"rates", "duration_s", "p99_bound_ms", "drain_factor"}


class SpecError(ValueError):
    pass


def parse_cpu_device(dev: str) -> list[int] | None:
    """``cpu`` → None (no pinning); ``cpu:0-2`` → [0, 1, 2]; ``cpu:0,3`` → [0, 3]."""
    if dev == "cpu":
        return None
    body = dev.split(":", 1)[1]
    cores: list[int] = []
    for part in body.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            cores += list(range(int(a), int(b) + 1))
        else:
            cores.append(int(part))
    if not cores:
        raise ValueError(f"no cores in {dev!r}")
    return sorted(set(cores))


def device_kind(dev: str) -> str:
    if dev == "cpu" or dev.startswith("cpu:"):
        return "cpu"
    if dev.startswith("MIG-"):
        return "mig"
    if dev.startswith("GPU-") or dev.startswith("cuda"):
        return "gpu"
    if dev == "mig:all":
        return "mig:all"
    raise ValueError(f"unknown device {dev!r}")


def _check_fields(d: dict, where: str, src: str) -> None:
    for k, v in d.items():
        if k not in CELL_FIELDS:
            continue
        if v is not None and not isinstance(v, CELL_FIELDS[k]) or (isinstance(v, bool) and CELL_FIELDS[k] is int):
            raise SpecError(f"{src}: {where}.{k} = {v!r} has the wrong type")
    if "stop" in d:
        try:
            StopRule(**d["stop"])
        except (TypeError, ValueError) as e:
            raise SpecError(f"{src}: {where}.stop: {e}") from None


def _mode(m, where: str, src: str) -> dict:
    if m in ("train", "inference"):
        return {"mode": m}
    if isinstance(m, dict) and list(m) == ["open_loop"] and isinstance(m["open_loop"], dict):
        ol = m["open_loop"]
        bad = set(ol) - OPEN_LOOP_KEYS
        if bad:
            raise SpecError(f"{src}: {where}.open_loop: unknown keys {sorted(bad)}; valid: {sorted(OPEN_LOOP_KEYS)}")
        rates = ol.get("rates")
        if not rates or not all(isinstance(r, (int, float)) and r > 0 for r in rates):
            raise SpecError(f"{src}: {where}.open_loop.rates must be a non-empty list of positive numbers")
        return {"mode": "open_loop", "open_loop": {"rates": [float(r) for r in rates],
                                                   "duration_s": float(ol.get("duration_s", 10)),
                                                   "p99_bound_ms": ol.get("p99_bound_ms"),
                                                   "drain_factor": float(ol.get("drain_factor", 2.0))}}
    raise SpecError(f"{src}: {where} must be 'train', 'inference' or {{open_loop: {{rates: [...]}}}}, got {m!r}")


def load_spec(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: not valid YAML: {e}") from None
    return validate_spec(data, str(path))


def validate_spec(data, src: str = "<spec>") -> dict:
    if not isinstance(data, dict):
        raise SpecError(f"{src}: top level must be a mapping")
    bad = set(data) - TOP_KEYS
    if bad:
        raise SpecError(f"{src}: unknown keys {sorted(bad)}; valid: {sorted(TOP_KEYS)}")
    defaults = data.get("defaults") or {}
    bad = set(defaults) - set(CELL_FIELDS)
    if bad:
        raise SpecError(f"{src}: defaults: unknown keys {sorted(bad)}; valid: {sorted(CELL_FIELDS)}")
    _check_fields(defaults, "defaults", src)
    exps = data.get("experiments")
    if not isinstance(exps, list) or not exps:
        raise SpecError(f"{src}: needs a non-empty 'experiments' list")
    out = {"name": str(data.get("name") or Path(src).stem), "seed": int(data.get("seed", 0)),
           "defaults": defaults, "experiments": []}
    for i, e in enumerate(exps):
        where = f"experiments[{i}]"
        if not isinstance(e, dict):
            raise SpecError(f"{src}: {where} must be a mapping")
        bad = set(e) - EXP_KEYS
        if bad:
            raise SpecError(f"{src}: {where}: unknown keys {sorted(bad)}; valid: {sorted(EXP_KEYS)}")
        _check_fields(e, where, src)
        for key in ("workloads", "devices", "batch_sizes", "modes"):
            if not isinstance(e.get(key), list) or not e[key]:
                raise SpecError(f"{src}: {where}.{key} must be a non-empty list")
        wls = []
        for j, w in enumerate(e["workloads"]):
            w = {"model": w} if isinstance(w, str) else dict(w)
            if w.get("model") not in MODELS:
                raise SpecError(f"{src}: {where}.workloads[{j}]: unknown model {w.get('model')!r}; known: {', '.join(MODELS)}")
            wbad = set(w) - {"model", *CELL_FIELDS}
            if wbad:
                raise SpecError(f"{src}: {where}.workloads[{j}]: unknown keys {sorted(wbad)}")
            _check_fields(w, f"{where}.workloads[{j}]", src)
            wls.append(w)
        for j, d in enumerate(e["devices"]):
            try:
                if device_kind(str(d)) == "cpu":
                    parse_cpu_device(str(d))
            except ValueError as err:
                raise SpecError(f"{src}: {where}.devices[{j}]: {err}") from None
        for j, b in enumerate(e["batch_sizes"]):
            if not isinstance(b, int) or isinstance(b, bool) or b < 1:
                raise SpecError(f"{src}: {where}.batch_sizes[{j}] must be a positive integer, got {b!r}")
        seqs = e.get("seq_lens") or [None]
        for j, s in enumerate(seqs):
            if s is not None and (not isinstance(s, int) or not 1 <= s <= 512):
                raise SpecError(f"{src}: {where}.seq_lens[{j}] must be an integer in 1..512, got {s!r}")
        modes = [_mode(m, f"{where}.modes[{j}]", src) for j, m in enumerate(e["modes"])]
        reps = e.get("repeats", 1)
        if not isinstance(reps, int) or reps < 1:
            raise SpecError(f"{src}: {where}.repeats must be a positive integer")
        out["experiments"].append({"name": str(e.get("name") or f"exp{i}"), "workloads": wls,
                                   "devices": [str(d) for d in e["devices"]], "batch_sizes": e["batch_sizes"],
                                   "seq_lens": seqs, "modes": modes, "concurrent": bool(e.get("concurrent", False)),
                                   "repeats": reps,
                                   "fields": {k: e[k] for k in CELL_FIELDS if k in e}})
    return out


def expand(spec: dict, mig_uuids: list[str] | None = None) -> list[list[dict]]:
    """The cells of the matrix, grouped: each group runs at the same time (one process per cell).
    ``mig:all`` expands to ``mig_uuids`` (an error if there are none)."""
    groups: list[list[dict]] = []
    n = 0
    for e in spec["experiments"]:
        devices: list[str] = []
        for d in e["devices"]:
            if d == "mig:all":
                if not mig_uuids:
                    raise SpecError(f"experiment {e['name']!r}: 'mig:all' but no MIG devices were found")
                devices += mig_uuids
            else:
                devices.append(d)
        for rep, w, b, mode in itertools.product(range(e["repeats"]), e["workloads"], e["batch_sizes"], e["modes"]):
            seqs = e["seq_lens"] if is_nlp(w["model"]) else [None]
            for s in seqs:
                cells = []
                for d in devices:
                    c = copy.deepcopy(CELL_DEFAULTS)
                    c.update(copy.deepcopy(spec["defaults"]))
                    c.update(copy.deepcopy(e["fields"]))
                    c.update({k: v for k, v in w.items() if k != "model"})
                    c.update({"experiment": e["name"], "model": w["model"], "batch_size": b, "device": d,
                              "repeat": rep, "seed": spec["seed"] + rep, "cell": n, **copy.deepcopy(mode)})
                    if not is_nlp(w["model"]):
                        c["seq_len"] = None
                    elif s is not None:
                        c["seq_len"] = s
                    n += 1
                    cells.append(c)
                if e["concurrent"]:
                    for c in cells:
                        c["concurrent_devices"] = list(devices)
                    groups.append(cells)
                else:
                    groups.extend([c] for c in cells)
    return groups
