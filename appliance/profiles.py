"""Access profiles: which values a market party receives, how often, how fine, under which identity.

A profile names its party, the values (OBIS addresses from the catalogue below), the
interval they are aggregated over, the resolution (decimal places), the aggregation, the
identity (meter id or a per-party pseudonym), the send schedule and the retention. The
built-in templates follow the BSI tariff use cases (TAF); a profile starts from one and
overrides what differs. Validation happens against the whole gateway config, so an unknown
party, an unknown address or an interval shorter than the meter's poll interval is an
error with its key path, never a silently empty delivery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le, MaxLen

from appliance.config_base import StrictModel, doc
from headend.config_types import Pattern

Aggregation = Literal["last", "delta", "sum", "mean", "max"]
Source = Literal["registers", "load_profile"]


@dataclass(frozen=True, slots=True)
class Quantity:
    unit: str
    meaning: str
    cumulative: bool  #: a counter (energy), for which "delta" makes sense


#: What the reference meter (Iskraemeco MT831) reports, by source: registers from the readout,
#: channels from the load profile P.01. A profile may name only these.
CATALOGUE: dict[Source, dict[str, Quantity]] = {
    "registers": {
        "1.8.0": Quantity("kWh", "energy imported, total", True),
        "1.8.1": Quantity("kWh", "energy imported, tariff 1", True),
        "1.8.2": Quantity("kWh", "energy imported, tariff 2", True),
        "2.8.0": Quantity("kWh", "energy exported, total", True),
        "2.8.1": Quantity("kWh", "energy exported, tariff 1", True),
        "2.8.2": Quantity("kWh", "energy exported, tariff 2", True),
        "1.6.0": Quantity("kW", "maximum demand", False),
        "21.7.0": Quantity("kW", "power imported, phase L1", False),
        "41.7.0": Quantity("kW", "power imported, phase L2", False),
        "32.7.0": Quantity("V", "voltage L1", False),
        "52.7.0": Quantity("V", "voltage L2", False),
        "31.7.0": Quantity("A", "current L1", False),
    },
    "load_profile": {
        "1.5": Quantity("kW", "average power imported per interval", False),
        "2.5": Quantity("kW", "average power exported per interval", False),
        "5.5": Quantity("kvar", "reactive power Q1 per interval", False),
        "8.5": Quantity("kvar", "reactive power Q4 per interval", False),
    },
}

#: Built-in templates after the BSI tariff use cases.
TEMPLATES: dict[str, dict[str, Any]] = {
    # TAF 1: billing-relevant registers, once a day
    "taf1": {"source": "registers", "values": ["1.8.0", "2.8.0"], "interval_s": 86400, "aggregation": "last",
             "resolution": 3, "send_every_s": 86400},
    # TAF 2: time-of-use registers, once a day
    "taf2": {"source": "registers", "values": ["1.8.1", "1.8.2", "2.8.1", "2.8.2"], "interval_s": 86400,
             "aggregation": "last", "resolution": 3, "send_every_s": 86400},
    # TAF 7: the 15-minute load profile, sent daily
    "taf7": {"source": "load_profile", "values": ["1.5", "2.5"], "interval_s": 900, "aggregation": "mean",
             "resolution": 3, "send_every_s": 86400},
    # TAF 10/14: near-real-time values each minute
    "taf10": {"source": "registers", "values": ["1.8.0", "21.7.0"], "interval_s": 60, "aggregation": "last",
              "resolution": 3, "send_every_s": 60},
}

_NAME = r"^[a-z][a-z0-9-]{0,31}$"


@dataclass(frozen=True, kw_only=True)
class AccessProfile(StrictModel):
    """One party's view of the meter."""

    name: Annotated[str, Pattern(_NAME)] = field(metadata=doc("unique profile name, e.g. dso-taf7"))
    party: Annotated[str, Pattern(r"^[a-z][a-z0-9]{0,9}$")] = field(metadata=doc("a [[parties]] name"))
    template: Literal["taf1", "taf2", "taf7", "taf10"] | None = field(
        default=None, metadata=doc("start from a built-in BSI tariff use case; fields below override it"))
    source: Source = "registers"
    values: Annotated[list[str], MaxLen(32)] = field(
        default_factory=list, metadata=doc("OBIS addresses from the catalogue"))
    interval_s: Annotated[int, Ge(60), Le(31 * 86400)] = field(
        default=900, metadata=doc("aggregation interval"))
    aggregation: Aggregation = "last"
    resolution: Annotated[int, Ge(0), Le(6)] = field(
        default=3, metadata=doc("decimal places kept (the rest truncated)"))
    identity: Literal["meter_id", "pseudonym"] = "meter_id"
    send_every_s: Annotated[int, Ge(60), Le(31 * 86400)] = field(
        default=86400, metadata=doc("how often deliveries go out"))
    retention_days: Annotated[int, Ge(1), Le(3650)] = field(
        default=90, metadata=doc("how long the gateway keeps what it sent"))

    @classmethod
    def _before(cls, data: Any) -> Any:  # a template's fields first, the profile's own over them
        template = data.get("template") if isinstance(data, dict) else None
        if isinstance(template, str) and template in TEMPLATES:  # else its field says what is wrong
            return {**TEMPLATES[template], **data}
        return data

    def _verify(self) -> None:
        if not self.values:
            raise ValueError("values: name at least one address (or use a template)")
        catalogue = CATALOGUE[self.source]
        for i, address in enumerate(self.values):
            if address not in catalogue:
                known = ", ".join(catalogue)
                raise ValueError(f"values[{i}]: unknown {self.source} address {address!r} (known: {known})")
        if len(set(self.values)) != len(self.values):
            raise ValueError("values: an address is listed twice")
        if self.aggregation == "delta":
            counters = [a for a in self.values if not catalogue[a].cumulative]
            if counters:
                raise ValueError(f"aggregation delta needs counters; {counters[0]} is not one")
        if self.source == "load_profile" and self.interval_s % 900:
            raise ValueError("interval_s: a load-profile interval is a multiple of 900 s")
        if self.send_every_s % self.interval_s:
            raise ValueError("send_every_s: must be a multiple of interval_s (whole intervals per delivery)")

    def unit(self, address: str) -> str:
        return CATALOGUE[self.source][address].unit


def check_profiles(profiles: list[AccessProfile], parties: list[str], poll_interval_s: float,
                   load_profile_enabled: bool) -> list[tuple[str, str]]:
    """Rules across the config: ``[(key path, message)]``, empty when all hold."""
    problems = []
    seen: set[str] = set()
    for i, profile in enumerate(profiles):
        where = f"profiles[{i}]"
        if profile.name in seen:
            problems.append((f"{where}.name", f"profile {profile.name!r} is defined twice"))
        seen.add(profile.name)
        if profile.party not in parties:
            known = ", ".join(parties) or "none"
            problems.append((f"{where}.party", f"unknown party {profile.party!r} (parties: {known})"))
        if profile.source == "registers" and profile.interval_s < poll_interval_s:
            message = f"{profile.interval_s} s is shorter than the meter's poll interval ({poll_interval_s:g} s)"
            problems.append((f"{where}.interval_s", message))
        if profile.source == "load_profile" and not load_profile_enabled:
            problems.append((f"{where}.source", "load_profile needs meter.load_profile = true"))
    return problems


def describe(profile: AccessProfile) -> str:
    """The profile in plain words, for the household's transparency page."""
    names = ", ".join(f"{a} ({CATALOGUE[profile.source][a].meaning})" for a in profile.values)
    who = "a pseudonym instead of your meter number" if profile.identity == "pseudonym" else "your meter number"
    return (f"{profile.party} receives {names}, as the {profile.aggregation} over each {_span(profile.interval_s)}, "
            f"to {profile.resolution} decimal place{'' if profile.resolution == 1 else 's'}, every {_span(profile.send_every_s)}, under {who}; "
            f"kept {profile.retention_days} days.")


def _span(seconds: int) -> str:
    for size, word in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            count = seconds // size
            return word if count == 1 else f"{count} {word}s"
    return f"{seconds} s"

