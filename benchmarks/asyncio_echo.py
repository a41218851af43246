"""An echo on asyncio's default ``DatagramProtocol`` (one datagram per loop iteration).

Usage: ``python benchmarks/asyncio_echo.py HOST PORT``. Runs until killed; prints nothing.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, cast


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.transport.sendto(data, addr)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(Echo, local_addr=(host, port))
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
