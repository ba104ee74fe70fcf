"""Binance adapters: the public archive, REST and WebSocket; no storage code in here."""
