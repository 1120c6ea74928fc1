"""Load and expand a ``migperf run`` spec (schema and documented defaults: :mod:`migperf.config`).

Devices: ``cuda:N`` (whole GPU N), ``GPU-<uuid>``, ``MIG-<uuid>``, ``mig:all`` (every MIG device
NVML lists when the run starts), ``mig:N`` (the N-th of them), ``cpu`` (no pinning), ``cpu:K`` /
``cpu:K-M`` / ``cpu:K,L`` (process pinned to those cores: the CPU analogue of an instance).
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

from common.config import ConfigError, load_config
from migperf.config import CELL_DEFAULTS, CHOICES, DEFAULTS, OPEN_LOOP, RULES
from migperf.measure import StopRule
from migperf.workloads import MODELS, is_nlp

CELL_FIELDS = tuple(CELL_DEFAULTS)
EXP_KEYS = {"name", "workloads", "devices", "batch_sizes", "seq_lens", "modes", "concurrent", "repeats", *CELL_FIELDS}


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
    if dev == "mig:all" or (dev.startswith("mig:") and dev[4:].isdigit()):
        return "mig:list"
    raise ValueError(f"unknown device {dev!r}")


def _type_ok(default, v) -> bool:
    if default is None or v is None:
        return True
    if isinstance(default, bool) or isinstance(v, bool):
        return isinstance(default, bool) and isinstance(v, bool)
    if isinstance(default, float):
        return isinstance(v, (int, float))
    return isinstance(v, type(default))


def merge_cell(base: dict, upd: dict) -> dict:
    """``upd`` over ``base``; nested sections (stop, stats, dcgm, contention) merge key by key."""
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = merge_cell(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _check_fields(d: dict, where: str, src: str) -> None:
    for k, v in d.items():
        if k not in CELL_DEFAULTS:
            continue
        default = CELL_DEFAULTS[k]
        if isinstance(default, dict):
            if not isinstance(v, dict):
                raise SpecError(f"{src}: {where}.{k} must be a mapping with keys {sorted(default)}")
            bad = set(v) - set(default)
            if bad:
                raise SpecError(f"{src}: {where}.{k}: unknown keys {sorted(bad)}; valid: {sorted(default)}")
            for kk, vv in v.items():
                if not _type_ok(default[kk], vv):
                    raise SpecError(f"{src}: {where}.{k}.{kk} = {vv!r} has the wrong type "
                                    f"(default {default[kk]!r})")
        elif not _type_ok(default, v):
            raise SpecError(f"{src}: {where}.{k} = {v!r} has the wrong type (default {default!r})")
    for key, choices in CHOICES.items():
        head, _, tail = key.partition(".")
        if head != "defaults":
            continue
        sect, _, leaf = tail.partition(".")
        val = d.get(sect) if not leaf else (d.get(sect) or {}).get(leaf)
        if val is not None and val not in choices:
            raise SpecError(f"{src}: {where}.{tail} = {val!r}; choose one of {list(choices)}")
    if "stop" in d:
        try:
            StopRule(**merge_cell(CELL_DEFAULTS["stop"], d["stop"]))
        except (TypeError, ValueError) as e:
            raise SpecError(f"{src}: {where}.stop: {e}") from None


def _mode(m, where: str, src: str) -> dict:
    if m in ("train", "inference"):
        return {"mode": m}
    if isinstance(m, dict) and list(m) == ["open_loop"] and isinstance(m["open_loop"], dict):
        ol = m["open_loop"]
        bad = set(ol) - set(OPEN_LOOP)
        if bad:
            raise SpecError(f"{src}: {where}.open_loop: unknown keys {sorted(bad)}; valid: {sorted(OPEN_LOOP)}")
        rates = ol.get("rates")
        if not rates or not all(isinstance(r, (int, float)) and r > 0 for r in rates):
            raise SpecError(f"{src}: {where}.open_loop.rates must be a non-empty list of positive numbers")
        badsrv = set(ol.get("server") or {}) - set(OPEN_LOOP["server"])
        if badsrv:
            raise SpecError(f"{src}: {where}.open_loop.server: unknown keys {sorted(badsrv)}; "
                            f"valid: {sorted(OPEN_LOOP['server'])}")
        o = merge_cell(OPEN_LOOP, ol)
        if o["rules"] not in CHOICES["open_loop.rules"]:
            raise SpecError(f"{src}: {where}.open_loop.rules must be one of {list(CHOICES['open_loop.rules'])}")
        srv = o["server"]
        if int(srv["max_batch"]) < 1 or int(srv["workers"]) < 1 or float(srv["max_delay_ms"]) < 0:
            raise SpecError(f"{src}: {where}.open_loop.server needs max_batch >= 1, workers >= 1, max_delay_ms >= 0")
        o["rates"] = [float(r) for r in rates]
        for k in ("duration_s", "drain_factor", "percentile", "confidence"):
            o[k] = float(o[k])
        return {"mode": "open_loop", "open_loop": o}
    raise SpecError(f"{src}: {where} must be 'train', 'inference' or {{open_loop: {{rates: [...]}}}}, got {m!r}")


def load_spec(path: str | Path, overrides=()) -> dict:
    """Read a spec over :data:`migperf.config.DEFAULTS` (``base:`` and ``--set`` as every config)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        data = load_config(path, overrides, DEFAULTS, RULES).to_dict()
    except ConfigError as e:
        raise SpecError(str(e)) from None
    return validate_spec(data, str(path))


def validate_spec(data, src: str = "<spec>") -> dict:
    if not isinstance(data, dict):
        raise SpecError(f"{src}: top level must be a mapping")
    bad = set(data) - set(DEFAULTS)
    if bad:
        raise SpecError(f"{src}: unknown keys {sorted(bad)}; valid: {sorted(DEFAULTS)}")
    defaults = merge_cell(CELL_DEFAULTS, data.get("defaults") or {})
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
                elif str(d).startswith("cuda:") and not str(d)[5:].isdigit():
                    raise ValueError(f"unknown device {d!r}")
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


def expand(spec: dict, mig_uuids: list[str] | None = None, quick: bool = False) -> list[list[dict]]:
    """The cells of the matrix, grouped: each group runs at the same time (one process per cell).
    ``mig:all`` expands to ``mig_uuids`` (an error if there are none), ``mig:N`` to its N-th.
    ``quick``: open-loop cells run for the spec's durations and say they do not meet LoadGen's rules."""
    groups: list[list[dict]] = []
    n = 0
    for e in spec["experiments"]:
        devices: list[str] = []
        for d in e["devices"]:
            if d == "mig:all" or (d.startswith("mig:") and d[4:].isdigit()):
                if not mig_uuids:
                    raise SpecError(f"experiment {e['name']!r}: {d!r} but no MIG devices were found")
                if d == "mig:all":
                    devices += mig_uuids
                elif int(d[4:]) < len(mig_uuids):
                    devices.append(mig_uuids[int(d[4:])])
                else:
                    raise SpecError(f"experiment {e['name']!r}: {d!r} but only {len(mig_uuids)} MIG device(s) exist")
            else:
                devices.append(d)
        for rep, w, b, mode in itertools.product(range(e["repeats"]), e["workloads"], e["batch_sizes"], e["modes"]):
            seqs = e["seq_lens"] if is_nlp(w["model"]) else [None]
            for s in seqs:
                cells = []
                for d in devices:
                    c = merge_cell(CELL_DEFAULTS, spec["defaults"])
                    c = merge_cell(c, e["fields"])
                    c = merge_cell(c, {k: v for k, v in w.items() if k != "model"})
                    c.update({"experiment": e["name"], "model": w["model"], "batch_size": b, "device": d,
                              "repeat": rep, "seed": spec["seed"] + rep, "cell": n, **copy.deepcopy(mode)})
                    if quick and c["mode"] == "open_loop":
                        c["open_loop"]["rules"] = "quick"
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
