"""The fast DER walk and asn1crypto's full model must agree: whatever the fast path reads,
the full decoder reads the same; whatever it does not recognise goes to the full decoder."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pki import der
from pki.ca import CertificateAuthority, init_ca
from pki.cms import CmsError, _parse_fast, _parse_full, sign, software_signer
from pki.cms_envelope import _read_fast, _read_full, encrypt
from tests.pkihelpers import PASS

_CTX: dict[str, object] = {}


def _material() -> dict[str, object]:
    if not _CTX:
        d = Path(tempfile.mkdtemp())
        init_ca(d / "ca", passphrase=PASS, profile="modern")
        ca = CertificateAuthority(d / "ca", PASS)
        sig, sig_key = ca.issue_generated("gateway-sig", "fast")
        enc, _ = ca.issue_generated("party-enc", "fast")
        signed = sign(b"fast path", sig, software_signer(sig_key))
        _CTX.update(signed=signed, enc=enc, cbc=encrypt(signed, enc), gcm=encrypt(signed, enc, aead=True))
    return _CTX


@pytest.mark.parametrize("kind", ["cbc", "gcm"])
def test_fast_path_reads_what_we_produce_exactly_as_the_full_model(kind: str) -> None:
    m = _material()
    assert _parse_fast(m["signed"]) == _parse_full(m["signed"])  # type: ignore[arg-type]
    assert _read_fast(m[kind], m["enc"]) == _read_full(m[kind], m["enc"])  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [b"\x30\x80\x02\x01\x05\x00\x00", b"\x30\x81\x03\x02\x01\x05", b"\x02\x01\x05\x00",
                                  b"\x1f\x81\x00\x00", b""])
def test_ber_non_minimal_trailing_and_high_tags_are_not_the_shape(data: bytes) -> None:
    with pytest.raises(der.NotTheShape):
        der.children(der.one(data, der.UNIVERSAL, der.SEQUENCE, True))


def _mutate(data: st.DataObject, message: bytes) -> bytes:
    msg = bytearray(message)
    for _ in range(data.draw(st.integers(1, 3))):
        msg[data.draw(st.integers(0, len(msg) - 1))] = data.draw(st.integers(0, 255))
    return bytes(msg[: data.draw(st.integers(1, len(msg)))])


@settings(max_examples=600, deadline=None)
@given(st.data())
def test_whatever_the_fast_path_accepts_the_full_model_reads_the_same(data: st.DataObject) -> None:
    m = _material()
    kind = data.draw(st.sampled_from(["signed", "cbc", "gcm"]))
    mutated = _mutate(data, m[kind])  # type: ignore[arg-type]
    fast, full = (_parse_fast, _parse_full) if kind == "signed" else (
        lambda b: _read_fast(b, m["enc"]), lambda b: _read_full(b, m["enc"]))  # type: ignore[arg-type]
    try:
        got = fast(mutated)
    except der.NotTheShape:
        return
    try:
        expected = full(mutated)
    except CmsError as exc:
        pytest.fail(f"fast path accepted what the full model refuses: {exc}")
    assert got == expected
