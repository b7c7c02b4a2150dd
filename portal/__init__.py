"""The household's HTTPS portal on the HAN (ARCHITECTURE §1, §2, §8).

A Flask app served by cheroot (one process, threads, TLS): the gateway's store opened
read-only, its own small database for accounts, sessions and device tokens, no gateway key.
"""
