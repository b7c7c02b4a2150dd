"""``smgw read`` against the meter simulator: real CLI process, real pty, real pyserial.

Every simulator scenario is exercised through the same path a real meter takes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from tests.system.conftest import Simulator, run_smgw


def read_json(sim: Simulator, *args: str, timeout: str = "20") -> dict[str, object]:
    result = run_smgw("read", "--port", str(sim.link), "--json", "--timeout", timeout, *args)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert isinstance(doc, dict)
    return doc


def by_address(doc: dict[str, object]) -> dict[str, dict[str, object]]:
    readings = doc["readings"]
    assert isinstance(readings, list)
    out: dict[str, dict[str, object]] = {}
    for r in readings:
        out.setdefault(r["address"], r)
    return out


def check_contract(doc: dict[str, object]) -> None:
    assert doc["identification"] == "ISK5MT831-3031" or str(doc["identification"]).startswith("ISK")
    assert doc["manufacturer"] == "ISK"
    readings = doc["readings"]
    assert isinstance(readings, list) and readings
    for r in readings:
        assert set(r) == {"address", "value", "unit", "timestamp"}
        assert r["value"] is None or isinstance(r["value"], str)


def check_registers(doc: dict[str, object]) -> None:
    regs = by_address(doc)
    total = Decimal(str(regs["1.8.0"]["value"]))
    t1 = Decimal(str(regs["1.8.1"]["value"]))
    t2 = Decimal(str(regs["1.8.2"]["value"]))
    assert total == t1 + t2, "1.8.0 = 1.8.1 + 1.8.2 exactly (no float rounding)"
    assert regs["1.8.0"]["unit"] == "kWh"
    assert regs["1.6.0"]["timestamp"] is not None and str(regs["1.6.0"]["timestamp"]).endswith("+00:00")


@pytest.mark.parametrize("scenario", ["normal", "bad-bcc-once", "garbage", "echo", "parity8", "lf-only", "glued", "load-profile"])
def test_scenarios_that_read(meter_sim: Callable[..., Simulator], scenario: str) -> None:
    doc = read_json(meter_sim(scenario))
    check_contract(doc)
    check_registers(doc)


def test_values_are_exact_and_increase_between_readouts(meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("normal")
    first = by_address(read_json(sim))
    second = by_address(read_json(sim))
    a, b = Decimal(str(first["1.8.0"]["value"])), Decimal(str(second["1.8.0"]["value"]))
    assert b > a
    assert "." in str(first["1.8.0"]["value"]) and len(str(first["1.8.0"]["value"]).split(".")[1]) == 3


def test_special_values_survive(meter_sim: Callable[..., Simulator]) -> None:
    doc = read_json(meter_sim("normal"))
    regs = by_address(doc)
    assert regs["32.7.0"]["value"] == "230.1" and regs["32.7.0"]["unit"] == "V"  # decimal comma
    assert regs["31.7.0"]["unit"] == "A"  # unit inside the value after a space
    assert regs["0.2.0"]["unit"] is None and regs["0.2.0"]["value"] == "V1.02"
    assert regs["C.90.1"]["value"] is None and regs["96.77.2"]["value"] is None
    assert "41.7.0" in regs and "21.7.0" in regs  # two data sets on one line
    addresses = [r["address"] for r in doc["readings"]]  # type: ignore[union-attr]
    assert addresses.count("1.8.0") >= 2, "repeated addresses are kept, in order"


def test_slow_meter_at_real_line_speed(meter_sim: Callable[..., Simulator]) -> None:
    doc = read_json(meter_sim("slow"), timeout="60")
    check_registers(doc)


def test_addressed_meter(meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("addressed")
    check_registers(read_json(sim, "--address", "12345678"))
    start_s = _startup_s()
    started = time.monotonic()
    result = run_smgw("read", "--port", str(sim.link), "--json", "--timeout", "4", "--attempts", "2")
    assert result.returncode == 3
    assert time.monotonic() - started < 4 + start_s + 2


@pytest.mark.parametrize(("scenario", "mode"), [("mode-a", "A"), ("mode-b", "B"), ("mode-d", "D")])
def test_other_modes(meter_sim: Callable[..., Simulator], scenario: str, mode: str) -> None:
    doc = read_json(meter_sim(scenario), "--mode", mode, timeout="30")
    check_contract(doc)
    check_registers(doc)


def test_mode_e_is_refused_clearly(meter_sim: Callable[..., Simulator]) -> None:
    result = run_smgw("read", "--port", str(meter_sim("mode-e").link), "--mode", "E")
    assert result.returncode != 0
    assert "mode E" in result.stderr and "Traceback" not in result.stderr


def test_load_profile_and_logbook(meter_sim: Callable[..., Simulator]) -> None:
    doc = read_json(meter_sim("load-profile"), "--profile", "--logbook", timeout="30")
    profile = doc["load_profile"]
    assert isinstance(profile, list) and len(profile) >= 4
    for row in profile:
        assert set(row) == {"start", "values", "units", "status"}
        assert row["start"].endswith("+00:00")
        assert all(v is None or isinstance(v, str) for v in row["values"].values())
    starts = [row["start"] for row in profile]
    assert starts == sorted(starts), "intervals in time order, across season changes"
    assert len(set(starts)) == len(starts)
    assert isinstance(doc["logbook"], list) and doc["logbook"]


def test_load_profile_in_partial_blocks_env_password(meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("load-profile")
    result = run_smgw("read", "--port", str(sim.link), "--json", "--profile", "--timeout", "30",
                      env={"SMGW_METER_PASSWORD": "wrong-one"})
    assert result.returncode != 0 and "password" in result.stderr


def test_bad_bcc_always_exits_4_and_prints_one_line(meter_sim: Callable[..., Simulator]) -> None:
    result = run_smgw("read", "--port", str(meter_sim("bad-bcc-always").link), "--json", "--timeout", "30")
    assert result.returncode == 4
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and "BCC" in result.stderr


def test_silent_meter_exits_3_within_timeout(meter_sim: Callable[..., Simulator]) -> None:
    sim = meter_sim("silent")
    start_s = _startup_s()
    started = time.monotonic()
    result = run_smgw("read", "--port", str(sim.link), "--json", "--timeout", "3")
    elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1 and "meter" in result.stderr
    assert elapsed < 3 + start_s + 2, "exit within --timeout (plus interpreter start, as measured just before)"


def _startup_s() -> float:
    """What starting ``smgw read`` costs on this machine now (a busy CI machine: seconds)."""
    started = time.monotonic()
    assert run_smgw("read", "--help").returncode == 0
    return time.monotonic() - started


def test_truncated_message_is_not_a_crash(meter_sim: Callable[..., Simulator]) -> None:
    result = run_smgw("read", "--port", str(meter_sim("truncated").link), "--json", "--timeout", "8")
    assert result.returncode == 3
    assert "Traceback" not in result.stderr


def test_hostile_meter_is_rejected_cleanly(meter_sim: Callable[..., Simulator]) -> None:
    result = run_smgw("read", "--port", str(meter_sim("hostile").link), "--json", "--timeout", "15")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_port_is_named(tmp_path: Path) -> None:
    port = tmp_path / "no-such-tty"
    result = run_smgw("read", "--port", str(port))
    assert result.returncode == 5
    assert str(port) in result.stderr and "does not exist" in result.stderr


def test_busy_port_is_named(meter_sim: Callable[..., Simulator]) -> None:
    from reader.transport import open_port

    sim = meter_sim("normal")
    holder = open_port(str(sim.link))
    try:
        result = run_smgw("read", "--port", str(sim.link), "--timeout", "5")
    finally:
        holder.close()
    assert result.returncode == 5
    assert str(sim.link) in result.stderr and "busy" in result.stderr


def test_8n1_adapter(meter_sim: Callable[..., Simulator]) -> None:
    check_registers(read_json(meter_sim("parity8"), "--framing", "8N1"))


def test_human_output(meter_sim: Callable[..., Simulator]) -> None:
    result = run_smgw("read", "--port", str(meter_sim("normal").link), "--timeout", "20")
    assert result.returncode == 0
    assert "1.8.0" in result.stdout and "kWh" in result.stdout
