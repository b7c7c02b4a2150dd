"""The constrained types the gateway's and the headend's configs share, in a module of their
own (``headend`` imports nothing of ``appliance``, ARCHITECTURE §2, so they live here).

None of this imports pydantic. The gateway's long-running core holds its config as plain
frozen dataclasses and must not load pydantic (about 11 MB of its 50 MB budget), yet the
same classes are verified by pydantic where a config is loaded (``smgw check``, ``apply``,
the child that loads the core's config). So checks are ``Annotated`` metadata that pydantic
understands without being imported here: ``annotated_types`` bounds (``Ge``, ``Le``, ...,
pydantic's own messages) and ``Check``, whose hook pydantic calls when it builds a schema.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Le

from pki.errors import InvalidNameError
from pki.names import check_name

_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")


@dataclass(frozen=True, slots=True)
class Check:
    """A check run by pydantic on a field, after its type is validated (``before=True``: on the
    raw input first). ``fn`` returns the value or raises ValueError with the message the user
    sees; pydantic imports only when a schema is built, never where the classes are defined."""

    fn: Callable[[Any], Any]
    before: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import core_schema

        if self.before:
            return core_schema.no_info_before_validator_function(self.fn, handler(source))
        return core_schema.no_info_after_validator_function(self.fn, handler(source))


@dataclass(frozen=True, slots=True)
class Pattern:
    """A string matching ``regex`` (pydantic-core's own check and message, as ``Field(pattern=...)``)."""

    regex: str

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import core_schema

        # after whatever the type and the metadata before this one check (a chain, not a
        # replacement: SafeText's own check must still run)
        return core_schema.chain_schema([handler(source), core_schema.str_schema(pattern=self.regex)])


def safe_path(value: Path) -> Path:
    if not _PATH.fullmatch(str(value)) or "/../" in f"{value}/":
        raise ValueError("absolute path of letters, digits and . _ / + - only (no spaces, quotes or ..)")
    return value


def _dns_name(value: str) -> str:
    try:
        return check_name(value)
    except InvalidNameError as exc:
        raise ValueError(str(exc)) from None


SafePath = Annotated[Path, Check(safe_path)]
DnsName = Annotated[str, Check(_dns_name)]
Port = Annotated[int, Ge(1), Le(65535)]
