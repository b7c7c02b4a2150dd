"""The JSON contract of ``smgw read --json`` (ARCHITECTURE §9), as a pure function."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reader.models import Readout


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def readout_document(readout: Readout) -> dict[str, Any]:
    """Values stay exact decimal strings; times are ISO-8601 UTC."""
    doc: dict[str, Any] = {
        "identification": readout.identification.text,
        "manufacturer": readout.identification.manufacturer,
        "readings": [
            {
                "address": r.address,
                "value": r.value_text(),
                "unit": r.unit,
                "timestamp": _iso(r.timestamp),
            }
            for r in readout.readings
        ],
    }
    if readout.load_profile is not None:
        doc["load_profile"] = [
            {
                "start": _iso(row.start),
                "values": {k: (str(v) if v is not None else None) for k, v in row.values.items()},
                "units": dict(row.units),
                "status": row.status,
            }
            for row in readout.load_profile
        ]
    if readout.logbook is not None:
        doc["logbook"] = [
            {"timestamp": _iso(e.timestamp), "status": e.status, "values": list(e.values)}
            for e in readout.logbook
        ]
    return doc
