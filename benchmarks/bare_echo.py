"""The baseline: the fastest plain-Python UDP echo, a blocking ``recvfrom``/``sendto`` loop.

Usage: ``python benchmarks/bare_echo.py HOST PORT``. Runs until killed; prints nothing.
"""

from __future__ import annotations

import socket
import sys


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    recvfrom, sendto = sock.recvfrom, sock.sendto
    while True:
        data, address = recvfrom(2048)
        sendto(data, address)


if __name__ == "__main__":
    main()
