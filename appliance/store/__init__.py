"""The gateway's local store (SQLite, WAL, versioned schema)."""

from appliance.store.database import Store, StoredInterval, StoredReading, StoredReadout
from appliance.store.errors import StoreError

__all__ = ["Store", "StoreError", "StoredInterval", "StoredReading", "StoredReadout"]
