"""The portal's first-start certificate is made by a forked child: the portal itself never
maps cryptography, which would otherwise stay in its memory for as long as it runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, ssl, sys
from pathlib import Path
from portal.tlscert import ensure_certificate
folder = Path(sys.argv[1])
first = ensure_certificate(folder / "portal.crt", folder / "portal.key", "192.168.7.1", "gw-0001")
again = ensure_certificate(folder / "portal.crt", folder / "portal.key", "192.168.7.1", "gw-0001")
print(json.dumps({"first": first, "again": again, "cryptography": "cryptography" in sys.modules}))
"""


def test_the_pair_is_made_once_by_a_child_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    done = subprocess.run([sys.executable, "-c", PROBE, str(folder)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["cryptography"] is False, "the portal process loaded cryptography"
    assert result["first"] == result["again"] and len(result["first"]) == 95  # 32 bytes as aa:bb:..
    assert (folder / "portal.key").stat().st_mode & 0o777 == 0o600
    assert b"BEGIN CERTIFICATE" in (folder / "portal.crt").read_bytes()


def test_a_pair_that_cannot_be_made_is_an_error_that_says_where(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    probe = ("import sys; from pathlib import Path; from portal.tlscert import ensure_certificate\n"
             "try:\n    ensure_certificate(Path(sys.argv[1]) / 'portal.crt', Path(sys.argv[1]) / 'portal.key', "
             "'192.168.7.1', 'gw-0001')\nexcept OSError as exc:\n    print(exc)\nelse:\n    print('no error')")
    # (in a process of its own: the fork must not happen inside pytest's threads)
    done = subprocess.run([sys.executable, "-c", probe, str(blocked)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert "cannot make the portal certificate" in done.stdout and str(blocked) in done.stdout, done.stdout + done.stderr
