"""The appliance's error root.

``reader``, ``pki`` and ``firewall`` import nothing of ours (ARCHITECTURE §2), so their roots
(``ReaderError``, ...) cannot derive from ``SmgwError``; ``EXPECTED_ERRORS`` is the one place
that lists every root the CLI turns into a one-line message and an exit code.
"""

from __future__ import annotations

from firewall.errors import FirewallError
from pki.errors import PkiError
from reader.errors import ReaderError


class SmgwError(Exception):
    """Root of the appliance's deliberate errors."""

    exit_code = 1


class ConfigError(SmgwError):
    """A configuration that must not be used; ``problems`` holds ``(key path, message)``."""

    exit_code = 2

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        first = f"{problems[0][0]}: {problems[0][1]}" if problems else "invalid"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{source}: {first}{more}")


EXPECTED_ERRORS: tuple[type[Exception], ...] = (SmgwError, ReaderError, PkiError, FirewallError)
