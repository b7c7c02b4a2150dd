"""The lab fleet the Ansible tests provision: network namespaces for two gateways, a market
party's headend and the WAN between them (appliance.lab), a source release of this checkout,
and ``ansible-playbook`` run with ``ansible/inventory/lab.yml``."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from ipaddress import IPv4Interface
from pathlib import Path

from pyroute2 import NetNS  # type: ignore[import-untyped]

from appliance.lab import Lab

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
BIN = Path(sys.executable).parent
#: what a release holds (``make dist`` packs the same from git)
RELEASE = ("pyproject.toml", "appliance", "reader", "pki", "firewall", "headend", "portal", "templates")
HOSTS = {"dso": IPv4Interface("192.0.2.11/24"), "gw2": IPv4Interface("192.0.2.3/24"),
         "gwa": IPv4Interface("192.0.2.20/24")}


def release(out: Path) -> Path:
    """A source release of this working tree, byte-for-byte the same for the same files (fixed
    mtimes and owners), so that the second provisioning run finds nothing to copy."""
    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name or info.name.endswith((".pyc", ".egg-info")) or ".egg-info/" in info.name:
            return None
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in RELEASE:
            tar.add(ROOT / name, arcname=f"smgw/{name}", filter=clean)
    out.write_bytes(buf.getvalue())
    return out


def build(prefix: str) -> Lab:
    """gw1 is the lab's gateway (wan0, han0); gw2, the headend and the GWA sit on the WAN (eth0); gw2
    gets a HAN link of its own (a veth pair inside its namespace: this kernel has no dummy links)."""
    lab = Lab(prefix, hosts=dict(HOSTS)).build()
    with NetNS(lab.ns("gw2")) as ns:
        ns.link("add", ifname="han0", kind="veth", peer="han0p")
        ns.link("set", index=ns.link_lookup(ifname="han0p")[0], state="up")
        index = ns.link_lookup(ifname="han0")[0]
        ns.addr("add", index=index, address="192.168.8.1", prefixlen=24)
        ns.link("set", index=index, state="up")
    return lab


@dataclass
class Run:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]]


def playbook(lab_root: Path, prefix: str, archive: Path, log: Path, *extra: str) -> Run:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "inventory/lab.yml", "site.yml",
         "-e", f"smgw_lab_root={lab_root}", "-e", f"smgw_lab_prefix={prefix}", "-e", f"smgw_install_source_archive={archive}", *extra],
        cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=900, check=False)
    output = done.stdout + done.stderr
    with log.open("a") as f:
        f.write(output + "\n" + "=" * 72 + "\n")
    return Run(done.returncode, output, recap(done.stdout))


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines: host -> {ok, changed, unreachable, failed, ...}."""
    out: dict[str, dict[str, int]] = {}
    tail = stdout.split("PLAY RECAP", 1)[-1]
    for host, counts in re.findall(r"^(\S+)\s+:\s+(.*)$", tail, re.MULTILINE):
        out[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return out


def unit_commands(unit: Path) -> tuple[list[list[str]], list[str]]:
    """A service unit's ``ExecStartPre=`` command lines and its ``ExecStart=``, as systemd would
    split them: the test runs exactly what the role installed (in the host's namespace, as root,
    without systemd's sandbox, which this machine cannot give)."""
    pre: list[list[str]] = []
    start: list[str] = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "ExecStartPre":
            pre.append(shlex.split(value))
        elif key == "ExecStart":
            start = shlex.split(value)
    if not start:
        raise AssertionError(f"{unit}: no ExecStart")
    return pre, start


def unit_identity(unit: Path) -> list[str]:
    """``setpriv`` arguments for the unit's ``User=``, ``Group=``, ``SupplementaryGroups=``,
    ``AmbientCapabilities=``, ``CapabilityBoundingSet=`` and ``NoNewPrivileges=``: the part of
    systemd's sandbox this machine can give, for a unit whose point is to run unprivileged."""
    keys: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("User", "Group", "SupplementaryGroups", "AmbientCapabilities", "CapabilityBoundingSet",
                   "NoNewPrivileges"):
            keys[key] = value.strip()
    if "User" not in keys:
        return []
    argv = ["setpriv", f"--reuid={keys['User']}", f"--regid={keys.get('Group', keys['User'])}"]
    groups = keys.get("SupplementaryGroups", "").split()
    argv.append(f"--groups={','.join(groups)}" if groups else "--clear-groups")
    caps = _caps(keys.get("AmbientCapabilities", ""))
    if caps:
        wanted = ",".join(f"+{c}" for c in caps)
        argv += [f"--inh-caps={wanted}", f"--ambient-caps={wanted}"]
    if "CapabilityBoundingSet" in keys:  # empty: none at all
        argv.append("--bounding-set=" + ",".join(["-all", *(f"+{c}" for c in _caps(keys["CapabilityBoundingSet"]))]))
    if keys.get("NoNewPrivileges") == "yes":
        argv.append("--no-new-privs")
    return argv


def _caps(names: str) -> list[str]:
    return [c.lower().removeprefix("cap_") for c in names.split()]
