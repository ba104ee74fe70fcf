"""crypto-lakehouse: Binance public market data as typed, verified Delta tables."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
