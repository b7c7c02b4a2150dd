"""The gateway's local store: one SQLite file in WAL mode, a schema versioned in code.

See ``database.Store`` for the API and ``migrations`` for the schema.
"""

from appliance.store.database import Store
from appliance.store.errors import DuplicateReadoutError, StoreError
from appliance.store.records import (
    StoredInterval,
    StoredLogbookEntry,
    StoredReading,
    StoredReadout,
)

__all__ = [
    "DuplicateReadoutError",
    "Store",
    "StoreError",
    "StoredInterval",
    "StoredLogbookEntry",
    "StoredReading",
    "StoredReadout",
]
