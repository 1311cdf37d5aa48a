"""Typed sections from YAML, for any recipe (sfv.config's Recipe, the decoder recipe): a dataclass of section
dataclasses filled from a YAML file plus `dotted.key=value` overrides, every key and type checked (an unknown key or
a wrong type is one InputError that names the key and lists the valid ones), and written back with every default."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from sfv.errors import InputError


def load_sections(cls, path: str | Path | None, overrides: list[str] = (), moved: dict[str, str] | None = None):
    """The typed recipe `cls` (a dataclass of section dataclasses) from YAML at `path` (defaults if None) with
    `section.key=value` overrides; unknown keys and wrong types are one InputError each, and a key of `moved`
    (old "section.key" -> new) says where it went."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"recipe '{path}' does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError(f"recipe '{path}' is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise InputError(f"recipe '{path}' must be a mapping of sections ({', '.join(_fields(cls))})")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"override '{item}' must look like section.key=value (e.g. train.total_videos=64)")
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError(f"override '{item}': '{p}' is not a section")
        node[leaf] = yaml.safe_load(value) if value else None
    for old, new in (moved or {}).items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise InputError(f"recipe key '{old}' moved to '{new}' (SVD's own section): write it as {new}")
    return _build(cls, data, "")


def save_recipe(recipe, path: str | Path) -> None:
    """A typed recipe (Recipe, or another dataclass of sections with `to_dict`) as YAML, every default filled in."""
    Path(path).write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))


def plain(x):
    """A dataclasses.asdict() tree as YAML takes it (tuples as lists)."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    return list(x) if isinstance(x, tuple) else x


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(cls, data, where: str):
    if not isinstance(data, dict):
        raise InputError(f"recipe section '{where.rstrip('.') or 'top level'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    valid = _fields(cls)
    kwargs = {}
    for key, value in data.items():
        name = f"{where}{key}"
        if key not in valid:
            raise InputError(f"unknown recipe key '{name}'; valid keys{' in ' + where[:-1] if where else ''}: {', '.join(valid)}")
        kind = hints[key]
        section = _optional_section(kind)
        if section is not None:  # an optional section (e.g. model.lora): null turns it off
            kwargs[key] = None if value is None else _build(section, value, f"{name}.")
        elif dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value, f"{name}.")
        else:
            kwargs[key] = _check(value, kind, name)
    return cls(**kwargs)


def _optional_section(kind):
    """The dataclass of an `X | None` field whose X is a dataclass (an optional section), else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def _check(value, kind, name: str):
    """`value` as type `kind` (int, float, str, bool, X | None, list[int], tuple[float, float]) or an InputError."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check(value, inner, name)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        if origin is tuple and len(value) != len(args):
            raise InputError(f"recipe key '{name}' needs {len(args)} values, got {len(value)}")
        items = [_check(v, args[0] if origin is list else a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args * len(value)))]
        return origin(items)
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind in (int, str, bool) and type(value) is kind:
        return value
    want = getattr(kind, "__name__", str(kind))
    raise InputError(f"recipe key '{name}' must be {want}, got {type(value).__name__} {value!r}")
