"""The sans-I/O client driven with byte strings, as a meter would answer."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reader.errors import (
    BlockCheckError,
    LocalProtocolError,
    MeterSilentError,
    ProtocolError,
    ReaderError,
    UnsupportedModeError,
)
from reader.protocol import Discard, ReadoutClient, SessionOptions, SetBaud, Write, wire_time
from tests.meterbytes import block, corrupt, data_message, soh_command

IDENT_C = b"/ISK5MT831-3031\r\n"
LINES = ["0.0.0(37155794)", "1.8.0(0004417.218*kWh)", "1.6.0(0001.245*kW)(2311151215)", "F.F(00000000)"]
DATA = data_message(LINES)
ACK_9600_READOUT = b"\x06050\r\n"


def writes(actions: list[object]) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, Write)]


def test_mode_c_readout_switches_baud_after_the_ack() -> None:
    client = ReadoutClient(SessionOptions())
    assert client.initiate() == [Write(data=b"/?!\r\n")]
    actions = client.receive_data(IDENT_C)
    assert actions == [
        Write(data=ACK_9600_READOUT),
        SetBaud(baud=9600, after=wire_time(len(ACK_9600_READOUT), 300)),
    ]
    assert client.receive_data(DATA) == []
    assert client.done and client.result is not None
    readings = client.result.readings
    assert [r.address for r in readings] == ["0.0.0", "1.8.0", "1.6.0", "F.F"]
    assert readings[1].value == Decimal("4417.218") and readings[1].unit == "kWh"
    assert readings[2].timestamp is not None and readings[2].timestamp.isoformat() == "2023-11-15T11:15:00+00:00"
    assert client.result.attempts == 1


def test_max_baud_caps_the_proposal_and_address_is_sent() -> None:
    client = ReadoutClient(SessionOptions(max_baud=2400, address="12345678"))
    assert writes(client.initiate()) == [b"/?12345678!\r\n"]
    actions = client.receive_data(IDENT_C)
    assert writes(actions) == [b"\x06030\r\n"]
    assert SetBaud(baud=2400, after=wire_time(6, 300)) in actions


def test_byte_by_byte_equals_one_chunk() -> None:
    whole = ReadoutClient()
    whole.initiate()
    whole.receive_data(IDENT_C)
    whole.receive_data(DATA)
    single = ReadoutClient()
    single.initiate()
    for b in IDENT_C + DATA:
        single.receive_data(bytes((b,)))
    assert single.result == whole.result


def test_bad_bcc_once_restarts_the_sign_on() -> None:
    client = ReadoutClient(SessionOptions(restart_delay=0.0))
    client.initiate()
    client.receive_data(IDENT_C)
    actions = client.receive_data(corrupt(DATA))
    assert SetBaud(baud=300, after=0.0) in actions
    assert Discard(delay=0.0) in actions
    assert writes(actions) == [b"/?!\r\n"]
    assert not client.done
    client.receive_data(IDENT_C)
    client.receive_data(DATA)
    assert client.done and client.result is not None
    assert client.result.attempts == 2
    assert any("BCC mismatch" in n for n in client.result.notes)


def test_bad_bcc_always_fails_with_exit_code_4() -> None:
    client = ReadoutClient(SessionOptions(attempts=3, restart_delay=0.0))
    client.initiate()
    with pytest.raises(BlockCheckError) as info:
        for _ in range(3):
            client.receive_data(IDENT_C)
            client.receive_data(corrupt(DATA))
    assert info.value.exit_code == 4
    assert client.result is None


def test_silent_meter_times_out_after_attempts() -> None:
    client = ReadoutClient(SessionOptions(attempts=2, restart_delay=0.0))
    client.initiate()
    assert writes(client.timeout()) == [b"/?!\r\n"]
    with pytest.raises(MeterSilentError) as info:
        client.timeout()
    assert info.value.exit_code == 3
    assert isinstance(info.value, TimeoutError)


def test_truncated_message_restarts_then_fails_silent() -> None:
    client = ReadoutClient(SessionOptions(attempts=2, restart_delay=0.0))
    client.initiate()
    client.receive_data(IDENT_C)
    client.receive_data(DATA[:20])
    client.timeout()
    client.receive_data(IDENT_C)
    client.receive_data(DATA[:20])
    with pytest.raises(MeterSilentError, match="cut off"):
        client.timeout()


def test_garbage_before_identification_restarts() -> None:
    client = ReadoutClient(SessionOptions(restart_delay=0.0))
    client.initiate()
    actions = client.receive_data(b"\x00\x7fxx" + IDENT_C)
    assert writes(actions) == [b"/?!\r\n"]
    client.receive_data(IDENT_C)
    client.receive_data(DATA)
    assert client.done and client.result is not None and client.result.attempts == 2


def test_echo_of_an_optical_head_is_suppressed_even_split() -> None:
    client = ReadoutClient()
    client.initiate()
    client.receive_data(b"/?")
    client.receive_data(b"!\r\n/ISK5MT")
    actions = client.receive_data(b"831-3031\r\n")
    assert writes(actions) == [ACK_9600_READOUT]
    client.receive_data(ACK_9600_READOUT + DATA)
    assert client.done and client.result is not None
    assert client.result.identification.text == "ISK5MT831-3031"
    assert any("echo" in n for n in client.result.notes)


def test_echo_off_treats_echo_as_garbage() -> None:
    client = ReadoutClient(SessionOptions(echo="off", restart_delay=0.0, attempts=1))
    client.initiate()
    # '/?!' parses as an identification with a bad manufacturer: a protocol error
    with pytest.raises(ReaderError):
        client.receive_data(b"/?!\r\n" + IDENT_C)


def test_parity_bits_are_stripped() -> None:
    from reader.frames import add_even_parity

    client = ReadoutClient()
    client.initiate()
    client.receive_data(add_even_parity(IDENT_C))
    client.receive_data(add_even_parity(DATA))
    assert client.done and client.result is not None and len(client.result.readings) == 4


def test_mode_b_switches_without_ack() -> None:
    client = ReadoutClient(SessionOptions(mode="B"))
    client.initiate()
    assert client.receive_data(b"/ISKEMT831-3031\r\n") == [SetBaud(baud=9600, after=0.0)]
    client.receive_data(DATA)
    assert client.done


def test_mode_a_stays_at_300() -> None:
    client = ReadoutClient(SessionOptions(mode="A"))
    client.initiate()
    assert client.receive_data(b"/ISKZMT831-3031\r\n") == []
    client.receive_data(DATA)
    assert client.done


def test_mode_d_listens_and_checks_a_crc() -> None:
    from reader.frames import crc16_dsmr

    client = ReadoutClient(SessionOptions(mode="D"))
    assert client.initiate() == [SetBaud(baud=2400, after=0.0)]
    assert client.timeout_seconds() == 30.0
    ident = b"/ESY5Q3DA1024 V3.03\r\n\r\n"
    text = b"1-0:1.8.0*255(00012345.6789012*kWh)\r\n1-0:21.7.255*255(000151.87*W)\r\n!"
    crc = f"{crc16_dsmr(ident + text):04X}".encode()
    client.receive_data(ident + text + crc + b"\r\n")
    assert client.done and client.result is not None
    assert client.result.readings[0].value == Decimal("12345.6789012")


def test_mode_d_wrong_crc_waits_for_the_next_push() -> None:
    client = ReadoutClient(SessionOptions(mode="D", attempts=2))
    client.initiate()
    ident = b"/ESY5Q3DA1024 V3.03\r\n"
    assert client.receive_data(ident + b"1.8.0(1*kWh)\r\n!0000\r\n") == []
    assert not client.done
    with pytest.raises(BlockCheckError):
        client.receive_data(ident + b"1.8.0(1*kWh)\r\n!0000\r\n")


def test_mode_e_is_refused() -> None:
    with pytest.raises(UnsupportedModeError, match="HDLC"):
        SessionOptions(mode="E")  # type: ignore[arg-type]
    client = ReadoutClient()
    client.initiate()
    client.receive_data(b"/ISK5\\2MT831-3031\r\n")
    with pytest.raises(UnsupportedModeError):
        client.receive_data(b"\x7e\xa0\x07\x03\x21\x93\x0f\x01\x7e")


def test_bad_options_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        SessionOptions(address="12\r\n")
    with pytest.raises(LocalProtocolError):
        SessionOptions(max_baud=1234)
    with pytest.raises(LocalProtocolError):
        SessionOptions(mode="A", load_profile=True)


PROFILE = (
    "P.01(02311150015)(00000000)(15)(2)(1.5)(kW)(2.5)(kW)\r\n"
    "(0.412)(0.000)\r\n(0.500)(0.000)\r\n"
    "P.01(02311150045)(00000080)(15)(2)(1.5)(kW)(2.5)(kW)\r\n"
    "(ERROR)(0.001)\r\n"
)
LOGBOOK = "P.98(1231115001500)(00000001)()(0)\r\nP.98(1231115020000)(00000004)()(0)\r\n"


def _programming_session(client: ReadoutClient) -> None:
    client.initiate()
    client.receive_data(IDENT_C)
    actions = client.receive_data(DATA)
    assert writes(actions) == [b"/?!\r\n"], "second sign-on for programming mode"
    actions = client.receive_data(IDENT_C)
    assert writes(actions) == [b"\x06051\r\n"]
    actions = client.receive_data(soh_command("P0", "(12345678)"))
    assert writes(actions) == [soh_command("P1", "(secret)")]
    actions = client.receive_data(b"\x06")
    assert writes(actions) == [soh_command("R5", "P.01(;)")]


def test_programming_mode_reads_profile_and_logbook_then_breaks() -> None:
    client = ReadoutClient(SessionOptions(password="secret", load_profile=True, logbook=True))
    _programming_session(client)
    actions = client.receive_data(block(PROFILE))
    assert writes(actions) == [soh_command("R5", "P.98(;)")]
    actions = client.receive_data(block(LOGBOOK))
    assert writes(actions) == [soh_command("B0")]
    assert client.done and client.result is not None
    profile = client.result.load_profile
    assert profile is not None and len(profile) == 3
    assert profile[0].start.isoformat() == "2023-11-14T23:00:00+00:00"
    assert profile[0].values == {"1.5": Decimal("0.412"), "2.5": Decimal("0.000")}
    assert profile[2].values["1.5"] is None and profile[2].status == "00000080"
    assert client.result.logbook is not None and len(client.result.logbook) == 2


def test_partial_blocks_are_acknowledged_and_a_bad_one_gets_nak() -> None:
    client = ReadoutClient(SessionOptions(password="secret", load_profile=True, partial_blocks=True))
    client.initiate()
    client.receive_data(IDENT_C)
    client.receive_data(DATA)
    client.receive_data(IDENT_C)
    client.receive_data(soh_command("P0", "(12345678)"))
    assert writes(client.receive_data(b"\x06")) == [soh_command("R6", "P.01(;)")]
    first, second = PROFILE[:120], PROFILE[120:]
    assert writes(client.receive_data(corrupt(block(first, end=b"\x04")))) == [b"\x15"]
    assert writes(client.receive_data(block(first, end=b"\x04"))) == [b"\x06"]
    assert writes(client.receive_data(block(second))) == [soh_command("B0")]
    assert client.result is not None and client.result.load_profile is not None
    assert len(client.result.load_profile) == 3


def test_wrong_password_is_a_clear_error() -> None:
    client = ReadoutClient(SessionOptions(password="wrong", load_profile=True))
    client.initiate()
    client.receive_data(IDENT_C)
    client.receive_data(DATA)
    client.receive_data(IDENT_C)
    client.receive_data(soh_command("P0", "(12345678)"))
    with pytest.raises(ProtocolError, match="password"):
        client.receive_data(soh_command("B0"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["A", "B", "C", "D"]))
def test_any_bytes_either_progress_or_raise_a_reader_error(data: bytes, mode: str) -> None:
    client = ReadoutClient(SessionOptions(mode=mode, attempts=2, restart_delay=0.0))  # type: ignore[arg-type]
    client.initiate()
    try:
        for i in range(0, len(data), 7):
            client.receive_data(data[i:i + 7])
            if client.done:
                break
    except ReaderError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(IDENT_C + DATA) - 1), max_size=12))
def test_any_chunking_gives_the_same_readout(cuts: list[int]) -> None:
    stream = IDENT_C + DATA
    points = sorted(set(cuts))
    client = ReadoutClient()
    client.initiate()
    prev = 0
    for p in points + [len(stream)]:
        client.receive_data(stream[prev:p])
        prev = p
    assert client.done and client.result is not None
    assert [r.text for r in client.result.readings] == ["37155794", "0004417.218", "0001.245", "00000000"]
