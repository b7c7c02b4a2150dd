"""IEC 62056-21 meter reading: a sans-I/O protocol core, a thin serial transport and a simulator.

This package imports nothing else of smgw, so it can be tested and reused on its own.
"""
