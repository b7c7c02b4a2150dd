"""The management protocol machine, fed byte strings: events out, commands quoted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.ovpn_mgmt import (
    ByteCount,
    Fatal,
    Hold,
    ManagementClient,
    ManagementError,
    PasswordFailed,
    PasswordNeeded,
    Reply,
    State,
    quote,
)


def test_events_from_a_real_session_split_anywhere() -> None:
    stream = (b">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n"
              b">HOLD:Waiting for hold release:0\r\n"
              b"SUCCESS: real-time state notification set to ON\r\n"
              b">STATE:1795612365,WAIT,,,,,,\r\n"
              b">PASSWORD:Need 'smgw token' password\r\n"
              b"SUCCESS: 'smgw token' password entered, but not yet verified\r\n"
              b">BYTECOUNT:1024,2048\r\n"
              b">STATE:1795612374,CONNECTED,SUCCESS,10.8.0.2,192.0.2.1,1194,,\r\n")
    for cut in (1, 7, 64, len(stream)):
        client, events = ManagementClient(), []
        for i in range(0, len(stream), cut):
            events += client.receive_data(stream[i:i + cut])
        kinds = [type(e) for e in events]
        assert kinds.count(State) == 2 and Hold in kinds and ByteCount(1024, 2048) in events
        assert PasswordNeeded("smgw token") in events
        assert State("CONNECTED", "SUCCESS", "10.8.0.2", "192.0.2.1") in events
        assert Reply(True, "real-time state notification set to ON") in events


def test_failures_and_fatal() -> None:
    events = ManagementClient().receive_data(b">PASSWORD:Verification Failed: 'smgw token'\n>FATAL:cannot open tun\n"
                                             b"ERROR: unknown command\n")
    assert events == [PasswordFailed("smgw token"), Fatal("cannot open tun"), Reply(False, "unknown command")]


def test_password_is_quoted_and_escaped() -> None:
    assert ManagementClient().password("smgw token", 'a"b\\c') == b'password "smgw token" "a\\"b\\\\c"\n'


@pytest.mark.parametrize("bad", ["12\n34", "12\r34", "12\x0034", "\x1b[2J"])
def test_cr_lf_nul_and_controls_never_reach_the_socket(bad: str) -> None:
    with pytest.raises(ManagementError):
        ManagementClient().password("smgw token", bad)


def test_verbs_and_signals_are_a_closed_set() -> None:
    with pytest.raises(ManagementError):
        ManagementClient.command("hold release\nsignal")
    with pytest.raises(ManagementError):
        ManagementClient().signal("SIGKILL\n")


def test_an_endless_line_is_refused_not_buffered() -> None:
    client = ManagementClient()
    with pytest.raises(ManagementError):
        client.receive_data(b"x" * 10000)
    assert client.receive_data(b">HOLD:again\n") == [Hold("again")]


@given(st.text())
def test_quote_round_trips_or_refuses(value: str) -> None:
    try:
        quoted = quote(value)
    except ManagementError:
        assert any(not c.isprintable() for c in value)
        return
    assert "\n" not in quoted and "\r" not in quoted
    # read it back the way OpenVPN's parser does: a backslash takes the next character literally
    inner, out, i = quoted[1:-1], [], 0
    while i < len(inner):
        assert inner[i] != '"', "an unescaped quote would end the token early"
        if inner[i] == "\\":
            i += 1
        out.append(inner[i])
        i += 1
    assert "".join(out) == value


@given(st.binary(max_size=3000))
def test_any_bytes_give_events_or_a_management_error(data: bytes) -> None:
    try:
        ManagementClient().receive_data(data)
    except ManagementError:
        pass


def test_supervisor_refuses_a_pin_that_cannot_be_sent() -> None:
    from appliance.errors import SmgwError
    from appliance.tunnels import Supervisor

    with pytest.raises(SmgwError, match="control character"):
        Supervisor({}, "1234\nsignal SIGTERM")
