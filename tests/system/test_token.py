"""Gateway keys in a real SoftHSM2 token: made inside, never out, CSR signed inside, and the
CA (and the openssl binary) accept what the token produced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki.ca import CertificateAuthority, init_ca
from pki.profiles import require_role
from pki.token import Token, TokenError, read_pin
from pki.token_init import init_softhsm_token
from tests.system.conftest import PIN, need_softhsm


@pytest.mark.parametrize("profile", ["bsi", "modern"])
def test_csr_from_the_token_becomes_a_certificate_in_the_token(token: Token, tmp_path: Path, profile: str) -> None:
    label = f"gateway-sig-{profile}"
    token.generate_key(label, profile)  # type: ignore[arg-type]
    csr = token.make_csr(label, "gw-0001")
    assert csr.is_signature_valid
    init_ca(tmp_path / "ca", passphrase=b"correct horse battery", profile=profile)  # type: ignore[arg-type]
    ca = CertificateAuthority(tmp_path / "ca", b"correct horse battery")
    cert = ca.issue("gateway-sig", "gw-0001", ca.check_csr(csr))
    token.import_certificate(label, cert)
    stored = token.certificate(label)
    assert stored == cert
    require_role(stored, "gateway-sig")
    # the token's signature verifies with the certificate's key
    digest_input = b"delivery 42"
    h = hashes.Hash(hashes.SHA256())
    h.update(digest_input)
    sig = token.sign_digest(label, h.finalize())
    pub = cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(sig, digest_input, ec.ECDSA(hashes.SHA256()))
    csr_file = tmp_path / "req.pem"
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    check = subprocess.run(["openssl", "req", "-in", str(csr_file), "-verify", "-noout"],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "verify OK" in (check.stdout + check.stderr)
    assert label in [k.label for k in token.keys() if k.has_certificate]  # noqa: SIM118  # Token is no dict


def test_no_private_key_material_leaves_the_token(token: Token, tmp_path: Path) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    token.generate_key("gateway-enc", "bsi")
    with token.session() as s:
        (key,) = list(s.get_objects({Attribute.LABEL: "gateway-enc", Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
        assert key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE]
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]
    assert not list(Path.cwd().glob("*.key")) and not list(tmp_path.glob("*.key"))


def test_token_refusals(token: Token, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(TokenError, match="PIN|Pin|pin"):
        Token("gw-test", "000000").keys()
    with pytest.raises(TokenError):
        Token("no-such-token", PIN).keys()
    token.generate_key("gateway-tls-dso", "modern")
    with pytest.raises(TokenError, match="already"):
        token.generate_key("gateway-tls-dso", "modern")
    other = ec.generate_private_key(ec.SECP256R1())
    init_ca(tmp_path / "ca", passphrase=b"correct horse battery", profile="modern")
    ca = CertificateAuthority(tmp_path / "ca", b"correct horse battery")
    foreign = ca.issue("gateway-tls", "gw-0001", other.public_key())
    with pytest.raises(TokenError, match="does not belong"):
        token.import_certificate("gateway-tls-dso", foreign)
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN)
    pin_file.chmod(0o644)
    with pytest.raises(TokenError, match="readable by others"):
        read_pin(pin_file)
    pin_file.chmod(0o600)
    assert read_pin(pin_file) == PIN
    monkeypatch.delenv("SMGW_TOKEN_PIN", raising=False)
    with pytest.raises(TokenError, match="no token PIN"):
        read_pin()
    assert PIN not in repr(token)


def test_enrolment_through_the_cli_keeps_the_key_in_the_token(tmp_path: Path) -> None:
    """keygen -> csr (token) -> pki issue --csr (CA) -> token import: no key file appears."""
    import json

    from tests.system.conftest import run_smgw

    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {"SOFTHSM2_CONF": str(conf), "SMGW_TOKEN_PIN": PIN, "SMGW_CA_PASSPHRASE": "correct horse battery"}
    need_softhsm()
    (tmp_path / "so.pin").write_text("13579135\n")
    (tmp_path / "so.pin").chmod(0o600)
    init = run_smgw("token", "init", "--so-pin-file", str(tmp_path / "so.pin"), env=env)
    assert init.returncode == 0, init.stderr
    again = run_smgw("token", "init", "--so-pin-file", str(tmp_path / "so.pin"), env=env)
    assert again.returncode == 1 and "already exists" in again.stderr
    work = tmp_path / "work"
    work.mkdir()
    steps = [
        ("pki", "init-ca", "--dir", str(work / "ca"), "--profile", "bsi"),
        ("token", "keygen", "--key", "gateway-tls-dso"),
        ("token", "csr", "--key", "gateway-tls-dso", "--name", "gw-0001", "--out", str(work / "gw.csr")),
        ("pki", "issue", "--dir", str(work / "ca"), "--role", "gateway-tls", "--name", "gw-0001",
         "--csr", str(work / "gw.csr"), "--out", str(work / "gw")),
        ("token", "import", "--key", "gateway-tls-dso", "--cert", str(work / "gw.crt")),
    ]
    for step in steps:
        result = run_smgw(*step, env=env)
        assert result.returncode == 0, (step, result.stderr)
        assert PIN not in result.stdout + result.stderr
    listed = json.loads(run_smgw("token", "list", "--json", env=env).stdout)
    issued = x509.load_pem_x509_certificate((work / "gw.crt").read_bytes())
    assert listed == [{"label": "gateway-tls-dso", "id": listed[0]["id"], "profile": "bsi", "certificate": True,
                       "not_after": issued.not_valid_after_utc.isoformat(), "days_left": listed[0]["days_left"]}]
    assert 729 < listed[0]["days_left"] <= 730  # what is left of the certificate (renewal is due before the end)
    assert not (work / "gw.key").exists()
    # no private key of the gateway anywhere on disk: the only key file is the CA's own, encrypted
    key_files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*")
                       if p.is_file() and b"PRIVATE KEY" in p.read_bytes())
    assert key_files == ["ca/ca.key"] and b"ENCRYPTED PRIVATE KEY" in (work / "ca" / "ca.key").read_bytes()
    bad = run_smgw("token", "status", env={**env, "SMGW_TOKEN_PIN": "999999"})
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "999999" not in bad.stderr


@pytest.mark.parametrize("profile", ["bsi", "modern"])
def test_cms_signed_by_the_token_verifies_in_openssl(token: Token, tmp_path: Path, profile: str) -> None:
    from pki.cms import sign, verify

    label = f"cms-sig-{profile}"
    token.generate_key(label, profile)  # type: ignore[arg-type]
    init_ca(tmp_path / "ca", passphrase=b"correct horse battery", profile=profile)  # type: ignore[arg-type]
    ca = CertificateAuthority(tmp_path / "ca", b"correct horse battery")
    cert = ca.issue("gateway-sig", "gw-0001", ca.check_csr(token.make_csr(label, "gw-0001")))
    message = sign(b'{"values": {"1.8.0": "4417.218"}}', cert, lambda digest: token.sign_digest(label, digest))
    content, _ = verify(message, root=ca.cert, role="gateway-sig", crl=ca.crl(), require_crl=True)
    assert content == b'{"values": {"1.8.0": "4417.218"}}'
    (tmp_path / "m.der").write_bytes(message)
    out = subprocess.run(["openssl", "cms", "-verify", "-inform", "DER", "-in", str(tmp_path / "m.der"),
                          "-CAfile", str(tmp_path / "ca" / "ca.crt"), "-purpose", "any"],
                         capture_output=True, check=False)
    assert out.returncode == 0 and out.stdout == content, out.stderr


@pytest.mark.parametrize("profile", ["bsi", "modern"])
def test_token_decrypts_what_openssl_encrypted_for_it(token: Token, tmp_path: Path, profile: str) -> None:
    from pki.cms_envelope import decrypt, encrypt

    label = f"gateway-enc-{profile}"
    token.generate_key(label, profile)  # type: ignore[arg-type]
    init_ca(tmp_path / "ca", passphrase=b"correct horse battery", profile=profile)  # type: ignore[arg-type]
    ca = CertificateAuthority(tmp_path / "ca", b"correct horse battery")
    cert = ca.issue("gateway-enc", "gw-0001", ca.check_csr(token.make_csr(label, "gw-0001")))
    (tmp_path / "r.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "p").write_bytes(b"a profile for the gateway")
    subprocess.run(["openssl", "cms", "-encrypt", "-binary", "-aes256", "-in", str(tmp_path / "p"), "-outform", "DER",
                    "-out", str(tmp_path / "o.der"), "-recip", str(tmp_path / "r.crt")], check=True, capture_output=True)
    agree = lambda peer: token.agree(label, peer)
    assert decrypt((tmp_path / "o.der").read_bytes(), cert, agree) == b"a profile for the gateway"
    assert decrypt(encrypt(b"round trip", cert), cert, agree) == b"round trip"


def test_token_init_types_the_pins_into_a_pty_never_onto_argv(tmp_path: Path) -> None:
    """softhsm2-util takes PINs as arguments, where every user can read them in /proc; our
    init runs it behind a wrapper that records its argv, and the PINs are not there."""
    real = need_softhsm()
    wrapper, seen = tmp_path / "softhsm2-util", tmp_path / "argv"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{seen}"\nexec "{real}" "$@"\n')
    wrapper.chmod(0o700)
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    script = ("import sys; from pki.token_init import init_softhsm_token; from pki.token import Token; "
              "init_softhsm_token('pty-made', 'SoPin-97531', 'UserPin-8642', util=sys.argv[1]); "
              "print(len(Token('pty-made', 'UserPin-8642').keys()))")
    done = subprocess.run([sys.executable, "-c", script, str(wrapper)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=False,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"  # the user PIN logs in
    argv = seen.read_text()
    assert "--init-token" in argv and "pty-made" in argv
    assert "SoPin-97531" not in argv and "UserPin-8642" not in argv


@pytest.mark.parametrize(("label", "so_pin", "pin", "reason"), [
    ("bad label!", "12345678", "123456", "token label"),
    ("ok", "123\n45678", "123456", "SO PIN"),
    ("ok", "12345678", "12", "user PIN"),
])
def test_token_init_refuses_bad_labels_and_pins(label: str, so_pin: str, pin: str, reason: str) -> None:
    with pytest.raises(TokenError, match=reason):
        init_softhsm_token(label, so_pin, pin)


def test_token_init_is_refused_for_a_smart_card_module(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="SoftHSM2 only"):
        init_softhsm_token("card", "12345678", "123456", module=tmp_path / "opensc-pkcs11.so")


def test_pseudonym_key_stays_in_the_token_and_gives_stable_distinct_pseudonyms(token: Token) -> None:
    import pkcs11
    from pkcs11 import Attribute, ObjectClass

    token.generate_secret("pseudonym-dso")
    token.generate_secret("pseudonym-supplier")
    first = token.hmac_sha256("pseudonym-dso", b"37155794")
    assert first == token.hmac_sha256("pseudonym-dso", b"37155794") and len(first) == 32
    assert first != token.hmac_sha256("pseudonym-supplier", b"37155794")
    assert first != token.hmac_sha256("pseudonym-dso", b"37155795")
    with pytest.raises(TokenError, match="already holds"):
        token.generate_secret("pseudonym-dso")
    with token.session() as s:
        key = next(s.get_objects({Attribute.LABEL: "pseudonym-dso", Attribute.CLASS: ObjectClass.SECRET_KEY}))
        assert key[Attribute.SENSITIVE] and not key[Attribute.EXTRACTABLE]
        with pytest.raises(pkcs11.PKCS11Error):
            key[Attribute.VALUE]


_WORKER = """
import hashlib, sys, time
from pathlib import Path
from pki.token import Token, TokenError
token, stop = Token("shared", sys.argv[1]), Path(sys.argv[2])
done = failed = 0
while not stop.exists() or done < 50:
    try:
        token.sign_digest("gateway-sig", hashlib.sha256(str(done).encode()).digest())
        token.hmac_sha256("pseudonym-dso", str(done).encode())
        done += 1
    except TokenError as exc:
        failed += 1
        print(exc, file=sys.stderr)
print(done, failed)
"""


def test_processes_sharing_the_token_meet_no_errors(tmp_path: Path) -> None:
    """The core and the gatewatcher sign and MAC while Ansible runs ``smgw token list``: with
    SoftHSM2 each login rewrites the token's file and fails readers in other processes with
    CKR_GENERAL_ERROR (a third of the calls when every operation logged in). Kept logins and
    a login that rides out a rewrite leave no error on either side."""
    import json

    from tests.system.conftest import run_smgw

    need_softhsm()
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "SMGW_TOKEN_PIN": PIN, "SMGW_TOKEN_SO_PIN": "13579135"}
    for step in (("token", "init", "--token", "shared"),
                 ("token", "keygen", "--token", "shared", "--key", "gateway-sig")):
        assert run_smgw(*step, env=env).returncode == 0, step
    setup = "from pki.token import Token; import sys; Token('shared', sys.argv[1]).generate_secret('pseudonym-dso')"
    subprocess.run([sys.executable, "-c", setup, PIN], env=env, check=True, cwd=Path(__file__).parents[2])
    stop = tmp_path / "stop"
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, PIN, str(stop)], env=env, text=True,
                                cwd=Path(__file__).parents[2], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(2)]
    try:
        listings = [run_smgw("token", "list", "--token", "shared", "--json", env=env) for _ in range(6)]
    finally:
        stop.touch()
        results = [w.communicate(timeout=60) for w in workers]
    for listing in listings:
        assert listing.returncode == 0, listing.stderr
        assert [k["label"] for k in json.loads(listing.stdout)] == ["gateway-sig"]
    for out, err in results:
        done, failed = map(int, out.split())
        assert (failed, err) == (0, "") and done >= 50


_KEPT_LOGIN_CHECKS = """
import os, sys
from pki.token import DEFAULT_MODULE, Token, TokenError, reinitialize
a, b = Token("a", sys.argv[1]), Token("b", sys.argv[1])
a.keys()  # a's login is kept from here on
reinitialize(DEFAULT_MODULE)  # what token init does in-process after making a token
b.generate_secret("only-in-b")
try:
    a.hmac_sha256("only-in-b", b"x")
    print("a's kept handle reached token b")
except TokenError:
    print("separate")
for pin in ("p\\u00efn-0000", "p\\u00efn-0000", "000000"):
    try:
        a.keys()
        Token("a", pin).keys()
        print("a wrong PIN was let in")
    except TokenError as exc:
        print(type(exc).__name__)
pid = os.fork()
if pid == 0:
    try:
        Token("a", "000000").keys()
        os._exit(3)
    except TokenError:
        pass
    os._exit(0 if [k.label for k in a.keys()] == ["gateway-sig"] else 4)
print("child", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print("parent", [k.label for k in a.keys()])
import ctypes
from pki import token as module
ctypes.CDLL(str(DEFAULT_MODULE)).C_Logout(ctypes.c_ulong(module._LOGINS[(str(DEFAULT_MODULE), "a")].session.handle))
print("after a logout behind its back", [k.label for k in a.keys()], len(a.sign_digest("gateway-sig", bytes(32))) > 0)
"""


def test_a_kept_login_never_stands_in_for_another_token_or_pin(tmp_path: Path) -> None:
    """After the library is initialised again, SoftHSM2 numbers sessions from 1 again: a kept
    handle must not reach another token. A wrong PIN (non-ASCII too) is refused with a kept
    login present, a forked child logs in itself (it would otherwise be told "already logged
    in" whatever PIN it gave), and a login lost behind a kept session (which hides private
    objects without an error) is made again."""
    from tests.system.conftest import run_smgw

    need_softhsm()
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "SMGW_TOKEN_PIN": PIN, "SMGW_TOKEN_SO_PIN": "13579135"}
    for step in (("token", "init", "--token", "a"), ("token", "init", "--token", "b"),
                 ("token", "keygen", "--token", "a", "--key", "gateway-sig")):
        assert run_smgw(*step, env=env).returncode == 0, step
    run = subprocess.run([sys.executable, "-c", _KEPT_LOGIN_CHECKS, PIN], env=env, cwd=Path(__file__).parents[2],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n") == ["separate", "TokenError", "TokenError", "TokenError", "child 0",
                                      "parent ['gateway-sig']",
                                      "after a logout behind its back ['gateway-sig'] True", ""]
