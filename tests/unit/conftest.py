"""Shared PKI fixtures for the unit tests: a fresh CA per crypto profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from pki.ca import CertificateAuthority, init_ca
from tests.pkihelpers import PASS


@pytest.fixture(params=["bsi", "modern"])
def ca(request: pytest.FixtureRequest, tmp_path: Path) -> CertificateAuthority:
    init_ca(tmp_path / "ca", passphrase=PASS, profile=request.param)
    return CertificateAuthority(tmp_path / "ca", PASS)
