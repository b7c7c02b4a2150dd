"""Tunnel states: one file per tunnel, merged by readers; a removed party's state is forgotten."""

from __future__ import annotations

from pathlib import Path

from appliance.tunnel_states import forget_others, read_states, write_states


def test_states_are_written_per_tunnel_and_read_merged(tmp_path: Path) -> None:
    write_states(tmp_path, [{"name": "dso", "state": "CONNECTED"}])
    write_states(tmp_path, [{"name": "supplier", "state": "RECONNECTING"}])  # another supervisor
    assert [s["name"] for s in read_states(tmp_path)] == ["dso", "supplier"]
    assert read_states(tmp_path, ["supplier"]) == [{"name": "supplier", "state": "RECONNECTING"}]
    (tmp_path / "tunnels" / "broken.json").write_text("{not json")
    (tmp_path / "tunnels" / "liar.json").write_text('{"name": "dso", "state": "CONNECTED"}')  # name must match
    assert [s["name"] for s in read_states(tmp_path)] == ["dso", "supplier"]
    assert forget_others(tmp_path, ["dso"]) == ["broken", "liar", "supplier"]
    assert [s["name"] for s in read_states(tmp_path)] == ["dso"]
