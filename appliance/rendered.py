"""What ``smgw apply`` left for the parts that run it: the rendered OpenVPN configs and
their management sockets.

Apart from ``appliance.render`` so that the tunnel supervisor (and the GateWatcher) can find
two paths without loading Jinja2, the templates and the firewall renderers, which only
``smgw render``/``apply`` and the rendering self-tests need.
"""

from __future__ import annotations

from pathlib import Path

from appliance.config import GatewayConfig
from appliance.errors import SmgwError


def management_socket(cfg: GatewayConfig, name: str) -> Path:
    return cfg.paths.run / f"openvpn-{name}.sock"


def supervised(cfg: GatewayConfig, names: list[str]) -> dict[str, tuple[Path, Path]]:
    """``{tunnel: (rendered config, management socket)}``: what the supervisor runs, as
    ``smgw apply`` wrote it; a name without its rendered config is an error."""
    rendered = cfg.paths.rendered / "openvpn"
    missing = [name for name in names if not (rendered / f"{name}.conf").exists()]
    if missing:
        raise SmgwError(f"no rendered config for {', '.join(missing)}: run smgw apply first")
    return {name: (rendered / f"{name}.conf", management_socket(cfg, name)) for name in names}
