"""A lean Server-Sent Events client on raw asyncio sockets, for many streams in one process.

httpx costs about 100 KB and a lot of CPU per open stream; this reads the chunked
HTTP/1.1 response of `/stream/` itself, so one process can hold a thousand streams (the
stream benchmark) and a test can stop reading to play a stalled viewer (a small receive
buffer makes the server's writes block soon).

Imported as `sse_client` by bench scripts and as `bench.sse_client` by tests.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class Event:
    event: str
    data: str = ""
    id: str | None = None


@dataclass
class SseStream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    _pending: bytes = b""

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        path: str,
        headers: dict[str, str] | None = None,
        receive_buffer: int | None = None,
    ) -> SseStream:
        """Connect and read the response head. `receive_buffer` sets SO_RCVBUF (bytes)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        headers = {name.lower(): value for name, value in fields.items()}
        return cls(reader, writer, int(head[0].split()[1]), headers)

    async def _chunk(self) -> bytes:
        """The next piece of the body; b"" at its end (chunked or closed connection)."""
        if self.headers.get("transfer-encoding") != "chunked":
            return await self.reader.read(65536)
        size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            return b""
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def events(self) -> AsyncIterator[Event]:
        """Events in order until the server ends the stream (or the connection drops)."""
        while True:
            while b"\n\n" not in self._pending:
                try:
                    chunk = await self._chunk()
                except (asyncio.IncompleteReadError, ConnectionError):
                    chunk = b""
                if not chunk:
                    return
                self._pending += chunk
            block, self._pending = self._pending.split(b"\n\n", 1)
            if event := _parse(block.decode()):
                yield event

    async def next_event(self, *kinds: str) -> Event | None:
        """The next event of one of these kinds (None at the end of the stream)."""
        async for event in self.events():
            if event.event in kinds:
                return event
        return None

    def close(self) -> None:
        self.writer.close()


def _parse(block: str) -> Event | None:
    fields: dict[str, str] = {}
    for line in block.split("\n"):
        if line and not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    if "event" not in fields:
        return None
    return Event(fields["event"], fields.get("data", ""), fields.get("id"))
