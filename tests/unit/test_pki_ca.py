"""The CA: roles, both crypto profiles, refusals, and OpenSSL (a peer we did not write)
agreeing with what we issue and revoke."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.cli import main
from pki.ca import CertificateAuthority, init_ca
from pki.errors import CaError, CsrError, InvalidNameError, RoleError
from pki.profiles import PROFILES, ROLES, curve, require_role, role_of
from tests.pkihelpers import PASS, openssl


def pem(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize("role", ROLES)
def test_every_role_verifies_with_openssl_and_names_its_role(ca: CertificateAuthority, role: str, tmp_path: Path) -> None:
    cert, key = ca.issue_generated(role, "gw-0001.example")  # type: ignore[arg-type]
    assert role_of(cert) == role
    require_role(cert, role)  # type: ignore[arg-type]
    assert isinstance(key.curve, type(curve(ca.profile)))
    purpose = {"gwa-admin": "sslserver", "party-tls": "sslserver", "gateway-tls": "sslclient",
               "gateway-api": "sslserver"}.get(role)
    args = [openssl(), "verify", "-CAfile", str(tmp_path / "ca" / "ca.crt")]
    if purpose:
        args += ["-purpose", purpose]
    result = subprocess.run([*args, str(pem(cert, tmp_path / "c.pem"))], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and ": OK" in result.stdout, result.stderr


def test_a_certificate_outside_its_role_is_refused(ca: CertificateAuthority) -> None:
    cert, _ = ca.issue_generated("party-enc", "supplier")
    with pytest.raises(RoleError, match="party-enc offered as gwa-wakeup"):
        require_role(cert, "gwa-wakeup")
    assert PROFILES["gateway-tls"].eku and not PROFILES["gateway-enc"].digital_signature


def test_tls_server_roles_carry_their_name_as_san(ca: CertificateAuthority) -> None:
    cert, _ = ca.issue_generated("party-tls", "dso.example")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["dso.example"]


@pytest.mark.parametrize("name", ["", "a b", "x;rm -rf", "a\nb", "-lead", "trail-", "ä", "x" * 65, "a..b", "<b>"])
def test_names_are_strict(ca: CertificateAuthority, name: str) -> None:
    with pytest.raises(InvalidNameError):
        ca.issue_generated("gateway-sig", name)


def test_csr_key_signature_and_curve_are_checked(ca: CertificateAuthority) -> None:
    key = ec.generate_private_key(curve(ca.profile))
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ignored; the CA names")]))
           .sign(key, hashes.SHA256()))
    cert = ca.issue("gateway-tls", "gw-0001", ca.check_csr(csr))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-0001"
    other = ec.generate_private_key(ec.SECP384R1())
    foreign = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(other, hashes.SHA256())
    with pytest.raises((CsrError, RoleError)):
        ca.check_csr(foreign)


def test_revocation_reaches_the_crl_that_openssl_reads(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert, _ = ca.issue_generated("gateway-sig", "gw-0002")
    ca.revoke(f"{cert.serial_number:x}", "key-compromise")
    with pytest.raises(CaError, match="already"):
        ca.revoke(f"{cert.serial_number:x}", "key-compromise")
    with pytest.raises(CaError, match="not issued"):
        ca.revoke("abc", "superseded")
    crl = ca.crl()
    revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert revoked is not None and crl.is_signature_valid(ca.key.public_key())
    crl_pem = tmp_path / "ca" / "crl.pem"
    result = subprocess.run(
        [openssl(), "verify", "-crl_check", "-CAfile", str(tmp_path / "ca" / "ca.crt"), "-CRLfile", str(crl_pem),
         str(pem(cert, tmp_path / "r.pem"))], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "revoked" in (result.stdout + result.stderr)


def test_ca_key_is_encrypted_private_and_needs_the_passphrase(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca", passphrase=PASS, profile="bsi")
    key_file = tmp_path / "ca" / "ca.key"
    assert b"ENCRYPTED PRIVATE KEY" in key_file.read_bytes()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with pytest.raises(CaError, match="passphrase"):
        CertificateAuthority(tmp_path / "ca", b"wrong passphrase!!")
    with pytest.raises(CaError, match="exists"):
        init_ca(tmp_path / "ca", passphrase=PASS)
    with pytest.raises(CaError, match="at least"):
        init_ca(tmp_path / "other", passphrase=b"short")


def test_cli_verbs(tmp_path: Path) -> None:
    env = {"SMGW_CA_PASSPHRASE": PASS.decode()}
    run = CliRunner().invoke
    d = str(tmp_path / "ca")
    assert run(main, ["pki", "init-ca", "--dir", d, "--profile", "modern"], env=env).exit_code == 0
    r = run(main, ["pki", "issue", "--dir", d, "--role", "party-enc", "--name", "supplier", "--generate",
                   "--out", str(tmp_path / "supplier")], env=env)
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE((tmp_path / "supplier.key").stat().st_mode) == 0o600
    listed = json.loads(run(main, ["pki", "list", "--dir", d, "--json"], env=env).output)
    assert [x["role"] for x in listed] == ["party-enc"]
    r = run(main, ["pki", "revoke", "--dir", d, "--serial", listed[0]["serial"], "--reason", "superseded"], env=env)
    assert r.exit_code == 0
    r = run(main, ["pki", "crl", "--dir", d, "--out", str(tmp_path / "crl.pem")], env=env)
    assert r.exit_code == 0 and "1 revoked" in r.output
    r = run(main, ["pki", "issue", "--dir", d, "--role", "party-enc", "--name", "bad name", "--generate",
                   "--out", str(tmp_path / "x")], env=env)
    assert r.exit_code == 1 and "name" in r.output
    r = run(main, ["pki", "list", "--dir", d], env={"SMGW_CA_PASSPHRASE": ""})
    assert r.exit_code == 1 and "passphrase" in r.output


def test_renew_keeps_role_and_name_and_supersedes(ca: CertificateAuthority) -> None:
    old, _key = ca.issue_generated("party-tls", "dso.example")
    new = ca.renew(f"{old.serial_number:x}")
    assert new.public_key() == old.public_key() and new.serial_number != old.serial_number
    assert role_of(new) == "party-tls" and new.subject == old.subject
    assert ca.record(f"{old.serial_number:x}").reason == "superseded"
    assert ca.crl().get_revoked_certificate_by_serial_number(old.serial_number) is not None
    with pytest.raises(CaError, match="revoked"):
        ca.renew(f"{old.serial_number:x}")
    assert ca.certificate(f"{new.serial_number:x}") == new


def test_cli_renew_and_export(tmp_path: Path) -> None:
    env = {"SMGW_CA_PASSPHRASE": PASS.decode()}
    run = CliRunner().invoke
    d = str(tmp_path / "ca")
    run(main, ["pki", "init-ca", "--dir", d], env=env)
    run(main, ["pki", "issue", "--dir", d, "--role", "gwa-wakeup", "--name", "gwa", "--generate",
               "--out", str(tmp_path / "w")], env=env)
    serial = json.loads(run(main, ["pki", "list", "--dir", d, "--json"], env=env).output)[0]["serial"]
    r = run(main, ["pki", "renew", "--dir", d, "--serial", serial, "--out", str(tmp_path / "w2")], env=env)
    assert r.exit_code == 0, r.output
    renewed = x509.load_pem_x509_certificate((tmp_path / "w2.crt").read_bytes())
    exported = run(main, ["pki", "export", "--dir", d, "--serial", f"{renewed.serial_number:x}", "--der"], env=env)
    assert x509.load_der_x509_certificate(exported.stdout_bytes) == renewed
    ca_pem = run(main, ["pki", "export", "--dir", d], env=env)
    assert ca_pem.stdout_bytes == (tmp_path / "ca" / "ca.crt").read_bytes()


def test_request_makes_the_key_where_it_lives_and_reuses_it(tmp_path: Path) -> None:
    """`smgw pki request`: a party's key is born on its host (0600) and only the CSR goes to the
    CA; a second request reuses the key; a key of the other profile is refused."""
    env = {"SMGW_CA_PASSPHRASE": PASS.decode()}
    run = CliRunner().invoke
    d, key = str(tmp_path / "ca"), tmp_path / "tls.key"
    assert run(main, ["pki", "init-ca", "--dir", d, "--profile", "bsi"], env=env).exit_code == 0
    r = run(main, ["pki", "request", "--key", str(key), "--name", "dso.example", "--out", str(tmp_path / "a.csr")])
    assert r.exit_code == 0 and "new key" in r.output, r.output
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    r = run(main, ["pki", "request", "--key", str(key), "--name", "dso.example", "--out", str(tmp_path / "b.csr")])
    assert r.exit_code == 0 and "existing key" in r.output
    a = x509.load_pem_x509_csr((tmp_path / "a.csr").read_bytes())
    b = x509.load_pem_x509_csr((tmp_path / "b.csr").read_bytes())
    assert a.public_key() == b.public_key() and a.is_signature_valid
    r = run(main, ["pki", "issue", "--dir", d, "--role", "party-tls", "--name", "dso.example", "--csr",
                   str(tmp_path / "a.csr"), "--out", str(tmp_path / "tls")], env=env)
    assert r.exit_code == 0, r.output
    cert = x509.load_pem_x509_certificate((tmp_path / "tls.crt").read_bytes())
    assert cert.public_key() == a.public_key() and role_of(cert) == "party-tls"
    r = run(main, ["pki", "request", "--key", str(key), "--name", "dso.example", "--profile", "modern",
                   "--out", str(tmp_path / "c.csr")])
    assert r.exit_code == 1 and "not an EC key of the modern profile" in r.output
    r = run(main, ["pki", "request", "--key", str(tmp_path / "n.key"), "--name", "bad name", "--out", str(tmp_path / "d.csr")])
    assert r.exit_code == 1 and not (tmp_path / "n.key").exists()


def test_crl_keep_days_leaves_a_current_crl_alone(tmp_path: Path) -> None:
    """--keep-days: the same CRL while it lists every revocation and stays valid long enough; a new
    one after a revocation, near its next update, or when the file is not this CA's CRL."""
    env = {"SMGW_CA_PASSPHRASE": PASS.decode()}
    run = CliRunner().invoke
    d, out = str(tmp_path / "ca"), tmp_path / "crl.pem"
    assert run(main, ["pki", "init-ca", "--dir", d, "--profile", "modern"], env=env).exit_code == 0

    def crl(*extra: str) -> str:
        r = run(main, ["pki", "crl", "--dir", d, "--out", str(out), "--days", "30", *extra], env=env)
        assert r.exit_code == 0, r.output
        return r.output

    assert "unchanged" not in crl("--keep-days", "7")
    first = out.read_bytes()
    assert "unchanged" in crl("--keep-days", "7") and out.read_bytes() == first
    assert "unchanged" not in crl("--keep-days", "31")  # would expire within the keep window
    run(main, ["pki", "issue", "--dir", d, "--role", "party-enc", "--name", "supplier", "--generate",
               "--out", str(tmp_path / "s")], env=env)
    serial = json.loads(run(main, ["pki", "list", "--dir", d, "--json"], env=env).output)[0]["serial"]
    assert run(main, ["pki", "revoke", "--dir", d, "--serial", serial, "--reason", "superseded"],
               env=env).exit_code == 0
    assert "1 revoked" in crl("--keep-days", "7") and "unchanged" in crl("--keep-days", "7")
    out.write_text("not a CRL")
    assert "unchanged" not in crl("--keep-days", "7")
