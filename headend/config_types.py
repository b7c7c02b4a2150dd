"""The constrained types the gateway's and the headend's configs share, in a module of their
own: the gateway's core imports these, not the headend's and the GWA's models, whose
validators it would otherwise build and keep in memory for configs it never loads.
(``headend`` imports nothing of ``appliance``, ARCHITECTURE §2, so they live here.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

from pki.errors import InvalidNameError
from pki.names import check_name

_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")


def _path(value: Path) -> Path:
    if not _PATH.fullmatch(str(value)) or "/../" in f"{value}/":
        raise ValueError("absolute path of letters, digits and . _ / + - only (no spaces, quotes or ..)")
    return value


def _dns_name(value: str) -> str:
    try:
        return check_name(value)
    except InvalidNameError as exc:
        raise ValueError(str(exc)) from None


SafePath = Annotated[Path, AfterValidator(_path)]
DnsName = Annotated[str, AfterValidator(_dns_name)]
Port = Annotated[int, Field(ge=1, le=65535)]
