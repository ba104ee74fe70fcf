"""Recent and live data: REST update, WebSocket stream, provisional rows, supersession."""
