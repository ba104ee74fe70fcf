"""Local stand-in for Binance market-data WebSockets (raw `/ws/<stream>` and `/stream?streams=`).

It plays a script of (stream, event) pairs in order across connections: each connection
sends the not-yet-sent events of the streams it subscribed to (combined streams wrapped as
{"stream", "data"}), then waits for more (`push`). Scripted disconnects close the N-th
connection after a number of messages, either abruptly (no close frame, like a network
drop) or with close code 1001; `skip_after_disconnect` drops events that a real client
would miss while away. The server pings every `ping_interval` and counts the pongs.
It runs its own event loop in a background thread:

    with WsServer(script=[("btcusdt@aggTrade", {...})], disconnect_after=[5]) as server:
        client = BinanceStreamClient("spot", ["btcusdt@aggTrade"], settings=settings,
                                     base_url=server.url)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from tests.servers.lifecycle import StartStop

if TYPE_CHECKING:
    from collections.abc import Sequence

    from websockets.asyncio.server import ServerConnection

DisconnectMode = Literal["abort", "close"]


def _streams_of(target: str) -> tuple[set[str], bool]:
    """Return (subscribed streams, combined?) of a request target."""
    parts = urlsplit(target)
    if parts.path.rstrip("/") == "/stream":
        names = parse_qs(parts.query).get("streams", [""])[0]
        return set(filter(None, names.split("/"))), True
    return {parts.path.removeprefix("/ws/")}, False


class WsServer(StartStop):
    """Threaded WebSocket stand-in with a shared event script, disconnects and pings."""

    def __init__(
        self,
        *,
        script: Sequence[tuple[str, Any]] = (),
        disconnect_after: Sequence[int] = (),
        disconnect_mode: DisconnectMode = "abort",
        skip_after_disconnect: int = 0,
        message_interval: float = 0.0,
        ping_interval: float | None = 0.2,
        host: str = "127.0.0.1",
    ) -> None:
        """Configure the stand-in; `start` (or `with`) binds a free port.

        Args:
            script: (stream name, event payload) pairs, sent in order.
            disconnect_after: Message counts after which connection 0, 1, … is dropped.
            disconnect_mode: "abort" drops TCP without a close frame; "close" sends 1001.
            skip_after_disconnect: Script events discarded after each scripted drop.
            message_interval: Seconds between messages on a connection.
            ping_interval: Seconds between server pings; None disables them.
            host: Interface to bind.
        """
        self._script: list[tuple[str, Any]] = list(script)
        self._disconnect_after = list(disconnect_after)
        self._mode = disconnect_mode
        self._skip = skip_after_disconnect
        self._interval = message_interval
        self._ping_interval = ping_interval
        self.host = host
        self.port = 0
        self.connections: list[str] = []
        self.pongs = 0
        self._pong_seen = threading.Condition()
        self.sent = 0
        self._cursor = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the base URL, e.g. ws://127.0.0.1:PORT."""
        return f"ws://{self.host}:{self.port}"

    def push(self, stream: str, data: Any) -> None:
        """Append one event to the script (thread-safe)."""
        loop = self._loop
        if loop is None:
            self._script.append((stream, data))
            return
        loop.call_soon_threadsafe(self._append, stream, data)

    def _append(self, stream: str, data: Any) -> None:
        """Append on the server loop and wake the connections."""
        self._script.append((stream, data))
        if self._changed is not None:
            self._changed.set()

    async def _pinger(self, ws: ServerConnection) -> None:
        """Ping periodically and count the pongs that come back."""
        assert self._ping_interval is not None
        while True:
            await asyncio.sleep(self._ping_interval)
            waiter = await ws.ping()
            await asyncio.wait_for(waiter, timeout=5)
            with self._pong_seen:
                self.pongs += 1
                self._pong_seen.notify_all()

    def wait_for_pongs(self, count: int, timeout: float) -> bool:
        """Block until `count` pongs have come back (True) or `timeout` passes (False)."""
        with self._pong_seen:
            return self._pong_seen.wait_for(lambda: self.pongs >= count, timeout)

    async def _handler(self, ws: ServerConnection) -> None:
        """Play the script to one connection."""
        assert self._changed is not None
        index = len(self.connections)
        self.connections.append(ws.request.path if ws.request else "")
        streams, combined = _streams_of(self.connections[-1])
        limit = self._disconnect_after[index] if index < len(self._disconnect_after) else None
        pinger = asyncio.create_task(self._pinger(ws)) if self._ping_interval else None
        sent_here = 0
        try:
            while True:
                while self._cursor < len(self._script):
                    stream, data = self._script[self._cursor]
                    self._cursor += 1
                    if stream not in streams:
                        continue
                    payload = {"stream": stream, "data": data} if combined else data
                    await ws.send(json.dumps(payload))
                    sent_here += 1
                    self.sent += 1
                    if limit is not None and sent_here >= limit:
                        self._cursor += self._skip
                        await self._drop(ws)
                        return
                    if self._interval:
                        await asyncio.sleep(self._interval)
                self._changed.clear()
                await self._wait_for_events(ws)
        except ConnectionClosed:
            return
        finally:
            if pinger is not None:
                pinger.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pinger

    async def _wait_for_events(self, ws: ServerConnection) -> None:
        """Wait until the script grows; raise ConnectionClosed if the connection ends first."""
        assert self._changed is not None
        changed = asyncio.ensure_future(self._changed.wait())
        closed = asyncio.ensure_future(ws.wait_closed())
        await asyncio.wait({changed, closed}, return_when=asyncio.FIRST_COMPLETED)
        for task in (changed, closed):
            task.cancel()
        if ws.close_code is not None:
            raise ConnectionClosed(None, None)

    async def _drop(self, ws: ServerConnection) -> None:
        """End a connection the scripted way."""
        if self._mode == "close":
            await ws.close(1001, "scripted disconnect")
        else:
            ws.transport.abort()

    async def _main(self) -> None:
        """Serve until stopped."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        async with serve(self._handler, self.host, 0, ping_interval=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop.wait()
            server.close(close_connections=True)

    def start(self) -> WsServer:
        """Start the event loop thread and wait until the port is bound."""
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("WsServer did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
