"""``smgw-portal --settings FILE`` (also ``python -m portal``): the portal's own entry point.

Not a subcommand of ``smgw``: that CLI loads the gateway's config model (pydantic and all,
about 18 MB), which the portal never needs; it reads the ``portal.json`` that ``smgw
apply`` generated. ``smgw gateway run`` starts it as a child process the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from portal.settings import SettingsError, load

DEFAULT_SETTINGS = Path("/var/lib/smgw/rendered/portal.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smgw-portal", description="The household's HTTPS portal on the HAN.")
    parser.add_argument("--settings", type=Path, default=DEFAULT_SETTINGS, help="portal.json from smgw apply")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
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
