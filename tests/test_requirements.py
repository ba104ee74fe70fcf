"""The suite's own contract: docs/requirements.md stays true, and timeouts are as documented."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import cast

import pytest

from tests import conftest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "requirements.py"
SPEC_IDS = [f"R{group}.{item}" for group in range(1, 8) for item in range(1, 4)]


def _load_script() -> ModuleType:
    """Import scripts/requirements.py (a script, not a package module) under its own name."""
    spec = importlib.util.spec_from_file_location("requirements_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """Return the generator script as a module."""
    return _load_script()


def test_the_page_is_current_and_every_built_requirement_has_collected_tests() -> None:
    """`--check` collects the suite in its own process; it passes only when nothing drifted."""
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout


def test_the_table_lists_the_twenty_one_requirements_in_order(script: ModuleType) -> None:
    """R1.1 to R7.3, once each, every one with a status the page knows."""
    assert [r.id for r in script.REQUIREMENTS] == SPEC_IDS
    assert {r.status for r in script.REQUIREMENTS} <= {"built", "partly built", "not built yet"}
    assert all(r.approach for r in script.REQUIREMENTS if r.status != "built")


def test_a_built_requirement_without_a_collected_test_is_reported(script: ModuleType) -> None:
    """A requirement claimed built must name a test that pytest collects."""
    table = (script.Requirement("R3.2", "fault tolerance", "retries", "built"),)
    found = script.problems(table, {}, ROOT / "src" / "crypto_lakehouse")
    assert found == ["R3.2 is built but no collected test is marked req('R3.2')"]
    assert script.problems(table, {"R3.2": ["tests/a.py::test_b"]}) == []


def test_a_marker_naming_an_unknown_id_is_reported(script: ModuleType) -> None:
    """A typo such as R9.9 in a marker is caught, with the tests that carry it."""
    table = (script.Requirement("R4.1", "auth", "keys", "not built yet"),)
    found = script.problems(table, {"R9.9": ["tests/a.py::test_b"]})
    assert found == ["marker names unknown requirement R9.9: tests/a.py::test_b"]


def test_a_module_that_does_not_exist_is_reported(script: ModuleType, tmp_path: Path) -> None:
    """A module path in the table must exist under the package, so moves keep the page true."""
    (tmp_path / "storage").mkdir()
    (tmp_path / "storage" / "delta.py").write_text("")
    table = (script.Requirement("R3.3", "consistency", "acid", "built",
                                ("storage/delta.py", "storage/tables.py")),)  # fmt: skip
    found = script.problems(table, {"R3.3": ["tests/a.py::test_b"]}, tmp_path)
    assert found == ["R3.3 names storage/tables.py, which is not under src/crypto_lakehouse/"]


def test_the_page_shows_status_modules_approach_figures_and_tests(script: ModuleType) -> None:
    """Each requirement gets a section: status, modules, how it is approached, figures, tests."""
    table = (
        script.Requirement("R2.3", "scalability", "to 10 nodes", "partly built",
                           ("ingest/runtime/executor.py",), "Dask scale-out tests instead."),
        script.Requirement("R4.1", "auth", "keys", "not built yet", (), "Not built yet."),
    )  # fmt: skip
    page = script.render(table, {"R2.3": ["tests/x.py::test_dask"]}, {"R2.3": ["2.78 s per GB"]})
    assert "| [R2.3](#r23-scalability) | scalability | partly built | 1 |" in page
    assert "| [R4.1](#r41-auth) | auth | not built yet | 0 |" in page
    section = page.split("## R2.3 scalability", 1)[1].split("## R4.1", 1)[0]
    assert "**partly built.** to 10 nodes." in section
    assert "Dask scale-out tests instead." in section
    assert "`ingest/runtime/executor.py`" in section
    assert "- 2.78 s per GB" in section
    assert "- `tests/x.py::test_dask`" in section


class _Item:
    """The part of a collected pytest item that the timeout hook reads and writes."""

    def __init__(self, *marks: pytest.MarkDecorator) -> None:
        self.keywords: dict[str, object] = {}
        self.marks = {mark.mark.name: mark.mark for mark in marks}

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        """Return the item's marker of that name, if any."""
        return self.marks.get(name)

    def add_marker(self, marker: pytest.MarkDecorator) -> None:
        """Mark the item, as pytest does when a hook adds a marker."""
        self.marks[marker.mark.name] = marker.mark


def test_a_slow_test_gets_the_long_timeout_unless_it_names_its_own(
    request: pytest.FixtureRequest,
) -> None:
    """Every test stops after 120 s; `slow` ones after 600 s; an explicit timeout wins."""
    assert request.config.getini("timeout") == "120"
    slow, own, plain = (
        _Item(pytest.mark.slow),
        _Item(pytest.mark.slow, pytest.mark.timeout(30)),
        _Item(),
    )
    config = cast("pytest.Config", SimpleNamespace(getoption=lambda _name: True))
    conftest.pytest_collection_modifyitems(config, cast("list[pytest.Item]", [slow, own, plain]))
    timeouts = [item.marks["timeout"].args if "timeout" in item.marks else None
                for item in (slow, own, plain)]  # fmt: skip
    assert timeouts == [(conftest.SLOW_TIMEOUT_SECONDS,), (30,), None]
    assert conftest.SLOW_TIMEOUT_SECONDS == 600
