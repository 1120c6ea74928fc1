"""Claim testbeds: one named component off at a time, each variant over several seeds.

A project's ``claim.py`` names its variants and hands over::

    VARIANTS = {
        "full":    Variant("ECRL", config="claim_ecrl"),
        "no_sscl": Variant("without SSCL (augmentation kept)", config="claim_ecrl", overrides=("ecrl.w_sscl=0",)),
    }

    def main(argv=None) -> int:
        return run_claim("ecrl", VARIANTS, argv, metrics=("R1@0.5", "R1@0.7", "mIoU"))

:func:`run_claim` trains and evaluates every (variant, seed) as the user would, in a fresh process
(``python -m <p>.train`` then ``python -m <p>.eval``, argument lists), each into its own run
directory ``runs/<p>/claim/<variant>/s<seed>``, then prints :func:`claim_table` (mean ± sample
std over seeds per variant, the reference baselines, and one table per evaluated subset) and
writes it to ``runs/<p>/claim/claim.md``. The table reports whatever the runs show.
``--table-only --update-readme`` pastes it into ``<p>/README.md`` between the ``<!-- claim:begin -->``
and ``<!-- claim:end -->`` markers, so that a README's claim table is generated, never typed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.compare import update_readme
from common.results import claim_dir, find_results, mean_std, subset_entry
from common.run import REPO_ROOT

CLAIM_BEGIN, CLAIM_END = "<!-- claim:begin -->", "<!-- claim:end -->"


@dataclass(frozen=True)
class Variant:
    """One row of a claim table: a label, the project config it starts from (a name under
    ``<p>/configs``) and the overrides that switch one component off."""

    label: str
    config: str = "synthetic"
    overrides: tuple[str, ...] = ()
    train_args: tuple[str, ...] = ()   # extra train.py flags (rarely needed)


def _fmt(vals: list[float], digits: int = 2) -> str:
    if not vals:
        return "—"
    m, s = mean_std(vals)
    return f"{m:.{digits}f} ± {s:.{digits}f}" + ("" if len(vals) > 1 else " (n=1)")


def _latest_by_variant_seed(records: list[dict], root: Path) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for r in sorted(records, key=lambda r: (r.get("created", ""), r.get("_path", ""))):
        rel = Path(r["_path"]).relative_to(root).parts   # <variant>/s<seed>/results.json
        if len(rel) != 3:
            continue
        out.setdefault(rel[0], {})[int(r["seed"])] = r
    return out


def claim_table(project: str, variants: Mapping[str, Variant], metrics: Sequence[str] | None = None,
                runs: str | Path | None = None, title: str = "", subsets: Sequence[str] | None = None,
                digits: int = 2) -> str:
    """Markdown: variants x metrics (mean ± sample std over seeds, ``digits`` decimals), baselines,
    per-subset tables (every evaluated subset, or only those named in ``subsets``, in that order)."""
    root = claim_dir(project, runs)
    recs = [r for r in find_results(project, runs) if Path(r["_path"]).is_relative_to(root)]
    by = _latest_by_variant_seed(recs, root)
    present = [v for v in variants if v in by]
    if not present:  # the path as a README reader finds it: relative to the repository when inside it
        where = root.relative_to(REPO_ROOT) if root.is_relative_to(REPO_ROOT) else root
        return f"{title}\n\n_no claim results under {where} yet_\n" if title else f"_no claim results under {where} yet_\n"
    first = next(iter(by[present[0]].values()))
    metrics = list(metrics or first["metrics"])

    def table(get_metrics: Callable[[dict], dict | None], get_baselines: Callable[[dict], dict]) -> list[str]:
        lines = ["| variant | seeds | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
        for v in present:
            rs = [by[v][s] for s in sorted(by[v])]
            cells = [_fmt([m[k] for r in rs if (m := get_metrics(r)) and k in m], digits) for k in metrics]
            seeds = ",".join(str(s) for s in sorted(by[v]))
            lines.append(f"| {variants[v].label} | {seeds} | " + " | ".join(cells) + " |")
        rs = list(by[present[0]].values())
        for b in dict.fromkeys(b for r in rs for b in get_baselines(r)):
            cells = [_fmt([get_baselines(r)[b][k] for r in rs if k in get_baselines(r).get(b, {})], digits)
                     for k in metrics]
            lines.append(f"| baseline `{b}` | — | " + " | ".join(cells) + " |")
        return lines

    out = [title, ""] if title else []
    out += ["All test queries (mean ± sample std over seeds):", ""]
    out += table(lambda r: r["metrics"], lambda r: r.get("baselines", {}))
    seen = list(dict.fromkeys(n for v in present for r in by[v].values() for n in r.get("subsets", {})))
    for n in seen if subsets is None else [n for n in subsets if n in seen]:
        count = subset_entry(first["subsets"][n])[0] if n in first.get("subsets", {}) else None
        out += ["", f"Subset `{n}`" + (f" ({count} queries)" if count is not None else "") + ":", ""]
        out += table(lambda r, n=n: subset_entry(r["subsets"][n])[1] if n in r.get("subsets", {}) else None,
                     lambda r, n=n: subset_entry(r["subsets"][n])[2] if n in r.get("subsets", {}) else {})
    return "\n".join(out) + "\n"


def run_claim(project: str, variants: Mapping[str, Variant], argv: Sequence[str] | None = None, *,
              metrics: Sequence[str] | None = None, title: str = "", description: str = "",
              prepare: Callable[[argparse.Namespace], None] | None = None,
              subsets: Sequence[str] | None = None, note: str = "",
              groups: Mapping[str, Sequence[str]] | None = None, digits: int = 2) -> int:
    """The claim-testbed command line of a project (see the module docstring).

    ``prepare(args)`` runs once before training (e.g. generate the testbed's data set).
    ``groups`` (heading -> variant names) splits the table into one table per finding, below the
    text ``note``; in the README they paste under its own claim heading, one level down (``####``).
    ``digits``: decimals in the table (3 where metrics are fractions that differ in the third).
    """
    ap = argparse.ArgumentParser(description=description or f"{project} claim testbed",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(variants), choices=list(variants))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--runs-root", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="an extra config override applied to every variant (repeatable)")
    ap.add_argument("--table-only", action="store_true", help="print the table of the existing results")
    ap.add_argument("--update-readme", action="store_true",
                    help=f"also write the table into <project>/README.md between {CLAIM_BEGIN} and {CLAIM_END}")
    args = ap.parse_args(argv)
    shared = (["--data-root", args.data_root] if args.data_root else []) + \
             (["--runs-root", args.runs_root] if args.runs_root else [])
    root = claim_dir(project, args.runs_root)
    t0 = time.perf_counter()
    if not args.table_only:
        if prepare is not None:
            prepare(args)
        for name in args.variants:
            v = variants[name]
            sets = [x for o in (*v.overrides, *args.overrides) for x in ("--set", o)]
            cfg = str(Path(project) / "configs" / f"{v.config}.yaml")
            for seed in args.seeds:
                run_dir = root / name / f"s{seed}"
                base = [sys.executable, "-m"]
                subprocess.run([*base, f"{project}.train", "--config", cfg, "--seed", str(seed), "--run-dir",
                                str(run_dir), "--no-tb", *shared, *sets, *v.train_args], check=True, cwd=REPO_ROOT)
                subprocess.run([*base, f"{project}.eval", "--run-dir", str(run_dir), *shared], check=True,
                               cwd=REPO_ROOT)
    wall = time.perf_counter() - t0
    head = title or f"{project} claim testbed"
    if not args.table_only:
        head += f" ({len(args.variants)} variants x {len(args.seeds)} seeds, {wall / 60:.1f} min wall)"
    if groups is None:
        md = pasted = claim_table(project, variants, metrics, args.runs_root, head, subsets, digits)
    else:
        def sections(level: str) -> list[str]:
            return [claim_table(project, {n: variants[n] for n in names}, metrics, args.runs_root,
                                f"{level} {heading}", subsets, digits) for heading, names in groups.items()]
        md = "\n".join([f"# {head}", "", note, "", *sections("##")])
        pasted = "\n".join([note, "", *sections("####")])
    root.mkdir(parents=True, exist_ok=True)
    (root / "claim.md").write_text(md)
    print(md)
    if args.update_readme:
        print(f"(updated {update_readme(project, pasted, REPO_ROOT, CLAIM_BEGIN, CLAIM_END)})")
    return 0
