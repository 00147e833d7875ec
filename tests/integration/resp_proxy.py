"""A TCP proxy in front of Redis that can stop the traffic at one exact command.

Bytes go both ways unchanged. What clients send is parsed into RESP commands and what
Redis answers into replies, so for every command the proxy knows which earlier commands
of the same connection the client had no answer to yet: the ones it was pipelined
behind. A hold rule sees each command with those. Once it says hold, that command and
everything any client sends afterwards are held back (they never reach Redis) and
``on_hold`` is called: kill the client then, and Redis is left exactly as the commands
before it made it. RESP2 or RESP3 (redis-py 8's default), requests and replies.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress

Command = tuple[bytes, ...]
# (the command, the commands of its connection still unanswered when it was sent) -> hold?
HoldRule = Callable[[Command, Sequence[Command]], bool]
Value = bytes | list["Value"] | None


def parse(buf: bytes | bytearray, pos: int) -> tuple[Value, int] | None:
    """The RESP2 or RESP3 value starting at ``pos`` and the position after it, or None
    while it is not all in ``buf`` yet. Simple types come back as their line's bytes."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return None
    kind, line, pos = buf[pos], bytes(buf[pos + 1 : eol]), eol + 2
    if kind in b"+-:_,#(":
        return line, pos
    if kind in b"$!=":
        size = int(line)
        if size < 0:
            return None, pos
        end = pos + size
        return (bytes(buf[pos:end]), end + 2) if len(buf) >= end + 2 else None
    if kind in b"*~>%|":
        items: list[Value] = []
        for _ in range(int(line) * (2 if kind in b"%|" else 1)):
            parsed = parse(buf, pos)
            if parsed is None:
                return None
            item, pos = parsed
            items.append(item)
        # Attributes come before the reply they describe: one reply with it.
        return parse(buf, pos) if kind == ord("|") else (items, pos)
    raise ValueError(f"not RESP: type byte {bytes([kind])!r} before {line[:40]!r}")


def _command(value: Value) -> Command:
    if not isinstance(value, list) or not all(isinstance(v, bytes) for v in value):
        raise ValueError(f"a command must be an array of bulk strings, got {value!r:.80}")
    return tuple(v for v in value if isinstance(v, bytes))


class RespProxy:
    def __init__(
        self,
        redis_host: str,
        redis_port: int,
        hold_rule: HoldRule,
        on_hold: Callable[[Command, Sequence[Command]], None],
    ) -> None:
        self.redis_host, self.redis_port = redis_host, redis_port
        self.hold_rule, self.on_hold = hold_rule, on_hold
        self.holding = False
        self.port = 0
        # Anything but a connection ending: the test should fail, not hang.
        self.failures: list[BaseException] = []
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._sockets: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Closed, not cancelled: each connection's pumps then end on EOF, as when a side
        # hangs up (Python 3.11's server callback chokes on a cancelled handler).
        for writer in list(self._sockets):
            writer.close()
        await asyncio.wait_for(asyncio.gather(*self._connections, return_exceptions=True), 5)

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        redis_w: asyncio.StreamWriter | None = None
        self._sockets.add(client_w)
        try:
            redis_r, redis_w = await asyncio.open_connection(self.redis_host, self.redis_port)
            self._sockets.add(redis_w)
            unanswered: deque[Command] = deque()
            pumps = {
                asyncio.create_task(self._requests(client_r, redis_w, unanswered)),
                asyncio.create_task(self._replies(redis_r, client_w, unanswered)),
            }
            try:
                done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
            for pump in done:
                if (error := pump.exception()) is not None and not isinstance(error, OSError):
                    self.failures.append(error)
        except OSError:
            pass  # either side went away (a killed client resets its connections)
        finally:
            self._connections.discard(task)
            for writer in (client_w, redis_w):
                if writer is not None:
                    self._sockets.discard(writer)
                    writer.close()

    async def _requests(
        self,
        reader: asyncio.StreamReader,
        redis_w: asyncio.StreamWriter,
        unanswered: deque[Command],
    ) -> None:
        buf = bytearray()
        while data := await reader.read(1 << 16):
            buf += data
            pos = 0
            while not self.holding and (parsed := parse(buf, pos)) is not None:
                value, end = parsed
                command = _command(value)
                if self.hold_rule(command, tuple(unanswered)):
                    self.holding = True
                    self.on_hold(command, tuple(unanswered))
                    break
                # No await between this and the append: a reply cannot be counted first.
                redis_w.write(bytes(buf[pos:end]))
                unanswered.append(command)
                pos = end
            del buf[: len(buf) if self.holding else pos]
            await redis_w.drain()

    async def _replies(
        self,
        reader: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        unanswered: deque[Command],
    ) -> None:
        buf = bytearray()
        while data := await reader.read(1 << 16):
            buf += data
            pos = 0
            while (parsed := parse(buf, pos)) is not None:
                if buf[pos] != ord(">") and unanswered:  # a RESP3 push answers nothing
                    unanswered.popleft()
                pos = parsed[1]
            # Whole replies only: a command counts as answered once its client has it all.
            client_w.write(bytes(buf[:pos]))
            del buf[:pos]
            await client_w.drain()


@contextmanager
def running_proxy(
    redis_host: str,
    redis_port: int,
    hold_rule: HoldRule,
    on_hold: Callable[[Command, Sequence[Command]], None],
) -> Iterator[RespProxy]:
    """A proxy on 127.0.0.1 (``proxy.port``) served by an event loop in its own thread, so
    a test blocking its loop (the harness waits with time.sleep) does not stall Redis.
    ``hold_rule`` and ``on_hold`` run in that thread."""
    proxy = RespProxy(redis_host, redis_port, hold_rule, on_hold)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="resp-proxy", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(timeout=10)
        yield proxy
    finally:
        with suppress(Exception):
            asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
