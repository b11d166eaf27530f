"""Typed configuration machinery, shared by the library's `Config` and the application's job
configurations: dataclasses built from plain dicts (YAML, `--set section.field=value`) with errors
that name the dotted field."""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the field."""


def check(cond: bool, name: str, msg: str, value: Any) -> None:
    """Raise `ConfigError("{name} {msg}, got {value!r}")` unless `cond`."""
    if not cond:
        raise ConfigError(f"{name} {msg}, got {value!r}")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for alt in inner[:-1]:  # `list[str] | str`: the first type the value fits
            try:
                return _coerce(value, alt, name)
            except ConfigError:
                continue
        return _coerce(value, inner[-1], name)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        if not args:
            return dict(value)
        key_tp, val_tp = args
        return {_coerce(k, key_tp, f"{name} key"): _coerce(v, val_tp, f"{name}.{k}") for k, v in value.items()}
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_coerce(v, item_tp, f"{name}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if hasattr(tp, "from_mapping"):  # a section with its own reading (a preset name, say)
            return tp.from_mapping(value, name)
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return build(tp, value, name)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{name} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name} must be a string, got {value!r}")
    raise ConfigError(f"{name}: unsupported type {tp!r}")  # pragma: no cover


def build(cls: type, data: dict, prefix: str = "") -> Any:
    """An instance of the dataclass `cls` from a nested dict: unknown fields and wrong types raise
    `ConfigError` naming the dotted field (`prefix` goes in front of every name)."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown field {where}{unknown[0]} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _coerce(value, hints[key], name)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs and f.init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{missing[0]} is required")
    return cls(**kwargs)


def merge_dicts(base: dict, update: dict) -> dict:
    """`update` merged into `base`, nested mappings key by key (neither is changed)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_dicts(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(item: str) -> dict:
    """`"optim.lr_clip=1e-5"` -> `{"optim": {"lr_clip": 1e-5}}`; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.field=value")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r} has an empty field name")
    out: dict = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out


def read_yaml(path: str | Path, what: str = "configuration file") -> dict:
    """The mapping at the top of a YAML file; `ConfigError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top level")
    return data


def _field_types(cls: type) -> dict[str, Any]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass inside `tp` (`X`, `X | None`), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)), None)
    return None


def _path_of(cls: type, parts: list[str]) -> list[str] | None:
    """The full path of a dotted field in `cls`: its own field first, then through the sections that
    `cls.SHORTHAND` lets an override skip (`optim.steps` -> `model.optim.steps`)."""
    types_ = _field_types(cls)
    if parts[0] in types_:
        sub = _dataclass_of(types_[parts[0]])
        if len(parts) == 1 or typing.get_origin(types_[parts[0]]) is dict or types_[parts[0]] is dict:
            return parts
        if sub is not None and _path_of(sub, parts[1:]) is not None:
            return [parts[0], *_path_of(sub, parts[1:])]
    for name in getattr(cls, "SHORTHAND", ()):
        sub = _dataclass_of(types_[name])
        inner = _path_of(sub, parts) if sub is not None else None
        if inner is not None:
            return [name, *inner]
    return None


def expand_override(cls: type, item: str, prefix: str = "") -> dict:
    """`parse_override(item)` with the dotted field resolved against `cls`: a field of its own, or one
    of a section named in `cls.SHORTHAND`; `ConfigError` for a field it has nowhere."""
    value: Any = parse_override(item)
    parts = item.split("=", 1)[0].strip().split(".")
    for part in parts:
        value = value[part]
    full = _path_of(cls, parts)
    if full is None:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"--set {item!r}: {where}{'.'.join(parts)} is not a field")
    out: Any = value
    for p in reversed(full):
        out = {p: out}
    return out


def load(cls: type, layers: list[dict], overrides: list[str] | None = None, prefix: str = "") -> Any:
    """A validated `cls` from mappings merged in order (defaults, a file, flags), then `--set`
    overrides; every error is a `ConfigError` naming the dotted field."""
    data: dict = {}
    for layer in [*layers, *(expand_override(cls, item, prefix) for item in overrides or [])]:
        data = merge_dicts(data, _by_name(cls, layer))
    job = build(cls, data, prefix)
    return job.validate() if hasattr(job, "validate") else job


def _by_name(cls: type, data: dict) -> dict:
    """`data` with the sections that read a name (`from_mapping`: `model: tiny`) as `{preset: NAME}`,
    so that later layers add to the named one instead of replacing it."""
    if not isinstance(data, dict):
        return data
    types_, out = _field_types(cls), dict(data)
    for key, value in data.items():
        sub = _dataclass_of(types_[key]) if key in types_ else None
        if sub is None:
            continue
        if isinstance(value, str) and hasattr(sub, "from_mapping"):
            out[key] = {"preset": value}
        elif isinstance(value, dict):
            out[key] = _by_name(sub, value)
    return out


_FIELD = re.compile(r"^(\s*)(\w+):\s*[^#=]+(?:=.*?)?(?:#\s?(.*))?$")


def _comments(cls: type) -> dict[str, str]:
    """Field -> its comment in the class source: the lines right above it and the one after it,
    with the `#   ...` lines that continue it."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):
        return {}
    out, above, last = {}, [], None
    for line in lines[1:]:
        text = line.strip()
        m = _FIELD.match(line)
        if text.startswith("#"):
            if last is not None and text.startswith("#   "):
                out[last] += " " + text[1:].strip()
            else:
                above.append(text[1:].strip())
                last = None
        elif m and m.group(2) in {f.name for f in dataclasses.fields(cls)}:
            out[m.group(2)] = " ".join([*above, m.group(3) or ""]).strip()
            above, last = [], m.group(2)
        else:
            above, last = [], None
    return out


def describe(cls: type, indent: int = 0) -> list[str]:
    """Every field of the dataclass `cls` with its default and its comment, as YAML lines (sections
    nested); a field without a default says `required`."""
    notes, lines, pad = _comments(cls), [], " " * indent
    for f in dataclasses.fields(cls):
        note = notes.get(f.name, "")
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            lines.append(f"{pad}{f.name}:  # required{'; ' + note if note else ''}")
            continue
        if dataclasses.is_dataclass(default):
            lines.append(f"{pad}{f.name}:" + (f"  # {note}" if note else ""))
            lines += describe(type(default), indent + 2)
            continue
        sub = _dataclass_of(typing.get_type_hints(cls)[f.name])
        shown = yaml.safe_dump(default, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
        lines.append(f"{pad}{f.name}: {shown}" + (f"  # {note}" if note else ""))
        if sub is not None and default is None:  # an optional section: its fields, when given
            lines += [f"{pad}#  {line}" for line in describe(sub, 2)]
    return lines
