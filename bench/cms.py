"""CMS benchmark: sign+encrypt per second (token key and software key) and verify+decrypt
per second (software key, as the headend does), for a 2 kB delivery, on one core; with the
crypto floor (one ECDSA verify + one ECDH per second) beside it, as machines differ.

Prints one JSON object. Needs softhsm2 for the token figure (reported null without it).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from pki.ca import CertificateAuthority, init_ca
from pki.cms import sign, software_signer, verify
from pki.cms_envelope import decrypt, encrypt, software_agreement

TARGET = 1500  #: verify+decrypt per second on one core, from the PKI issue
PAYLOAD = json.dumps({"delivery": "x" * 1990}).encode()[:2048]


def rate(call: Callable[[], object], seconds: float = 2.0) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        call()
        n += 1
    return n / (time.perf_counter() - start)


def main() -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    tmp = Path(tempfile.mkdtemp(prefix="smgw-bench-cms-"))
    result: dict[str, object] = {"benchmark": "cms", "payload_bytes": len(PAYLOAD), "profile": "bsi"}
    init_ca(tmp / "ca", passphrase=b"correct horse battery", profile="bsi")
    ca = CertificateAuthority(tmp / "ca", b"correct horse battery")
    sig_cert, sig_key = ca.issue_generated("gateway-sig", "gw-bench")
    enc_cert, enc_key = ca.issue_generated("party-enc", "party-bench")
    signer = software_signer(sig_key)
    result["sign_encrypt_per_s_software"] = round(rate(lambda: encrypt(sign(PAYLOAD, sig_cert, signer), enc_cert)), 1)
    message = encrypt(sign(PAYLOAD, sig_cert, signer), enc_cert)
    agree = software_agreement(enc_key)
    crl = ca.crl()

    def verify_decrypt() -> None:
        verify(decrypt(message, enc_cert, agree), root=ca.cert, role="gateway-sig", crl=crl)

    result["verify_decrypt_per_s"] = round(rate(verify_decrypt), 1)
    result["crypto_floor_per_s"] = _crypto_floor(sig_key, enc_key)
    result["sign_encrypt_per_s_token"] = _token_rate(tmp, ca, enc_cert)
    result["modern"] = _software_rates(tmp / "modern")
    modern = result["modern"]
    assert isinstance(modern, dict)
    # the issue's target, per profile: brainpoolP256r1 cannot meet it on this machine, as its
    # crypto floor (one ECDSA verification and one ECDH, nothing else) is below it
    result["target_verify_decrypt_per_s"] = TARGET
    result["meets_target"] = {"bsi": result["verify_decrypt_per_s"] >= TARGET,  # type: ignore[operator]
                              "modern": modern["verify_decrypt_per_s"] >= TARGET}
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform(), "cores_used": 1}
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


def _software_rates(folder: Path) -> dict[str, float]:
    """The same two software figures for the ``modern`` profile (NIST P-256)."""
    init_ca(folder, passphrase=b"correct horse battery", profile="modern")
    ca = CertificateAuthority(folder, b"correct horse battery")
    sig_cert, sig_key = ca.issue_generated("gateway-sig", "gw-bench")
    enc_cert, enc_key = ca.issue_generated("party-enc", "party-bench")
    signer, agree, crl = software_signer(sig_key), software_agreement(enc_key), ca.crl()
    message = encrypt(sign(PAYLOAD, sig_cert, signer), enc_cert)
    return {
        "crypto_floor_per_s": _crypto_floor(sig_key, enc_key),
        "sign_encrypt_per_s_software": round(rate(lambda: encrypt(sign(PAYLOAD, sig_cert, signer), enc_cert)), 1),
        "verify_decrypt_per_s": round(rate(lambda: verify(decrypt(message, enc_cert, agree), root=ca.cert,
                                                          role="gateway-sig", crl=crl)), 1),
    }


def _crypto_floor(sig_key: ec.EllipticCurvePrivateKey, enc_key: ec.EllipticCurvePrivateKey) -> float:
    """One ECDSA verification plus one ECDH per second on this curve and machine: the
    ceiling no CMS code can pass, so the figure above can be read against it."""
    signature = sig_key.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))
    public, peer = sig_key.public_key(), ec.generate_private_key(enc_key.curve).public_key()

    def floor() -> None:
        public.verify(signature, PAYLOAD, ec.ECDSA(hashes.SHA256()))
        enc_key.exchange(ec.ECDH(), peer)

    return round(rate(floor), 1)


def _token_rate(tmp: Path, ca: CertificateAuthority, enc_cert: object) -> float | None:
    util = shutil.which("softhsm2-util")
    if util is None:
        return None
    (tmp / "tokens").mkdir()
    (tmp / "softhsm2.conf").write_text(f"directories.tokendir = {tmp}/tokens\nobjectstore.backend = file\n"
                                       "log.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(tmp / "softhsm2.conf")
    from pki.token import Token
    from pki.token_init import init_softhsm_token

    init_softhsm_token("bench", "12345678", "123456", util=util)

    token = Token("bench", "123456")
    token.generate_key("sig", "bsi")
    cert = ca.issue("gateway-sig", "gw-token", ca.check_csr(token.make_csr("sig", "gw-token")))
    return round(rate(lambda: encrypt(sign(PAYLOAD, cert, lambda d: token.sign_digest("sig", d)), enc_cert)), 1)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
