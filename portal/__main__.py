"""``smgw-portal --settings FILE`` (also ``python -m portal``): the portal's own entry point.

Not a subcommand of ``smgw``: that CLI loads the gateway's config model (pydantic and all,
about 18 MB), which the portal never needs; it reads the ``portal.json`` that ``smgw
apply`` generated. ``smgw gateway run`` starts it as a child process the same way.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import sys
from pathlib import Path

from portal.settings import SettingsError, load

DEFAULT_SETTINGS = Path("/var/lib/smgw-rendered/portal.json")


def _frugal_malloc() -> None:
    """glibc's malloc tuned for a small long-running server (measured in bench/portal.py):
    a fixed mmap threshold so scrypt's 16 MiB per login goes back to the system instead of
    staying in a thread's pool (33 MB kept otherwise), and two arenas instead of 8 per core."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smgw-portal", description="The household's HTTPS portal on the HAN.")
    parser.add_argument("--settings", type=Path, default=DEFAULT_SETTINGS, help="portal.json from smgw apply")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    _frugal_malloc()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cheroot").setLevel(logging.WARNING)
    try:
        settings = load(args.settings)
    except SettingsError as exc:
        print(f"smgw-portal: error: {exc}", file=sys.stderr)
        return 2
    from portal.server import serve

    try:
        serve(settings)
    except OSError as exc:  # the address, the TLS files, the state folder: the message names which
        print(f"smgw-portal: error: serving on {settings.address}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
