"""The paired-comparison bench: how a variant spec is read."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def paired(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import `bench/paired.py`, which runs as a plain script beside its helpers."""
    monkeypatch.syspath_prepend(str(BENCH))
    import paired as module  # type: ignore[import-not-found]  # bench/ is no package

    return module  # type: ignore[no-any-return]


def test_a_variant_reads_its_executor_workers_env_and_settings(paired: Any) -> None:
    """Known keys go to their fields; anything else is a Settings override, typed by value."""
    variant = paired.parse_variant(
        "proc:executor=processes,workers=2,env.PYTHONPATH=/x/src,parse_batch_files=40"
    )
    assert (variant.name, variant.executor, variant.workers) == ("proc", "processes", 2)
    assert variant.env == {"PYTHONPATH": "/x/src"}
    assert variant.overrides == {"parse_batch_files": 40}


def test_a_variant_runs_on_threads_unless_told(paired: Any) -> None:
    """The executor the ingest uses by default is the one a plain variant measures."""
    assert paired.parse_variant("plain:").executor == "threads"


def test_an_unknown_executor_is_refused(paired: Any) -> None:
    """Dask needs a cluster the paired bench does not start; a typo must not run threads."""
    with pytest.raises(argparse.ArgumentTypeError, match="executor"):
        paired.parse_variant("bad:executor=dask")
