"""Dotted keys into nested config dicts: overrides (`--set optim.lr=6e-5`, a sweep file's `overrides:`, a
trial's parameters) and lookups.

A module of its own, apart from the config schema in `cmda.config`: that one imports the model and loss
registries (torch, timm: seconds), while a Ray trial only needs to merge its parameters into the trainer
config before the trainer starts, and must not pay for those imports twice.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from cmda.errors import ConfigError
from cmda.io import YAMLFileError, load_yaml, parse_yaml


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', value read as YAML, so `6e-5` is a number)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. --set optim.lr=6e-5")
    key, value = text.split("=", 1)
    try:
        return key.strip(), parse_yaml(value, f"--set {text}")
    except YAMLFileError as error:
        raise ConfigError(str(error)) from None


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """Return a copy of `data` with dotted-key overrides applied (strings 'k=v' are YAML-parsed)."""
    result = copy.deepcopy(data)
    if not overrides:
        return result
    items = [parse_override(o) for o in overrides] if isinstance(overrides, list) else list(overrides.items())
    for key, value in items:
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{key}': '{part}' is not a mapping")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return result


def load_with_overrides(path: str | os.PathLike[str],
                        overrides: dict[str, Any] | list[str] | None = None) -> dict[str, Any]:
    """A config file as a plain mapping with the overrides applied, not validated: what `cmda.config.
    load_config` validates, and what every trial of a sweep shares (tune). YAMLFileError for a file that
    cannot be read, ConfigError for one that is not a mapping; both name the file."""
    data = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    return apply_overrides(data, overrides)


def dotted_get(data: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    """`data["a"]["b"]` for `key` "a.b", or `default` where a level is missing or not a mapping."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node
