"""The gateway's zone policy, derived from its config (ARCHITECTURE §6).

WAN in: the wake-up port only (rate-limited). WAN out: each tunnel's server, the GWA's
server, NTP. HAN in: the portal (rate-limited). tun-<party> out: that party's ingest port.
tun-admin in: the admin API. Nothing else, and nothing is ever forwarded between zones.
"""

from __future__ import annotations

from appliance.config import GatewayConfig
from firewall.policy import Allow, Policy, Zone


def tunnel_device(name: str) -> str:
    """The tun interface of a party's (or the admin) tunnel: ``tun-<name>``, at most 14 characters."""
    return f"tun-{name}"


def zone_policy(cfg: GatewayConfig) -> Policy:
    zones = [Zone("wan", cfg.interfaces.wan.name), Zone("han", cfg.interfaces.han.name)]
    if cfg.interfaces.lmn is not None:
        zones.append(Zone("lmn", cfg.interfaces.lmn.name))
    allows = [
        Allow("in", "wan", "udp", cfg.wakeup.port, rate_per_s=cfg.wakeup.rate_per_s, why="wake-up"),
        Allow("in", "han", "tcp", cfg.firewall.portal_port, rate_per_s=cfg.firewall.portal_rate_per_s,
              why="portal"),
    ]
    for party in cfg.parties:
        zones.append(Zone(f"tun_{party.name}", tunnel_device(party.name)))
        allows.append(Allow("out", "wan", "udp", party.remote.port, peer=party.remote.address,
                            why=f"tunnel {party.name}"))
        allows.append(Allow("out", f"tun_{party.name}", "tcp", party.ingest_port, why=f"ingest {party.name}"))
    if cfg.admin is not None:
        zones.append(Zone("tun_admin", tunnel_device("admin")))
        allows.append(Allow("out", "wan", "udp", cfg.admin.remote.port, peer=cfg.admin.remote.address,
                            why="tunnel admin"))
        allows.append(Allow("in", "tun_admin", "tcp", cfg.admin.api_port, why="admin api"))
    if cfg.time.ntp_server is not None:
        allows.append(Allow("out", "wan", "udp", 123, peer=cfg.time.ntp_server, why="ntp"))
    return Policy(zones=tuple(zones), allows=tuple(allows), log_rate_per_min=cfg.firewall.log_rate_per_min)
