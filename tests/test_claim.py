"""common.claim: every (variant, seed) runs as `python -m <p>.train` + `<p>.eval` into its own run
directory, and the table is mean ± sample std over seeds with baselines and subsets."""

import textwrap

import pytest

from common.claim import Variant, claim_table, run_claim

TRAIN = '''
import argparse, json, pathlib
ap = argparse.ArgumentParser()
ap.add_argument("--config"); ap.add_argument("--seed", type=int); ap.add_argument("--run-dir")
ap.add_argument("--no-tb", action="store_true"); ap.add_argument("--runs-root")
ap.add_argument("--set", action="append", default=[])
a = ap.parse_args()
d = pathlib.Path(a.run_dir); d.mkdir(parents=True, exist_ok=True)
(d / "train.json").write_text(json.dumps({"seed": a.seed, "sets": a.set, "config": a.config}))
'''
EVAL = '''
import argparse, json, pathlib
from common.results import write_results
ap = argparse.ArgumentParser(); ap.add_argument("--run-dir"); ap.add_argument("--runs-root")
a = ap.parse_args()
d = pathlib.Path(a.run_dir); t = json.loads((d / "train.json").read_text())
score = 50.0 + 2 * t["seed"] - (20.0 if "m.part=false" in t["sets"] else 0.0)
write_results(d, project="toyclaim", config="claim", dataset="synthetic", split="test", seed=t["seed"],
              metrics={"acc": score, "other": 1.0}, wall_time_s=0.0, baselines={"prior": {"acc": 10.0 + t["seed"]}},
              subsets={"hard": {"n": 7, "metrics": {"acc": score - 10}}})
'''


def test_run_claim_runs_each_variant_and_seed(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "src" / "toyclaim"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(textwrap.dedent(TRAIN))
    (pkg / "eval.py").write_text(textwrap.dedent(EVAL))
    import os

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "src"), os.environ.get("PYTHONPATH", "")]))
    runs = tmp_path / "runs"
    variants = {"full": Variant("full model"), "no_part": Variant("without the part", overrides=("m.part=false",))}
    assert run_claim("toyclaim", variants, ["--seeds", "0", "1", "--runs-root", str(runs)], metrics=["acc"]) == 0
    for v in variants:
        for s in (0, 1):
            assert (runs / "toyclaim" / "claim" / v / f"s{s}" / "results.json").is_file()
    md = (runs / "toyclaim" / "claim" / "claim.md").read_text()
    assert "| full model | 0,1 | 51.00 ± 1.41 |" in md        # 50, 52
    assert "| without the part | 0,1 | 31.00 ± 1.41 |" in md  # 30, 32
    assert "| baseline `prior` | — | 10.50 ± 0.71 |" in md
    assert "Subset `hard` (7 queries):" in md and "| full model | 0,1 | 41.00 ± 1.41 |" in md
    assert "2 variants x 2 seeds" in md and md in capsys.readouterr().out
    # the table alone, from the results on disk; a variant without results is left out
    only = claim_table("toyclaim", {**variants, "missing": Variant("never run")}, ["acc"], runs)
    assert "never run" not in only and "| full model | 0,1 | 51.00 ± 1.41 |" in only
    assert "| full model | 0,1 | 51.000 ± 1.414 |" in claim_table("toyclaim", variants, ["acc"], runs, digits=3)
    # nothing run yet: the README says where results will be, relative to the repository
    from common.claim import REPO_ROOT

    assert claim_table("nosuchproject", variants, ["acc"], REPO_ROOT / "runs") == \
        "_no claim results under runs/nosuchproject/claim yet_\n"
    assert str(runs) in claim_table("nosuchproject", variants, ["acc"], runs)   # outside the repository: as given
    # a project may name the subsets it tabulates; an unknown name is left out
    assert "Subset `hard`" not in claim_table("toyclaim", variants, ["acc"], runs, subsets=[])
    named = claim_table("toyclaim", variants, ["acc"], runs, subsets=["absent", "hard"])
    assert "Subset `hard` (7 queries):" in named and "absent" not in named
    # --update-readme pastes the table between the README's claim markers, and only there
    import common.claim as claim_mod

    monkeypatch.setattr(claim_mod, "REPO_ROOT", tmp_path)
    readme = tmp_path / "toyclaim" / "README.md"
    readme.parent.mkdir()
    readme.write_text(f"# toy\n## Results\n{claim_mod.CLAIM_BEGIN}\nold\n{claim_mod.CLAIM_END}\n## Deviations\n")
    run_claim("toyclaim", variants, ["--table-only", "--update-readme", "--runs-root", str(runs)], metrics=["acc"])
    doc = readme.read_text()
    assert doc.startswith(f"# toy\n## Results\n{claim_mod.CLAIM_BEGIN}\n") and "old" not in doc
    assert "| full model | 0,1 | 51.00 ± 1.41 |" in doc and doc.endswith(f"{claim_mod.CLAIM_END}\n## Deviations\n")
    readme.write_text("# toy without markers\n")
    with pytest.raises(SystemExit, match="claim:begin"):
        run_claim("toyclaim", variants, ["--table-only", "--update-readme", "--runs-root", str(runs)], metrics=["acc"])
