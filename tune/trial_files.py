"""The small files a trial writes (resolved config, the trainer's log.csv, TensorBoard events), copied to
the trial's folder in storage from whichever node runs the trial.

Why not Ray's trial folder: `tune.get_context().get_trial_dir()` is a staging folder on the trial's own node.
On the driver's node Ray copies it to storage with every experiment snapshot; on any other node nothing in
it ever reaches storage. What does reach storage from every node is what Ray uploads itself, through the
pyarrow filesystem of `RunConfig(storage_path)` (a local or NFS folder, `s3://`, `gs://`). So the trial
copies its small files through that same filesystem into `<experiment>/<trial folder>/`: at every report,
before `tune.report` (whoever reads a result in storage also finds the log up to it), and when it ends.
Files whose size and modification time did not change since the last copy are skipped.

A trial retried on another node (a lost node, a preempted spot instance) starts with empty scratch: before
the trainer resumes, `restore` copies log.csv and the TensorBoard events back from storage, so the log goes
on from the checkpoint instead of starting over.

Writes are atomic on local and NFS storage (temporary name, then rename, via cmda.io); an object PUT is
atomic by itself.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cmda.io import TMP_PREFIX, atomic_path

CHUNK = 1 << 20


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)


class TrialFiles:
    """Copies named local files and folders to a trial's folder in storage.

    `files` maps a name inside the trial's storage folder (e.g. "log.csv", "tensorboard") to a local file or
    folder; folders are copied recursively. `fs` is a pyarrow FileSystem and `remote_dir` a path inside it.
    """

    def __init__(self, fs: Any, remote_dir: str, files: Mapping[str, str | os.PathLike[str]]) -> None:
        self.fs = fs
        self.remote_dir = remote_dir
        self.files = {name: Path(path) for name, path in files.items()}
        self._sent: dict[str, tuple[int, int]] = {}

    @classmethod
    def for_current_trial(cls, files: Mapping[str, str | os.PathLike[str]]) -> TrialFiles:
        """For the running Tune trial: the filesystem and trial folder Ray persists its checkpoints to."""
        from ray import tune

        storage = tune.get_context().get_storage()  # DeveloperAPI: Ray's own StorageContext of this trial
        return cls(storage.storage_filesystem, storage.trial_fs_path, files)

    def _is_local(self) -> bool:
        import pyarrow.fs as pafs

        return isinstance(self.fs, pafs.LocalFileSystem)

    def _local_files(self) -> Iterator[tuple[str, Path]]:
        """(name in storage, local file) for every file that exists now, in a stable order."""
        for name, path in self.files.items():
            if path.is_file():
                yield name, path
            elif path.is_dir():
                for file in sorted(path.rglob("*")):
                    if file.is_file() and not file.name.startswith(TMP_PREFIX):
                        yield _join(name, file.relative_to(path).as_posix()), file

    def _put(self, local: Path, name: str) -> None:
        target = _join(self.remote_dir, name)
        if self._is_local():
            with atomic_path(target) as tmp:
                shutil.copyfile(local, tmp)
            return
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with local.open("rb") as source, self.fs.open_output_stream(target) as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)

    def upload(self) -> list[str]:
        """Copy every file that changed since the last call; returns the names copied."""
        copied = []
        for name, local in self._local_files():
            try:
                stat = local.stat()
            except FileNotFoundError:  # removed between listing and copying (e.g. a rotated temp file)
                continue
            key = (stat.st_size, stat.st_mtime_ns)
            if self._sent.get(name) == key:
                continue
            self._put(local, name)
            self._sent[name] = key
            copied.append(name)
        return copied

    def restore(self) -> list[str]:
        """Copy back from storage every named file or folder that is missing locally; returns the names."""
        import pyarrow.fs as pafs

        restored = []
        for name, local in self.files.items():
            if local.exists():
                continue
            info = self.fs.get_file_info(_join(self.remote_dir, name))
            if info.type == pafs.FileType.File:
                entries = [(name, local)]
            elif info.type == pafs.FileType.Directory:
                children = self.fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
                relative = [c.path[len(info.path):].lstrip("/") for c in children
                            if c.type == pafs.FileType.File]
                entries = [(_join(name, rel), local / rel) for rel in relative]
            else:
                continue
            for remote_name, target in entries:
                with atomic_path(target) as tmp, self.fs.open_input_stream(
                        _join(self.remote_dir, remote_name)) as source, tmp.open("wb") as out:
                    while chunk := source.read(CHUNK):
                        out.write(chunk)
                restored.append(remote_name)
        return restored
