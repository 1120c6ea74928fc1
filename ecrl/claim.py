"""Claim testbed: does ECRL's equivariant consistency learning reduce reliance on the dataset's
location bias? (The abstract: it reduces "the reliance on ... dataset distribution bias".)

Set: ``data/tsg_locshift`` from the shared generator with a train/test location-bias shift
(train: 90% of videos have their first queried moment starting near 10% of the video; test: near
70%). Variants, each over 3 seeds: full ECRL, without augmentation + SSCL, without self-refine.
Prints (and writes ``runs/ecrl/claim/claim.md``) mean ± std of R1@0.5 / R1@0.7 / mIoU, with the
``prior`` baseline that exploits the train bias.

    python ecrl/claim.py [--seeds 0 1 2] [--variants ecrl noaug norefine] [--data-root PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):
    sys.path.insert(0, str(HERE.parent))

from common.data import data_root  # noqa: E402
from common.results import find_results, mean_std  # noqa: E402
from common.run import runs_root  # noqa: E402

KNOBS = {"train_videos": 500, "test_videos": 200, "loc_bias": 0.9, "loc_center": 0.1,
         "test_loc_bias": 0.9, "test_loc_center": 0.7}
VARIANTS = {"ecrl": "claim_ecrl", "noaug": "claim_noaug", "norefine": "claim_norefine"}
LABELS = {"ecrl": "ECRL (augment + refine + SSCL)", "noaug": "without augmentation + SSCL",
          "norefine": "without self-refine"}
METRICS = ("R1@0.5", "R1@0.7", "mIoU")


def ensure_data(root: Path) -> Path:
    out = root / "tsg_locshift"
    if not (out / "meta.json").is_file():
        from common.tsg.synthetic import generate

        generate(out, seed=1, **KNOBS)
    return out


def table(runs: Path | None = None) -> str:
    recs = find_results("ecrl", runs)
    rows = [f"| variant | seeds | {' | '.join(METRICS)} |", "|---|---|" + "---|" * len(METRICS)]
    prior = None
    for v, cfg in VARIANTS.items():
        by_seed = {}
        for r in sorted(recs, key=lambda r: r.get("created", "")):
            if r["config"] == cfg:
                by_seed[r["seed"]] = r
        if not by_seed:
            continue
        rs = list(by_seed.values())
        cells = []
        for m in METRICS:
            mu, sd = mean_std([r["metrics"][m] for r in rs])
            cells.append(f"{mu:.2f} ± {sd:.2f}")
        rows.append(f"| {LABELS[v]} | {','.join(str(s) for s in sorted(by_seed))} | {' | '.join(cells)} |")
        prior = prior or rs[0].get("baselines", {}).get("prior")
        rnd = rs[0].get("baselines", {}).get("random")
    if prior:
        rows.append("| `prior` baseline (train moment statistics) | — | "
                    + " | ".join(f"{prior[m]:.2f}" for m in METRICS) + " |")
        rows.append("| `random` baseline | — | " + " | ".join(f"{rnd[m]:.2f}" for m in METRICS) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--runs-root", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    ap.add_argument("--table-only", action="store_true", help="print the table of existing results")
    a = ap.parse_args(argv)
    root = data_root(a.data_root)
    common_args = ["--data-root", str(root), "--no-tb"]
    if a.runs_root:
        common_args += ["--runs-root", a.runs_root]
    if not a.table_only:
        ensure_data(root)
        for v in a.variants:
            cfg = HERE / "configs" / f"{VARIANTS[v]}.yaml"
            for s in a.seeds:
                extra = [x for o in a.overrides for x in ("--set", o)]
                subprocess.run([sys.executable, str(HERE / "train.py"), "--config", str(cfg), "--seed", str(s),
                                *common_args, *extra], check=True)
                ev = [x for x in common_args if x != "--no-tb"]
                subprocess.run([sys.executable, str(HERE / "eval.py"), "--config", str(cfg), "--seed", str(s), *ev],
                               check=True)
    runs = Path(a.runs_root) if a.runs_root else runs_root()
    md = table(runs)
    meta = json.loads((root / "tsg_locshift" / "meta.json").read_text())["knobs"] if (
        root / "tsg_locshift" / "meta.json").is_file() else KNOBS
    out = runs / "ecrl" / "claim"
    out.mkdir(parents=True, exist_ok=True)
    head = (f"Claim testbed: train loc_bias={meta['loc_bias']} at {meta['loc_center']}, test "
            f"loc_bias={meta['test_loc_bias']} at {meta['test_loc_center']} (test split, mean ± sample std over seeds)")
    (out / "claim.md").write_text(head + "\n\n" + md + "\n")
    print(head + "\n\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
