"""Coverage-guided fuzzing of the CMS decoders (atheris): any input is accepted or raises a
``CmsError``/``PkiError``, nothing else. Run: ``python tests/fuzz/fuzz_cms.py -atheris_runs=1000000``."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from pki.ca import CertificateAuthority, init_ca
    from pki.cms import sign, software_signer, verify
    from pki.cms_envelope import decrypt, encrypt, software_agreement
    from pki.errors import PkiError

_dir = Path(tempfile.mkdtemp(prefix="smgw-fuzz-cms-"))
init_ca(_dir / "ca", passphrase=b"correct horse battery", profile="modern")
_CA = CertificateAuthority(_dir / "ca", b"correct horse battery")
_SIG, _SIG_KEY = _CA.issue_generated("gateway-sig", "gw-fuzz")
_ENC, _ENC_KEY = _CA.issue_generated("party-enc", "party-fuzz")
_AGREE = software_agreement(_ENC_KEY)
SEEDS = [sign(b"seed", _SIG, software_signer(_SIG_KEY)), encrypt(b"seed", _ENC)]


def one_input(data: bytes) -> None:
    try:
        if data[:1] == b"\x00":
            verify(data[1:], root=_CA.cert)
        else:
            decrypt(data[1:], _ENC, _AGREE)
    except PkiError:
        pass


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
