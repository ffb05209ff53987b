"""Paths that mean the same on every node: data roots and weight files, settled on the driver.

A trainer config names its data and weights relative to the working directory, as `cmda train` reads them;
under Ray the trials run in worker processes whose working directory differs between the driver, the nodes of
a launcher cluster and KubeRay pods. So the driver makes every path absolute (and maps it with `path_map` for
clusters that mount the data elsewhere) before any trial starts, and the settled paths join the sweep's
overrides: each trial's params.json names the paths it used. The rules: docs/ARCHITECTURE.md (tune, beyond
one machine); whether the paths exist is checked where the trials run (`tune.remote`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cmda.io import is_unset
from cmda.overrides import dotted_get, load_with_overrides
from tune.errors import PathError
from tune.experiment import is_uri

FOLDER, FILE = "folder", "file"
PATH_KEYS: dict[str, str] = {
    "data.source.root": FOLDER,
    "data.target.root": FOLDER,
    "model.pretrained": FILE,
    "model.cyclegan": FILE,
    "model.init_from": FOLDER,
}
"""Trainer config keys that hold a path, and what must exist there."""


@dataclass(frozen=True)
class TrialPath:
    """A path a trial reads: the config key, the path, what must exist there, and where it was set."""

    key: str
    path: str
    kind: str
    origin: str  # "<file>: field '<dotted field>'", for messages


def parse_path_map(raw: Any, source: str, fieldname: str = "path_map") -> dict[str, str]:
    """Validate a {driver folder: cluster folder} mapping (the `path_map` field, or `--path-map` options:
    `tune.paths`); both sides absolute (`~` expands on the driver)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PathError(f"{source}: field '{fieldname}': expected a mapping of driver folder -> cluster "
                        f"folder, got {raw!r}")
    out: dict[str, str] = {}
    for local, remote in raw.items():
        where = f"{source}: field '{fieldname}.{local}'"
        if not isinstance(local, str) or not isinstance(remote, str) or not local or not remote:
            raise PathError(f"{where}: expected folder names on both sides, got {local!r}: {remote!r}")
        local_path = os.path.abspath(os.path.expanduser(local))
        if not PurePosixPath(remote).is_absolute():
            raise PathError(f"{where}: the cluster side must be absolute, got {remote!r}")
        out[local_path] = os.path.normpath(remote)
    return out


def parse_path_map_options(items: Sequence[str]) -> dict[str, str]:
    """`--path-map LOCAL=CLUSTER` options (repeatable) as a path map."""
    raw: dict[str, str] = {}
    for item in items:
        local, sep, remote = item.partition("=")
        if not sep or not local or not remote:
            raise PathError(f"--path-map: expected LOCAL=CLUSTER (two folders), got {item!r}")
        raw[local] = remote
    return parse_path_map(raw, "--path-map", fieldname="--path-map")


def map_path(path: str, path_map: Mapping[str, str]) -> tuple[str, bool]:
    """(path with its longest mapped leading folder replaced, whether a mapping applied)."""
    candidate = Path(path)
    for local in sorted(path_map, key=len, reverse=True):
        if candidate == Path(local) or candidate.is_relative_to(local):
            rest = candidate.relative_to(local).as_posix()
            target = path_map[local] if rest == "." else f"{path_map[local].rstrip('/')}/{rest}"
            return target, True
    return path, False


def resolve_path(value: str, origin: str, *, cwd: str | os.PathLike[str], path_map: Mapping[str, str],
                 client: bool) -> str:
    """One path as every node must see it (see the module docstring for the rules)."""
    expanded = os.path.expanduser(value)
    relative = not os.path.isabs(expanded)
    absolute = os.path.normpath(os.path.join(cwd, expanded)) if relative else os.path.normpath(expanded)
    mapped, applied = map_path(absolute, path_map)
    if relative and client and not applied:
        raise PathError(
            f"{origin}: {value!r} is a relative path, and the trials run on a remote cluster (Ray Client) "
            "whose working directory this machine cannot know; give the absolute path the cluster nodes "
            f"mount, or map this machine's folder with path_map / --path-map {os.path.dirname(absolute)}"
            "=/CLUSTER/FOLDER"
        )
    return mapped


def config_paths(config: Mapping[str, Any], origin_of: Any) -> list[TrialPath]:
    """The set path-valued keys of a trainer config dict; `origin_of(key)` names where each was set."""
    found = []
    for key, kind in PATH_KEYS.items():
        node = dotted_get(config, key)
        if node is None or is_unset(node) or not isinstance(node, str | os.PathLike) or is_uri(str(node)):
            continue
        found.append(TrialPath(key, str(node), kind, origin_of(key)))
    return found


def sweep_paths(base_config: str | os.PathLike[str], overrides: Mapping[str, Any],
                sweep_file: str | os.PathLike[str]) -> list[TrialPath]:
    """Path-valued keys of the base config with the sweep's overrides applied, each with its origin."""
    merged = load_with_overrides(base_config, dict(overrides))

    def origin_of(key: str) -> str:
        if key in overrides:
            return f"{sweep_file}: field 'overrides.{key}'"
        return f"{base_config}: field '{key}'"

    return config_paths(merged, origin_of)


def resolve_sweep_paths(base_config: str | os.PathLike[str], overrides: Mapping[str, Any],
                        sweep_file: str | os.PathLike[str], *, path_map: Mapping[str, str] | None = None,
                        client: bool = False, cwd: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Dotted key -> absolute path (mapped for the cluster) for every path the sweep's trials read.

    Merge the result into the sweep's overrides; keys whose value does not change are left out.
    """
    where = os.getcwd() if cwd is None else cwd
    out: dict[str, str] = {}
    for entry in sweep_paths(base_config, overrides, sweep_file):
        resolved = resolve_path(entry.path, entry.origin, cwd=where, path_map=path_map or {}, client=client)
        if resolved != entry.path:
            out[entry.key] = resolved
    return out


def missing_paths(paths: Sequence[TrialPath]) -> list[str]:
    """One line per path that does not exist as the kind it must be, on the machine this runs on."""
    problems = []
    for entry in paths:
        target = Path(entry.path)
        ok = target.is_dir() if entry.kind == FOLDER else target.is_file()
        if not ok:
            state = "does not exist" if not target.exists() else f"is not a {entry.kind}"
            problems.append(f"{entry.origin}: {entry.path} {state}")
    return problems
