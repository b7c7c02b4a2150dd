"""What every config class shares: strict frozen dataclasses and text without control characters.

The classes are plain ``@dataclass(frozen=True, kw_only=True)`` subclasses of ``StrictModel``,
so the gateway's core can hold a config without loading pydantic (see
``headend.config_types``). pydantic verifies them in ``config.verify``: an unknown key is an
error (``extra="forbid"``), field checks are ``Annotated`` metadata, and a class's rules across
its fields are its ``_verify`` (after the fields) and ``_before`` (on the raw table) hooks.
A field's ``metadata=doc(...)`` is its line in the README's config reference.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from headend.config_types import Check

#: C0, DEL and C1 controls, and the two Unicode line separators: Python's splitlines() breaks
#: a line at U+0085, U+2028 and U+2029 as at LF, so any of them could forge a line in a log
#: or a rendered file that Python reads back
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def no_control(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"control character {found.group()!r} is not allowed")
    return value


SafeText = Annotated[str, Check(no_control)]


def matching(pattern: str, message: str) -> Check:
    """A check that the whole text matches ``pattern``; ``message`` says what is allowed."""
    regex = re.compile(pattern)

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(message)
        return value

    return Check(check)


#: a meter's id, as stored and as a consumer of the portal names it
METER_ID = matching(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}",
                    "meter id: 1-64 of letters, digits and . _ : - (starting alphanumeric)")
MeterId = Annotated[str, METER_ID]


def doc(meaning: str) -> dict[str, str]:
    """A field's meaning for the README (``field(default=..., metadata=doc("..."))``)."""
    return {"doc": meaning}


class StrictModel:
    """Base of every config dataclass; its hooks run only when pydantic verifies a config."""

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    @classmethod
    def _before(cls, data: Any) -> Any:
        """The raw table before its fields are validated (defaults that depend on other keys)."""
        return data

    def _verify(self) -> None:
        """Rules across fields; raise ValueError with the key path in the message."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import core_schema

        def verified(obj: StrictModel) -> StrictModel:
            obj._verify()
            return obj

        inner = handler(source)
        # pydantic reuses a class's schema by its ref wherever the class appears again; the ref
        # goes on the outside, so every appearance (a second field, a list item) has the hooks
        ref = inner.pop("ref", None)
        schema = core_schema.no_info_after_validator_function(verified, inner)
        return core_schema.no_info_before_validator_function(cls._before, schema, ref=ref)
