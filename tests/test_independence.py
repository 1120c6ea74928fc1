from pathlib import Path

from ci.check_independence import violations

ROOT = Path(__file__).resolve().parent.parent


def test_no_project_imports_another():
    assert violations(ROOT) == []


def test_checker_catches_cross_imports(tmp_path):
    (tmp_path / "ecrl").mkdir()
    (tmp_path / "ssrn").mkdir()
    (tmp_path / "ecrl" / "ok.py").write_text("import common.config\nfrom common import run\ns = 'import ssrn'\n")
    (tmp_path / "ecrl" / "bad.py").write_text("import os\nfrom ssrn.model import Net\n")
    (tmp_path / "ssrn" / "bad2.py").write_text("import ecrl\n")
    assert violations(tmp_path) == ["ecrl/bad.py:2: ecrl imports ssrn.model", "ssrn/bad2.py:1: ssrn imports ecrl"]
