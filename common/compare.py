"""Compare measured results with the papers' numbers.

    python -m common.compare ecrl                  # print ecrl's table
    python -m common.compare --all                 # print every project's table
    python -m common.compare ecrl --markdown       # only the Markdown of ecrl (what the README embeds)
    python -m common.compare ecrl --update-readme  # write it between the README's compare markers

Except with ``--markdown``/``--update-readme``, ``results/summary.md`` is regenerated for all
projects. Projects are the folders with a ``paper.yaml`` (:mod:`common.projects`).

Statuses (per paper entry, or per measured metric without one):

* ``reproduced``      measured mean within the entry's tolerance of the paper value
* ``close``           within twice the tolerance
* ``not reproduced``  further away
* ``not comparable``  measured on a dataset/split the paper does not report (e.g. the embedded
                      synthetic set); the number is shown, but it is not a paper comparison
* ``no paper value``  measured on the paper's dataset, but the paper value is unknown (null)
* ``not run``         the paper reports a value and nothing was measured on that dataset/split

Measured values are the mean ± sample std over seeds (the latest result per seed). Below the
table: the reference baselines measured beside the method, per-subset metrics, and the paper's
``context`` entries (other methods' numbers, never given a status).
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections import defaultdict
from pathlib import Path

from common.projects import discover
from common.results import claim_dir, find_results, load_paper_yaml, mean_std, subset_entry
from common.run import REPO_ROOT, runs_root

README_BEGIN, README_END = "<!-- compare:begin -->", "<!-- compare:end -->"


def status_for(paper_value, measured_mean, tolerance, comparable: bool = True) -> str:
    if measured_mean is None:
        return "not run"
    if not comparable:
        return "not comparable"
    if paper_value is None:
        return "no paper value"
    d = abs(measured_mean - paper_value)
    if d <= tolerance:
        return "reproduced"
    if d <= 2 * tolerance:
        return "close"
    return "not reproduced"


def _latest_per_seed(recs: list[dict]) -> list[dict]:
    by_seed: dict[int, dict] = {}
    for r in sorted(recs, key=lambda r: (r.get("created", ""), r.get("_path", ""))):
        by_seed[r["seed"]] = r
    return [by_seed[s] for s in sorted(by_seed)]


def _fmt(m, s, n) -> str:
    return f"{m:.2f} ± {s:.2f} (n={n})"


def project_rows(project: str, root: Path = REPO_ROOT, runs: Path | None = None,
                 configs: str | None = None) -> tuple[list[list[str]], list[str]]:
    """Rows of the comparison table, and extra Markdown blocks (baselines). ``configs``: a
    comma-separated list of glob patterns; only results of matching config names are used."""
    paper_path = root / project / "paper.yaml"
    paper = load_paper_yaml(paper_path) if paper_path.is_file() else {}
    entries = paper.get("results", [])
    groups: dict[tuple, list[dict]] = defaultdict(list)
    if runs is None:
        runs = runs_root() if root == REPO_ROOT else root / "runs"
    pats = [c.strip() for c in configs.split(",") if c.strip()] if configs else None
    claim_root = claim_dir(project, runs)   # claim testbeds have their own table (<p>.claim)
    for r in find_results(project, runs):
        if pats and not any(fnmatch.fnmatchcase(r["config"], p) for p in pats):
            continue
        if Path(r["_path"]).is_relative_to(claim_root):
            continue  # many variants share one config name there: pooling them would mix methods
        groups[(r["dataset"], r["split"], r["config"])].append(r)
    groups = {k: _latest_per_seed(v) for k, v in groups.items()}

    rows: list[list[str]] = []
    covered: set[tuple] = set()
    for e in entries:
        ds, sp, metric = e["dataset"], e["split"], e["metric"]
        pv = e["value"]
        paper_cell = "—" if pv is None else f"{pv:g} ({e['source']})"
        matched = [(k, recs) for k, recs in groups.items() if k[0] == ds and k[1] == sp]
        vals_found = False
        for (gds, gsp, cfg), recs in matched:
            vals = [r["metrics"][metric] for r in recs if metric in r["metrics"]]
            if not vals:
                continue
            vals_found = True
            covered.add((gds, gsp, cfg, metric))
            m, s = mean_std(vals)
            delta = "—" if pv is None else f"{m - pv:+.2f}"
            rows.append([ds, sp, cfg, metric, paper_cell, _fmt(m, s, len(vals)), delta,
                         status_for(pv, m, e["tolerance"])])
        if not vals_found:
            rows.append([ds, sp, "—", metric, paper_cell, "—", "—", "not run"])

    for (ds, sp, cfg), recs in sorted(groups.items()):
        metrics = sorted({m for r in recs for m in r["metrics"]}, key=lambda x: list(recs[0]["metrics"]).index(x)
                         if x in recs[0]["metrics"] else 999)
        for metric in metrics:
            if (ds, sp, cfg, metric) in covered:
                continue
            vals = [r["metrics"][metric] for r in recs if metric in r["metrics"]]
            m, s = mean_std(vals)
            rows.append([ds, sp, cfg, metric, "—", _fmt(m, s, len(vals)), "—",
                         status_for(None, m, 0.0, comparable=False)])

    blocks = []
    for (ds, sp, cfg), recs in sorted(groups.items()):
        names = sorted({b for r in recs for b in r.get("baselines", {})})
        if not names:
            continue
        metrics = list(recs[0]["metrics"])
        head = f"| metric | {project} | " + " | ".join(names) + " |"
        lines = [f"Measured on `{ds}`/{sp} (config `{cfg}`, {len(recs)} seed(s)): {project} vs reference baselines",
                 "", head, "|" + "---|" * (2 + len(names))]
        for metric in metrics:
            cells = []
            own = [r["metrics"][metric] for r in recs if metric in r["metrics"]]
            cells.append(_fmt(*mean_std(own), len(own)) if own else "—")
            for b in names:
                bv = [r["baselines"][b][metric] for r in recs if metric in r.get("baselines", {}).get(b, {})]
                cells.append(_fmt(*mean_std(bv), len(bv)) if bv else "—")
            lines.append(f"| {metric} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    blocks += [b for (ds, sp, cfg), recs in sorted(groups.items()) if (b := _subset_block(project, ds, sp, cfg, recs))]
    if paper.get("context"):
        blocks.append(_context_block(paper["context"]))
    return rows, blocks


def _subset_block(project: str, ds: str, sp: str, cfg: str, recs: list[dict]) -> str | None:
    """Per-subset metrics (results.json ``subsets``): one row per subset x method/baseline."""
    names = list(dict.fromkeys(n for r in recs for n in r.get("subsets", {})))
    if not names:
        return None
    metrics = list(dict.fromkeys(m for r in recs for n in names
                                 for m in subset_entry(r["subsets"].get(n, {}))[1]))
    lines = [f"Per subset on `{ds}`/{sp} (config `{cfg}`, {len(recs)} seed(s)), mean ± std over seeds:", "",
             "| subset | n | method | " + " | ".join(metrics) + " |", "|" + "---|" * (3 + len(metrics))]
    for n in names:
        entries = [subset_entry(r["subsets"][n]) for r in recs if n in r.get("subsets", {})]
        count = entries[0][0] if entries and entries[0][0] is not None else "—"
        methods = [project] + list(dict.fromkeys(b for e in entries for b in e[2]))
        for meth in methods:
            cells = []
            for m in metrics:
                vals = [(e[1] if meth == project else e[2].get(meth, {})).get(m) for e in entries]
                vals = [v for v in vals if v is not None]
                cells.append(_fmt(*mean_std(vals), len(vals)) if vals else "—")
            lines.append(f"| {n} | {count} | {meth} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _context_block(ctx: list[dict]) -> str:
    """The paper.yaml ``context`` entries: other methods' reported numbers, with source and tag."""
    lines = ["Context (other methods' reported numbers; no status, not measured here):", "",
             "| method | dataset | split | metric | value | tag | source |", "|---|---|---|---|---|---|---|"]
    for e in ctx:
        lines.append(f"| {e['method']} | {e['dataset']} | {e['split']} | {e['metric']} | {e['value']:g} | "
                     f"{e.get('tag', '')} | {e['source']} |")
    return "\n".join(lines)


HEADER = ["dataset", "split", "config", "metric", "paper (source)", "measured mean ± std", "delta", "status"]


def _pivot(rows: list[list[str]]) -> list[str]:
    """``not comparable`` rows of one dataset/split as a metric x config table."""
    blocks = []
    for ds, sp in dict.fromkeys((r[0], r[1]) for r in rows):
        sub = [r for r in rows if (r[0], r[1]) == (ds, sp)]
        cfgs = list(dict.fromkeys(r[2] for r in sub))
        metrics = list(dict.fromkeys(r[3] for r in sub))
        cell = {(r[3], r[2]): r[5] for r in sub}
        lines = [f"Measured on `{ds}`/{sp} — not comparable with any paper number (mean ± std over seeds):", "",
                 "| metric | " + " | ".join(cfgs) + " |", "|" + "---|" * (1 + len(cfgs))]
        lines += [f"| {m} | " + " | ".join(cell.get((m, c), "—") for c in cfgs) + " |" for m in metrics]
        blocks.append("\n".join(lines))
    return blocks


def render_project(project: str, root: Path = REPO_ROOT, runs: Path | None = None,
                   configs: str | None = None) -> str:
    rows, blocks = project_rows(project, root, runs, configs)
    paper_rows = [r for r in rows if r[7] != "not comparable"]
    out = [f"## {project}", ""]
    if paper_rows:
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|" + "---|" * len(HEADER))
        out.extend("| " + " | ".join(r) + " |" for r in paper_rows)
    elif not rows:
        out.append("_no paper.yaml entries and no results yet_")
    for b in _pivot([r for r in rows if r[7] == "not comparable"]) + blocks:
        out += ["", b]
    return "\n".join(out) + "\n"


def existing_projects(root: Path = REPO_ROOT) -> list[str]:
    return discover(root)


def update_readme(project: str, text: str, root: Path = REPO_ROOT, begin: str = README_BEGIN,
                  end: str = README_END) -> Path:
    """Replace what stands between the README's ``begin`` and ``end`` markers (by default the
    compare markers) with ``text``."""
    path = root / project / "README.md"
    doc = path.read_text()
    if doc.count(begin) != 1 or doc.count(end) != 1 or doc.index(begin) > doc.index(end):
        raise SystemExit(f"{path}: needs one '{begin}' ... '{end}' pair of markers (under '## Results')")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text.rstrip()}\n{end}{tail}")
    return path


def write_summary(root: Path = REPO_ROOT, runs: Path | None = None) -> Path:
    parts = ["# Results summary", "",
             "Generated by `python -m common.compare --all`. Measured numbers on the embedded synthetic "
             "sets are marked `not comparable`: they are not paper-benchmark results.", ""]
    for p in existing_projects(root):
        parts.append(render_project(p, root, runs))
    path = root / "results" / "summary.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("project", nargs="?", help="project folder name")
    ap.add_argument("--all", action="store_true", help="every project")
    ap.add_argument("--configs", default=None, metavar="GLOB[,GLOB]",
                    help="print only results whose config name matches (e.g. 'synthetic-*'); the summary keeps all")
    ap.add_argument("--runs", default=None, help="runs folder (default $RUNS_ROOT or <repo>/runs)")
    ap.add_argument("--markdown", action="store_true", help="print only the Markdown (no summary file)")
    ap.add_argument("--update-readme", action="store_true",
                    help=f"write the table into <project>/README.md between {README_BEGIN} and {README_END}")
    a = ap.parse_args(argv)
    runs = Path(a.runs) if a.runs else None
    if not a.all and not a.project:
        ap.error("give a PROJECT or --all")
    if a.project and a.project not in existing_projects():
        print(f"no project {a.project!r} (a folder with a paper.yaml); projects here: {existing_projects()}",
              file=sys.stderr)
        return 2
    projects = existing_projects() if a.all else [a.project]
    for p in projects:
        text = render_project(p, REPO_ROOT, runs, a.configs)
        if a.update_readme:
            # the README's own '## Results' heading stands above the markers: drop the '## <p>' line
            print(f"(updated {update_readme(p, text.split(chr(10), 1)[1].lstrip(), REPO_ROOT)})")
        else:
            print(text)
    if not (a.markdown or a.update_readme):
        path = write_summary(REPO_ROOT, runs)
        print(f"(written {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
