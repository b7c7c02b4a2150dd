"""Synthetic history for a store: what the portal's tests, the bench and the demo show.

Readouts every ``step`` with registers 1.8.0/1.8.1/1.8.2/2.8.0 and phase powers, a 15-minute
load profile (1.5), and consumer-log delivery rows, written through the store's own schema
(migrations via ``Store.open``) with bulk inserts: a year of 15-minute data plus a million
readings takes seconds, not the hours of real readouts.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from appliance.audit_chain import sha256_mac
from appliance.store import Store


def _kw(moment: datetime, base: float) -> Decimal:
    hour = moment.hour + moment.minute / 60
    daily = 0.25 + 0.6 * max(0.0, math.sin((hour - 6) / 16 * math.pi)) + (0.8 if 18 <= hour < 21 else 0.0)
    seasonal = 1.0 + 0.3 * math.cos((moment.timetuple().tm_yday - 15) / 365 * 2 * math.pi)
    return Decimal(f"{base * daily * seasonal:.3f}")


def fill(path: Path, meter: str, start: datetime, end: datetime, *, step: timedelta = timedelta(minutes=15),
         base_kw: float = 1.0, start_kwh: Decimal = Decimal("1000.000"), load_profile: bool = True,
         deliveries: int = 0, party: str = "dso") -> int:
    """Write ``meter``'s history from ``start`` to ``end``; returns the number of readings."""
    store = Store.open(path)
    try:
        con = store._db()
        energy = start_kwh
        moment = start
        readings = 0
        con.execute("BEGIN")
        next_id = (con.execute("SELECT max(id) FROM readouts").fetchone()[0] or 0) + 1
        while moment < end:
            kw = _kw(moment, base_kw)
            at = moment.astimezone(UTC).isoformat(timespec="microseconds")
            con.execute("INSERT INTO readouts (id, meter_id, read_at, identification, integrity, attempts) "
                        "VALUES (?, ?, ?, 'ISK5MT831', 'ok', 1)", (next_id, meter, at))
            t1 = (energy * Decimal("0.6")).quantize(Decimal("0.001"))
            rows = [("1.8.0", energy, "kWh"), ("1.8.1", t1, "kWh"), ("1.8.2", energy - t1, "kWh"),
                    ("2.8.0", Decimal("0.000"), "kWh"), ("21.7.0", kw, "kW")]
            con.executemany("INSERT INTO readings (readout_id, seq, meter_id, address, value, text, unit, read_at, "
                            "integrity) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'ok')",
                            [(next_id, i, meter, a, str(v), str(v), u, at) for i, (a, v, u) in enumerate(rows)])
            readings += len(rows)
            if load_profile and step <= timedelta(minutes=15) and moment.minute % 15 == 0 and moment.second == 0:
                con.execute("INSERT OR IGNORE INTO load_profile (meter_id, start, address, value, unit, status, "
                            "readout_id) VALUES (?, ?, '1.5', ?, 'kW', '00', ?)", (meter, at, str(kw), next_id))
            energy += (kw * Decimal(step.total_seconds()) / Decimal(3600)).quantize(Decimal("0.001"))
            next_id += 1
            moment += step
        con.execute("COMMIT")
        day = timedelta(days=1)
        first = end - deliveries * day
        for i in range(deliveries):
            window = first + i * day
            store.audit_append("consumer", window + day + timedelta(minutes=5), "delivery.sent", meter, {
                "delivery_id": f"{meter}-{i:05d}", "party": party, "profile": f"{party}-taf7",
                "from": window.isoformat(), "to": (window + day).isoformat(),
                "what": "1.5 as mean per 900 s to 3 places, identity meter_id, 96 values"}, sha256_mac)
        return readings
    finally:
        store.close()
