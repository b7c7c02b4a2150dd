"""``smgw cms`` as a pipe: sign | encrypt, then decrypt | verify, and clear refusals."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.system.conftest import ROOT, SMGW


def smgw(*args: str, data: bytes, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*SMGW, *args], input=data, capture_output=True, cwd=ROOT, check=False,
                          env={**os.environ, **env}, timeout=60)


def test_sign_encrypt_decrypt_verify_pipeline(tmp_path: Path) -> None:
    env = {"SMGW_CA_PASSPHRASE": "correct horse battery"}
    ca = str(tmp_path / "ca")
    for step in (["pki", "init-ca", "--dir", ca, "--profile", "bsi"],
                 ["pki", "issue", "--dir", ca, "--role", "gateway-sig", "--name", "gw-0001", "--generate",
                  "--out", str(tmp_path / "sig")],
                 ["pki", "issue", "--dir", ca, "--role", "party-enc", "--name", "supplier", "--generate",
                  "--out", str(tmp_path / "enc")],
                 ["pki", "crl", "--dir", ca, "--out", str(tmp_path / "crl.pem")]):
        assert smgw(*step, data=b"", env=env).returncode == 0
    doc = b'{"values": {"1.8.0": "4417.218"}}'
    signed = smgw("cms", "sign", "--cert", str(tmp_path / "sig.crt"), "--key", str(tmp_path / "sig.key"), data=doc, env={})
    assert signed.returncode == 0, signed.stderr
    sealed = smgw("cms", "encrypt", "--recipient", str(tmp_path / "enc.crt"), data=signed.stdout, env={})
    opened = smgw("cms", "decrypt", "--cert", str(tmp_path / "enc.crt"), "--key", str(tmp_path / "enc.key"),
                  data=sealed.stdout, env={})
    assert opened.stdout == signed.stdout
    checked = smgw("cms", "verify", "--root", f"{ca}/ca.crt", "--crl", str(tmp_path / "crl.pem"),
                   "--role", "gateway-sig", data=opened.stdout, env={})
    assert checked.returncode == 0 and checked.stdout == doc
    wrong_role = smgw("cms", "verify", "--root", f"{ca}/ca.crt", "--role", "gwa-wakeup", data=opened.stdout, env={})
    assert wrong_role.returncode == 1 and b"gateway-sig offered as gwa-wakeup" in wrong_role.stderr
    assert len(wrong_role.stderr.strip().splitlines()) == 1
    gcm = smgw("cms", "encrypt", "--gcm", "--recipient", str(tmp_path / "enc.crt"), data=signed.stdout, env={})
    assert gcm.returncode == 0 and gcm.stdout != sealed.stdout
    assert b"\x06\x0b\x2a\x86\x48\x86\xf7\x0d\x01\x09\x10\x01\x17" in gcm.stdout[:20]  # id-ct-authEnvelopedData
    opened_gcm = smgw("cms", "decrypt", "--cert", str(tmp_path / "enc.crt"), "--key", str(tmp_path / "enc.key"),
                      data=gcm.stdout, env={})
    assert opened_gcm.returncode == 0 and opened_gcm.stdout == signed.stdout
    garbage = smgw("cms", "verify", "--root", f"{ca}/ca.crt", data=b"\x30\x80garbage", env={})
    assert garbage.returncode == 1 and b"malformed" in garbage.stderr and b"Traceback" not in garbage.stderr
