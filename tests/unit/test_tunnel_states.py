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


def test_forgetting_never_follows_a_link_put_in_the_folder_s_place(tmp_path: Path) -> None:
    """apply forgets as root in a folder user smgw owns: a link there is never followed."""
    run, victim = tmp_path / "run", tmp_path / "victim"
    run.mkdir()
    victim.mkdir()
    (victim / "portal.json").write_text("{}")
    (victim / "keep.json").mkdir()
    (run / "tunnels").symlink_to(victim)
    assert forget_others(run, ["dso"]) == []
    assert sorted(p.name for p in victim.iterdir()) == ["keep.json", "portal.json"]
    (run / "tunnels").unlink()
    (run / "tunnels").mkdir()
    (run / "tunnels" / "old.json").symlink_to(victim / "portal.json")  # the link goes, not its target
    (run / "tunnels" / "sub.json").mkdir()
    assert forget_others(run, ["dso"]) == ["old"]
    assert (victim / "portal.json").exists() and (run / "tunnels" / "sub.json").is_dir()
