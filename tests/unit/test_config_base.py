"""The config classes' plumbing: hooks and markers that pydantic runs wherever a class appears."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Annotated

import pytest
from annotated_types import MaxLen
from pydantic import ValidationError

from appliance.config import GatewayConfig, validate
from appliance.config_base import SafeText, StrictModel
from headend.config_types import Pattern


@dataclass(frozen=True, kw_only=True)
class _Inner(StrictModel):
    x: int = 0

    def _verify(self) -> None:
        if self.x < 0:
            raise ValueError("x: negative")


@dataclass(frozen=True, kw_only=True)
class _Outer(StrictModel):
    b: _Inner | None = None
    a: _Inner = field(default_factory=_Inner)
    c: list[_Inner] = field(default_factory=list)


@pytest.mark.parametrize(("data", "where"), [({"b": {"x": -1}}, ("b",)), ({"a": {"x": -1}}, ("a",)),
                                             ({"c": [{}, {"x": -1}]}, ("c", 1))])
def test_a_class_is_verified_wherever_it_appears(data: dict[str, object], where: tuple[object, ...]) -> None:
    # pydantic builds a class's schema once and refers to it again: the hooks must come along
    with pytest.raises(ValidationError) as caught:
        validate(_Outer, data)
    assert [e["loc"] for e in caught.value.errors()] == [where]


@pytest.mark.parametrize(("tp", "value", "message"), [
    (Annotated[SafeText, Pattern("^.*$")], "a\x01", "control character"),
    (Annotated[str, MaxLen(3), Pattern("^[a-z]*$")], "abcdef", "at most 3"),
    (Annotated[str, Pattern("^[a-z]+$")], "AB", "should match pattern"),
])
def test_a_pattern_checks_after_what_comes_before_it(tp: object, value: str, message: str) -> None:
    from pydantic import TypeAdapter

    with pytest.raises(ValidationError, match=message):
        TypeAdapter(tp).validate_python(value)


def _classes(cls: type, seen: set[type]) -> set[type]:
    seen.add(cls)
    for hint in typing.get_type_hints(cls).values():
        for arg in (hint, *typing.get_args(hint)):
            if isinstance(arg, type) and issubclass(arg, StrictModel) and arg not in seen:
                _classes(arg, seen)
    return seen


def test_a_float_setting_has_a_float_default() -> None:
    # pydantic makes 12 in a file 12.0 but leaves a default as written: an int default would
    # make the same config read twice (apply, the core's child) render differently
    wrong = [f"{cls.__name__}.{f.name}" for cls in _classes(GatewayConfig, set())
             for f in dataclasses.fields(cls)
             if typing.get_type_hints(cls)[f.name] is float and type(f.default) is not float]
    assert wrong == []
