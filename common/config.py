"""Configuration: code defaults < ``--config`` YAML < repeatable ``--set a.b=value``.

nanoGPT-style overrides, but strict. The project's documented defaults dict (``DEFAULTS``) is
the schema:

* a key that is not in the schema is an error listing the valid keys;
* a value must keep the default's type (an int is accepted where a float is expected);
* ``null`` is accepted only where the default is ``null`` (and such a key accepts any type), or
  where ``RULES`` allows it: ``None`` among the choices, or ``Range(..., null=True)`` (a
  threshold whose ``null`` switches a check off);
* ``RULES`` adds what a type cannot say: a tuple of allowed values (``("cosine",
  "inverse_sqrt")``) or a :class:`Range` (``Range(min=1)``, ``Range(min=0, open_min=True)``).
  A list value is checked element by element.

Every error names the key, where the value came from (the YAML file, ``--set KEY=VALUE`` or
``DEFAULTS``) and what would be valid. A YAML file may name one ``base:`` file (a path relative
to itself) that it extends.

Values given with ``--set`` are parsed as YAML scalars/flow collections, so ``--set lr=1e-3``,
``--set model.layers=[64,64]`` and ``--set train.amp=true`` all do the obvious thing.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: ``1e-3`` is a float (YAML 1.1 wants ``1.0e-3``) and only
    ``true``/``false`` are booleans, so ``--set data.check=off`` is the string ``"off"`` (YAML 1.1
    reads ``off``/``on``/``yes``/``no`` as booleans)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))

_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def yaml_load(text_or_stream):
    """``yaml.safe_load`` with ``1e-3`` read as a float."""
    loader = _Loader(text_or_stream)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


@dataclass(frozen=True)
class Range:
    """A numeric range for ``RULES``: ``Range(min=1)`` is ``>= 1``, ``Range(min=0, open_min=True)``
    is ``> 0``, ``Range(0, 1, open_max=True)`` is ``[0, 1)``. NaN is never in a range."""

    min: float | None = None
    max: float | None = None
    open_min: bool = False
    open_max: bool = False
    null: bool = False       # null is allowed too (even where the default is a number)

    def __contains__(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            return False
        if self.min is not None and (v <= self.min if self.open_min else v < self.min):
            return False
        if self.max is not None and (v >= self.max if self.open_max else v > self.max):
            return False
        return True

    def __str__(self) -> str:
        lo = None if self.min is None else f"{'>' if self.open_min else '>='} {self.min}"
        hi = None if self.max is None else f"{'<' if self.open_max else '<='} {self.max}"
        text = " and ".join(x for x in (lo, hi) if x) or "any number"
        return text + " (or null)" if self.null else text


Rule = tuple | Range


def _allows_null(rule) -> bool:
    return rule.null if isinstance(rule, Range) else (rule is not None and any(c is None for c in rule))


class Config(dict):
    """A nested dict with attribute access (``cfg.train.lr``). Plain data only: it pickles,
    YAML-dumps via :meth:`to_dict`, and round-trips through checkpoints."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(
                f"config has no key {name!r}; keys here: {sorted(self.keys())}"
            ) from e

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __deepcopy__(self, memo):
        return Config({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def to_dict(self) -> dict:
        return {k: (v.to_dict() if isinstance(v, Config) else copy.deepcopy(v)) for k, v in self.items()}

    @classmethod
    def wrap(cls, d: Mapping) -> Config:
        return cls({k: (cls.wrap(v) if isinstance(v, Mapping) else v) for k, v in d.items()})


def flat_keys(d: Mapping, prefix: str = "") -> list[str]:
    """All leaf keys as dotted paths, sorted."""
    return sorted(flat_items(d, prefix))


def flat_items(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{dotted key: leaf value}``; an empty mapping is a leaf."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flat_items(v, key + "."))
        else:
            out[key] = v
    return out


_ABSENT = "<absent>"


def diff_configs(old: Mapping, new: Mapping) -> dict[str, tuple[Any, Any]]:
    """``{key: (old value, new value)}`` for every leaf that differs (``"<absent>"`` when a key
    exists on one side only). Lists compare element-wise, ``1`` equals ``1.0``."""
    a, b = flat_items(old), flat_items(new)
    out = {}
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, _ABSENT), b.get(k, _ABSENT)
        if isinstance(va, tuple):
            va = list(va)
        if isinstance(vb, tuple):
            vb = list(vb)
        if va != vb or type(va) is bool and type(vb) is not bool or type(vb) is bool and type(va) is not bool:
            out[k] = (va, vb)
    return out


def _type_ok(schema: Any, new: Any) -> bool:
    if schema is None:
        return True  # a null default means "any type" (and null itself)
    if new is None:
        return False  # null only where the default is null
    if isinstance(schema, bool) or isinstance(new, bool):
        return isinstance(schema, bool) and isinstance(new, bool)
    if isinstance(schema, float) and isinstance(new, int):
        return True  # 1 where 1.0 is expected
    if isinstance(schema, (list, tuple)) and isinstance(new, (list, tuple)):
        return True
    return isinstance(new, type(schema))


def _valid_keys(root: Mapping) -> str:
    return "Valid keys:\n  " + "\n  ".join(flat_keys(root))


def _merge(base: dict, upd: Mapping, *, schema: Mapping | None, where: str, root: Mapping,
           sources: dict[str, str] | None = None, prefix: str = "", rules: Mapping | None = None) -> None:
    """Merge ``upd`` into ``base`` in place. With a ``schema`` (the defaults node matching
    ``base``), unknown keys, type changes and null where neither the default nor ``rules`` allow
    it are errors; without one (``base:`` includes) anything goes."""
    for k, v in upd.items():
        key = f"{prefix}{k}"
        if schema is not None and k not in schema:
            raise ConfigError(f"{where}: unknown config key {key!r}. {_valid_keys(root)}")
        if k not in base:
            base[k] = copy.deepcopy(v)
            if sources is not None:
                for fk in flat_items({key: v}) if isinstance(v, Mapping) and v else (key,):
                    sources[fk] = where
            continue
        ref = schema[k] if schema is not None else base[k]
        old = base[k]
        if isinstance(ref, dict) and ref and isinstance(v, Mapping):
            if not isinstance(old, dict):
                base[k] = old = {}
            _merge(old, v, schema=ref if schema is not None else None, where=where, root=root,
                   sources=sources, prefix=key + ".", rules=rules)
            continue
        if isinstance(ref, dict) and ref:
            if schema is not None or v is not None:
                raise ConfigError(f"{where}: {key!r} is a section (keys {sorted(ref)}), got {v!r}")
        elif v is None and schema is not None and ref is not None and _allows_null((rules or {}).get(key)):
            pass  # RULES allow null here (Range(..., null=True) or None among the choices)
        elif schema is not None and not _type_ok(ref, v):
            if v is None:
                raise ConfigError(f"{where}: {key!r} does not accept null (its default is {ref!r}, "
                                  f"a {type(ref).__name__}, and RULES do not allow null); give a "
                                  f"{type(ref).__name__}")
            raise ConfigError(f"{where}: {key!r} expects {type(ref).__name__} (default {ref!r}), "
                              f"got {type(v).__name__} {v!r}")
        if isinstance(ref, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        base[k] = copy.deepcopy(v)
        if sources is not None:
            sources[key] = where


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping (safe loader), resolving one optional ``base:`` include."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base:
        parent = read_yaml((path.parent / base).resolve())
        _merge(parent, data, schema=None, where=str(path), root=parent)
        data = parent
    return data


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _node(tree: Mapping | None, parts: list[str]):
    for p in parts:
        if not isinstance(tree, Mapping) or p not in tree:
            return None
        tree = tree[p]
    return tree


def apply_overrides(cfg: dict, overrides: Iterable[str], schema: Mapping | None = None,
                    sources: dict[str, str] | None = None, rules: Mapping | None = None) -> dict:
    """Apply ``--set`` items in order. ``schema`` (the defaults) decides types and nullability;
    without one, ``cfg`` itself is the schema."""
    schema = cfg if schema is None else schema
    for item in overrides or []:
        key, value = parse_override(item)
        parts = key.split(".")
        node, snode = _node(cfg, parts[:-1]), _node(schema, parts[:-1])
        if not isinstance(node, dict) or not isinstance(snode, Mapping):
            raise ConfigError(f"--set {item}: unknown config key {key!r}. {_valid_keys(schema)}")
        _merge(node, {parts[-1]: value}, schema=snode, where=f"--set {item}", root=schema, sources=sources,
               prefix=".".join(parts[:-1]) + "." if len(parts) > 1 else "", rules=rules)
    return cfg


def check_rules(cfg: Mapping, rules: Mapping[str, Rule] | None, sources: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` for the first value outside its rule (choices or :class:`Range`).
    A ``null`` got past the schema (see :func:`_merge`), so it passes here."""
    if not rules:
        return
    flat = flat_items(cfg)
    for key, rule in rules.items():
        if not isinstance(rule, (Range, tuple, list, set, frozenset)):
            raise ConfigError(f"RULES[{key!r}] must be a tuple of allowed values or a Range, got {rule!r}")
        if key not in flat:
            raise ConfigError(f"RULES names {key!r}, which is not a config key. {_valid_keys(cfg)}")
        value = flat[key]
        if value is None:  # _merge already decided whether null is allowed here
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            ok = v in rule if isinstance(rule, Range) else any(v == c and type(v) is type(c) or
                                                               (isinstance(c, float) and v == c) for c in rule)
            if not ok:
                where = (sources or {}).get(key, "DEFAULTS")
                valid = str(rule) if isinstance(rule, Range) else " | ".join(map(str, rule))
                what = "out of range" if isinstance(rule, Range) else "not one of the choices"
                shown = f"{value!r}" if v is value else f"{value!r} (element {v!r})"
                raise ConfigError(f"{where}: {key} = {shown} is {what}; valid: {valid}")


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    defaults: Mapping | None = None,
    rules: Mapping[str, Rule] | None = None,
) -> Config:
    """Resolve a config: ``defaults`` < the YAML file at ``path`` < ``overrides``, then ``rules``.

    ``defaults`` (optional) is the schema: when given, keys in the YAML file that are not in it
    are errors, and types/nullability follow it. Without it the file itself is the schema.
    """
    sources: dict[str, str] = {}
    cfg: dict = copy.deepcopy(dict(defaults)) if defaults is not None else {}
    if path is not None:
        data = read_yaml(path)
        if defaults is not None:
            _merge(cfg, data, schema=defaults, where=str(path), root=defaults, sources=sources, rules=rules)
        else:
            cfg = data
            sources.update({k: str(path) for k in flat_items(data)})
    apply_overrides(cfg, overrides, defaults, sources, rules)
    check_rules(cfg, rules, sources)
    return Config.wrap(cfg)


def resolve_onto(base: Mapping, where: str, overrides: Iterable[str] = (), defaults: Mapping | None = None,
                 rules: Mapping[str, Rule] | None = None) -> Config:
    """A config saved elsewhere (a checkpoint's, a run's ``config.yaml``) checked against today's
    schema, with ``overrides`` applied on top and ``rules`` enforced. ``where`` names its origin
    in errors."""
    sources: dict[str, str] = {}
    cfg: dict = copy.deepcopy(dict(defaults)) if defaults is not None else {}
    _merge(cfg, base, schema=defaults, where=where, root=defaults if defaults is not None else base,
           sources=sources, rules=rules)
    apply_overrides(cfg, overrides, defaults, sources, rules)
    check_rules(cfg, rules, sources)
    return Config.wrap(cfg)


def save_config(cfg: Mapping, path: str | Path) -> None:
    data = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
