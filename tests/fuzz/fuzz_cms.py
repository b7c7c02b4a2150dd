"""Coverage-guided fuzzing of the CMS decoders (atheris): any input is accepted or raises a
``CmsError``/``PkiError``, nothing else. Run: ``python tests/fuzz/fuzz_cms.py -atheris_runs=1000000``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from pki import der
    from pki.ca import CertificateAuthority, init_ca
    from pki.cms import _parse_fast, _parse_full, sign, software_signer, verify
    from pki.cms_envelope import _read_fast, _read_full, decrypt, encrypt, software_agreement
    from pki.errors import PkiError

_dir = Path(tempfile.mkdtemp(prefix="smgw-fuzz-cms-"))
init_ca(_dir / "ca", passphrase=b"correct horse battery", profile="modern")
_CA = CertificateAuthority(_dir / "ca", b"correct horse battery")
_SIG, _SIG_KEY = _CA.issue_generated("gateway-sig", "gw-fuzz")
_ENC, _ENC_KEY = _CA.issue_generated("party-enc", "party-fuzz")
_AGREE = software_agreement(_ENC_KEY)
_SIGNED = sign(b"seed", _SIG, software_signer(_SIG_KEY))
# the first byte picks the decoder: 0 SignedData, anything else EnvelopedData/AuthEnvelopedData
SEEDS = [_SIGNED, encrypt(_SIGNED, _ENC), encrypt(_SIGNED, _ENC, aead=True)]


def _same_as_full(fast: object, full: object, data: bytes) -> None:
    """Differential: what the fast DER walk reads, asn1crypto's full model reads the same."""
    try:
        got = fast(data)  # type: ignore[operator]
    except der.NotTheShape:
        return
    if got != full(data):  # type: ignore[operator]  # a CmsError here is a crash too: fast was laxer
        raise AssertionError("fast path and full decoder disagree")


def one_input(data: bytes) -> None:
    body = data[1:]
    try:
        if data[:1] == b"\x00":
            verify(body, root=_CA.cert)
        else:
            decrypt(body, _ENC, _AGREE)
    except PkiError:
        pass
    if data[:1] == b"\x00":
        _same_as_full(_parse_fast, _parse_full, body)
    else:
        _same_as_full(lambda b: _read_fast(b, _ENC), lambda b: _read_full(b, _ENC), body)


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        folder = Path(tempfile.mkdtemp(prefix="smgw-fuzz-cms-corpus-"))
        for n, seed in enumerate(SEEDS):
            (folder / f"seed-{n}").write_bytes(bytes((n,)) + seed)
        argv.append(str(folder))
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
