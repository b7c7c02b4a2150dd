"""The playbook and roles pass ansible-lint's production profile and a syntax check, and the
roles refuse bad variables before they touch a host (argument specs, then the roles' own checks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ansible.fleet import ANSIBLE, BIN
from tests.tools import missing


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            missing(f"{name} (pip install -e '.[dev]')")
        return found
    return str(path)


def _env() -> dict[str, str]:
    return {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
            "NO_COLOR": "1", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}


def test_ansible_lint_production_profile_is_clean() -> None:
    done = subprocess.run([_tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
                          cwd=ANSIBLE, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr


@pytest.mark.parametrize("inventory", ["inventory/example.yml", "inventory/lab.yml"])
def test_site_passes_the_syntax_check(inventory: str) -> None:
    done = subprocess.run([_tool("ansible-playbook"), "--syntax-check", "-i", inventory, "site.yml"],
                          cwd=ANSIBLE, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _gateway_play(tmp_path: Path, extra: str, host: str = "gw1") -> subprocess.CompletedProcess[str]:
    """Only the play for one host (a gateway: gw1), with one variable spoiled: it must stop in validation."""
    (tmp_path / "extra.json").write_text(extra)
    return subprocess.run(
        [_tool("ansible-playbook"), "-i", "inventory/lab.yml", "site.yml", "--limit", host,
         "-e", f"smgw_lab_root={tmp_path}", "-e", "smgw_lab_prefix=none", "-e", "ansible_become=false",
         "-e", f"smgw_install_source_archive={tmp_path}/none.tar.gz", "-e", f"@{tmp_path}/extra.json"],
        cwd=ANSIBLE, env=_env(), capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("extra", "says"), [
    ('{"smgw_gateway_profile": "rsa"}', "smgw_gateway_profile"),
    ('{"smgw_gateway_interfaces": {"wan": {"name": "wan0"}}}', "han"),
    ('{"smgw_gateway_id": "gw-1\\n[firewall]"}', "id must be a DNS-style name"),
    ('{"smgw_gateway_meter": {"port = \\"/x\\"\\n#": "/dev/ttyUSB0"}}', "is not a plain key"),
    ('{"smgw_gateway_user": "meterd"}', "smgw_gateway_user"),  # the rendered units run as smgw
    ("{}", "must have run role smgw_ca earlier"),  # a gateway alone: no CA to enrol with
])
def test_gateway_role_refuses_bad_variables_before_touching_the_host(tmp_path: Path, extra: str, says: str) -> None:
    done = _gateway_play(tmp_path, extra)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert says in out, out[-3000:]
    # it stopped in validation: nothing of the gateway was made
    assert not (tmp_path / "gw1").exists(), sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("extra", [
    {"smgw_headend_read_socket": "{tmp}/dso/run/smgw-headend/reads.sock"},  # root's run folder
    {"smgw_headend_read_socket": "{tmp}/dso/etc/reads.sock"},  # not a folder of its own: not named smgw...
    # a folder above the headend's config: the unit would make it the headend user's
    {"smgw_headend_read_socket": "{tmp}/dso/smgw-all/reads.sock", "smgw_headend_etc_dir": "{tmp}/dso/smgw-all/etc"},
    {"smgw_headend_read_socket": "{tmp}/dso/run/smgw-reads/../smgw-headend/reads.sock"},
    {"smgw_headend_read_socket": "{tmp}/dso/run/smgw-reads/"},  # a folder, not a socket in one
    {"smgw_headend_read_socket": "{tmp}/dso/opt/smgw/smgw/reads.sock"},  # smgw's own code (not beside the run folder)
    {"smgw_headend_read_socket": "{tmp}/dso/etc/systemd/system/smgw-headend-tunnel.service.d/reads.sock"},
    {"smgw_headend_read_socket": "{tmp}/dso/run/smgw-reads/reads.sock", "smgw_headend_read_group": "adm"},
    {"smgw_headend_read_socket": "{tmp}/dso/run/smgw-reads/reads.sock", "smgw_headend_read_group": "smgw"},
])
def test_headend_role_keeps_the_read_socket_out_of_root_s_folders(tmp_path: Path, extra: dict[str, str]) -> None:
    done = _gateway_play(tmp_path, json.dumps({k: v.format(tmp=tmp_path) for k, v in extra.items()}), host="dso")
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "smgw_headend_read_socket: a plain absolute path in a folder of its own" in out, out[-3000:]
    assert not (tmp_path / "dso").exists(), sorted(p.name for p in tmp_path.iterdir())
