"""crypto-lakehouse: Binance public market data as typed, verified Delta tables."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crypto_lakehouse.query.api import Lake

__all__ = ["Lake", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import `Lake` on first use, so `import crypto_lakehouse` (and the CLI) stays light."""
    if name == "Lake":
        from crypto_lakehouse.query.api import Lake

        return Lake
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
