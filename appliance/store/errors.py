"""Store errors."""

from __future__ import annotations

from appliance.errors import SmgwError


class StoreError(SmgwError):
    """The database cannot be opened, migrated or written as asked."""
