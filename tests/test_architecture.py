"""The import rule of docs/architecture.md: modules import downward only.

Layers, top to bottom (a module may import its own package, any package of a lower layer,
and, inside the middle layer, only packages ranked below its own):

    cli, serve, flows                         adapters
    recent > ingest > gold > quality, query   capabilities
    sources, storage, meta                    I/O (sources and storage never import each other)
    config, exceptions, datasets, retry, telemetry

Frameworks of the adapters (typer, rich, fastapi, uvicorn, prefect) are imported only there.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

import pytest

PACKAGE_ROOT: Final = Path(__file__).resolve().parents[1] / "src" / "crypto_lakehouse"

# Rank of each top-level package or module: an import must point to a strictly lower rank,
# or stay inside its own package.
RANKS: Final[dict[str, int]] = {
    "cli": 90,
    "serve": 90,
    "flows": 90,
    "recent": 60,
    "ingest": 50,
    "gold": 40,
    "quality": 30,
    "query": 30,
    "sources": 20,
    "storage": 20,
    "meta": 20,
    "retry": 10,
    "config": 10,
    "exceptions": 0,
    "datasets": 10,
    "telemetry": 10,
}
# Bottom-layer modules may import each other only downward in this order.
BOTTOM_ORDER: Final = {"exceptions": 0, "telemetry": 1, "config": 1, "datasets": 1, "retry": 2}
ADAPTER_ONLY: Final = frozenset({"typer", "rich", "fastapi", "uvicorn", "prefect", "starlette"})
ADAPTERS: Final = frozenset({"cli", "serve", "flows"})


def _top(module_path: Path, package_root: Path = PACKAGE_ROOT) -> str:
    """Return the top-level package (or module) name of a source file under the package."""
    return module_path.relative_to(package_root).with_suffix("").parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """Return (line, absolute module name) of every import statement in a source file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend(
                (node.lineno, f"{node.module}.{alias.name}")
                if node.module == "crypto_lakehouse"
                else (node.lineno, node.module)
                for alias in node.names
            )
    return found


def layer_violations(package_root: Path) -> list[str]:
    """Return one line per import that breaks the layer rule, naming file, line and target."""
    problems: list[str] = []
    for path in sorted(package_root.rglob("*.py")):
        own = _top(path, package_root)
        if own in {"__init__", "__main__"}:
            continue
        for line, module in _imports(path):
            where = f"{path.relative_to(package_root.parent)}:{line}"
            head = module.split(".")[0]
            if head in ADAPTER_ONLY and own not in ADAPTERS:
                problems.append(f"{where} imports {head}, a framework only adapters may use")
            if head != "crypto_lakehouse" or module == "crypto_lakehouse":
                continue
            target = module.split(".")[1]
            if target == own:
                continue
            if target not in RANKS or own not in RANKS:
                problems.append(f"{where} imports {module}: package not in the layer table")
            elif own in BOTTOM_ORDER and target in BOTTOM_ORDER:
                if BOTTOM_ORDER[target] >= BOTTOM_ORDER[own]:
                    problems.append(f"{where}: {own} imports {target} (same or higher base module)")
            elif RANKS[target] >= RANKS[own]:
                problems.append(f"{where}: {own} imports {target}, which is not below it")
    return problems


def test_every_module_imports_downward_only() -> None:
    """No module of the package imports its own layer's peers upward or any higher layer."""
    assert layer_violations(PACKAGE_ROOT) == []


def test_every_package_has_a_rank() -> None:
    """A new top-level package must be placed in the layer table before it can be imported."""
    tops = {_top(path) for path in PACKAGE_ROOT.rglob("*.py")} - {"__init__", "__main__"}
    assert tops <= set(RANKS), sorted(tops - set(RANKS))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from crypto_lakehouse.storage.root import LakeRoot\n", "sources imports storage"),
        ("from crypto_lakehouse.cli import render\n", "sources imports cli"),
        ("import typer\n", "imports typer"),
    ],
)
def test_the_rule_catches_an_upward_or_sideways_import(
    tmp_path: Path, source: str, expected: str
) -> None:
    """A planted import from sources into storage, an adapter or a framework is reported."""
    root = tmp_path / "crypto_lakehouse"
    (root / "sources").mkdir(parents=True)
    (root / "sources" / "bad.py").write_text(source)
    problems = layer_violations(root)
    assert len(problems) == 1
    assert expected.rsplit(maxsplit=1)[-1] in problems[0]
    assert "sources/bad.py:1" in problems[0]


def test_the_rule_allows_a_downward_import(tmp_path: Path) -> None:
    """An ingest module importing storage and exceptions breaks no rule."""
    root = tmp_path / "crypto_lakehouse"
    (root / "ingest").mkdir(parents=True)
    (root / "ingest" / "ok.py").write_text(
        "from crypto_lakehouse.storage import delta\nfrom crypto_lakehouse import exceptions\n"
    )
    assert layer_violations(root) == []
