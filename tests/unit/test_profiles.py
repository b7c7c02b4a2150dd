"""Access profiles: templates, overrides, and every refusal with its key path."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.config import validate, verify
from appliance.errors import ConfigError
from appliance.profiles import TEMPLATES, AccessProfile, describe

PARTY = {"name": "dso", "server_name": "dso.example", "remote": {"address": "192.0.2.11"}}


def cfg(*profiles: dict[str, Any], poll: float = 30, load_profile: bool = False) -> dict[str, Any]:
    return {"meter": {"poll_interval": poll, "load_profile": load_profile}, "parties": [PARTY],
            "profiles": list(profiles)}


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_is_a_valid_profile(template: str) -> None:
    config = verify(cfg({"name": f"dso-{template}", "party": "dso", "template": template}, load_profile=True))
    profile = config.profiles[0]
    assert profile.values == TEMPLATES[template]["values"]
    assert "dso receives" in describe(profile)


def test_fields_override_the_template() -> None:
    profile = validate(AccessProfile, {"name": "dso-daily", "party": "dso", "template": "taf1", "resolution": 1,
                                       "identity": "pseudonym"})
    assert (profile.values, profile.resolution, profile.identity) == (["1.8.0", "2.8.0"], 1, "pseudonym")
    assert "pseudonym" in describe(profile) and "to 1 decimal place, every day" in describe(profile)


@pytest.mark.parametrize(("profile", "where", "message"), [
    ({"name": "x", "party": "supplier", "template": "taf1"}, "profiles[0].party", "unknown party 'supplier'"),
    ({"name": "x", "party": "dso", "values": ["9.9.9"]}, "profiles[0]", "unknown registers address '9.9.9'"),
    ({"name": "x", "party": "dso", "values": ["1.8.0"], "interval_s": 60, "send_every_s": 60},
     "profiles[0].interval_s", "shorter than the meter's poll interval"),
    ({"name": "x", "party": "dso", "values": ["21.7.0"], "aggregation": "delta"}, "profiles[0]", "needs counters"),
    ({"name": "x", "party": "dso", "template": "taf7"}, "profiles[0].source", "meter.load_profile = true"),
    ({"name": "x", "party": "dso", "template": "taf7", "interval_s": 1000}, "profiles[0]", "multiple of 900"),
    ({"name": "x", "party": "dso", "values": ["1.8.0"], "interval_s": 900, "send_every_s": 1000}, "profiles[0]",
     "multiple of interval_s"),
    ({"name": "X Y", "party": "dso", "template": "taf1"}, "profiles[0].name", "pattern"),
    ({"name": "x", "party": "dso", "template": "taf1", "color": "red"}, "profiles[0].color", "unknown key"),
])
def test_refusals_name_the_key(profile: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        verify(cfg(profile, poll=120))
    assert any(path == where and message in text for path, text in caught.value.problems), caught.value.problems


def test_duplicate_profile_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="defined twice"):
        verify(cfg({"name": "a", "party": "dso", "template": "taf1"}, {"name": "a", "party": "dso", "template": "taf2"}))
