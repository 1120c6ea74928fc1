"""Configuration: code defaults < ``--config`` YAML < repeatable ``--set a.b=value``.

nanoGPT-style overrides, but strict: a key that does not exist in the schema, or a value whose
type does not match the existing value, is an error that lists the valid keys. The schema is the
project's documented defaults dict (when given) merged with the YAML file; a YAML file may name
one ``base:`` file (a path relative to itself) that it extends.

Values given with ``--set`` are parsed as YAML scalars/flow collections, so ``--set lr=1e-3``,
``--set model.layers=[64,64]`` and ``--set train.amp=true`` all do the obvious thing.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


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
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.extend(flat_keys(v, key + "."))
        else:
            out.append(key)
    return sorted(out)


def _type_ok(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return True  # a null default means "any type"; null may switch an option off
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float) and isinstance(new, int):
        return True  # 1 where 1.0 is expected
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        return True
    return isinstance(new, type(old))


def _merge(base: dict, upd: Mapping, strict: bool, where: str, root: dict, prefix: str = "") -> None:
    for k, v in upd.items():
        key = f"{prefix}{k}"
        if k not in base:
            if strict:
                raise ConfigError(
                    f"{where}: unknown config key {key!r}. Valid keys:\n  " + "\n  ".join(flat_keys(root))
                )
            base[k] = copy.deepcopy(v)
            continue
        old = base[k]
        if isinstance(old, dict) and isinstance(v, Mapping):
            _merge(old, v, strict, where, root, key + ".")
        elif isinstance(old, dict) and old and v is not None:
            raise ConfigError(f"{where}: {key!r} is a section ({sorted(old)}), got {v!r}")
        else:
            if strict and not _type_ok(old, v):
                raise ConfigError(
                    f"{where}: {key!r} expects {type(old).__name__} (default {old!r}), "
                    f"got {type(v).__name__} {v!r}"
                )
            if isinstance(old, float) and isinstance(v, int) and not isinstance(v, bool):
                v = float(v)
            base[k] = copy.deepcopy(v)


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
        _merge(parent, data, strict=False, where=str(path), root=parent)
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


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    for item in overrides or []:
        key, value = parse_override(item)
        node: dict = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(
                    f"--set {item}: unknown config key {key!r}. Valid keys:\n  " + "\n  ".join(flat_keys(cfg))
                )
            node = node[p]
        _merge(node, {parts[-1]: value}, strict=True, where=f"--set {item}", root=cfg,
               prefix=".".join(parts[:-1]) + "." if len(parts) > 1 else "")
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    defaults: Mapping | None = None,
) -> Config:
    """Resolve a config.

    ``defaults`` (optional) is the schema: when given, keys in the YAML file that are not in it
    are errors. ``overrides`` must name existing keys and keep their types.
    """
    cfg: dict = copy.deepcopy(dict(defaults)) if defaults is not None else {}
    if path is not None:
        data = read_yaml(path)
        if defaults is not None:
            _merge(cfg, data, strict=True, where=str(path), root=cfg)
        else:
            cfg = data
    apply_overrides(cfg, overrides)
    return Config.wrap(cfg)


def save_config(cfg: Mapping, path: str | Path) -> None:
    data = cfg.to_dict() if isinstance(cfg, Config) else dict(cfg)
    with open(path, "w") as f:
        yaml.safe_dump(data, f, sort_keys=False)
