"""``python -m migperf <command>``

  info                       GPUs, MIG mode, profiles, GPU/compute instances, MIG device UUIDs
  plan   --gpu G --layout L  validate a MIG layout and print the nvidia-smi commands
  apply  --gpu-index N --layout L --yes    create the layout (root; MIG mode already on)
  reset  --gpu-index N --yes               destroy every compute and GPU instance
  run    [SPEC.yaml]         run the benchmark matrix (default configs/synthetic.yaml) → results.jsonl
  report RESULTS.jsonl...    Markdown + CSV tables, PNG plots, paper-comparison ratios
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from migperf.profiles import GPUS, LayoutError, gpu_model, plan_layout, render_plan

HERE = Path(__file__).resolve().parent
DEFAULT_SPEC = HERE / "configs" / "synthetic.yaml"


def cmd_info(a) -> int:
    from migperf import nvml

    nv, why = nvml.load_nvml()
    if nv is None:
        if a.json:
            print(json.dumps({"nvml": False, "why": why, "driver": None, "gpus": []}, indent=2))
            return 0
        print(f"no NVIDIA GPU visible: {why}")
        print("migperf still runs CPU cells (devices: cpu, cpu:K, cpu:K-M).")
        return 0
    d = nvml.discover(nv)
    print(json.dumps(d, indent=2) if a.json else nvml.format_info(d))
    return 0


def cmd_plan(a) -> int:
    try:
        gpu = gpu_model(a.gpu)
        placements = plan_layout(gpu, a.layout)
    except LayoutError as e:
        print(f"invalid layout: {e}", file=sys.stderr)
        return 2
    print(render_plan(gpu, placements, a.gpu_index))
    return 0


def cmd_apply(a) -> int:
    from migperf.smi import SmiError, apply_layout

    try:
        gpu = gpu_model(a.gpu) if a.gpu else None
        changes = apply_layout(a.gpu_index, gpu, lambda g: plan_layout(g, a.layout), a.yes)
    except (SmiError, LayoutError) as e:
        print(f"apply: {e}", file=sys.stderr)
        return 2
    print("\n".join(changes))
    return 0


def cmd_reset(a) -> int:
    from migperf.smi import SmiError, reset_layout

    try:
        changes = reset_layout(a.gpu_index, a.yes)
    except SmiError as e:
        print(f"reset: {e}", file=sys.stderr)
        return 2
    print("\n".join(changes))
    return 0


def cmd_run(a) -> int:
    from common.run import environment, new_run_dir
    from migperf import nvml
    from migperf.runner import run_spec
    from migperf.spec import SpecError, device_kind, expand, load_spec

    a.spec = a.spec or str(DEFAULT_SPEC)
    try:
        spec = load_spec(a.spec, a.overrides)
        uuids = None
        if any(device_kind(d) == "mig:list" for e in spec["experiments"] for d in e["devices"]):
            nv, why = nvml.load_nvml()
            uuids = nvml.list_mig_uuids(nv) if nv is not None else []
        groups = expand(spec, uuids, quick=a.quick)
    except SpecError as e:
        print(f"run: {e}", file=sys.stderr)
        return 2
    if a.dry_run:
        for g in groups:
            print(" + ".join(f"[{c['cell']}] {c['model']} {c['mode']} bs={c['batch_size']} on {c['device']}" for c in g))
        return 0
    if a.resume:
        run_dir = Path(a.resume)
        if not (run_dir / "results.jsonl").is_file() and not a.out:
            print(f"run: --resume {run_dir}: no results.jsonl there", file=sys.stderr)
            return 2
    else:
        run_dir = Path(a.run_dir) if a.run_dir else new_run_dir("migperf", spec["name"], spec["seed"], a.runs_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not a.resume:
        shutil.copy(a.spec, run_dir / "spec.yaml")
    (run_dir / "env.json").write_text(json.dumps(environment("parent"), indent=2) + "\n")
    out = Path(a.out) if a.out else run_dir / "results.jsonl"
    t0 = time.time()
    from migperf.report import ReportError
    try:
        recs = run_spec(spec, out, uuids, timeout_s=a.cell_timeout_s, resume=bool(a.resume), quick=a.quick)
    except ReportError as e:  # --resume on a results file with a bad record
        print(f"run: {e}", file=sys.stderr)
        return 2
    if a.resume:
        from migperf.report import load_records
        recs = load_records([out])
    print(f"{len(recs)} records ({sum(r['status'] == 'ok' for r in recs)} ok) in {time.time() - t0:.1f} s → {out}")
    if a.report:
        return _report([out], run_dir / "report", run_dir, spec["name"], spec["seed"], time.time() - t0)
    return 0 if all(r["status"] == "ok" for r in recs) else 1


def _report(paths, out: Path, results_dir: Path | None, config: str | None, seed: int, wall: float,
            plot: bool = True) -> int:
    from migperf.report import ReportError, write_report, write_results_json

    try:
        rep = write_report(paths, out, plot=plot)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return 2
    print(rep["markdown"])
    print(f"(written {out}/report.md, report.csv and {len(rep['pngs'])} PNG plot(s))")
    if results_dir is not None:
        for p in write_results_json(rep["records"], results_dir, config, seed, wall):
            print(f"(written {p})")
    return 0


def cmd_report(a) -> int:
    if a.latest:
        from common.run import runs_root

        found = sorted((runs_root() / "migperf").glob("*/*/results.jsonl"), key=lambda p: p.stat().st_mtime)
        if not found:
            print(f"report: no results.jsonl under {runs_root() / 'migperf'}", file=sys.stderr)
            return 2
        a.results = [str(found[-1])]
    if not a.results:
        print("report: give RESULTS.jsonl files or --latest", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(a.results[0]).parent / "report"
    rd = Path(a.results_dir) if a.results_dir else (Path(a.results[0]).parent if a.results_dir_latest else None)
    return _report(a.results, out, rd, a.config, a.seed, 0.0, plot=not a.no_plots)


def cmd_cell(a) -> int:
    import torch

    from migperf.runner import run_cell

    cell = json.loads(Path(a.cell_in).read_text())
    try:
        rec = run_cell(cell)
    except torch.cuda.OutOfMemoryError as e:
        spec = {k: v for k, v in cell.items() if k != "barrier"}
        rec = {"schema": "migperf.cell/1", "spec": spec, "status": "oom", "error": str(e)[:500], "started": time.time()}
    Path(a.cell_out).write_text(json.dumps(rec))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m migperf", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="{info,plan,apply,reset,run,report}")
    p = sub.add_parser("info", help="GPUs, MIG mode, instances, profiles, UUIDs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("plan", help="validate a MIG layout and print the nvidia-smi commands")
    p.add_argument("--gpu", required=True, help=f"one of {', '.join(GPUS)}")
    p.add_argument("--layout", required=True, help="comma-separated profiles, e.g. 3g.40gb,2g.20gb,1g.10gb,1g.10gb")
    p.add_argument("--gpu-index", type=int, default=0)
    p.set_defaults(fn=cmd_plan)

    p = sub.add_parser("apply", help="create a MIG layout (root, MIG mode on, --yes)")
    p.add_argument("--gpu-index", type=int, default=0)
    p.add_argument("--gpu", default=None, help="GPU model (default: from nvidia-smi)")
    p.add_argument("--layout", required=True)
    p.add_argument("--yes", action="store_true", help="really change the GPU's configuration")
    p.set_defaults(fn=cmd_apply)

    p = sub.add_parser("reset", help="destroy every compute/GPU instance on a GPU (root, --yes)")
    p.add_argument("--gpu-index", type=int, default=0)
    p.add_argument("--yes", action="store_true")
    p.set_defaults(fn=cmd_reset)

    p = sub.add_parser("run", help="run a benchmark spec")
    p.add_argument("spec", nargs="?", default=None, help=f"spec YAML (default {DEFAULT_SPEC.relative_to(HERE.parent)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec value, e.g. --set defaults.stop.max_time_s=5")
    p.add_argument("--quick", action="store_true",
                   help="open-loop cells run for the spec's durations; results say they do NOT meet MLPerf "
                        "LoadGen's Server rules (600 s minimum, early stopping)")
    p.add_argument("--out", default=None, help="JSONL to append to (default <run dir>/results.jsonl)")
    p.add_argument("--run-dir", default=None)
    p.add_argument("--runs-root", default=None)
    p.add_argument("--report", action="store_true", help="then write the report and results.json into the run dir")
    p.add_argument("--dry-run", action="store_true", help="list the cells and exit")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run: skip cells already recorded ok in RUN_DIR/results.jsonl")
    p.add_argument("--cell-timeout-s", type=float, default=None)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("report", help="tables and plots from results.jsonl files")
    p.add_argument("results", nargs="*")
    p.add_argument("--latest", action="store_true", help="the newest runs/migperf/*/*/results.jsonl")
    p.add_argument("--out", default=None, help="folder (default: beside the first file, report/)")
    p.add_argument("--results-dir", default=None, help="also write results.json(s) for common.compare here")
    p.add_argument("--results-dir-latest", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("_cell", help=argparse.SUPPRESS)
    p.add_argument("cell_in")
    p.add_argument("cell_out")
    p.set_defaults(fn=cmd_cell)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    raise SystemExit(main())
