"""What runs on every node of the cluster: the path check before the trials, and the clean-up after them.

A data root that exists on the driver proves nothing about a GPU worker that mounts the shared volume
elsewhere (or not at all). Before any trial starts, the driver sends a zero-CPU task pinned to each live node
that can host a trial and asks it whether the sweep's paths exist there; a missing path fails the sweep
with the node's address, the config field and the path. On a single-node run the same check runs in the
driver's own process. On an autoscaling cluster whose trial nodes are not up yet (GPU workers from zero)
the check runs on the nodes that are up and says so: the examples mount the same volume on every node.

After `fit`, nothing of the run stays on a node: the trainers' scratch (a trial stopped by the scheduler is
killed before its own clean-up runs) is removed on every live node, the driver's staging copies on the
driver. See docs/ARCHITECTURE.md (tune, beyond one machine).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tune.paths import PathError, TrialPath, missing_paths

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 120.0
SCRATCH_ENV = "CMDA_SCRATCH"


def is_client_address(address: str | None) -> bool:
    """Ray Client (`ray://host:10001`): the driver runs here, and this machine is no node of the cluster."""
    return address is not None and str(address).startswith("ray://")


def fits(resources: Mapping[str, float], cpu: float, gpu: float) -> bool:
    """Whether a node's total resources can hold one trial (what it holds right now does not matter)."""
    return float(resources.get("CPU", 0.0)) >= cpu and float(resources.get("GPU", 0.0)) >= gpu


def data_problems(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The fast data check (`cmda data check`'s quick form, what `cmda train` runs first) of every distinct
    data section among the trials' resolved configs; one message per section with problems."""
    import json

    from cmda.config import config_from_dict
    from cmda.data.check import check_training_data
    from cmda.data.errors import DataError

    seen, problems = set(), []
    for resolved in configs:
        key = json.dumps(resolved.get("data"), sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_training_data(config_from_dict(dict(resolved)))
        except (DataError, ValueError, OSError) as error:
            problems.append(str(error))
    return problems


def paths_and_data_problems(paths: Sequence[TrialPath],
                            configs: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Missing paths; when none, the fast data check of each trial config's data."""
    return missing_paths(paths) or data_problems(configs)


def _check_on_node(paths: Sequence[TrialPath], configs: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]]:
    import ray

    node = f"{ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"
    return node, paths_and_data_problems(paths, configs)


def on_nodes(fn: Any, nodes: Sequence[dict[str, Any]], *args: Any,
             timeout_s: float = CHECK_TIMEOUT_S) -> tuple[list[Any], list[str]]:
    """Run `fn(*args)` once on each given node (a zero-CPU task pinned to it); return (the answers that
    came back, notes on the nodes that died or did not answer within `timeout_s`)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(fn)
    refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(*args) for n in nodes]
    ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    answers, notes = [], []
    for ref in ready:
        try:
            answers.append(ray.get(ref))
        except ray.exceptions.RayError as error:  # a node that died meanwhile
            notes.append(f"did not finish on one node: {error}")
    if pending:
        notes.append(f"did not answer within {timeout_s:g} s on {len(pending)} node(s)")
        for ref in pending:
            ray.cancel(ref, force=True)
    return answers, notes


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_paths_where_trials_run(paths: Sequence[TrialPath], *, cpu: float, gpu: float, client: bool = False,
                                 timeout_s: float = CHECK_TIMEOUT_S,
                                 configs: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Raise PathError naming every node and path that is missing, or every data problem the fast data
    check of `configs` (the trials' resolved trainer configs) finds there; return notes for the user.

    Needs a connected Ray (call after `ray.init`). A single-node cluster that is the driver's own node is
    checked in this process; otherwise every live node that can hold a trial runs the check as a task.
    """
    import ray

    if not paths:
        return []
    nodes = alive_nodes()
    driver_node = None if client else ray.get_runtime_context().get_node_id()
    if not client and [n["NodeID"] for n in nodes] == [driver_node]:
        problems = paths_and_data_problems(paths, configs)
        if problems:
            raise PathError("paths or data the trials read are missing or bad:\n  " + "\n  ".join(problems))
        return []
    notes = []
    targets = [n for n in nodes if fits(n.get("Resources", {}), cpu, gpu)]
    if not targets:
        targets = nodes
        notes.append(
            f"no live node can hold a trial yet ({cpu:g} CPU, {gpu:g} GPU): checked the data paths on the "
            f"{len(nodes)} node(s) that are up; nodes the autoscaler starts later must mount the same paths"
        )
    answers, trouble = on_nodes(_check_on_node, targets, list(paths), [dict(c) for c in configs],
                                timeout_s=timeout_s)
    notes.extend(f"path check {line}" for line in trouble)
    problems = [f"node {address}: {line}" for address, missing in answers for line in missing]
    if problems:
        raise PathError("paths or data the trials read are missing or bad where the trials run:\n  "
                        + "\n  ".join(problems))
    return notes


# -- clean-up ----------------------------------------------------------------------------------------------


def scratch_root(experiment_fs_path: str) -> Path:
    """This node's scratch folder of one experiment: `$CMDA_SCRATCH` (default the system temp folder) /
    cmda_scratch_<hash of the experiment's storage path>, so two sweeps never share or remove each other's."""
    base = Path(os.environ.get(SCRATCH_ENV) or tempfile.gettempdir()).expanduser()
    return base / f"cmda_scratch_{hashlib.sha1(experiment_fs_path.encode()).hexdigest()[:12]}"


def remove_scratch(experiment_fs_path: str) -> None:
    """Remove this node's scratch of an experiment (what trials killed by the scheduler left behind)."""
    shutil.rmtree(scratch_root(experiment_fs_path), ignore_errors=True)


def _session_artifacts(all_sessions: bool) -> list[Path]:
    """Ray's staging roots on this node (`<session>/artifacts`): this process's session when it runs in Ray;
    with `all_sessions` also every session under the same Ray temp folder (a killed driver's session is not
    the current one)."""
    try:
        from ray.train._internal.storage import _get_ray_train_session_dir

        current = Path(_get_ray_train_session_dir())
    except Exception:  # noqa: BLE001 - no Ray session in this process
        current = None
    roots = {current} if current is not None else set()
    if all_sessions:
        temp_root = current.parent.parent if current is not None else Path(
            os.environ.get("RAY_TMPDIR") or Path(tempfile.gettempdir()) / "ray")
        roots.update(p / "artifacts" for p in temp_root.glob("session_*") if not p.is_symlink())
    return sorted(roots)


def remove_staging(name: str, since: float | None = None) -> list[str]:
    """Delete the staging copies of experiment `name` under Ray's session folders on this node
    (`artifacts/<time>/<name>`): storage holds everything once `fit` returns, and a killed driver leaves them
    for good. `since`: only this session's folders written since then (this run's); None: every run of
    that name in every Ray session on this node (`cmda-tune clean`, after a killed driver)."""
    removed = []
    for root in _session_artifacts(all_sessions=since is None):
        for folder in root.glob(f"*/{name}"):
            if not folder.is_dir() or (since is not None and folder.stat().st_mtime < since - 5):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(str(folder))
            with contextlib.suppress(OSError):
                folder.parent.rmdir()  # the run's timestamp folder, when nothing else is in it
    return removed


def clean_node(experiment_fs_path: str, name: str, since: float | None = None) -> list[str]:
    """What one experiment left on this node: the trainers' scratch and Ray's staging; the paths removed."""
    scratch = scratch_root(experiment_fs_path)
    removed = [str(scratch)] if scratch.exists() else []
    remove_scratch(experiment_fs_path)
    return removed + remove_staging(name, since)


def clean_everywhere(experiment_fs_path: str, name: str, since: float | None = None,
                     driver_too: bool = True) -> tuple[list[str], list[str]]:
    """`clean_node` on every live node of the connected cluster (and in this process, for a driver that is no
    node: Ray Client); returns (paths removed, notes on nodes that did not answer)."""
    answers, notes = on_nodes(clean_node, alive_nodes(), experiment_fs_path, name, since, timeout_s=60.0)
    removed = [path for answer in answers for path in answer]
    if driver_too:
        removed.extend(clean_node(experiment_fs_path, name, since))
    return sorted(set(removed)), notes


def clean_up_after_fit(name: str, experiment_fs_path: str, since: float) -> None:
    """What `fit` of experiment `name` (started at `since`) leaves: Ray's staging and the trainers' scratch,
    on every node. Problems are logged, never raised: they must not hide the sweep's own outcome."""
    try:
        _, notes = clean_everywhere(experiment_fs_path, name, since)
        for note in notes:
            log.warning("removing the run's scratch and staging: %s", note)
    except Exception as error:  # noqa: BLE001 - cleanup must never hide the sweep's own outcome
        log.warning("could not remove the run's scratch and staging on every node: %s", error)
