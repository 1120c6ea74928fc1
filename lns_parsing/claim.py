"""Claim testbed: does organ context (and which organs, predicted how) help station parsing?

One named component off at a time, each over 3 seeds (4-fold CV each), beside the fixed-margin
"previous approach" and the majority atlas; prints and writes runs/lns_parsing/claim/claim.md.

    python -m lns_parsing.claim [--seeds 0 1 2] [--variants full ct_only ...] [--data-root R] [--table-only]

RECONSTRUCTED runner: common.claim.run_claim is not in this checkout yet; this module runs
``python -m lns_parsing.train`` / ``lns_parsing.eval`` as subprocesses (argument lists) the same way.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common.results import mean_std
from common.run import runs_root
from lns_parsing.phantom import DEFINING

COMMON = ["lns.ct_only_baseline=false", "eval.figures=false"]
VARIANTS = {
    "full": ("searched top-6, predicted stratified organs (DeepStationing)", []),
    "ct_only": ("CT only (no context encoding)", ["lns.organs=none"]),
    "all": ("all 22 organs (no auto-search)", ["lns.organs=all"]),
    "random6": ("6 random organs (search replaced by chance)", ["lns.organs=random"]),
    "non_stratified": ("searched, organs from one non-stratified net", ["organs.stratified=false"]),
    "gt_oracle": ("searched, ground-truth organs (oracle)", ["lns.organ_source=gt"]),
}
METRICS = ("Dice", "HD95", "ASD", "organ_dice_anchor", "organ_dice_nonanchor")


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def table(root: Path) -> str:
    rows = [f"| variant | seeds | {' | '.join(METRICS)} | defining in top-6 |", "|---|---|" + "---|" * (len(METRICS) + 1)]
    base: dict[str, list[dict]] = {}
    for v, (label, _) in VARIANTS.items():
        recs = [json.loads(p.read_text()) for p in sorted(root.glob(f"{v}-s*/results.json"))]
        if not recs:
            continue
        cells = []
        for m in METRICS:
            vals = [r["metrics"][m] for r in recs if m in r["metrics"]]
            cells.append("—" if not vals else "{:.1f} ± {:.1f}".format(*mean_std(vals)))
        n_def = [sum(o in DEFINING for o in r.get("selected_organs") or []) for r in recs]
        defining = ",".join(str(n) for n in n_def) if v in ("full", "non_stratified", "gt_oracle", "random6") else "—"
        rows.append(f"| {label} | {len(recs)} | {' | '.join(cells)} | {defining} |")
        if v == "full":
            for b in ("margin", "atlas"):
                base[b] = [r["baselines"][b] for r in recs if b in r.get("baselines", {})]
    for b, label in (("margin", "previous approach: fixed margins on predicted organs"), ("atlas", "majority atlas")):
        if base.get(b):
            cells = ["{:.1f} ± {:.1f}".format(*mean_std([r[m] for r in base[b]])) if m in base[b][0] else "—" for m in METRICS]
            rows.append(f"| {label} | {len(base[b])} | {' | '.join(cells)} | — |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--runs-root", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    ap.add_argument("--table-only", action="store_true")
    a = ap.parse_args(argv)
    root = runs_root(a.runs_root) / "lns_parsing" / "claim"
    root.mkdir(parents=True, exist_ok=True)
    dr = ["--data-root", a.data_root] if a.data_root else []
    t0 = time.perf_counter()
    if not a.table_only:
        for v in a.variants:
            for s in a.seeds:
                run = root / f"{v}-s{s}"
                if (run / "results.json").is_file():
                    continue
                sets = [x for o in (*COMMON, *VARIANTS[v][1], *a.overrides) for x in ("--set", o)]
                _run([sys.executable, "-m", "lns_parsing.train", "--seed", str(s), "--run-dir", str(run), "--no-tb",
                      *dr, *sets, *(["--resume", str(run / "checkpoints/last.pt")] if (run / "checkpoints/last.pt").is_file() else [])])
                _run([sys.executable, "-m", "lns_parsing.eval", "--run-dir", str(run), *dr])
    md = table(root)
    wall = time.perf_counter() - t0
    (root / "claim.md").write_text(md + f"\n\nwall time of this invocation: {wall / 60:.1f} min\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
