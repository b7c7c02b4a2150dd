"""The delivery document: round trip, and every refusal names its field."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headend.document import Delivery, DocumentError, Value, build, new_delivery_id, parse

T = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)
GOOD = Delivery(delivery_id="0" * 32, gateway="gw-0001", subject="37155794", identity="meter_id", party="dso",
                profile="dso-taf7", resolution=3, window_from=T, window_to=T + dt.timedelta(minutes=30),
                created_at=T + dt.timedelta(minutes=31),
                values=(Value("1.5", "kW", T, T + dt.timedelta(minutes=15), Decimal("0.412")),
                        Value("1.5", "kW", T + dt.timedelta(minutes=15), T + dt.timedelta(minutes=30), None)))


def test_round_trip_is_exact_and_canonical() -> None:
    data = build(GOOD)
    assert parse(data) == GOOD
    assert build(parse(data)) == data and b" " not in data


def _with(change: dict[str, object]) -> bytes:
    doc = json.loads(build(GOOD))
    doc.update(change)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(("change", "field"), [
    ({"version": 2}, "version"),
    ({"values": [{"address": "1.5", "unit": "kW", "from": "2026-11-25T08:00:00Z", "to": "2026-11-25T08:15:00Z",
                  "value": 0.412}]}, "values[0].value"),
    ({"values": [{"address": "1.5", "unit": "kW", "from": "2026-11-25T07:00:00Z", "to": "2026-11-25T08:15:00Z",
                  "value": "1"}]}, "outside the window"),
    ({"subject": "<script>"}, "subject"),
    ({"delivery_id": "x"}, "delivery_id"),
    ({"extra": 1}, "unknown field"),
    ({"window": {"from": "2026-11-25T08:30:00Z", "to": "2026-11-25T08:00:00Z"}}, "window"),
    ({"identity": "name"}, "identity"),
    ({"resolution": True}, "resolution"),
    ({"created_at": "2026-11-25T08:00:00"}, "created_at: '2026-11-25T08:00:00' is not valid"),
    ({"created_at": "2026-02-30T08:00:00Z"}, "created_at: '2026-02-30T08:00:00Z' is not a real time"),
    ({"window": {"from": "2026-11-25T25:00:00Z", "to": "2026-11-25T08:30:00Z"}}, "window.from: .* not a real time"),
    ({"values": [{"address": "1.5", "unit": "kW", "from": "2026-11-25T08:00:00Z", "to": "2026-11-25T08:61:00Z",
                  "value": "1"}]}, "values[0].to: .* not a real time"),
    ({"values": [{"address": "1.5", "unit": "kW", "from": "2026-11-25 08:00:00Z", "to": "2026-11-25T08:15:00Z",
                  "value": "1"}]}, "values[0].from: .* is not valid"),
])
def test_refusals_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(DocumentError, match=field.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse(_with(change))


@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_raise_document_error(data: bytes) -> None:
    try:
        parse(data)
    except DocumentError:
        pass


def test_delivery_ids_are_uuid7_in_time_order_and_unique() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_delivery_id() for _ in range(20000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for text in ids[:50] + ids[-50:]:
        u = uuid.UUID(text)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and u.hex == text
        assert before <= int(text[:12], 16) <= after
    # later milliseconds sort later: what keeps a headend's index growing at its end
    millis = [int(text[:12], 16) for text in ids]
    assert millis == sorted(millis)
    parse(build(Delivery(delivery_id=ids[0], gateway="gw-1", subject="m1", identity="meter_id", party="dso",
                         profile="p", resolution=0, window_from=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                         window_to=dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC),
                         created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), values=())))


def test_a_huge_time_is_refused_and_not_remembered() -> None:
    from headend.document import _time_of

    before = _time_of.cache_info().currsize
    for n in range(3):
        with pytest.raises(DocumentError, match="window.from"):
            parse(_with({"window": {"from": str(n) * 100_000, "to": "2026-11-25T08:30:00Z"}}))
    assert _time_of.cache_info().currsize == before
