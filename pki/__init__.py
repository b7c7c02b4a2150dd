"""PKI of the smgw system: CA operations, per-role certificate profiles, CRLs.

Imports nothing else of smgw. The PKCS#11 token and CMS arrive with the rest of the PKI
issue; this package starts with what the GWA (the root CA) runs.
"""
