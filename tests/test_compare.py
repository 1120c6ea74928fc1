import json

import pytest
import yaml

from common.compare import project_rows, render_project, status_for, write_summary
from common.results import PaperYamlError, load_paper_yaml, read_results, write_results


@pytest.mark.parametrize("paper,measured,tol,comparable,expected", [
    (50.0, 50.8, 1.0, True, "reproduced"),
    (50.0, 48.5, 1.0, True, "close"),
    (50.0, 45.0, 1.0, True, "not reproduced"),
    (None, 45.0, 1.0, True, "no paper value"),
    (50.0, None, 1.0, True, "not run"),
    (None, 45.0, 1.0, False, "not comparable"),
])
def test_status_for(paper, measured, tol, comparable, expected):
    assert status_for(paper, measured, tol, comparable) == expected


def _workspace(tmp_path):
    root = tmp_path / "ws"
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "paper.yaml").write_text(yaml.safe_dump({
        "paper": {"title": "Demo"},
        "tolerance": 1.0,
        "results": [
            {"dataset": "charades_sta", "split": "test", "metric": "R1@0.5", "value": 50.0, "source": "Table 1"},
            {"dataset": "charades_sta", "split": "test", "metric": "mIoU", "value": None, "note": "not in abstract"},
            {"dataset": "tacos", "split": "test", "metric": "R1@0.5", "value": 30.0, "source": "Table 3"},
        ]}))
    runs = root / "runs"
    for seed, r15 in ((0, 49.0), (1, 51.0)):
        d = runs / "demo" / "charades_i3d" / f"t-s{seed}"
        d.mkdir(parents=True)
        write_results(d, project="demo", config="charades_i3d", dataset="charades_sta", split="test", seed=seed,
                      metrics={"R1@0.5": r15, "mIoU": 40.0 + seed}, wall_time_s=1.0)
    d = runs / "demo" / "synthetic" / "t-s0"
    d.mkdir(parents=True)
    write_results(d, project="demo", config="synthetic", dataset="synthetic", split="test", seed=0,
                  metrics={"R1@0.5": 70.0}, wall_time_s=1.0, baselines={"prior": {"R1@0.5": 10.0}})
    return root, runs


def test_project_rows_statuses(tmp_path):
    root, runs = _workspace(tmp_path)
    rows, blocks = project_rows("demo", root, runs)
    by = {(r[0], r[3]): r for r in rows}
    assert by[("charades_sta", "R1@0.5")][5] == "50.00 ± 1.41 (n=2)"
    assert by[("charades_sta", "R1@0.5")][6] == "+0.00"
    assert by[("charades_sta", "R1@0.5")][7] == "reproduced"
    assert by[("charades_sta", "mIoU")][7] == "no paper value"
    assert by[("tacos", "R1@0.5")][7] == "not run"
    assert by[("synthetic", "R1@0.5")][7] == "not comparable"
    assert len(blocks) == 1 and "| R1@0.5 | 70.00 ± 0.00 (n=1) | 10.00 ± 0.00 (n=1) |" in blocks[0]
    text = render_project("demo", root, runs)
    assert text.startswith("## demo") and "Table 1" in text
    # claim-testbed runs (runs/<p>/claim/<variant>/s<seed>) share one config across variants:
    # they have their own table (common.claim) and never enter this one
    for seed, (variant, v) in enumerate((("full", 90.0), ("no_part", 10.0)), start=1):
        d = runs / "demo" / "claim" / variant / f"s{seed}"
        d.mkdir(parents=True)
        write_results(d, project="demo", config="synthetic", dataset="synthetic", split="test", seed=seed,
                      metrics={"R1@0.5": v}, wall_time_s=1.0)
    assert project_rows("demo", root, runs) == (rows, blocks)


def test_latest_result_per_seed_wins(tmp_path):
    root, runs = _workspace(tmp_path)
    d = runs / "demo" / "charades_i3d" / "t2-s1"
    d.mkdir()
    rec = json.loads((runs / "demo" / "charades_i3d" / "t-s1" / "results.json").read_text())
    rec["metrics"]["R1@0.5"] = 57.0
    rec["created"] = "9999"
    (d / "results.json").write_text(json.dumps(rec))
    rows, _ = project_rows("demo", root, runs)
    row = next(r for r in rows if r[0] == "charades_sta" and r[3] == "R1@0.5")
    assert row[5].startswith("53.00") and row[5].endswith("(n=2)") and row[7] == "not reproduced"


def test_paper_yaml_validation(tmp_path):
    p = tmp_path / "paper.yaml"
    p.write_text(yaml.safe_dump({"results": [{"dataset": "a", "split": "b", "metric": "m", "value": 1.0}]}))
    with pytest.raises(PaperYamlError, match="source"):
        load_paper_yaml(p)
    p.write_text(yaml.safe_dump({"results": [{"dataset": "a", "split": "b", "metric": "m", "value": None}]}))
    with pytest.raises(PaperYamlError, match="note"):
        load_paper_yaml(p)


def test_results_json_schema_and_summary(tmp_path, monkeypatch):
    root, runs = _workspace(tmp_path)
    rec = read_results(next(runs.glob("demo/synthetic/*/results.json")))
    for k in ("project", "config", "dataset", "split", "seed", "metrics", "git_sha", "wall_time_s"):
        assert k in rec
    path = write_summary(root, runs)
    assert path == root / "results" / "summary.md" and "## demo" in path.read_text()


def test_compare_honours_runs_root_env(tmp_path, monkeypatch, capsys):
    from common.compare import main

    _, runs = _workspace(tmp_path)
    # results of an existing project folder name, found through $RUNS_ROOT only
    d = runs / "ecrl" / "synthetic" / "t-s0"
    d.mkdir(parents=True)
    write_results(d, project="ecrl", config="synthetic", dataset="synthetic", split="test", seed=0,
                  metrics={"R1@0.5": 61.0}, wall_time_s=1.0)
    monkeypatch.setenv("RUNS_ROOT", str(runs))
    import common.compare as cmp

    monkeypatch.setattr(cmp, "write_summary", lambda *a, **k: tmp_path / "summary.md")
    assert main(["ecrl"]) == 0
    assert "61.00 ± 0.00 (n=1)" in capsys.readouterr().out


def test_config_filter(tmp_path):
    root, runs = _workspace(tmp_path)
    rows, blocks = project_rows("demo", root, runs, configs="synth*")
    assert {r[2] for r in rows if r[5] != "—"} == {"synthetic"}
    assert all(r[7] == "not run" for r in rows if r[0] == "charades_sta")
    rows, _ = project_rows("demo", root, runs, configs="nothing,charades_*")
    assert {r[2] for r in rows if r[5] != "—"} == {"charades_i3d"}


def test_render_pivots_not_comparable_results(tmp_path):
    root, runs = _workspace(tmp_path)
    text = render_project("demo", root, runs)
    assert "| charades_sta | test | charades_i3d | R1@0.5 | 50 (Table 1) | 50.00 ± 1.41 (n=2) | +0.00 | reproduced |" in text
    assert "Measured on `synthetic`/test — not comparable" in text
    assert "| metric | synthetic |\n|---|---|\n| R1@0.5 | 70.00 ± 0.00 (n=1) |" in text


def test_context_subsets_and_readme_markers(tmp_path):
    from common.compare import README_BEGIN, README_END, update_readme

    root, runs = _workspace(tmp_path)
    paper = yaml.safe_load((root / "demo" / "paper.yaml").read_text())
    paper["context"] = [{"method": "EaTR", "dataset": "charades_sta", "split": "test", "metric": "R1@0.5",
                         "value": 68.47, "source": "X, Table 1", "tag": "fully supervised"}]
    (root / "demo" / "paper.yaml").write_text(yaml.safe_dump(paper))
    for seed, v in ((0, 40.0), (1, 44.0)):
        d = runs / "demo" / "synthetic" / f"u-s{seed}"
        d.mkdir(parents=True)
        write_results(d, project="demo", config="synthetic", dataset="synthetic", split="test", seed=seed,
                      metrics={"R1@0.5": 70.0}, wall_time_s=1.0,
                      subsets={"short": {"n": 12, "metrics": {"R1@0.5": v}, "baselines": {"bow": {"R1@0.5": 5.0}}}})
    text = render_project("demo", root, runs)
    assert "| short | 12 | demo | 42.00 ± 2.83 (n=2) |" in text
    assert "| short | 12 | bow | 5.00 ± 0.00 (n=2) |" in text
    assert "| EaTR | charades_sta | test | R1@0.5 | 68.47 | fully supervised | X, Table 1 |" in text
    assert "EaTR" not in "".join(r[2] for r in project_rows("demo", root, runs)[0])  # no status row
    readme = root / "demo" / "README.md"
    readme.write_text(f"# demo\n## Results\n{README_BEGIN}\nold\n{README_END}\n## Deviations\n")
    update_readme("demo", "new table", root)
    assert readme.read_text() == f"# demo\n## Results\n{README_BEGIN}\nnew table\n{README_END}\n## Deviations\n"


def test_paper_yaml_context_and_anatomy_validation(tmp_path):
    p = tmp_path / "paper.yaml"
    base = {"results": []}
    p.write_text(yaml.safe_dump({**base, "context": [{"method": "A", "dataset": "d", "split": "s",
                                                       "metric": "m", "value": 1.0}]}))
    with pytest.raises(PaperYamlError, match="source"):
        load_paper_yaml(p)
    p.write_text(yaml.safe_dump({**base, "anatomy": {"not_applicable": {"losses.py": ""}}}))
    with pytest.raises(PaperYamlError, match="reason"):
        load_paper_yaml(p)
