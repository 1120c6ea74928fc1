"""Project discovery: a project is a top-level folder holding a ``paper.yaml``.

The Makefile, :mod:`common.compare`, the independence check (``ci/check_independence.py``) and
the conformance test (``tests/test_anatomy.py``) all find projects this way, so adding a paper
means adding its folder, never editing a list.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def discover(root: str | Path = REPO_ROOT) -> list[str]:
    """Sorted names of the top-level folders of ``root`` that hold a ``paper.yaml``."""
    root = Path(root)
    return sorted(p.parent.name for p in root.glob("*/paper.yaml") if not p.parent.name.startswith("."))


if __name__ == "__main__":  # `python -m common.projects`: one name per line (used by the Makefile)
    print("\n".join(discover()))
