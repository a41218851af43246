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
from collections.abc import Iterator, Sequence
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


#: What ``-4`` and ``-6`` ask for, by the number people say.
FAMILIES = {4: socket.AF_INET, 6: socket.AF_INET6}


def _family_name(family: int) -> str:
    names = {int(socket.AF_INET): "IPv4", int(socket.AF_INET6): "IPv6"}
    return names.get(int(family), "any family")


async def resolve(
    host: str, port: int, family: int = socket.AF_UNSPEC
) -> tuple[tuple[Any, ...], int]:
    """The first UDP address of ``host`` (of ``family``, if given).

    Raises:
        ConfigError: the port is out of range or the host does not resolve (in that family).
    """
    if not 0 < port <= 65535:
        raise ConfigError(f"port must be in 1..65535, got {port}")
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    except socket.gaierror as error:
        wanted = "" if family == socket.AF_UNSPEC else f" as {_family_name(family)}"
        raise ConfigError(f"cannot resolve host {host!r}{wanted}: {error.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return sockaddr, family


def source_address(source: str, family: int) -> tuple[Any, ...]:
    """The local address ``source`` (a numeric address or a name) in ``family``, port 0:
    what a probe socket binds to before it connects to a target of that family.

    Raises:
        ConfigError: ``source`` has no address of that family.
    """
    try:
        infos = socket.getaddrinfo(
            source, 0, family=family, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as error:
        raise ConfigError(
            f"source address {source!r} has no {_family_name(family)} address for an "
            f"{_family_name(family)} target ({error.strerror})"
        ) from None
    return tuple(infos[0][4])


def check_source(source: str, family: int) -> None:
    """That a probe socket of ``family`` can send from ``source``: it resolves, and binding a
    socket to it works (the socket is closed at once; nothing is sent).

    Raises:
        ConfigError: it does not resolve in that family, or is not an address of this host.
    """
    address = source_address(source, family)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(address)
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(f"cannot send from source address {address[0]}: {reason}") from None


def split_host_port(target: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[V6]`` or ``[V6]:PORT`` as (host, port or ``None``).

    A bare IPv6 address (``::1``, two colons or more) is a host without a port, as ``ping``
    takes it; give its port as ``[::1]:12000``.

    Raises:
        ConfigError: brackets that do not close, or a port that is not a number in 1..65535.
    """
    host, port = target, ""
    if target.startswith("["):
        close = target.find("]")
        rest = target[close + 1 :]
        if close < 0 or (rest and not rest.startswith(":")):
            raise ConfigError(f"{target!r} is not HOST, HOST:PORT or [IPV6]:PORT")
        host, port = target[1:close], rest[1:]
        if not rest:
            return host, None
    elif target.count(":") == 1:
        host, _, port = target.partition(":")
    else:
        return target, None
    if not host:
        raise ConfigError(f"{target!r} names no host")
    if not (port.isascii() and port.isdigit() and 0 < int(port) <= 65535):
        raise ConfigError(f"{target!r}: the port must be a number in 1..65535, got {port!r}")
    return host, int(port)


def receivable_families(bound_host: str) -> frozenset[int]:
    """The address families of the sources a UDP socket bound to ``bound_host`` can hear from.

    An IPv4 socket hears IPv4 only; an IPv6 socket bound to one address hears IPv6 only; one
    bound to ``::`` hears both (IPv4 as mapped addresses; udpbeat binds it so).
    """
    try:
        address = ipaddress.ip_address(bound_host.partition("%")[0])
    except ValueError:
        return frozenset({4, 6})
    if address.version == 6 and address.is_unspecified:
        return frozenset({4, 6})
    return frozenset({address.version})


def check_allow_families(allow: Sequence[str], bound_host: str) -> None:
    """Refuse ``--allow`` networks that a socket bound to ``bound_host`` can never hear from.

    Raises:
        ConfigError: a network of another address family than the bound socket receives.
    """
    families = receivable_families(bound_host)
    for network in allow:
        try:
            version = ipaddress.ip_network(network, strict=False).version
        except ValueError:
            continue  # the reflector's own check names a malformed network
        if version not in families:
            heard = "IPv4" if families == {4} else "IPv6"
            raise ConfigError(
                f"--allow {network} is an IPv{version} network, but the server is bound to "
                f"{bound_host} and hears {heard} sources only: it could never match"
            )


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
