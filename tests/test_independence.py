from pathlib import Path

from ci.check_independence import violations

ROOT = Path(__file__).resolve().parent.parent


def test_no_project_imports_another():
    assert violations(ROOT) == []


def test_checker_catches_cross_imports(tmp_path):
    for proj in ("ecrl", "ssrn"):
        (tmp_path / proj).mkdir()
        (tmp_path / proj / "paper.yaml").write_text("results: []\n")
    (tmp_path / "notes").mkdir()  # no paper.yaml: not a project, so importing it is not checked
    (tmp_path / "notes" / "x.py").write_text("import ecrl\n")
    (tmp_path / "ecrl" / "ok.py").write_text("import common.config\nfrom common import run\ns = 'import ssrn'\n")
    (tmp_path / "ecrl" / "bad.py").write_text("import os\nfrom ssrn.model import Net\n")
    (tmp_path / "ssrn" / "bad2.py").write_text("import ecrl\n")
    assert violations(tmp_path) == ["ecrl/bad.py:2: ecrl imports ssrn.model", "ssrn/bad2.py:1: ssrn imports ecrl"]
