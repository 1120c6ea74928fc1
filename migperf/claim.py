"""``python -m migperf.claim``: the claim testbed. The paper's mechanism is partitioning one
device into isolated instances; its checkable finding (repo data, paper.yaml) is that 7 x 1g.10gb
out-run one 7g.80gb at small batch and roughly match it at large batch. Without a MIG GPU the
testbed is the CPU analogue (configs/claim_cpu.yaml): two processes pinned to one core each,
started together after warm-up (barrier) and kept loading until both finished (hold-load),
against one process on both cores; ResNet-18 inference at batch 1 and 16, 3 repeats (seeds 0-2),
one ratio per repeat, mean ± sample std. Writes ``runs/migperf/claim/claim.md`` and prints it.
With ``--config`` any spec with concurrent 1-core cells and an N-core cell works (a MIG spec gives
the paper's ratios in the same table).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.run import runs_root
from migperf.cli import main as cli_main

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(HERE / "configs" / "claim_cpu.yaml"))
    ap.add_argument("--runs-root", default=None)
    a = ap.parse_args(argv)
    out = runs_root(a.runs_root) / "migperf" / "claim"
    out.mkdir(parents=True, exist_ok=True)
    rc = cli_main(["run", a.config, "--run-dir", str(out / "run"), "--report"])
    rep = out / "run" / "report" / "report.md"
    if rep.is_file():
        (out / "claim.md").write_text(rep.read_text())
        print(f"(written {out / 'claim.md'})")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
