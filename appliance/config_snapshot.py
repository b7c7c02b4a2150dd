"""A verified config as plain JSON data and back, without pydantic.

The gateway's core runs for months in a 50 MB budget; pydantic would take about 11 MB of it
for a config it verifies once. So the core has its config loaded and verified by a child
(``smgw check --snapshot``, the same ``config.load`` as everywhere), which prints it with
``to_data``; the core rebuilds the frozen dataclasses with ``from_data``. ``from_data`` does
not verify again: it checks only that the data has the classes' shape (keys, types,
literals), so a child that printed something else is an error, never a half-read config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import types
import typing
from functools import cache
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from appliance.child import ChildFailed, last_said, run_smgw
from appliance.config import GatewayConfig, ProfileVerdict, load, verify_profiles
from appliance.errors import ConfigError
from appliance.profiles import AccessProfile

T = TypeVar("T")

#: the leaf types a config holds, rebuilt from their text
_FROM_TEXT: dict[Any, Any] = {Path: Path, IPv4Address: IPv4Address, IPv4Interface: IPv4Interface}


class SnapshotError(ValueError):
    """The data is not a config of that shape (where and what, as ``parties[1].remote.port: ...``)."""


def to_data(obj: Any) -> Any:
    """A config (or any part of it) as JSON data: dataclasses as objects in field order, paths
    and addresses as text, lists as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_data(item) for item in obj]
    if isinstance(obj, tuple(_FROM_TEXT)):
        return str(obj)
    if obj is None or isinstance(obj, str | int | float):
        return obj
    raise TypeError(f"{type(obj).__name__} is not config data")


def to_json(obj: Any) -> str:
    """``to_data`` as compact JSON, the text a config digest is taken of."""
    return json.dumps(to_data(obj), separators=(",", ":"), ensure_ascii=False)


def from_data(cls: type[T], data: Any) -> T:
    """``data`` (from ``to_data``) as ``cls`` again; SnapshotError if it has another shape."""
    built: T = _build(cls, data, "")
    return built


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # Annotated stripped: its checks are pydantic's business


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _build(tp: Any, value: Any, where: str) -> Any:
    """Messages name the key and the types, never the value: it may be a consumer's setup code."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(tp)):
            return None
        if len(options) == 1:  # X | None: X's own error, with its inner key
            return _build(options[0], value, where)
        for option in options:
            try:
                return _build(option, value, where)
            except SnapshotError:
                continue
        raise SnapshotError(f"{where or '(top level)'}: a {type(value).__name__} fits none of {tp}")
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise SnapshotError(f"{where}: not one of {typing.get_args(tp)}")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise SnapshotError(f"{where}: not a list")
        return [_build(item, v, _at(where, i)) for i, v in enumerate(value)]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where)
    if tp is type(None):
        if value is None:
            return None
    elif tp in _FROM_TEXT:
        if isinstance(value, str):
            try:
                return _FROM_TEXT[tp](value)
            except ValueError:
                raise SnapshotError(f"{where}: not a valid {tp.__name__}") from None
    elif tp is bool or tp is str:
        if type(value) is tp:
            return value
    elif tp is int:
        if type(value) is int:
            return value
    elif tp is float:
        if type(value) in (int, float):
            return float(value)
    else:
        raise SnapshotError(f"{where}: a config has no {tp}")
    raise SnapshotError(f"{where or '(top level)'}: a {type(value).__name__} is not {getattr(tp, '__name__', tp)}")


def _dataclass(cls: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise SnapshotError(f"{where or '(top level)'}: not an object")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(value) - set(names))
    missing = [name for name in names if name not in value]
    if unknown or missing:
        key = _at(where, (unknown or missing)[0])
        raise SnapshotError(f"{key}: {'unknown key' if unknown else 'missing'}")
    return cls(**{name: _build(hints[name], value[name], _at(where, name)) for name in names})


def digest(cfg: GatewayConfig) -> str:
    """The config as one sha256: of the JSON text ``to_json`` writes, which is stable (the
    same config, the same text) and the same in a child as in its parent."""
    return hashlib.sha256(to_json(cfg).encode()).hexdigest()


CHILD_TIMEOUT_S = 60.0
MAX_FORWARDED = 20  #: lines of the child's log repeated in this process's log
log = logging.getLogger("smgw.config")


def load_in_child(path: Path, timeout: float = CHILD_TIMEOUT_S) -> GatewayConfig:
    """``config.load(path)`` done by a child ``smgw check --snapshot``, so that this process,
    a long-running one, never loads pydantic. The same errors as ``config.load``: a
    ``ConfigError`` with every problem and its key path, or one saying why the child failed.
    What the child logged (an installed profile it skipped) is logged here again."""
    try:
        done = run_smgw(["check", "--config", str(path.absolute()), "--snapshot"], "the config check", timeout)
    except ChildFailed as exc:
        raise ConfigError(str(path), [("(check)", str(exc))]) from None
    try:
        answer = json.loads(done.stdout)
        if done.returncode == 0 and isinstance(answer, dict) and set(answer) == {"config"}:
            cfg = from_data(GatewayConfig, answer["config"])
            for line in done.stderr.decode(errors="replace").strip().splitlines()[:MAX_FORWARDED]:
                log.warning("config check: %s", line[:300])
            return cfg
        error = answer["error"]
        source = str(error["source"])
        problems = [(str(key), str(message)) for key, message in error["problems"]]
        if done.returncode == 0 or not problems:
            raise ValueError("an error without problems")
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(str(path), [("(check)", f"the config check failed: {last_said(done, str(exc))}")]) from None
    raise ConfigError(source, problems)


def profiles_in_child(raws: list[Any], timeout: float = CHILD_TIMEOUT_S) -> list[ProfileVerdict]:
    """``config.verify_profiles(raws)`` done by a child ``smgw check --profiles`` (the admin
    API's, which runs in the GateWatcher or the core). ``ConfigError`` if the child fails."""
    try:
        done = run_smgw(["check", "--profiles"], "the profile check", timeout, stdin=json.dumps(raws).encode())
    except ChildFailed as exc:
        raise ConfigError("profiles", [("(check)", str(exc))]) from None
    except (TypeError, ValueError) as exc:  # raws that are not JSON
        raise ConfigError("profiles", [("(check)", f"cannot run the profile check: {exc}")]) from None
    try:
        answer = json.loads(done.stdout)
        if done.returncode != 0 or not isinstance(answer, list) or len(answer) != len(raws):
            raise ValueError(f"exit status {done.returncode}, {type(answer).__name__}")
        out: list[ProfileVerdict] = []
        for item in answer:
            if set(item) == {"profile"}:
                out.append(from_data(AccessProfile, item["profile"]))
            else:
                where, message = item["problem"]
                out.append((str(where), str(message)))
        return out
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError("profiles", [("(check)", f"the profile check failed: {last_said(done, str(exc))}")]) from None


def profiles_answer(text: str) -> str:
    """What ``smgw check --profiles`` prints for the JSON list of raw profiles it was given."""
    raws = json.loads(text)
    if not isinstance(raws, list):
        raise TypeError("not a list of profiles")
    return json.dumps([{"profile": to_data(v)} if isinstance(v, AccessProfile) else {"problem": list(v)}
                       for v in verify_profiles(raws)], ensure_ascii=False)


def snapshot_answer(path: Path) -> tuple[int, str]:
    """What ``smgw check --snapshot`` prints, and its exit status: the verified config as data,
    or the ``ConfigError``'s problems."""
    try:
        cfg = load(path)
    except ConfigError as exc:
        return exc.exit_code, json.dumps({"error": {"source": exc.source, "problems": exc.problems}})
    return 0, json.dumps({"config": to_data(cfg)}, ensure_ascii=False)
