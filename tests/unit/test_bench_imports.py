"""The benchmarks are not run by the tests (they take minutes and print figures, not
verdicts), and some import the product inside driver code they run in a namespace. A name
moved in the product must not leave a benchmark that fails only when someone measures."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = ("appliance", "pki", "headend", "firewall", "reader", "portal")
_FROM = re.compile(r"^\s*from ((?:" + "|".join(OURS) + r")(?:\.\w+)*) import ([\w, ]+?)\s*(?:#.*)?$", re.MULTILINE)


def _imports() -> list[tuple[str, str, str]]:
    found = []
    for script in sorted((ROOT / "bench").glob("*.py")):
        for module, names in _FROM.findall(script.read_text()):
            found += [(script.name, module, name.split(" as ")[0].strip()) for name in names.split(",") if name.strip()]
    return found


def test_the_benchmarks_import_something_of_ours() -> None:
    assert len({script for script, _, _ in _imports()}) >= 5


@pytest.mark.parametrize(("script", "module", "name"), _imports())
def test_every_name_a_benchmark_imports_exists(script: str, module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name), f"{script}: from {module} import {name}"
