"""Real telegrams of several meter makes: each parses exactly to its independent expectation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.readout_json import readout_document
from reader.models import Readout
from reader.protocol import ReadoutClient, SessionOptions
from reader.telegram import parse_telegram

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
FILES = sorted(CORPUS.glob("*.tlg"))


def test_corpus_has_several_makes() -> None:
    makes = {json.loads(f.with_suffix(".json").read_text())["make"] for f in FILES}
    assert len(FILES) >= 8 and len(makes) >= 4


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_telegram_parses_as_expected(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text())
    ident, readings = parse_telegram(path.read_bytes())
    doc = readout_document(Readout(identification=ident, readings=tuple(readings)))
    assert doc["identification"] == expected["identification"]
    assert doc["manufacturer"] == expected["manufacturer"]
    assert doc["readings"] == expected["readings"]


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_telegram_through_the_state_machine(path: Path) -> None:
    """The same bytes pushed by a mode D meter, in small chunks, give the same readings."""
    raw = path.read_bytes()
    expected = json.loads(path.with_suffix(".json").read_text())
    client = ReadoutClient(SessionOptions(mode="D"))
    client.initiate()
    for i in range(0, len(raw), 13):
        client.receive_data(raw[i:i + 13])
    assert client.done and client.result is not None
    assert readout_document(client.result)["readings"] == expected["readings"]
