"""The bench harness: a spawned measurement runs the code its variant names."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _where_probe_comes_from() -> dict[str, Any]:
    """In the child: import the probe module and report which file it came from."""
    import bench_probe  # type: ignore[import-not-found]  # only on the child's PYTHONPATH

    return {"file": bench_probe.__file__, "value": bench_probe.VALUE}


def test_a_spawned_measurement_imports_from_its_pythonpath_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variant's `PYTHONPATH` (another checkout's src/) wins over the parent's `sys.path`.

    spawn copies the parent's `sys.path` into the child; without `_pythonpath_first` the
    child imported the parent's copy of a module, and `bench/paired.py` compared a checkout
    with itself.
    """
    here, there = tmp_path / "here", tmp_path / "there"
    for folder, value in ((here, "parent"), (there, "variant")):
        folder.mkdir()
        (folder / "bench_probe.py").write_text(f"VALUE = {value!r}\n")
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.syspath_prepend(str(here))
    monkeypatch.setenv("PYTHONPATH", str(there))
    from _measure import run_measured  # type: ignore[import-not-found]  # bench/ is no package

    measured = run_measured(_where_probe_comes_from)
    assert measured.error is None
    assert measured.value == {"file": str(there / "bench_probe.py"), "value": "variant"}
    assert str(there) not in sys.path  # the parent's path is restored
