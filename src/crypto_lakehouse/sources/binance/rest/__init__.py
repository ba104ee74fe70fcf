"""Binance public REST: client, transport, paging, weight limits, circuit breaker, frames."""
