"""The layering rules, checked on the source: ``policy/`` is the bottom (imports no other package of the
project), ``sql/`` never imports ``renderers/``, and only the composition root reads the settings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ("oot_hud", "ingest", "replicator", "renderers", "sql", "bot", "policy")
FORBIDDEN = {
    "policy": tuple(package for package in PROJECT if package != "policy"),
    "sql": ("renderers", "bot", "oot_hud", "ingest", "replicator"),
    "ingest": ("oot_hud",),
    "replicator": ("oot_hud",),
    "bot": ("oot_hud",),
    "renderers": ("oot_hud", "bot", "ingest", "replicator"),
}

# Entry points of their own (the Lambda runtime calls it): a composition root like oot_hud/.
ENTRY_POINTS = {"replicator/lambda_handler.py"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_above_it(package: str) -> None:
    files = sorted(path for path in (ROOT / package).rglob("*.py")
                   if str(path.relative_to(ROOT)) not in ENTRY_POINTS)
    assert files, package
    wrong = sorted(f"{path.relative_to(ROOT)} imports {name}" for path in files for name in imported(path)
                   if name.split(".")[0] in FORBIDDEN[package])
    assert wrong == []
