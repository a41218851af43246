"""The exercise's own server and client, taken from its text at run time.

The repository holds no copy of the exercise's code. Its two scripts are the ``python`` code
blocks of ``../shared/reference/exercise-udp-heartbeat.md`` (beside the repository's root), under
the headings ``#### Server Code:`` and ``#### Client Code:``. :func:`write_script` writes one of
them to a file with a single change, the address: the server binds and the client sends to a
loopback port the test chose instead of ``''``/``localhost`` and 12000. Everything else runs as
written. Tests that need the scripts skip when the text is absent (:data:`SKIP_REASON`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from helpers import ROOT

#: The exercise's text, beside the repository (as ``shared/`` is in CI and here).
REFERENCE = ROOT.parent / "shared" / "reference" / "exercise-udp-heartbeat.md"
SKIP_REASON = f"the exercise's text (for its server and client code) is not at {REFERENCE}"

Role = Literal["server", "client"]

#: The one line of each script that is changed: where it listens or sends.
ADDRESS_LINES: dict[Role, tuple[str, str]] = {
    "server": ("serverSocket.bind(('', 12000))", "serverSocket.bind(({host!r}, {port}))"),
    "client": ("serverAddress = ('localhost', 12000)", "serverAddress = ({host!r}, {port})"),
}

_BLOCK = re.compile(r"^#+ *(Server|Client) Code:? *\n+```python\n(.*?)^```", re.M | re.S)


def code_blocks(markdown: str) -> dict[Role, str]:
    """The server's and the client's code, each exactly as the text has it.

    Raises:
        ValueError: the text does not have exactly one block of each.
    """
    found = [(label.lower(), code) for label, code in _BLOCK.findall(markdown)]
    blocks: dict[Role, str] = {}
    roles: tuple[Role, ...] = ("server", "client")
    for role in roles:
        codes = [code for label, code in found if label == role]
        if len(codes) != 1:
            raise ValueError(
                f"expected one '{role.title()} Code:' python block, found {len(codes)}"
            )
        blocks[role] = codes[0]
    return blocks


def with_address(role: Role, code: str, host: str, port: int) -> str:
    """``code`` with its address line pointed at ``host:port``, and nothing else changed.

    Raises:
        ValueError: the address line is not in ``code`` exactly once.
    """
    original, template = ADDRESS_LINES[role]
    if code.count(original) != 1:
        raise ValueError(f"the exercise's {role} no longer has the line {original!r} once")
    return code.replace(original, template.format(host=host, port=port))


def write_script(
    role: Role, directory: Path, port: int, host: str = "127.0.0.1", reference: Path = REFERENCE
) -> Path:
    """Write the exercise's ``role`` script, aimed at ``host:port``, into ``directory``."""
    code = with_address(role, code_blocks(reference.read_text(encoding="utf-8"))[role], host, port)
    path = directory / f"exercise_{role}.py"
    path.write_text(code, encoding="utf-8")
    return path
