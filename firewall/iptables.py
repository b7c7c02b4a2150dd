"""iptables backend (python-iptables over libiptc): the same matrix for kernels without nftables.

The policy becomes a list of plain rule records (pure, rendered as ``iptables-save`` text
for golden files and the self-test); applying builds each table in memory and commits it
once, which libiptc does as one atomic replacement of the table. IPv6 gets the same
default-drop policies with nothing allowed but loopback: the gateway speaks IPv4 only.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from firewall.errors import FirewallError
from firewall.policy import Allow, Policy

CHAINS = {"INPUT": "SMGW-IN", "FORWARD": "SMGW-FWD", "OUTPUT": "SMGW-OUT"}


@dataclass(frozen=True, slots=True)
class IptRule:
    chain: str  # one of CHAINS' values
    target: str  # ACCEPT, DROP or LOG
    in_interface: str | None = None
    out_interface: str | None = None
    protocol: str | None = None
    dport: int | None = None
    peer: str | None = None  # destination (out) or source (in)
    peer_is_destination: bool = False
    ctstate: str | None = None
    limit: str | None = None  # "10/second", "10/minute"
    log_prefix: str | None = None

    def save_line(self) -> str:
        """The rule as ``iptables-save`` prints it (for golden files and comparisons)."""
        parts = [f"-A {self.chain}"]
        if self.peer is not None:
            parts.append(f"-{'d' if self.peer_is_destination else 's'} {self.peer}/32")
        if self.in_interface:
            parts.append(f"-i {self.in_interface}")
        if self.out_interface:
            parts.append(f"-o {self.out_interface}")
        if self.protocol:
            parts.append(f"-p {self.protocol}")
        if self.protocol in ("tcp", "udp") and self.dport is not None:
            parts.append(f"-m {self.protocol} --dport {self.dport}")
        if self.ctstate:
            parts.append(f"-m conntrack --ctstate {self.ctstate}")
        if self.limit:
            parts.append(f"-m limit --limit {self.limit}")
        parts.append(f"-j {self.target}")
        if self.log_prefix:
            parts.append(f'--log-prefix "{self.log_prefix}"')
        return " ".join(parts)


def _allow(policy: Policy, allow: Allow, stateless: bool) -> list[IptRule]:
    inbound = allow.direction == "in"
    interface = policy.interface(allow.zone)
    limit = f"{allow.rate_per_s}/second" if allow.rate_per_s else None
    base = IptRule(chain="SMGW-IN" if inbound else "SMGW-OUT", target="ACCEPT",
                   in_interface=interface if inbound else None, out_interface=None if inbound else interface,
                   protocol=allow.proto, dport=allow.port, peer=str(allow.peer) if allow.peer else None,
                   peer_is_destination=not inbound, ctstate=None if stateless else "NEW", limit=limit)
    if stateless:  # datagrams limited before conntrack could call a flood established (as in nftables)
        return [base, replace(base, target="DROP", limit=None)]
    return [base]


def rules(policy: Policy) -> list[IptRule]:
    """The policy as iptables rules, in order: pure, the same matrix as the nftables file."""
    out: list[IptRule] = [IptRule("SMGW-IN", "ACCEPT", in_interface="lo")]
    stateless_in = [a for a in policy.allows if a.direction == "in" and a.proto == "udp" and a.rate_per_s]
    for allow in stateless_in:
        out += _allow(policy, allow, stateless=True)
    out += [IptRule("SMGW-IN", "ACCEPT", ctstate="RELATED,ESTABLISHED"), IptRule("SMGW-IN", "DROP", ctstate="INVALID")]
    for allow in policy.allows:
        if allow.direction == "in" and allow not in stateless_in:
            out += _allow(policy, allow, stateless=False)
    log_limit = f"{policy.log_rate_per_min}/minute"
    for zone in policy.zones:
        out.append(IptRule("SMGW-IN", "LOG", in_interface=zone.interface, limit=log_limit,
                           log_prefix=f"smgw drop in {zone.name}: "))
    out.append(IptRule("SMGW-IN", "LOG", limit=log_limit, log_prefix="smgw drop in other: "))
    out.append(IptRule("SMGW-FWD", "LOG", limit=log_limit, log_prefix="smgw drop forward: "))
    out += [IptRule("SMGW-OUT", "ACCEPT", out_interface="lo"),
            IptRule("SMGW-OUT", "ACCEPT", ctstate="RELATED,ESTABLISHED"),
            IptRule("SMGW-OUT", "DROP", ctstate="INVALID")]
    for allow in policy.allows:
        if allow.direction == "out":
            out += _allow(policy, allow, stateless=False)
    for zone in policy.zones:
        out.append(IptRule("SMGW-OUT", "LOG", out_interface=zone.interface, limit=log_limit,
                           log_prefix=f"smgw drop out {zone.name}: "))
    out.append(IptRule("SMGW-OUT", "LOG", limit=log_limit, log_prefix="smgw drop out other: "))
    return out


def render(policy: Policy) -> str:
    """``iptables-save``-style text of the filter table smgw loads."""
    lines = ["# Rendered by smgw from the zone policy (iptables backend); do not edit.", "*filter"]
    lines += [f":{builtin} DROP [0:0]" for builtin in CHAINS]
    lines += [f":{ours} - [0:0]" for ours in CHAINS.values()]
    lines += [f"-A {builtin} -j {ours}" for builtin, ours in CHAINS.items()]
    lines += [rule.save_line() for rule in rules(policy)]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _iptc() -> Any:
    try:
        import iptc
    except (ImportError, OSError) as exc:  # the module loads libip4tc with ctypes on import
        raise FirewallError(f"python-iptables is not usable here ({exc})") from None
    return iptc


def _build(iptc: Any, spec: IptRule, family6: bool = False) -> Any:
    """A python-iptables rule from a record; IPv6 rules carry interfaces and target only
    (the IPv6 table holds nothing but loopback)."""
    rule = iptc.Rule6() if family6 else iptc.Rule()
    if spec.in_interface:
        rule.in_interface = spec.in_interface
    if spec.out_interface:
        rule.out_interface = spec.out_interface
    if spec.peer is not None:
        if spec.peer_is_destination:
            rule.dst = spec.peer
        else:
            rule.src = spec.peer
    if spec.protocol:
        rule.protocol = spec.protocol
        if spec.protocol in ("tcp", "udp") and spec.dport is not None:
            rule.create_match(spec.protocol).dport = str(spec.dport)
    if spec.ctstate:
        rule.create_match("conntrack").ctstate = spec.ctstate
    if spec.limit:
        rule.create_match("limit").limit = spec.limit
    target = rule.create_target(spec.target)
    if spec.log_prefix:
        target.log_prefix = spec.log_prefix
    return rule


@contextmanager
def _committed(iptc: Any, table_cls: Any) -> Iterator[Any]:
    """The filter table built in memory and committed once (libiptc replaces it atomically)."""
    table = table_cls(table_cls.FILTER)
    table.autocommit = False
    table.refresh()
    try:
        yield table
        table.commit()
    except iptc.IPTCError as exc:
        raise FirewallError(f"libiptc refused the rules: {exc}") from None
    finally:
        table.autocommit = True


def apply(policy: Policy) -> None:
    """Replace the filter table's smgw chains and policies in one libiptc commit per family."""
    iptc = _iptc()
    with _committed(iptc, iptc.Table) as table:
        _install(iptc, table, rules(policy))
    with _committed(iptc, iptc.Table6) as table6:
        _install(iptc, table6, [IptRule("SMGW-IN", "ACCEPT", in_interface="lo"),
                                IptRule("SMGW-OUT", "ACCEPT", out_interface="lo")], family6=True)


def _install(iptc: Any, table: Any, specs: list[IptRule], family6: bool = False) -> None:
    rule_cls = iptc.Rule6 if family6 else iptc.Rule
    for builtin, ours in CHAINS.items():
        chain = iptc.Chain(table, builtin)
        chain.flush()
        chain.set_policy("DROP")
        if table.is_chain(ours):
            iptc.Chain(table, ours).flush()
        else:
            table.create_chain(ours)
        jump = rule_cls()
        jump.create_target(ours)
        chain.append_rule(jump)
    for spec in specs:
        iptc.Chain(table, spec.chain).append_rule(_build(iptc, spec, family6))


def remove() -> None:
    """Back to an empty filter table with ACCEPT policies (switching to the nftables backend)."""
    iptc = _iptc()
    for table_cls in (iptc.Table, iptc.Table6):
        with _committed(iptc, table_cls) as table:
            for builtin, ours in CHAINS.items():
                chain = iptc.Chain(table, builtin)
                chain.flush()
                chain.set_policy("ACCEPT")
                if table.is_chain(ours):
                    iptc.Chain(table, ours).flush()
                    table.delete_chain(ours)


def loaded() -> str:
    """The filter tables (IPv4 and IPv6) as the kernel holds them now, as canonical JSON: the
    self-test compares it with the snapshot ``smgw apply`` took right after loading."""
    iptc = _iptc()
    easy = importlib.import_module("iptc.easy")
    doc: dict[str, object] = {}
    for family, table_cls, ipv6 in (("ipv4", iptc.Table, False), ("ipv6", iptc.Table6, True)):
        table = table_cls(table_cls.FILTER)
        table.refresh()
        policies = {name: iptc.Chain(table, name).get_policy().name for name in CHAINS}
        chains = {name: [{k: v for k, v in rule.items() if k != "counters"} for rule in rules]
                  for name, rules in easy.dump_table("filter", ipv6=ipv6).items()}
        doc[family] = {"policies": policies, "chains": chains}
    return json.dumps(doc, sort_keys=True, indent=1) + "\n"
