"""The data processor: windows become sealed deliveries exactly once, readable only by their
party, holding exactly what the profile allows at its resolution."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from decimal import Decimal
from pathlib import Path

import pytest

from appliance.processor import SealKit, process, pseudonym_from_hmac
from appliance.profiles import AccessProfile
from appliance.store import Store
from headend.document import parse
from pki.ca import CertificateAuthority, init_ca
from pki.cms import software_signer, verify
from pki.cms_envelope import NotForUsError, decrypt, software_agreement
from reader.models import Identification, Reading, Readout
from tests.pkihelpers import PASS

IDENT = Identification(text="ISK5MT831", manufacturer="ISK", baud_char="5", model="MT831")
START = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)


def _readout(minute: int) -> Readout:
    energy = Decimal("4417.2189") + Decimal("0.0125") * minute
    return Readout(identification=IDENT, readings=(
        Reading("1.8.0", energy, str(energy), "kWh"),
        Reading("21.7.0", Decimal("0.4123") + minute, "x", "kW"),
        Reading("1.8.0", Decimal(0), "0", "kWh"),  # a repeat later in the readout is ignored
    ), load_profile=None, logbook=None, attempts=1)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, object]:
    init_ca(tmp_path / "ca", passphrase=PASS, profile="modern")
    ca = CertificateAuthority(tmp_path / "ca", PASS)
    sig, sig_key = ca.issue_generated("gateway-sig", "gw-0001")
    dso_enc, dso_key = ca.issue_generated("party-enc", "dso.example")
    sup_enc, sup_key = ca.issue_generated("party-enc", "supplier.example")
    secrets = {"dso": b"k1" * 16, "supplier": b"k2" * 16}
    kit = SealKit(gateway_id="gw-0001", sig_cert=sig, signer=software_signer(sig_key),
                  enc_certs={"dso": dso_enc, "supplier": sup_enc},
                  pseudonym=lambda party, meter: pseudonym_from_hmac(
                      hmac.new(secrets[party], meter.encode(), hashlib.sha256).digest()))
    store = Store.open(tmp_path / "smgw.db")
    for minute in range(16):
        store.save_readout(meter_id="37155794", readout=_readout(minute), read_at=START + dt.timedelta(minutes=minute))
    return {"ca": ca, "kit": kit, "store": store, "keys": {"dso": (dso_enc, dso_key), "supplier": (sup_enc, sup_key)}}


def _open(setup: dict[str, object], party: str, payload: bytes) -> bytes:
    cert, key = setup["keys"][party]  # type: ignore[index]
    signed = decrypt(payload, cert, software_agreement(key))
    content, signer = verify(signed, root=setup["ca"].cert, role="gateway-sig")  # type: ignore[attr-defined]
    assert "CN=gw-0001" in signer.subject.rfc4514_string()
    return content


def test_windows_become_deliveries_once_with_exact_truncated_values(setup: dict[str, object]) -> None:
    store: Store = setup["store"]  # type: ignore[assignment]
    profiles = [
        AccessProfile(name="dso-5min", party="dso", values=["1.8.0"], interval_s=300, send_every_s=600,
                      aggregation="delta", resolution=3),
        AccessProfile(name="sup-rt", party="supplier", values=["1.8.0", "21.7.0"], interval_s=60, send_every_s=300,
                      resolution=1, identity="pseudonym"),
    ]
    kit: SealKit = setup["kit"]  # type: ignore[assignment]
    assert process(profiles, store, kit, "37155794", START) == 0  # activation: starts now, nothing old is sent
    assert process(profiles, store, kit, "37155794", START + dt.timedelta(minutes=15, seconds=5)) == 1 + 3
    assert process(profiles, store, kit, "37155794", START + dt.timedelta(minutes=15, seconds=59)) == 0  # once
    dso = store.next_pending("dso")
    assert dso is not None and "identity meter_id" in dso.summary
    doc = parse(_open(setup, "dso", dso.payload))
    assert doc.subject == "37155794" and doc.profile == "dso-5min"
    # the first interval has no earlier sample: its delta counts from its own first one (4 x 0.0125);
    # the second from the last sample before it (5 x 0.0125 = 0.0625, truncated)
    assert [v.value for v in doc.values] == [Decimal("0.050"), Decimal("0.062")]
    with pytest.raises(NotForUsError):  # the supplier cannot read the DSO's delivery
        _open(setup, "supplier", dso.payload)
    sup = store.next_pending("supplier")
    assert sup is not None
    first = parse(_open(setup, "supplier", sup.payload))
    assert first.identity == "pseudonym" and first.subject.startswith("ps-") and first.subject != "37155794"
    assert {v.address for v in first.values} == {"1.8.0", "21.7.0"} and len(first.values) == 10
    assert all(v.value is None or v.value == v.value.quantize(Decimal("0.1")) for v in first.values)
    # in order, and acknowledged exactly once
    assert store.delivery_acked(sup.delivery_id, START) and not store.delivery_acked(sup.delivery_id, START)
    second = store.next_pending("supplier")
    assert second is not None and second.window_from == sup.window_to
    assert parse(_open(setup, "supplier", second.payload)).subject == first.subject  # a stable pseudonym


def test_pseudonyms_differ_between_parties(setup: dict[str, object]) -> None:
    kit: SealKit = setup["kit"]  # type: ignore[assignment]
    assert kit.pseudonym("dso", "37155794") != kit.pseudonym("supplier", "37155794")
    assert kit.pseudonym("dso", "37155794") == kit.pseudonym("dso", "37155794")
