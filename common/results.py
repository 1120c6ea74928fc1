"""Results: every eval writes ``results.json`` into its run directory; every paper folder has a
``paper.yaml`` with the paper's reported numbers. :mod:`common.compare` puts the two side by side.

``results.json`` (schema 1)::

    {"project", "config", "dataset", "split", "seed", "metrics": {name: value},
     "git_sha", "wall_time_s", "baselines": {name: {metric: value}} (optional), ...}

``paper.yaml``::

    paper: {title, authors, venue, arxiv, code}
    tolerance: 1.0                 # default absolute tolerance for every entry
    results:
      - dataset: charades_sta      # the dataset a measured run must be on to be comparable
        split: test
        metric: R1@0.5
        value: 63.98               # or null, with a note saying why it is unknown
        source: "Table 1, row X"   # required when value is set
        note: "..."
        tolerance: 1.0             # optional per-entry override
        lower_is_better: false     # optional, for the table's delta sign
    context:                       # optional: other methods' numbers, printed, never given a status
      - {method: EaTR, dataset: charades_sta, split: test, metric: R1@0.5, value: 68.47,
         source: "...", tag: "fully supervised"}
    anatomy:                       # optional: files of the project anatomy that do not apply
      not_applicable: {losses.py: "a benchmark harness: nothing is trained"}

``results.json`` may carry ``subsets``: ``{subset: {"n": N, "metrics": {...}, "baselines": {b: {...}}}}``
(or the short form ``{subset: {metric: value}}``); :mod:`common.compare` shows them per subset.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from common.run import git_sha

REQUIRED_RESULT_KEYS = ("project", "config", "dataset", "split", "seed", "metrics", "git_sha", "wall_time_s")


class PaperYamlError(ValueError):
    pass


def write_results(
    run_dir: str | Path,
    *,
    project: str,
    config: str,
    dataset: str,
    split: str,
    seed: int,
    metrics: Mapping[str, float],
    wall_time_s: float,
    baselines: Mapping[str, Mapping[str, float]] | None = None,
    **extra: Any,
) -> Path:
    rec = {
        "schema_version": 1,
        "project": project,
        "config": config,
        "dataset": dataset,
        "split": split,
        "seed": int(seed),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "git_sha": git_sha(),
        "wall_time_s": float(wall_time_s),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if baselines:
        rec["baselines"] = {b: {k: float(v) for k, v in m.items()} for b, m in baselines.items()}
    rec.update(extra)
    path = Path(run_dir) / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_results(path: str | Path) -> dict:
    rec = json.loads(Path(path).read_text())
    missing = [k for k in REQUIRED_RESULT_KEYS if k not in rec]
    if missing:
        raise ValueError(f"{path}: results.json lacks keys {missing}")
    return rec


def load_paper_yaml(path: str | Path) -> dict:
    """Read and validate a ``paper.yaml``: every entry has dataset/split/metric, and either a
    value with a source or ``value: null`` with a note."""
    path = Path(path)
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    entries = data.get("results")
    if not isinstance(entries, list):
        raise PaperYamlError(f"{path}: needs a 'results' list")
    default_tol = data.get("tolerance", 1.0)
    for i, e in enumerate(entries):
        where = f"{path}: results[{i}]"
        for k in ("dataset", "split", "metric"):
            if not e.get(k):
                raise PaperYamlError(f"{where}: missing {k!r}")
        if "value" not in e:
            raise PaperYamlError(f"{where}: missing 'value' (use null with a note when unknown)")
        if e["value"] is None:
            if not e.get("note"):
                raise PaperYamlError(f"{where}: value is null, so a 'note' must say why")
        else:
            if not isinstance(e["value"], (int, float)):
                raise PaperYamlError(f"{where}: value must be a number or null")
            if not e.get("source"):
                raise PaperYamlError(f"{where}: a reported value needs its 'source'")
        e.setdefault("tolerance", default_tol)
    ctx = data.get("context") or []
    if not isinstance(ctx, list):
        raise PaperYamlError(f"{path}: 'context' must be a list of entries")
    for i, e in enumerate(ctx):
        where = f"{path}: context[{i}]"
        for k in ("method", "dataset", "split", "metric", "source"):
            if not e.get(k):
                raise PaperYamlError(f"{where}: missing {k!r} (a context number needs its method and source)")
        if not isinstance(e.get("value"), (int, float)) or isinstance(e.get("value"), bool):
            raise PaperYamlError(f"{where}: value must be a number")
    na = (data.get("anatomy") or {}).get("not_applicable") or {}
    if not isinstance(na, dict):
        raise PaperYamlError(f"{path}: anatomy.not_applicable must map a file name to the reason")
    for f, why in na.items():
        if not isinstance(why, str) or not why.strip():
            raise PaperYamlError(f"{path}: anatomy.not_applicable[{f!r}] needs a reason")
    return data


def claim_dir(project: str, runs: str | Path | None = None) -> Path:
    """Where a project's claim testbed writes: ``<runs>/<project>/claim/<variant>/s<seed>``."""
    from common.run import runs_root

    return runs_root(runs) / project / "claim"


def find_results(project: str, runs: str | Path | None = None) -> list[dict]:
    from common.run import runs_root

    root = runs_root(runs) / project
    out = []
    for p in sorted(root.glob("**/results.json")):
        try:
            rec = read_results(p)
        except (ValueError, json.JSONDecodeError):
            continue  # a half-written or foreign file is not a result; compare reports counts
        rec["_path"] = str(p)
        out.append(rec)
    return out


def subset_entry(v: Mapping) -> tuple[int | None, dict, dict]:
    """(n, metrics, baselines) of one results.json ``subsets`` entry, long or short form."""
    if "metrics" in v:
        return v.get("n"), dict(v["metrics"]), dict(v.get("baselines", {}))
    return v.get("n"), {k: x for k, x in v.items() if k != "n"}, {}


def mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, s
