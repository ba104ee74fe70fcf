"""Binance WebSocket market streams: client with reconnects, and frame parsing."""
