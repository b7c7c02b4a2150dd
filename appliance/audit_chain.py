"""The audit logs' hash chain: how a row is sealed, and how a chain is checked.

Pure functions, no database: the store hands rows in, this says what is wrong with them.
Each row's MAC covers its predecessor's MAC and its own content, so the chain, not the
``seq`` column, is the truth about order. ``seq`` is kept out of the MAC on purpose: an
attacker who renumbers rows changes nothing the chain vouches for, and the checker finds
the real order by following the links, which lets it *name* what was done:

- **changed**: a row on the chain whose content no longer matches its MAC;
- **deleted**: the chain breaks (a row points to a predecessor that is gone);
- **inserted**: a row off the chain (forged MAC, or a copy of another row);
- **reordered**: following the chain, ``seq`` goes backwards.

With a token key the MAC is HMAC-SHA256, which no one without the token can forge; without
one it is plain SHA-256, which detects accidents and naive edits but not someone who
recomputes the whole tail (the config says which one a log must use). Pruning old rows
(retention) appends a checkpoint row that records the MAC of the last pruned row: the
anchor from which the remaining chain is checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

LogName = Literal["system", "calibration", "consumer"]
LOGS: tuple[LogName, ...] = ("system", "calibration", "consumer")
CHECKPOINT_EVENT = "log.pruned"  #: the row retention appends; its detail carries the anchor
GENESIS_LABEL = b"smgw audit log genesis "

#: ``mac(data) -> 32 bytes``: HMAC-SHA256 in the token, or SHA-256 when unkeyed
MacFunction = Callable[[bytes], bytes]


def sha256_mac(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def genesis(log: str) -> bytes:
    """The "previous MAC" of a log's first row: fixed per log, so rows cannot move between logs."""
    return hashlib.sha256(GENESIS_LABEL + log.encode()).digest()


def canonical_detail(detail: Mapping[str, object]) -> str:
    """One spelling per detail (sorted keys, no spaces) so the MAC does not depend on dict order."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def content(log: str, at: str, event: str, consumer: str | None, detail: str) -> bytes:
    """The bytes a row's MAC covers besides its predecessor: every column a reader sees."""
    return json.dumps([log, at, event, consumer, detail], separators=(",", ":"), ensure_ascii=False).encode()


def seal(prev_mac: bytes, body: bytes, mac: MacFunction) -> bytes:
    return mac(prev_mac + body)


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One stored row as the checker sees it."""

    id: int
    log: str
    seq: int
    at: str
    event: str
    consumer: str | None
    detail: str
    prev_mac: bytes
    mac: bytes

    def body(self) -> bytes:
        return content(self.log, self.at, self.event, self.consumer, self.detail)


@dataclass(frozen=True, slots=True)
class Finding:
    log: str
    seq: int
    kind: Literal["changed", "deleted", "inserted", "reordered", "anchor"]
    message: str

    def __str__(self) -> str:
        return f"{self.log} log, row seq {self.seq}: {self.kind}: {self.message}"


def anchor_of(rows: list[ChainRow], log: str, valid: Mapping[int, bool]) -> bytes:
    """Where checking starts: the anchor recorded by the newest checkpoint whose MAC holds
    (a forged one is not believed, and shows up as inserted), else the genesis value."""
    for row in reversed(rows):
        if row.event == CHECKPOINT_EVENT and valid[row.id]:
            try:
                return bytes.fromhex(str(json.loads(row.detail)["anchor"]))
            except (ValueError, KeyError, TypeError):
                return b""  # unreadable checkpoint: nothing links to it, so the gap is reported
    return genesis(log)


def verify(log: str, rows: Iterable[ChainRow], mac: MacFunction) -> list[Finding]:
    """Every break in ``log``'s chain, in chain order; empty means intact.

    Walks from the anchor along the links (a row whose ``prev_mac`` is the current MAC comes
    next). Where two rows claim the same predecessor, the one whose MAC holds is the chain
    and the other was inserted. Where no row continues the chain but rows are left, the
    oldest left-over row with a valid MAC restarts the walk after a reported deletion.
    """
    ordered = sorted(rows, key=lambda r: (r.seq, r.id))
    findings: list[Finding] = []
    if not ordered:
        return findings
    valid = {r.id: seal(r.prev_mac, r.body(), mac) == r.mac for r in ordered}
    successors: dict[bytes, list[ChainRow]] = {}
    for row in ordered:
        successors.setdefault(row.prev_mac, []).append(row)
    seen_macs: dict[bytes, ChainRow] = {}
    on_chain: set[int] = set()
    current = anchor_of(ordered, log, valid)
    last: ChainRow | None = None
    while True:
        candidates = [r for r in successors.get(current, []) if r.id not in on_chain]
        picked = _pick(candidates, valid)
        if picked is None:
            left = [r for r in ordered if r.id not in on_chain and valid[r.id] and r.mac not in seen_macs]
            if not left:
                break
            row = left[0]
            gap = f"seq {last.seq + 1}..{row.seq - 1}" if last and row.seq - last.seq > 1 else "rows"
            where = f"after seq {last.seq}" if last else "at the start (before the anchor's successor)"
            findings.append(Finding(log, row.seq, "deleted",
                                    f"the chain breaks {where}: {gap} before this row are missing"))
        else:
            row = picked
        on_chain.add(row.id)
        if not valid[row.id]:
            findings.append(Finding(log, row.seq, "changed", "its content does not match its MAC"))
        if last is not None and row.seq <= last.seq:
            findings.append(Finding(log, row.seq, "reordered",
                                    f"the chain puts it after seq {last.seq}"))
        seen_macs.setdefault(row.mac, row)
        last, current = row, row.mac
    for row in ordered:
        if row.id in on_chain:
            continue
        copy = seen_macs.get(row.mac)
        why = f"a copy of seq {copy.seq}" if copy is not None and valid[row.id] else "not on the chain (its MAC is not one the key made here)"
        findings.append(Finding(log, row.seq, "inserted", why))
    findings.sort(key=lambda f: f.seq)
    return findings


def _pick(candidates: list[ChainRow], valid: Mapping[int, bool]) -> ChainRow | None:
    """The row that continues the chain: a valid one first, else (a changed row) the oldest."""
    for row in candidates:
        if valid[row.id]:
            return row
    return candidates[0] if candidates else None
