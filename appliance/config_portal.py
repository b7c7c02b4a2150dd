"""The ``[portal]`` table: the household's HTTPS portal on the HAN.

The portal never reads this model: ``generate`` turns it into ``portal.json`` (see
``appliance.portal_settings``), so the portal process stays free of pydantic and of the
rest of the gateway's configuration (its memory budget is 40 MB for all of it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Annotated

from annotated_types import Ge, Gt, Le, MaxLen, MinLen

from appliance.config_base import MeterId, StrictModel, doc, matching
from headend.config_types import SafePath

ConsumerName = Annotated[str, matching(
    r"[a-z][a-z0-9_-]{0,31}",
    "1-32 of lowercase letters, digits, _ and - starting with a letter (it is the login name)")]
SetupCode = Annotated[str, matching(r"[A-Za-z0-9-]{12,128}", "one-time code: 12-128 letters, digits and -")]
UserName = Annotated[str, matching(r"[a-z_][a-z0-9_-]{0,31}",
                                   "user name: 1-32 of lowercase letters, digits, _ and - starting with a letter or _")]


@dataclass(frozen=True, kw_only=True)
class Consumer(StrictModel):
    """A household: its login, its meters, and the one-time code that sets its first password."""

    name: ConsumerName = field(metadata=doc("login name"))
    meters: Annotated[list[MeterId], MinLen(1), MaxLen(16)] = field(
        metadata=doc("meter ids whose data this consumer sees"))
    setup_code: SetupCode = field(metadata=doc("one-time code for the first password (a new code resets it)"))


@dataclass(frozen=True, kw_only=True)
class Portal(StrictModel):
    """The HAN portal; served on the HAN address at ``firewall.portal_port``."""

    enabled: bool = field(default=True, metadata=doc("run the portal"))
    address: IPv4Address | None = field(
        default=None, metadata=doc("listen address (default: the HAN interface's)"))
    tls_cert: SafePath = field(
        default=Path("/var/lib/smgw-portal/portal.crt"), metadata=doc("the portal's certificate (made self-signed on first start if missing)"))
    tls_key: SafePath = field(
        default=Path("/var/lib/smgw-portal/portal.key"), metadata=doc("its key (a software key of the portal user; never a gateway key)"))
    state_dir: SafePath = field(
        default=Path("/var/lib/smgw-portal"), metadata=doc("the portal's own database: accounts, sessions, device tokens"))
    user: UserName | None = field(
        default=None, metadata=doc("the user smgw gateway run as root starts the portal as (systemd's unit has "
                                  "its own); it must read portal.json, the store and paths.run"))
    threads: Annotated[int, Ge(2), Le(64)] = field(default=8, metadata=doc("request threads"))
    max_streams: Annotated[int, Ge(0), Le(32)] = field(
        default=4, metadata=doc("live streams (SSE) at once; each holds a thread"))
    session_hours: Annotated[float, Gt(0), Le(720)] = field(
        default=12.0, metadata=doc("a login lasts this long"))
    consumers: Annotated[list[Consumer], MaxLen(64)] = field(default_factory=list)

    def _verify(self) -> None:
        names = [c.name for c in self.consumers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"consumers[{i}].name: {name!r} is used twice")
        codes = [c.setup_code for c in self.consumers]
        if len(set(codes)) != len(codes):
            raise ValueError("consumers: two consumers share a setup code")
        if self.max_streams >= self.threads:
            raise ValueError("max_streams: must leave threads for pages (less than threads)")
