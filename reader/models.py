"""Typed records the reader yields: frozen, keyword-only, validated where they are made.

Values are ``decimal.Decimal`` (never float: billed energy must survive exactly);
timestamps are timezone-aware UTC; everything else stays the meter's own text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple


@dataclass(frozen=True, slots=True, kw_only=True)
class Identification:
    """The meter's answer to the sign-on: ``/XXXZ[\\W]Ident`` CR LF."""

    text: str  #: the whole line without ``/`` and CR LF
    manufacturer: str  #: three letters; a lower-case third letter means tr min 20 ms
    baud_char: str
    model: str  #: what follows the baud character (and any ``\\W`` sequences)
    enhanced: tuple[str, ...] = ()  #: the ``W`` of each ``\\W`` sequence, e.g. ``("2",)``

    @property
    def offers_mode_e(self) -> bool:
        """``\\2`` announces HDLC (IEC 62056-46); a mode C answer is still possible."""
        return "2" in self.enhanced


class Reading(NamedTuple):
    """One data set: ``address(value*unit)`` plus optional further brackets.

    A NamedTuple rather than a frozen dataclass: just as immutable, but a readout makes
    one per line and a frozen dataclass's ``__init__`` costs four times as much.
    """

    address: str
    value: Decimal | None  #: None when the text is not a number (see ``text``/``status``)
    text: str  #: the value as the meter sent it, unit removed (decimal comma kept)
    unit: str | None
    timestamp: datetime | None = None  #: UTC; from a second bracket such as a max-demand time
    status: str | None = None  #: ``"ERROR"`` for ``(ERROR)``, ``"empty"`` for ``()``
    extra: tuple[str, ...] = ()  #: further brackets not understood as a timestamp

    def value_text(self) -> str | None:
        """The JSON contract's ``value``: exact decimal string, raw text, or None."""
        if self.value is not None:
            return str(self.value)
        if self.status is not None:
            return None
        return self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadProfileInterval:
    """One row of the load profile ``P.01``: the period *starting* at ``start``."""

    start: datetime  #: UTC
    values: dict[str, Decimal | None]
    units: dict[str, str | None]
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LogbookEntry:
    """One event of the logbook ``P.98``."""

    timestamp: datetime  #: UTC
    status: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Readout:
    """Everything one session with the meter produced."""

    identification: Identification
    readings: tuple[Reading, ...]
    load_profile: tuple[LoadProfileInterval, ...] | None = None
    logbook: tuple[LogbookEntry, ...] | None = None
    attempts: int = 1  #: sign-ons it took (1 = first try)
    notes: tuple[str, ...] = field(default=())  #: retries and their reasons, for the log

    def meter_id(self) -> str:
        """The meter's own number when it sends one (C.1.0, 0.0.0, 96.1.0), else its ident."""
        wanted = ("C.1.0", "0.0.0", "96.1.0", "0-0:96.1.0", "0-0:C.1.0", "1-0:0.0.0", "0-0:96.1.1")
        by_address = {r.address: r.text for r in self.readings}
        for address in wanted:
            text = by_address.get(address)
            if text:
                return text
        return self.identification.text
