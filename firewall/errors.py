"""The firewall package's error root (the CLI lists it in ``EXPECTED_ERRORS``)."""

from __future__ import annotations


class FirewallError(Exception):
    """A policy that cannot be rendered, or a ruleset the kernel refused."""

    exit_code = 1
