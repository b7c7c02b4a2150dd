"""What every config model shares: strict models and text without control characters."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def no_control(value: str) -> str:
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"control character {found.group()!r} is not allowed")
    return value


SafeText = Annotated[str, AfterValidator(no_control)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)
