"""write_atomic: the whole file or the old one, with its mode, and never readable by others on the way."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from appliance.files import write_atomic


def test_the_file_appears_whole_with_its_mode_even_over_a_stale_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "key.pem"
    write_atomic(target, "first\n", 0o600)
    assert target.read_text() == "first\n" and target.stat().st_mode & 0o777 == 0o600
    # a temporary file of the same name left by an earlier writer, readable by everyone
    stale = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    stale.write_text("left over, much longer than what comes\n")
    stale.chmod(0o666)
    write_atomic(target, "second\n", 0o644)
    assert target.read_text() == "second\n" and target.stat().st_mode & 0o777 == 0o644
    assert not stale.exists()
