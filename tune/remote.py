"""Checks that run where the trials will run: on the cluster's nodes, through one tiny Ray task per node.

A data root that exists on the driver proves nothing about a GPU worker that mounts the shared volume
elsewhere (or not at all). Before any trial starts, the driver sends a zero-CPU task pinned to each live node
that can host a trial and asks it whether the sweep's paths exist there; a missing path fails the sweep
with the node's address, the config field and the path. On a single-node run the same check runs in the
driver's own process. On an autoscaling cluster whose trial nodes are not up yet (GPU workers from zero)
the check runs on the nodes that are up and says so: the examples mount the same volume on every node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tune.paths import PathError, TrialPath, missing_paths

CHECK_TIMEOUT_S = 120.0


def is_client_address(address: str | None) -> bool:
    """Ray Client (`ray://host:10001`): the driver runs here, and this machine is no node of the cluster."""
    return address is not None and str(address).startswith("ray://")


def fits(resources: Mapping[str, float], cpu: float, gpu: float) -> bool:
    """Whether a node's total resources can hold one trial (what it holds right now does not matter)."""
    return float(resources.get("CPU", 0.0)) >= cpu and float(resources.get("GPU", 0.0)) >= gpu


def _check_on_node(paths: Sequence[TrialPath]) -> tuple[str, list[str]]:
    import ray

    node = f"{ray.util.get_node_ip_address()} ({ray.get_runtime_context().get_node_id()[:8]})"
    return node, missing_paths(paths)


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
                                 timeout_s: float = CHECK_TIMEOUT_S) -> list[str]:
    """Raise PathError naming every node and path that is missing; return notes for the user.

    Needs a connected Ray (call after `ray.init`). A single-node cluster that is the driver's own node is
    checked in this process; otherwise every live node that can hold a trial runs the check as a task.
    """
    import ray

    if not paths:
        return []
    nodes = alive_nodes()
    driver_node = None if client else ray.get_runtime_context().get_node_id()
    if not client and [n["NodeID"] for n in nodes] == [driver_node]:
        problems = missing_paths(paths)
        if problems:
            raise PathError("paths the trials read are missing:\n  " + "\n  ".join(problems))
        return []
    notes = []
    targets = [n for n in nodes if fits(n.get("Resources", {}), cpu, gpu)]
    if not targets:
        targets = nodes
        notes.append(
            f"no live node can hold a trial yet ({cpu:g} CPU, {gpu:g} GPU): checked the data paths on the "
            f"{len(nodes)} node(s) that are up; nodes the autoscaler starts later must mount the same paths"
        )
    answers, trouble = on_nodes(_check_on_node, targets, list(paths), timeout_s=timeout_s)
    notes.extend(f"path check {line}" for line in trouble)
    problems = [f"node {address}: {line}" for address, missing in answers for line in missing]
    if problems:
        raise PathError("paths the trials read are missing where the trials run:\n  " + "\n  ".join(problems))
    return notes


def remove_scratch_everywhere(experiment_fs_path: str) -> list[str]:
    """Remove the trainers' scratch of one experiment on every live node (a trial stopped by the scheduler is
    killed before its own cleanup runs); returns notes on nodes that did not answer."""
    from tune.trainable import remove_scratch

    _, notes = on_nodes(remove_scratch, alive_nodes(), experiment_fs_path, timeout_s=30.0)
    return notes
