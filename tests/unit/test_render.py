"""Generate: golden files for the example config, and no hostile string ever renders.

Set ``SMGW_UPDATE_GOLDEN=1`` to rewrite the golden files after a deliberate change; the
diff then shows in review what every gateway's configs would become.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from appliance.config import load, verify
from appliance.errors import ConfigError
from appliance.render import RenderError, generate, ovpn, ovpn_single, tmpfiles_path
from firewall.errors import FirewallError
from firewall.nftables import nft_str
from tests.tools import missing

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "gateway.toml"
GOLDEN = Path(__file__).parent / "golden"
IDS = {"gateway-tls-dso": "SoftHSM\\x20project/SoftHSM\\x20v2/0123456789abcdef/smgw/00112233AABBCCDD",
       "gateway-tls-supplier": "SoftHSM\\x20project/SoftHSM\\x20v2/0123456789abcdef/smgw/44556677EEFF0011",
       "gateway-tls-admin": "SoftHSM\\x20project/SoftHSM\\x20v2/0123456789abcdef/smgw/8899AABBCCDDEEFF"}


def test_example_renders_exactly_the_golden_files() -> None:
    files = generate(load(EXAMPLE), IDS)
    assert set(files) == {"nftables.conf", "openvpn/dso.conf", "openvpn/supplier.conf", "openvpn/admin.conf",
                          "systemd/smgw-core.service", "systemd/smgw-tunnel-dso.service",
                          "systemd/smgw-tunnel-supplier.service", "systemd/smgw-selftest.service",
                          "systemd/smgw-selftest.timer", "systemd/smgw-gatewatcher.service",
                          "systemd/smgw-portal.service", "portal.json", "tmpfiles.d/smgw.conf"}
    for name, text in files.items():
        golden = GOLDEN / name
        if os.environ.get("SMGW_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert text == golden.read_text(), f"{name} differs from its golden file"


def test_rendered_configs_hold_the_hardening() -> None:
    files = generate(load(EXAMPLE), IDS)
    dso, supplier = files["openvpn/dso.conf"], files["openvpn/supplier.conf"]
    for conf in (dso, supplier):
        for line in ("remote-cert-tls server", "script-security 1", "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
                     'pull-filter reject ""', "management-query-passwords", "auth-nocache"):
            assert line in conf.splitlines()
        assert "\nkey " not in conf and "askpass" not in conf
    assert 'verify-x509-name "dso.example" name' in dso and "tls-groups brainpoolP256r1" in dso
    assert "tls-version-max 1.2" in dso and "tls-version-min 1.3" in supplier
    nft = files["nftables.conf"]
    assert "policy drop;" in nft and nft.count("policy drop;") == 3
    assert 'iifname "wan0" udp dport 7500 limit rate 10/second accept comment "wake-up"' in nft


def test_a_missing_token_key_is_named() -> None:
    with pytest.raises(RenderError, match="gateway-tls-supplier"):
        generate(load(EXAMPLE), {k: v for k, v in IDS.items() if "supplier" not in k})


HOSTILE = ["a\nb", "a\rb", "a\x00b", 'a"b', "a'b", "a b", "a\\b", "$(reboot)", "a;b", "a`b`", "a{b}", "a#b"]


def _string_leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _string_leaves(v, (*path, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _string_leaves(v, (*path, i))]
    return [path] if isinstance(data, str) else []


def _set(data: Any, path: tuple[Any, ...], value: str) -> Any:
    out = copy.deepcopy(data)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


EXAMPLE_DATA = tomllib.loads(EXAMPLE.read_text())
LEAVES = _string_leaves(EXAMPLE_DATA)
FREE_TEXT = {("meter", "address")}  # may be empty; still refuses everything hostile below


@pytest.mark.parametrize("path", LEAVES, ids=[".".join(map(str, p)) for p in LEAVES])
def test_every_string_field_refuses_the_injection_corpus(path: tuple[Any, ...]) -> None:
    """Each hostile value is refused in verify with its key path named, or, if some field
    admitted it, the quoting filters refuse it when rendering: it never reaches a file."""
    for value in HOSTILE:
        try:
            cfg = verify(_set(EXAMPLE_DATA, path, _example_value(path) + value))
        except ConfigError as exc:
            named = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
            assert any(named in where or where == "(top level)" for where, _ in exc.problems), (value, exc.problems)
            continue
        try:
            files = generate(cfg, IDS)
        except (RenderError, FirewallError):
            continue
        assert all(value not in text for text in files.values()), f"{path} let {value!r} into a rendered file"


def _example_value(path: tuple[Any, ...]) -> str:
    node: Any = EXAMPLE_DATA
    for part in path:
        node = node[part]
    return str(node)


@pytest.mark.parametrize("value", HOSTILE[:5])  # a space is fine inside the quotes
def test_quoting_filters_refuse(value: str) -> None:
    for quote in (ovpn, nft_str):
        with pytest.raises((RenderError, FirewallError)):
            quote(value)
    if value in ("a\nb", "a\rb", "a\x00b", "a'b"):
        with pytest.raises(RenderError):
            ovpn_single(value)


def test_headend_example_and_the_iptables_backend_render_their_golden_files() -> None:
    from appliance.config import load_any
    from appliance.render_server import generate_headend
    from headend.config import HeadendConfig

    headend = load_any(ROOT / "examples" / "headend.toml")
    assert isinstance(headend, HeadendConfig)
    rendered = {**{f"headend/{k}": v for k, v in generate_headend(headend).items()},
                **generate(verify(_set(EXAMPLE_DATA, ("firewall", "backend"), "iptables")), IDS)}
    for name in ("headend/openvpn/server.conf", "headend/nftables.conf", "iptables.rules"):
        golden = GOLDEN / name
        if os.environ.get("SMGW_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(rendered[name])
        assert rendered[name] == golden.read_text(), f"{name} differs from its golden file"
    assert "push \"route " not in rendered["headend/openvpn/server.conf"]
    # through its tunnel a gateway reaches the ingest's port on the server's tunnel address, nothing else
    fw = rendered["headend/nftables.conf"]
    accepts = [line.strip() for line in fw.splitlines() if line.strip().endswith(("accept", '"the ingest"'))]
    assert accepts == ['iifname != "tun-dso" accept', "ct state established accept",
                       "ct state related ct original ip saddr 10.81.0.0/24 ct original ip daddr 10.81.0.0/24 accept",
                       ("ip daddr 10.81.0.1 tcp dport 8443 tcp flags & (fin|syn|rst|ack) == syn ct state new accept "
                        'comment "the ingest"')], accepts
    assert "\t\tdrop\n" in fw and 'iifname "tun-dso" drop' in fw


@pytest.mark.parametrize(("key", "value", "where"), [
    (("tunnel", "network"), "10.81.0.0/24", "tunnel"),
    (("headend", "name"), "DSO", "headend.name"),
    (("tunnel", "cert"), "/etc/x y.crt", "tunnel.cert"),
    (("ingest", "database"), "sqlite:////tmp/a;rm", "ingest.database"),
])
def test_headend_config_refusals_name_the_key(key: tuple[str, ...], value: str, where: str) -> None:
    from headend.config import HeadendConfig

    data = tomllib.loads((ROOT / "examples" / "headend.toml").read_text())
    with pytest.raises(ConfigError) as caught:
        verify(_set(data, key, value), "headend.toml", HeadendConfig)
    assert any(where in path for path, _ in caught.value.problems), caught.value.problems


@pytest.mark.parametrize("address", ["10.81.0.1", "10.81.0.77", "0.0.0.0", "192.0.2.11", "10.0.0.5"])
def test_the_read_api_may_not_listen_where_the_gateways_reach(address: str) -> None:
    """A gateway reaches every address of the headend host through its tunnel but loopback:
    a read API anywhere else would serve it every meter."""
    from headend.config import HeadendConfig

    data = tomllib.loads((ROOT / "examples" / "headend.toml").read_text())
    verify(data, "headend.toml", HeadendConfig)  # the example's loopback is fine
    with pytest.raises(ConfigError) as caught:
        verify(_set(data, ("ingest", "read_address"), address), "headend.toml", HeadendConfig)
    assert "read_address" in str(caught.value) and "loopback" in str(caught.value), caught.value.problems
    verify(_set(_set(data, ("ingest", "read_address"), address), ("ingest", "read_api"), False), "headend.toml",
           HeadendConfig)  # no read API: nothing to place


def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze missing; CI has systemd")
        pytest.skip("systemd-analyze missing (under CI=true this is a failure)")
    files = generate(load(EXAMPLE), IDS, smgw_binary=Path(sys.executable))
    for name in ("smgw-core.service", "smgw-tunnel-dso.service"):
        (tmp_path / name).write_text(files[f"systemd/{name}"])
    done = subprocess.run([analyze, "verify", *(str(tmp_path / n) for n in ("smgw-core.service",
                                                                          "smgw-tunnel-dso.service"))],
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr


def test_gwa_example_renders_its_admin_tunnel_server() -> None:
    """The GWA's config is told apart by [gwa]; its server is the admin tunnels' end: device
    tun-gwa, its gwa-admin certificate, CRL checked, nothing pushed but the tunnel itself."""
    from appliance.config import load_any
    from appliance.render_server import generate_gwa
    from headend.config import GwaConfig

    gwa = load_any(ROOT / "examples" / "gwa.toml")
    assert isinstance(gwa, GwaConfig)
    files = generate_gwa(gwa)
    for name in ("openvpn/server.conf", "nftables.conf"):
        golden = GOLDEN / "gwa" / name
        if os.environ.get("SMGW_UPDATE_GOLDEN") == "1":
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(files[name])
        assert files[name] == golden.read_text(), name
    server = files["openvpn/server.conf"]
    # the GWA connects out to a gateway's API: nothing new comes in from its admin tunnels
    assert "ct state new accept" not in files["nftables.conf"] and 'iifname != "tun-gwa" accept' in files["nftables.conf"]
    assert "dev \"tun-gwa\"" in server and "crl-verify" in server and "/etc/smgw-gwa/pki/admin.crt" in server
    data = tomllib.loads((ROOT / "examples" / "gwa.toml").read_text())
    with pytest.raises(ConfigError) as caught:
        verify(_set(data, ("gwa", "server_name"), "gwa.example\nplugin /tmp/x.so"), "gwa.toml", GwaConfig)
    assert any("gwa.server_name" in path for path, _ in caught.value.problems), caught.value.problems


def test_apply_shares_what_it_rendered_with_the_services_group(tmp_path: Path) -> None:
    """Rendered as root, read by the tunnels as user smgw: the tree takes the rendered folder's group."""
    from appliance.cli_net import share_rendered, write_tree

    if os.geteuid() != 0:
        missing("root (chown to another group)")
    rendered = tmp_path / "rendered"
    rendered.mkdir(mode=0o750)
    os.chown(rendered, -1, 1)  # a group other than root's, as smgw is on a gateway
    write_tree({"openvpn/dso.conf": "client\n", "nftables.conf": "table inet smgw {}\n",
                "firewall.loaded": "table inet smgw {}\n"}, rendered)  # the self-test timer (user smgw) reads it
    share_rendered(rendered)
    tree = [rendered, rendered / "openvpn", rendered / "openvpn/dso.conf", rendered / "nftables.conf",
            rendered / "firewall.loaded"]
    assert {p.stat().st_gid for p in tree} == {1}
    assert all(p.stat().st_mode & 0o007 == 0 for p in tree)  # and nobody else


def test_apply_shares_nothing_user_smgw_planted(tmp_path: Path) -> None:
    """The state folder is smgw's: a symlink or a hard link it put where apply wrote must not
    make root hand the group a file that is not apply's."""
    from appliance.cli_net import share_rendered, write_tree

    if os.geteuid() != 0:
        missing("root (chown to another group)")
    rendered, secret_dir = tmp_path / "rendered", tmp_path / "secret"
    rendered.mkdir()
    secret_dir.mkdir()
    os.chown(rendered, -1, 1)
    secret = secret_dir / "shadow"
    secret.write_text("root only\n")
    write_tree({"openvpn/dso.conf": "client\n"}, rendered)
    (rendered / "openvpn/planted").symlink_to(secret)  # inside the tree
    (rendered / "openvpn/dir-link").symlink_to(secret_dir)
    os.link(secret, rendered / "hard")  # a second name of root's file
    (tmp_path / "top-link").symlink_to(secret_dir)  # the top itself
    share_rendered(rendered)
    share_rendered(tmp_path / "top-link")
    assert (rendered / "openvpn/dso.conf").stat().st_gid == 1  # apply's own file: shared
    assert secret.stat().st_gid == 0 and secret_dir.stat().st_gid == 0  # nothing through a link


def test_the_run_folder_is_made_at_boot_for_the_units_user() -> None:
    cfg = load(EXAMPLE)
    files = generate(cfg, IDS)
    line = files["tmpfiles.d/smgw.conf"].splitlines()[-1]
    # type, path, mode, user, group, age: the units' user and group (User=/Group= of every unit)
    assert line.split() == ["d", str(cfg.paths.run), "0750", "smgw", "smgw", "-"]
    assert "User=smgw\nGroup=smgw" in files["systemd/smgw-core.service"]


@pytest.mark.parametrize("bad", ["/run/smgw x", "/run/%n", "run/smgw", "/run/smgw\nd /etc 0777 root root -", ""])
def test_a_tmpfiles_path_refuses_separators_specifiers_and_relative_paths(bad: str) -> None:
    with pytest.raises(RenderError, match="tmpfiles.d"):
        tmpfiles_path(bad)
