"""The simulated meter, driven with byte strings (its own rules, checked independently)."""

from __future__ import annotations

from reader.frames import bcc
from reader.simulator import MeterSimulator, expected_registers
from tests.meterbytes import soh_command


def data(emits: list) -> bytes:  # type: ignore[type-arg]
    return b"".join(e.data for e in emits)


def test_sign_on_ack_and_readout_at_the_new_speed() -> None:
    sim = MeterSimulator("normal")
    assert data(sim.receive(b"/?!\r\n", 300)) == b"/ISK5MT831-3031\r\n"
    emits = sim.receive(b"\x06050\r\n", 300)
    message = next(e for e in emits if e.data)
    assert message.baud == 9600 and message.expect_client_baud == 9600 and message.delay >= 0.2
    assert message.data[0] == 2 and bcc(message.data[1:-1]) == message.data[-1]
    assert f"1.8.0({expected_registers(0)['1.8.0']:011.3f}*kWh)".encode() in message.data


def test_ack_at_the_wrong_speed_is_ignored_and_addressing() -> None:
    sim = MeterSimulator("normal")
    sim.receive(b"/?!\r\n", 300)
    assert data(sim.receive(b"\x06050\r\n", 9600)) == b""
    addressed = MeterSimulator("addressed")
    assert addressed.receive(b"/?!\r\n", 300) == []
    assert data(addressed.receive(b"/?12345678!\r\n", 300)).startswith(b"/ISK")


def test_programming_flow_with_partial_blocks_and_nak() -> None:
    sim = MeterSimulator("normal", password="secret")
    sim.receive(b"/?!\r\n", 300)
    assert data(sim.receive(b"\x06051\r\n", 300)).startswith(b"\x01P0\x02(")
    assert data(sim.receive(soh_command("P1", "(nope)"), 9600)) == b"\x15"
    assert data(sim.receive(soh_command("P1", "(secret)"), 9600)) == b"\x06"
    first = data(sim.receive(soh_command("R6", "P.01(;)"), 9600))
    assert first[-2] == 0x04
    assert data(sim.receive(b"\x15", 9600)) == first, "NAK repeats the block"
    blocks = [first]
    while blocks[-1][-2] == 0x04:
        blocks.append(data(sim.receive(b"\x06", 9600)))
    assert blocks[-1][-2] == 0x03 and len(blocks) >= 3
    assert data(sim.receive(soh_command("R5", "X.99(;)"), 9600)).startswith(b"\x02(ERROR)")
    assert sim.receive(soh_command("B0"), 9600)[-1].baud == 300


def test_bad_bcc_once_then_good_and_registers_increase() -> None:
    sim = MeterSimulator("bad-bcc-once")
    msgs = []
    for _ in range(2):
        sim.receive(b"/?!\r\n", 300)
        msgs.append(data(sim.receive(b"\x06050\r\n", 300)))
    assert bcc(msgs[0][1:-1]) != msgs[0][-1] and bcc(msgs[1][1:-1]) == msgs[1][-1]
    assert expected_registers(1)["1.8.0"] - expected_registers(0)["1.8.0"] > 0
    assert expected_registers(5)["1.8.0"] == expected_registers(5)["1.8.1"] + expected_registers(5)["1.8.2"]


def test_mode_d_pushes_on_its_own_and_echo() -> None:
    sim = MeterSimulator("mode-d")
    assert sim.receive(b"/?!\r\n", 300) == []
    pushed = sim.tick(0.0)
    assert pushed and pushed[0].baud == 2400 and pushed[0].data.startswith(b"/ISK3")
    assert sim.tick(0.5) == []
    echo = MeterSimulator("echo")
    assert echo.receive(b"/?!\r\n", 300)[0].data == b"/?!\r\n"
