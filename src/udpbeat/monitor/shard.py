"""``--shard I/N``: split one target list among N monitors, with no coordinator and no overlap.

Rendezvous (highest random weight) hashing: each target goes to the shard whose hash of
``(shard, name)`` is highest. Every monitor computes the same answer from the name alone, so N
monitors given the same file take disjoint sets that together cover it; and when N changes to
N + 1, only the targets that move to the new shard move (about 1/(N+1) of them), the others
stay where they were. The hash is BLAKE2b, not Python's ``hash()``, so it is the same in every
process and on every machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol, TypeVar

from udpbeat.errors import ConfigError

#: Most shards accepted (a sanity bound: the cost of placing a target grows with N).
MAX_SHARDS = 1024


def weight(shard: int, name: str) -> int:
    """The rendezvous weight of ``name`` on ``shard``."""
    digest = hashlib.blake2b(f"{shard}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_of(name: str, count: int) -> int:
    """The shard (``0 <= shard < count``) that takes the target ``name``."""
    return max(range(count), key=lambda shard: weight(shard, name))


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``, shards numbered from 0: ``0/3``, ``1/3`` and ``2/3``.

    Raises:
        ConfigError: not of that shape, or not ``0 <= I < N <= MAX_SHARDS``.
    """
    index_text, slash, count_text = text.partition("/")
    if not slash or not index_text.strip().isdigit() or not count_text.strip().isdigit():
        raise ConfigError(f"--shard must be I/N (e.g. 0/3), got {text!r}")
    index, count = int(index_text), int(count_text)
    if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
        raise ConfigError(
            f"--shard I/N needs 0 <= I < N <= {MAX_SHARDS} (shards are numbered from 0), "
            f"got {text!r}"
        )
    return index, count


class Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=Named)


def select(items: Iterable[N], index: int, count: int) -> list[N]:
    """The items (targets, by their ``name``) that shard ``index`` of ``count`` takes."""
    if count == 1:
        return list(items)
    return [item for item in items if shard_of(item.name, count) == index]
