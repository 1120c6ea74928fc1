"""``python -m migperf.eval [--run-dir R | RESULTS.jsonl ...]``: the report of a run (tables, PNG
figures, the paper comparison) and ``results.json`` for ``common.compare``, written into the run
directory. MIGPerf trains nothing, so "eval" is the report of measured cells (the newest run when
nothing is named); the same as ``python -m migperf report``.
"""

from __future__ import annotations

from pathlib import Path

from migperf.cli import main as cli_main


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="*", help="results.jsonl files (default: the run dir's, or the newest run)")
    ap.add_argument("--run-dir", default=None, help="a run directory (its results.jsonl; outputs go there)")
    ap.add_argument("--out", default=None, help="report folder (default <run dir>/report)")
    a = ap.parse_args(argv)
    if a.run_dir:
        rd = Path(a.run_dir)
        args = ["report", str(rd / "results.jsonl"), "--results-dir", str(rd), "--out", a.out or str(rd / "report")]
    elif a.results:
        args = ["report", *a.results] + (["--out", a.out] if a.out else [])
    else:
        args = ["report", "--latest", "--results-dir-latest"]
    return cli_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
