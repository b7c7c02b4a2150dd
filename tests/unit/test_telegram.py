"""Data lines, identification, timestamps: the parser's rules one by one."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reader.errors import BlockCheckError, ProtocolError
from reader.meter_time import format_meter_time, parse_meter_time
from reader.telegram import (
    parse_data_lines,
    parse_data_message,
    parse_identification,
    parse_telegram,
)
from tests.meterbytes import corrupt, data_message


def one(line: str):  # type: ignore[no-untyped-def]
    readings = parse_data_lines(line + "\r\n!\r\n")
    assert len(readings) == 1
    return readings[0]


@pytest.mark.parametrize(
    ("line", "value", "unit"),
    [
        ("1.8.0(0004417.218*kWh)", "4417.218", "kWh"),
        ("1.8.0(0000.000*kWh)", "0.000", "kWh"),
        ("32.7.0(230,1*V)", "230.1", "V"),
        ("31.7.0(1.234 A)", "1.234", "A"),
        ("0.0.0(37155794)", "37155794", None),
        ("0.2.0(V1.02)", "V1.02", None),
        ("1-0:1.8.0*255(00012345.6789012*kWh)", "12345.6789012", "kWh"),
        ("16.7.0(-0001.50*kW)", "-1.50", "kW"),
        ("0.9.1(12:34:56)", "12:34:56", None),
    ],
)
def test_value_and_unit(line: str, value: str, unit: str | None) -> None:
    r = one(line)
    assert r.value_text() == value
    assert r.unit == unit


def test_values_are_exact_decimals_never_floats() -> None:
    r = one("1.8.0(0004417.218*kWh)")
    assert isinstance(r.value, Decimal)
    assert r.value == Decimal("4417.218")
    assert str(r.value) == "4417.218"


def test_error_and_empty_values_carry_a_status() -> None:
    err = one("96.77.2(ERROR)")
    assert err.value is None and err.status == "ERROR" and err.value_text() is None
    empty = one("C.90.1()")
    assert empty.value is None and empty.status == "empty"


def test_second_bracket_timestamp_with_and_without_season() -> None:
    winter = one("1.6.0(0001.245*kW)(2311151215)")
    assert winter.timestamp == datetime(2023, 11, 15, 11, 15, tzinfo=UTC)
    summer = one("1.6.0(0001.245*kW)(12307011215)")
    assert summer.timestamp == datetime(2023, 7, 1, 10, 15, tzinfo=UTC)
    utc = one("1.6.0(0001.245*kW)(22307011215)")
    assert utc.timestamp == datetime(2023, 7, 1, 12, 15, tzinfo=UTC)
    by_zone = one("1.6.0(0001.245*kW)(2307011215)")
    assert by_zone.timestamp == summer.timestamp


def test_dsmr_gas_value_after_its_timestamp() -> None:
    r = one("0-1:24.2.1(101209112500W)(12785.123*m3)")
    assert r.value == Decimal("12785.123") and r.unit == "m3"
    assert r.timestamp == datetime(2010, 12, 9, 10, 25, tzinfo=UTC)


def test_several_data_sets_per_line_and_repeated_addresses_in_order() -> None:
    rs = parse_data_lines("21.7.0(0.412*kW)41.7.0(0.000*kW)\r\n1.8.0(1*kWh)\r\n1.8.0(2*kWh)\r\n!\r\n")
    assert [(r.address, r.value_text()) for r in rs] == [
        ("21.7.0", "0.412"), ("41.7.0", "0.000"), ("1.8.0", "1"), ("1.8.0", "2"),
    ]


def test_glued_end_marker_and_lf_only() -> None:
    rs = parse_data_lines("1.8.0(1*kWh)\n2.8.0(2*kWh)!\n")
    assert [r.address for r in rs] == ["1.8.0", "2.8.0"]


def test_brackets_on_a_line_of_their_own_continue_the_address() -> None:
    rs = parse_data_lines("1-0:99.97.0(2)(0-0:96.7.19)\r\n(101208152415W)(0000000240*s)\r\n!\r\n")
    assert len(rs) == 1 and rs[0].extra == ("0-0:96.7.19", "101208152415W", "0000000240*s")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("1.8.0(1*kWh\r\n!", "line 1 col 6: unclosed"),
        ("1.8.0(1*kWh)junk\r\n!", "line 1 col 13"),
        ("(1*kWh)\r\n!", "value without address"),
        ("1.8.0(1*kWh)\r\n!\r\n2.8.0(1)", "after the end marker"),
        ("1.8.0((1)\r\n!", "line 1 col 6: unclosed"),
        ("1.8.0(1))\r\n!", "line 1 col 9"),
        ("1.8.0(1\x07)\r\n!", "bad value"),
        ("a b(1)\r\n!", "bad address"),
    ],
)
def test_malformed_lines_name_line_and_column(text: str, where: str) -> None:
    with pytest.raises(ProtocolError, match=where.replace("(", r"\(")):
        parse_data_lines(text)


def test_identification_parts() -> None:
    ident = parse_identification(b"/ISk5\\2MT174-0001\r\n")
    assert ident.manufacturer == "ISk" and ident.baud_char == "5"
    assert ident.enhanced == ("2",) and ident.offers_mode_e and ident.model == "MT174-0001"
    with pytest.raises(ProtocolError):
        parse_identification(b"ISK5MT174\r\n")
    with pytest.raises(ProtocolError):
        parse_identification(b"/I5K5MT174\r\n")


def test_data_message_bcc_is_checked_first() -> None:
    msg = data_message(["1.8.0(1*kWh)"])
    assert parse_data_message(msg)[0].value == Decimal(1)
    with pytest.raises(BlockCheckError):
        parse_data_message(corrupt(msg))


def test_telegram_with_dsmr_crc() -> None:
    from reader.frames import crc16_dsmr

    head = b"/KFM5KAIFA-METER\r\n\r\n1-0:1.8.1(000001.234*kWh)\r\n!"
    good = head + f"{crc16_dsmr(head):04X}".encode() + b"\r\n"
    ident, rs = parse_telegram(good)
    assert ident.manufacturer == "KFM" and rs[0].value == Decimal("1.234")
    with pytest.raises(BlockCheckError):
        parse_telegram(head + b"0000\r\n")


def test_meter_time_roundtrip_and_rejects() -> None:
    moment = datetime(2023, 7, 1, 10, 15, tzinfo=UTC)
    assert format_meter_time(moment) == "12307011215"
    assert parse_meter_time(format_meter_time(moment)) == moment
    for bad in ("2313151215", "abcdefghij", "32307011215", "123", "23070112155X"):
        assert parse_meter_time(bad) is None


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=300))
def test_data_lines_parse_or_raise_protocol_error(text: str) -> None:
    try:
        parse_data_lines(text)
    except ProtocolError:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_telegrams_parse_or_raise_protocol_error(raw: bytes) -> None:
    try:
        parse_telegram(b"/ISK5MT831\r\n" + raw)
    except ProtocolError:
        pass
