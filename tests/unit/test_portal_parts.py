"""The portal's pure parts: chart periods across DST, SVG escaping, login delays, settings."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from portal import charts, i18n, periods, ratelimit
from portal.settings import SettingsError, parse
from tests import portalkit

BERLIN = ZoneInfo("Europe/Berlin")


def test_day_buckets_follow_daylight_saving() -> None:
    assert len(periods.period("day", date(2026, 3, 29), BERLIN).edges) == 24  # 23 hours
    assert len(periods.period("day", date(2026, 10, 25), BERLIN).edges) == 26  # 25 hours
    assert len(periods.period("day", date(2026, 6, 1), BERLIN).edges) == 25
    assert len(periods.quarter_hours(date(2026, 3, 29), BERLIN)) == 93
    assert len(periods.quarter_hours(date(2026, 10, 25), BERLIN)) == 101


def test_week_month_year_and_their_previous_periods() -> None:
    week = periods.period("week", date(2026, 11, 25), BERLIN)
    assert week.first == date(2026, 11, 23) and len(week.labels) == 7
    month = periods.period("month", date(2026, 2, 14), BERLIN)
    assert month.first == date(2026, 2, 1) and len(month.labels) == 28
    year = periods.period("year", date(2026, 7, 4), BERLIN)
    assert year.first == date(2026, 1, 1) and year.labels == tuple(str(m) for m in range(1, 13))
    assert year.start.isoformat() == "2025-12-31T23:00:00+00:00"  # local midnight in UTC
    assert periods.previous_first("month", date(2026, 1, 1)) == date(2025, 12, 1)
    assert periods.previous_first("year", date(2026, 1, 1)) == date(2025, 1, 1)


def test_chart_escapes_every_text_and_draws_both_periods() -> None:
    svg = charts.bar_chart(["<a>", "b"], [Decimal("1.5"), None], [Decimal(2), Decimal("0.5")], "k<W>h",
                           str, ("now & then", "before"), "</svg><script>alert(1)</script>")
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "k&lt;W&gt;h" in svg and "&lt;a&gt;" in svg
    assert svg.count('class="cur"') == 2 and svg.count('class="prev"') == 3  # bars and legend keys
    assert "style=" not in svg  # the CSP allows no inline style


def test_numbers_in_german_and_english() -> None:
    assert i18n.number(Decimal("12345.678"), "de") == "12.345,678"
    assert i18n.number(Decimal("12345.678"), "en") == "12,345.678"
    assert i18n.number(Decimal("0.000"), "de") == "0,000"
    assert i18n.pick_language(None, "de-DE,de;q=0.9,en;q=0.8") == "de"
    assert i18n.pick_language("xx", "fr") == "en"


def test_every_message_has_both_languages() -> None:
    assert all(set(entry) == {"en", "de"} for entry in i18n.MESSAGES.values())


def test_login_delays_grow_cap_and_are_forgotten() -> None:
    assert [ratelimit.delay_after(n) for n in range(1, 8)] == [0, 0, 2, 4, 8, 16, 32]
    assert ratelimit.delay_after(100) == ratelimit.MAX_DELAY_S
    assert ratelimit.wait_left(5, 1000.0, 1001.0) == 7.0
    assert ratelimit.wait_left(5, 1000.0, 1000.0 + ratelimit.FORGET_AFTER_S) == 0
    assert ratelimit.failures_now(9, 0.0, ratelimit.FORGET_AFTER_S + 1) == 0


def test_settings_errors_name_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    doc = portalkit.settings_doc(tmp_path)
    assert parse(doc).consumer("alice") is not None
    for broken, where in (({**doc, "version": 2}, "version"), ({**doc, "listen": {"address": "x"}}, "listen.port"),
                          ({**doc, "consumers": [{"name": "Bad Name", "meters": [], "setup_code_sha256": ""}]},
                           "consumers[0].name")):
        with pytest.raises(SettingsError, match=where.replace("[", r"\[")):
            parse(json.loads(json.dumps(broken)))


def test_portal_config_is_verified_with_key_paths() -> None:
    import tomllib
    from pathlib import Path

    from appliance.config import verify
    from appliance.errors import ConfigError
    from appliance.portal_settings import portal_settings

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "examples/gateway.toml").read_text())
    cfg = verify(data)
    doc = portal_settings(cfg)
    assert doc["listen"] == {"address": "192.168.7.1", "port": 443}  # the HAN address by default
    assert "K7QF-2M9X-P4TD-8WNC" not in json.dumps(doc)  # the one-time code travels as a hash only
    assert parse(doc).consumers[0].meters == ("ISK5MT831-0001",)
    assert cfg.portal is not None and cfg.portal.user == "smgw-portal" and "user" not in doc  # the portal never needs it
    household = data["portal"]["consumers"][0]
    for change, where in (
            ({"consumers": [household, household]}, "consumers[1].name"),
            ({"consumers": [{**household, "setup_code": "short"}]}, "portal.consumers[0].setup_code"),
            ({"consumers": [{**household, "meters": []}]}, "portal.consumers[0].meters"),
            ({"threads": 4, "max_streams": 4}, "max_streams"),
            ({"user": "smgw-portal\nroot"}, "portal.user"), ({"user": "Portal"}, "portal.user")):
        with pytest.raises(ConfigError) as caught:
            verify({**data, "portal": {**data["portal"], **change}})
        assert any(where in path or where in message for path, message in caught.value.problems), \
            caught.value.problems
    no_han = {**data, "interfaces": {**data["interfaces"], "han": {"name": "han0"}}}
    with pytest.raises(ConfigError) as caught:
        verify(no_han)
    assert any("portal.address" in message for _, message in caught.value.problems)


def test_delivery_summaries_in_both_languages() -> None:
    summary = "1.8.0, 21.7.0 as mean per 900 s to 1 places, identity pseudonym, 96 values"
    assert i18n.delivery_what("de", summary) == ("1.8.0, 21.7.0: Mittelwert je 15 Minuten, 1 Nachkommastellen, "
                                                 "unter einem Pseudonym statt Ihrer Zählernummer; 96 Werte")
    assert i18n.delivery_what("en", summary).startswith("1.8.0, 21.7.0: the mean per 15 minutes, 1 decimal places")
    assert i18n.delivery_what("de", "<b>something else</b>") == "<b>something else</b>"  # escaped by the template
