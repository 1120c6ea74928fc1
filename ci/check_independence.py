"""Fail when a paper folder imports another paper folder (projects import only `common`).

    python -m ci.check_independence [ROOT]

Scans every .py file of every project folder (a folder with a ``paper.yaml``, see
:mod:`common.projects`) with the AST, so strings and comments do not count, and prints each
offending import as file:line."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from common.projects import discover


def violations(root: Path) -> list[str]:
    out = []
    projects = discover(root)
    for proj in projects:
        folder = root / proj
        others = set(projects) - {proj}
        for py in sorted(folder.rglob("*.py")):
            try:
                tree = ast.parse(py.read_text(), filename=str(py))
            except SyntaxError as e:
                out.append(f"{py}: cannot parse ({e})")
                continue
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for n in names:
                    if n.split(".")[0] in others:
                        out.append(f"{py.relative_to(root)}:{node.lineno}: {proj} imports {n}")
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent
    bad = violations(root)
    for line in bad:
        print(line)
    print("independence: " + ("FAIL" if bad else "ok"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
