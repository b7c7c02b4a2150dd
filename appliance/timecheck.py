"""The clock check: how far is the gateway's clock from the configured time source?

Readings carry the gateway's time, and a party bills by it: a clock that has drifted past
``time.max_deviation_s`` makes every reading taken meanwhile suspect. The check asks the
NTP server (SNTP, through ``ntplib``; the firewall lets exactly that server's UDP 123 out on
the WAN) and turns the answer into a state the core acts on: ``ok``, ``deviating`` (logged in
the calibration log, readouts stored meanwhile are flagged ``clock-deviation``) or
``unreachable`` (logged in the system log; readouts are not flagged, as nothing is known).
Setting the clock is chrony's or systemd-timesyncd's job, not ours: we only watch.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Literal

import ntplib

State = Literal["ok", "deviating", "unreachable"]
FLAG = "clock-deviation"  #: the readouts' integrity value while the clock deviates


@dataclass(frozen=True, slots=True)
class ClockReading:
    state: State
    offset_s: float | None  #: server time minus gateway time
    detail: str


def judge(offset_s: float, max_deviation_s: float) -> ClockReading:
    if abs(offset_s) > max_deviation_s:
        return ClockReading("deviating", offset_s,
                            f"clock off by {offset_s:+.3f} s, more than the allowed {max_deviation_s:g} s")
    return ClockReading("ok", offset_s, f"clock off by {offset_s:+.3f} s")


def check_clock(server: str, max_deviation_s: float, *, port: int = 123, timeout: float = 2.0) -> ClockReading:
    try:
        response = ntplib.NTPClient().request(server, version=4, port=port, timeout=timeout)
    except (ntplib.NTPException, OSError, socket.gaierror) as exc:
        return ClockReading("unreachable", None, f"NTP server {server}: {exc}")
    if response.leap == 3 or response.stratum == 0:  # "alarm": the server itself is not synchronised
        return ClockReading("unreachable", None, f"NTP server {server} is not synchronised (stratum "
                                                 f"{response.stratum}, leap {response.leap})")
    return judge(float(response.offset), max_deviation_s)
