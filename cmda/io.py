"""File helpers every part of the project shares: atomic writes and one YAML reader.

Atomic writes. Results live on shared storage that other processes read while a run is going (`cmda-tune
status`, the analysis, Ray's syncer), and runs get killed (preemption, OOM, Ctrl+C). A reader must see the
old file or the new one, never half of one, and a killed writer must leave nothing behind but a hidden
`.tmp` name. Everything here writes into a temporary sibling in the same folder (same file system, so the
final `os.replace` is atomic), gives it the mode a normally created file would get (mkstemp/mkdtemp make
them private, 0600/0700, which hides results from the group on a shared file system) and removes the
temporary on any error.

YAML. PyYAML implements YAML 1.1, where `6e-5` (no dot) is a *string*; everybody writes learning rates
that way, so `load_yaml` resolves such scalars as floats, in config files, sweep files and `--set` values
alike.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml

StrPath = str | os.PathLike[str]

TMP_PREFIX = ".tmp_"
"""Prefix of every temporary file or folder these helpers create (`clean_stale_tmp` removes leftovers)."""

_UMASK: int | None = None


def _umask() -> int:
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK


def default_mode(directory: bool = False) -> int:
    """The mode `open()` / `mkdir()` would give under the current umask (e.g. 0644 / 0755)."""
    return (0o777 if directory else 0o666) & ~_umask()


@contextmanager
def atomic_path(path: StrPath, tmp_dir: StrPath | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path`, on error it is removed.

    For writers that want a file name (h5py, PIL, torch.save); see `write_atomic` for a file handle.
    `tmp_dir` puts the temporary elsewhere on the same file system: for a folder that another process copies
    while we write (Ray uploads a trial's artifact folder in a background thread), so that a temporary
    name is never copied and left behind at the destination.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent if tmp_dir is None else Path(tmp_dir)
    staging.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=staging)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(
    path: StrPath, write: Callable[[IO[bytes]], Any], tmp_dir: StrPath | None = None
) -> Path:
    """Call `write(binary_handle)` on a temporary file, then move it onto `path` (`tmp_dir`: atomic_path)."""
    with atomic_path(path, tmp_dir) as tmp, tmp.open("wb") as handle:
        write(handle)
    return Path(path)


def write_bytes_atomic(path: StrPath, data: bytes, tmp_dir: StrPath | None = None) -> Path:
    return write_atomic(path, lambda handle: handle.write(data), tmp_dir)


def write_text_atomic(path: StrPath, text: str, tmp_dir: StrPath | None = None) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), tmp_dir)


def write_json_atomic(path: StrPath, data: Any, indent: int | None = 1) -> Path:
    """JSON with NaN/inf allowed (metrics may be NaN; Python's json reads them back)."""
    return write_text_atomic(path, json.dumps(data, indent=indent, allow_nan=True) + "\n")


def write_yaml_atomic(path: StrPath, data: Any, tmp_dir: StrPath | None = None) -> Path:
    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False), tmp_dir)


@contextmanager
def atomic_directory(path: StrPath) -> Iterator[Path]:
    """Yield a temporary folder next to `path`; on success it replaces `path` (an existing folder of that
    name is removed first), on error it is removed. The folder gets the usual mode (0755 under umask 022)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, default_mode(directory=True))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def clean_stale_tmp(folder: StrPath) -> list[Path]:
    """Remove what a killed writer left in `folder` (names starting with TMP_PREFIX); return them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for leftover in folder.glob(f"{TMP_PREFIX}*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def is_unset(value: StrPath | None) -> bool:
    """``None``, ``""``, ``"none"`` and ``"null"`` all mean "no file" for an optional path in a config
    (weights files). Here, not next to the model code, so the sweep driver can ask without importing torch."""
    return value is None or str(value).strip().lower() in ("", "none", "null")


# -- YAML -----------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader whose floats follow YAML 1.2: `6e-5`, `1E4`, `.5`, `-inf` are numbers."""


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


class YAMLFileError(ValueError):
    """A YAML file that cannot be read or parsed; the message names the file."""


def parse_yaml(text: str, source: str = "<text>") -> Any:
    """Parse YAML text with `6e-5` read as a number; errors name `source`."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as error:
        raise YAMLFileError(f"{source}: not valid YAML: {error}") from error


def load_yaml(path: StrPath) -> Any:
    """Read a YAML file (see `parse_yaml`); a missing or unreadable file is a YAMLFileError naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as error:
        raise YAMLFileError(f"{path}: file not found") from error
    except OSError as error:
        raise YAMLFileError(f"{path}: cannot read: {error}") from error
    return parse_yaml(text, str(path))
