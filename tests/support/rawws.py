"""A WebSocket client on a bare TCP stream (RFC 6455), for tests that watch the closing handshake itself.

Library clients hide what a test must see here: the close frame's code as
sent, whether the server closed the TCP connection before the client's close
reply, and when the client chooses to send that reply.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from dataclasses import dataclass, field


class HandshakeFailed(Exception):
    """The server did not upgrade (the status line is the message)."""


@dataclass
class Frame:
    """One frame from the server (unmasked, as servers send)."""

    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        """The code of a close frame (None for other frames, or a close without a code)."""
        if self.opcode != 0x8 or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])


@dataclass
class RawWebSocket:
    """One client connection; frames are read whole, control frames included."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    texts: list[str] = field(default_factory=list)

    @classmethod
    async def connect(cls, host: str, port: int, path: str, timeout: float = 10.0) -> RawWebSocket:
        """Open a TCP connection and upgrade it; HandshakeFailed with the status line otherwise."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status:
            writer.close()
            raise HandshakeFailed(status)
        return cls(reader, writer)

    async def frame(self, timeout: float = 10.0) -> Frame:
        """The next frame; IncompleteReadError when the server closed the connection first."""
        head = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        payload = await self.reader.readexactly(length)
        return Frame(opcode, payload)

    async def until_close(self, timeout: float = 10.0) -> Frame:
        """Read frames (keeping texts) until the close frame, and return it."""
        while True:
            frame = await self.frame(timeout)
            if frame.opcode == 0x1:
                self.texts.append(frame.payload.decode())
            elif frame.opcode == 0x8:
                return frame

    def send(self, opcode: int, payload: bytes) -> None:
        """Send one masked frame (clients must mask)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if len(payload) < 126:
            header = bytes((0x80 | opcode, 0x80 | len(payload)))
        else:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, len(payload))
        self.writer.write(header + mask + masked)

    async def reply_close(self, code: int = 1000) -> None:
        """Send the close reply."""
        self.send(0x8, struct.pack("!H", code))
        await self.writer.drain()

    async def closed_by_server(self, timeout: float) -> bool:
        """Whether the server closes the TCP connection (EOF, or a reset) within ``timeout`` seconds."""
        try:
            data = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return data == b""

    def close(self) -> None:
        """Drop the connection."""
        self.writer.close()
