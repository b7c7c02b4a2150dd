"""Zone firewall: a policy model rendered to one atomic nftables ruleset (or iptables rules)."""
