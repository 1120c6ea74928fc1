"""dmba's claim testbed tables: the three groups (coverage x density, ground-truth manipulation, five
victims) are built from the results on disk, and `--update-readme` pastes them between the claim
markers. No training: results.json files are written by hand."""

from common.claim import CLAIM_BEGIN, CLAIM_END
from common.results import write_results


def _result(runs, variant, seed, ratio):
    d = runs / "dmba" / "claim" / variant / f"s{seed}"
    d.mkdir(parents=True)
    write_results(d, project="dmba", config="claim",
                  dataset="synthetic", split="test", seed=seed, wall_time_s=0.0,
                  metrics={"mae": 5.0 + seed, "count_ratio": ratio}, baselines={"ridge": {"mae": 10.0}})


def test_grouped_tables_from_disk_and_into_the_readme(tmp_path, monkeypatch, capsys):
    import common.claim as common_claim
    from dmba import claim

    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        _result(runs, "csrnet-clean", seed, 1.0)
        _result(runs, "csrnet-c100_dense", seed, 0.3 + 0.1 * seed)   # 0.3, 0.4, 0.5
        _result(runs, "can-minus", seed, 0.2)
    monkeypatch.setattr(common_claim, "REPO_ROOT", tmp_path)
    readme = tmp_path / "dmba" / "README.md"
    readme.parent.mkdir()
    readme.write_text(f"# dmba\n### Claim testbed\n{CLAIM_BEGIN}\nold\n{CLAIM_END}\n### Bench\n")

    assert claim.main(["--table-only", "--update-readme", "--runs-root", str(runs)]) == 0
    md = (runs / "dmba" / "claim" / "claim.md").read_text()
    assert md.startswith("# dmba claim testbed\n") and "min wall" not in md   # nothing ran
    groups = md.split("\n## ")[1:]
    assert [g.split("\n")[0][:30] for g in groups] == ["(a) full and dense: DMBA- on C", "(b) ground-truth manipulation ",
                                                      "(c) the headline attack (DMBA-"]
    row = "| DMBA-, 100 % coverage, dense | 0,1,2 | 6.00 ± 1.00 | 0.40 ± 0.10 |"
    assert all(row in g for g in groups)                  # the headline row stands in every group
    assert "| CAN, DMBA-, full dense |" in groups[2] and "CAN" not in groups[0] + groups[1]
    assert "sparse" not in md                             # variants without results are left out
    doc = readme.read_text()
    assert "old" not in doc and doc.endswith(f"{CLAIM_END}\n### Bench\n")
    pasted = doc.split(CLAIM_BEGIN)[1]
    assert "\n#### (a) full and dense" in pasted and "\n## " not in pasted and "# dmba claim testbed" not in pasted
    assert row in pasted and "count_ratio = mean over test images" in pasted
    assert "updated" in capsys.readouterr().out
