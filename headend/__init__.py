"""The WAN side: a party's headend (tunnel server, ingest) and the GWA's tools."""
