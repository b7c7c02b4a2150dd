"""The ``[portal]`` table: the household's HTTPS portal on the HAN.

The portal never reads this model: ``generate`` turns it into ``portal.json`` (see
``appliance.portal_settings``), so the portal process stays free of pydantic and of the
rest of the gateway's configuration (its memory budget is 40 MB for all of it).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from appliance.config_base import StrictModel
from headend.config_types import SafePath

_CONSUMER = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_METER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_CODE = re.compile(r"[A-Za-z0-9-]{12,128}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _consumer(value: str) -> str:
    if not _CONSUMER.fullmatch(value):
        raise ValueError("1-32 of lowercase letters, digits, _ and - starting with a letter (it is the login name)")
    return value


def _meter(value: str) -> str:
    if not _METER.fullmatch(value):
        raise ValueError("meter id: 1-64 of letters, digits and . _ : - (starting alphanumeric)")
    return value


def _code(value: str) -> str:
    if not _CODE.fullmatch(value):
        raise ValueError("one-time code: 12-128 letters, digits and -")
    return value


def _user(value: str) -> str:
    if not _USER.fullmatch(value):
        raise ValueError("user name: 1-32 of lowercase letters, digits, _ and - starting with a letter or _")
    return value


ConsumerName = Annotated[str, AfterValidator(_consumer)]
MeterId = Annotated[str, AfterValidator(_meter)]
SetupCode = Annotated[str, AfterValidator(_code)]
UserName = Annotated[str, AfterValidator(_user)]


class Consumer(StrictModel):
    """A household: its login, its meters, and the one-time code that sets its first password."""

    name: ConsumerName = Field(description="login name")
    meters: list[MeterId] = Field(min_length=1, max_length=16, description="meter ids whose data this consumer sees")
    setup_code: SetupCode = Field(description="one-time code for the first password (a new code resets it)")


class Portal(StrictModel):
    """The HAN portal; served on the HAN address at ``firewall.portal_port``."""

    enabled: bool = Field(default=True, description="run the portal")
    address: IPv4Address | None = Field(default=None, description="listen address (default: the HAN interface's)")
    tls_cert: SafePath = Field(default=Path("/var/lib/smgw-portal/portal.crt"),
                               description="the portal's certificate (made self-signed on first start if missing)")
    tls_key: SafePath = Field(default=Path("/var/lib/smgw-portal/portal.key"),
                              description="its key (a software key of the portal user; never a gateway key)")
    state_dir: SafePath = Field(default=Path("/var/lib/smgw-portal"),
                                description="the portal's own database: accounts, sessions, device tokens")
    user: UserName | None = Field(
        default=None, description="the user smgw gateway run as root starts the portal as (systemd's unit has "
                                  "its own); it must read portal.json, the store and paths.run")
    threads: int = Field(default=8, ge=2, le=64, description="request threads")
    max_streams: int = Field(default=4, ge=0, le=32, description="live streams (SSE) at once; each holds a thread")
    session_hours: float = Field(default=12, gt=0, le=720, description="a login lasts this long")
    consumers: list[Consumer] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _unique(self) -> Portal:
        names = [c.name for c in self.consumers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"consumers[{i}].name: {name!r} is used twice")
        codes = [c.setup_code for c in self.consumers]
        if len(set(codes)) != len(codes):
            raise ValueError("consumers: two consumers share a setup code")
        if self.max_streams >= self.threads:
            raise ValueError("max_streams: must leave threads for pages (less than threads)")
        return self
