"""nftables backend: the policy as one ``table inet smgw`` file, checked, then applied
atomically, with the last good ruleset kept for rollback (the fw4 habit)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import jinja2

from firewall.errors import FirewallError
from firewall.policy import Allow, Policy

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
_NFT_STR = re.compile(r"[A-Za-z0-9 ,.:/_-]*")


def nft_str(value: object) -> str:
    """A double-quoted nft string; anything that could end the string or the line is refused."""
    text = str(value)
    if not _NFT_STR.fullmatch(text) or len(text) > 128:
        raise FirewallError(f"value {text[:40]!r} cannot go into an nft string")
    return f'"{text}"'


def nft_match(allow: Allow) -> str:
    parts = []
    if allow.peer is not None:
        parts.append(f"ip {'daddr' if allow.direction == 'out' else 'saddr'} {allow.peer}")
    if allow.proto == "icmp":
        parts.append("meta l4proto icmp")
    else:
        parts.append(f"{allow.proto} dport {int(allow.port or 0)}")
    return " ".join(parts)


def nft_limit(allow: Allow) -> str:
    return "" if allow.rate_per_s is None else f"limit rate {int(allow.rate_per_s)}/second "


def environment(templates: Path = TEMPLATES) -> jinja2.Environment:
    """Templates that render nft syntax: the strict settings of every smgw template, and the nft filters."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(nft_str=nft_str, nft_match=nft_match, nft_limit=nft_limit)
    return env


def render(policy: Policy, templates: Path = TEMPLATES) -> str:
    """The whole ruleset as text: pure, so golden files can pin it."""
    return environment(templates).get_template("nftables.conf.j2").render(p=policy)


def _nft() -> str:
    exe = shutil.which("nft") or ("/usr/sbin/nft" if Path("/usr/sbin/nft").exists() else None)
    if exe is None:
        raise FirewallError("nft not found (apt-get install nftables)")
    return exe


def _run(args: list[str], ruleset: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_nft(), *args], input=ruleset, capture_output=True, text=True, timeout=30, check=False)


def check(ruleset: str) -> None:
    """``nft -c``: the kernel's own parser and validator, without changing anything."""
    done = _run(["-c", "-f", "-"], ruleset)
    if done.returncode != 0:
        raise FirewallError(f"nft refused the ruleset: {done.stderr.strip()[:400]}")


def apply(ruleset: str, state_dir: Path) -> None:
    """Check, load in one transaction, and keep it as the last good ruleset. If loading
    fails after the check passed, the last good ruleset is loaded again."""
    check(ruleset)
    last_good = state_dir / "nftables.last-good.conf"
    done = _run(["-f", "-"], ruleset)
    if done.returncode != 0:
        if last_good.exists():
            _run(["-f", "-"], last_good.read_text())
        raise FirewallError(f"nft could not load the ruleset (last good restored): {done.stderr.strip()[:400]}")
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    # a fresh name, made here (O_EXCL) and never through a link, then one rename
    tmp = state_dir / f".nftables.last-good.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)
    with os.fdopen(fd, "w") as out:
        out.write(ruleset)
    tmp.replace(last_good)


def loaded(table: str = "smgw") -> str:
    """The table as the kernel holds it now (for the self-test: loaded == rendered)."""
    done = _run(["-s", "list", "table", "inet", table], "")  # -s: without counters, which change
    if done.returncode != 0:
        raise FirewallError(f"table inet {table} is not loaded: {done.stderr.strip()[:200]}")
    return done.stdout


def remove(table: str = "smgw") -> None:
    """Delete our table if it is loaded (switching to the iptables backend)."""
    if _run(["list", "table", "inet", table], "").returncode == 0:
        done = _run(["delete", "table", "inet", table], "")
        if done.returncode != 0:
            raise FirewallError(f"nft could not delete table inet {table}: {done.stderr.strip()[:200]}")
