"""Socket helpers shared by the I/O shells (server, client, and the tools to come).

Nothing here decides anything about heartbeats: binding, resolving, and showing addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import sys
from collections.abc import Iterator
from typing import Any

from udpbeat.errors import ConfigError

#: The exercise's port, the default of every udpbeat command.
DEFAULT_PORT = 12000


def bind_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` (``""``: every IPv4 and IPv6 interface).

    Raises:
        ConfigError: the port is out of range, the host does not resolve, or binding failed.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}")
    if host in ("", "*"):
        candidates = [(socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as error:
            raise ConfigError(f"cannot resolve host {host!r}: {error.strerror}") from None
        candidates = [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in infos]
    last_error: OSError | None = None
    for family, address in candidates:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6 and host in ("", "*"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((address, port))
        except OSError as error:
            sock.close()
            last_error = error
            continue
        sock.setblocking(False)
        return sock
    reason = last_error.strerror if last_error is not None else "no address"
    raise ConfigError(f"cannot bind UDP {host or '*'}:{port}: {reason}")


def display_address(address: tuple[object, ...]) -> str:
    """``host:port`` (``[host]:port`` for IPv6), with IPv4-mapped IPv6 shown as plain IPv4."""
    host, port = str(address[0]), address[1]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(host: str, port: int) -> tuple[tuple[Any, ...], int]:
    """The first UDP address of ``host``; raises ConfigError if it does not resolve."""
    if not 0 < port <= 65535:
        raise ConfigError(f"port must be in 1..65535, got {port}")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as error:
        raise ConfigError(f"cannot resolve host {host!r}: {error.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return sockaddr, family


# --- ICMP errors with their sender (Linux IP_RECVERR) ---------------------------------------

#: Linux's values; Python's socket module does not name them.
IP_RECVERR = 11
IPV6_RECVERR = 25
SOL_IP = 0
SOL_IPV6 = 41
#: ``struct sock_extended_err``: errno, origin, type, code, pad, info, data.
_EXTENDED_ERROR = struct.Struct("=IBBBBII")
#: ``ee_origin`` of an error that an ICMP message brought (v4, v6).
_ORIGIN_ICMP = (2, 3)


def enable_error_queue(sock: socket.socket) -> bool:
    """Ask the kernel to queue ICMP errors with their details (Linux); ``True`` if it will."""
    if not sys.platform.startswith("linux"):
        return False
    level, option = (
        (SOL_IPV6, IPV6_RECVERR) if sock.family == socket.AF_INET6 else (SOL_IP, IP_RECVERR)
    )
    try:
        sock.setsockopt(level, option, 1)
    except OSError:
        return False
    if sock.family == socket.AF_INET6:
        # An IPv6 socket may talk to IPv4-mapped addresses: their errors come as IPv4 ones.
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_IP, IP_RECVERR, 1)
    return True


def read_error_queue(
    sock: socket.socket, limit: int = 64
) -> Iterator[tuple[tuple[str, int] | None, bytes]]:
    """Take the queued errors off ``sock``: for each, who sent it and the datagram it is about.

    The sender is ``(host, port)`` of the ICMP message's source (port 0), or ``None`` for an
    error the local stack raised itself; the datagram is the one of ours the error quotes.
    """
    for _ in range(limit):
        try:
            payload, ancillary, _flags, _address = sock.recvmsg(
                RECEIVE_ERROR_SIZE, 512, socket.MSG_ERRQUEUE
            )
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        offender: tuple[str, int] | None = None
        for level, kind, data in ancillary:
            if (level, kind) not in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
                continue
            if len(data) < _EXTENDED_ERROR.size:
                continue
            origin = _EXTENDED_ERROR.unpack_from(data)[1]
            if origin in _ORIGIN_ICMP:
                offender = _decode_sockaddr(data[_EXTENDED_ERROR.size :])
        yield offender, payload


#: Bytes of our own datagram an error quotes that are worth reading.
RECEIVE_ERROR_SIZE = 512


def _decode_sockaddr(raw: bytes) -> tuple[str, int] | None:
    if len(raw) < 2:
        return None
    family = int.from_bytes(raw[:2], sys.byteorder)
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24]), int.from_bytes(raw[2:4], "big")
    return None


def same_host(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Whether two socket addresses name the same host (IPv4-mapped IPv6 equals its IPv4)."""
    return _canonical_host(str(a[0])) == _canonical_host(str(b[0]))


def _canonical_host(host: str) -> str:
    host = host.partition("%")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def read_error_queue_to(
    sock: socket.socket, limit: int = 64
) -> Iterator[tuple[tuple[Any, ...] | None, tuple[str, int] | None, bytes, float | None]]:
    """:func:`read_error_queue` for an unconnected socket: for each error, also the address
    the datagram it quotes was sent to (``msg_name`` of the error message, ``None`` if the
    kernel gave none), so that the error can be put down to the right peer, and when the error
    arrived (Unix time, when the socket has ``SO_TIMESTAMPNS``; else ``None``).

    Yields ``(destination, offender, quoted datagram, arrival)``.
    """
    for _ in range(limit):
        try:
            payload, ancillary, _flags, destination = sock.recvmsg(
                RECEIVE_ERROR_SIZE, 512, socket.MSG_ERRQUEUE
            )
        except OSError:  # BlockingIOError: the queue is empty
            return
        offender: tuple[str, int] | None = None
        arrival: float | None = None
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
                seconds, nanoseconds = struct.unpack_from("=qq", data)
                arrival = seconds + nanoseconds * 1e-9
            if (level, kind) not in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
                continue
            if len(data) >= _EXTENDED_ERROR.size and _EXTENDED_ERROR.unpack_from(data)[1] in (
                _ORIGIN_ICMP
            ):
                offender = _decode_sockaddr(data[_EXTENDED_ERROR.size :])
        yield (destination or None), offender, payload, arrival


#: ``SO_TIMESTAMPNS`` (= ``SCM_TIMESTAMPNS``) on Linux: receive times in ancillary data.
SO_TIMESTAMPNS = 35
