"""The data processor: each access profile's complete windows become sealed deliveries.

For every profile, every send window that ended since its progress mark is cut into the
profile's intervals; each value is aggregated, truncated to the resolution, put in a
versioned document under the meter id or the party's pseudonym, signed by the gateway's
SIG key (in the token), encrypted for the party's ENC certificate, and queued in the
outbox together with the new progress mark (one transaction). A profile seen for the first
time starts at the current window: nothing from before its activation is sent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from appliance.aggregate import Sample, aggregate, by_period, period_start, periods, truncate
from appliance.profiles import AccessProfile
from appliance.store import Store
from headend.document import Delivery, Value, build, new_delivery_id
from pki.cms import Signer, sign
from pki.cms_envelope import encrypt


@dataclass(frozen=True)
class SealKit:
    """What sealing needs; the signer and the pseudonym function reach into the token."""

    gateway_id: str
    sig_cert: x509.Certificate
    signer: Signer
    enc_certs: dict[str, x509.Certificate]  #: party -> its party-enc certificate
    pseudonym: Callable[[str, str], str]  #: (party, meter id) -> pseudonym


def pseudonym_from_hmac(mac: bytes) -> str:
    return "ps-" + mac[:16].hex()


def samples_for(store: Store, profile: AccessProfile, meter_id: str, address: str, since: dt.datetime,
                until: dt.datetime) -> list[Sample]:
    if profile.source == "registers":
        return [Sample(at, value) for at, value in store.register_samples(meter_id, address, since, until)]
    return [Sample(i.start, i.value) for i in store.load_profile(meter_id, since, until)
            if i.address == address and i.value is not None]


def window_values(store: Store, profile: AccessProfile, meter_id: str, window: tuple[dt.datetime, dt.datetime]
                  ) -> list[Value]:
    bounds = periods(window[0], window[1], profile.interval_s)
    lookback = dt.timedelta(seconds=max(profile.interval_s, 86400))  # the sample before the window, for delta
    out = []
    for address in profile.values:
        samples = samples_for(store, profile, meter_id, address, window[0] - lookback, window[1])
        for (lo, hi), inside, before in by_period(samples, bounds):
            value = aggregate(inside, profile.aggregation, before)
            out.append(Value(address=address, unit=profile.unit(address), start=lo, end=hi,
                             value=None if value is None else truncate(value, profile.resolution)))
    return out


def process(profiles: list[AccessProfile], store: Store, kit: SealKit, meter_id: str, now: dt.datetime) -> int:
    """Queue every due delivery; returns how many."""
    queued = 0
    for profile in profiles:
        done = store.progress(profile.name)
        if done is None:
            store.set_progress(profile.name, period_start(now, profile.send_every_s))
            continue
        for window in periods(done, now, profile.send_every_s):
            values = window_values(store, profile, meter_id, window)
            identity = profile.identity
            subject = meter_id if identity == "meter_id" else kit.pseudonym(profile.party, meter_id)
            delivery = Delivery(delivery_id=new_delivery_id(), gateway=kit.gateway_id, subject=subject,
                                identity=identity, party=profile.party, profile=profile.name,
                                resolution=profile.resolution, window_from=window[0], window_to=window[1],
                                created_at=now, values=tuple(values))
            sealed = encrypt(sign(build(delivery), kit.sig_cert, kit.signer), kit.enc_certs[profile.party], aead=True)
            # this exact form is read back by the portal (portal/i18n.delivery_what) to say it in German
            summary = (f"{', '.join(profile.values)} as {profile.aggregation} per {profile.interval_s} s "
                       f"to {profile.resolution} places, identity {identity}, {len(values)} values")
            store.enqueue(delivery_id=delivery.delivery_id, party=profile.party, profile=profile.name, window=window,
                          payload=sealed, summary=summary, now=now, meter_id=meter_id)
            queued += 1
    return queued
