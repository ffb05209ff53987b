"""How many trials run at once: `max_concurrent_trials: auto` made into a number.

A trial needs its `resources` on ONE node, so the cluster's capacity is counted node by node (a node with 3
GPUs holds one 2-GPU trial, not 1.5), over the nodes that are up and, on an autoscaling cluster, the nodes
its autoscaler may start (the node groups' `max_count`, as the autoscaler publishes them to the GCS). The
count is rounded down to whole groups of seeds, so that every configuration's seeds run side by side (the
per-configuration scheduler judges them together). The resource counted is the GPU for a GPU sweep, the CPU
otherwise. `resources.cluster_gpus` gives the GPU count where the cluster cannot tell it (an autoscaler that
publishes nothing, a plan for a cluster that does not exist yet).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from tune.sweep import AUTO

log = logging.getLogger(__name__)
UNLIMITED = -1
"""A node group's max_count (or a resource) the autoscaler does not bound."""


@dataclass(frozen=True)
class NodeKind:
    """Nodes alike: their total resources, and how many of them the cluster has or may have."""

    resources: Mapping[str, float]
    count: int


def trials_per_node(resources: Mapping[str, float], cpu: float, gpu: float) -> int:
    """Whole trials one node holds (0 when it cannot hold one)."""
    limits = []
    if gpu > 0:
        limits.append(float(resources.get("GPU", 0.0)) / gpu)
    if cpu > 0:
        limits.append(float(resources.get("CPU", 0.0)) / cpu)
    return int(math.floor(min(limits) + 1e-9)) if limits else 0


def trial_slots(kinds: Iterable[NodeKind], cpu: float, gpu: float) -> int | None:
    """Trials the nodes hold at once; None when unbounded (an autoscaler without a maximum)."""
    total = 0
    for kind in kinds:
        per_node = trials_per_node(kind.resources, cpu, gpu)
        if per_node == 0:
            continue
        if kind.count == UNLIMITED:
            return None
        total += per_node * kind.count
    return total


def in_seed_groups(slots: int, seeds: int) -> int:
    """`slots` rounded down to a multiple of the seeds per configuration (at least 1 trial)."""
    if seeds > 1 and slots >= seeds:
        return slots - slots % seeds
    return max(1, slots)


def slots_from_gpus(gpus: int, gpu: float) -> int:
    """Trials `gpus` GPUs hold at `gpu` per trial (fractions share a GPU, as Ray packs them)."""
    return int(math.floor(gpus / gpu + 1e-9)) if gpu > 0 else 0


@dataclass(frozen=True)
class Concurrency:
    """The resolved `max_concurrent_trials` (None: no limit) and the sentence saying where it comes from."""

    trials: int | None
    reason: str


def resolve(
    setting: int | str | None,
    *,
    cpu: float,
    gpu: float,
    seeds: int,
    kinds: Iterable[NodeKind] = (),
    cluster_gpus: int | None = None,
) -> Concurrency:
    """`max_concurrent_trials` as Ray takes it. A number or None is kept; "auto" is the trials the cluster
    holds (`cluster_gpus` first, else `kinds`), in whole groups of `seeds`."""
    if setting != AUTO:
        trials = setting if isinstance(setting, int) else None
        return Concurrency(trials, "max_concurrent_trials in the sweep")
    if cluster_gpus is not None and gpu > 0:
        slots: int | None = slots_from_gpus(cluster_gpus, gpu)
        source = f"{cluster_gpus} GPUs (resources.cluster_gpus)"
    else:
        kinds = list(kinds)
        slots = trial_slots(kinds, cpu, gpu)
        unit = "GPU" if gpu > 0 else "CPU"
        have = sum(float(k.resources.get(unit, 0.0)) * k.count for k in kinds if k.count != UNLIMITED)
        source = f"{have:g} {unit}s the cluster has or can scale to"
    if slots is None:
        return Concurrency(None, "the autoscaler sets no maximum: no limit")
    if slots == 0:
        return Concurrency(None, f"no node that holds a trial is up or known ({source}); no limit: trials "
                                 "start as nodes join (set resources.cluster_gpus to bound it)")
    per_trial = f"{gpu:g} GPU" if gpu > 0 else f"{cpu:g} CPU"
    trials = in_seed_groups(slots, seeds)
    return Concurrency(trials, f"{source}, {per_trial} per trial, in groups of {seeds} seed(s)")


def cluster_node_kinds(autoscaling: bool) -> list[NodeKind]:
    """The connected cluster's live nodes, and on an autoscaling cluster the node types its autoscaler may
    add beyond them (read from the GCS; an autoscaler that publishes nothing adds nothing here)."""
    from tune.remote import alive_nodes

    live = [NodeKind(dict(node.get("Resources", {})), 1) for node in alive_nodes()]
    if not autoscaling:
        return live
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - Ray internals; without them the live nodes are what we know
        config = None
    groups = list(config.node_group_configs) if config is not None else []
    if not groups:
        return live
    # The node groups' maxima include the nodes already up (a head group counts its head).
    return [NodeKind({k: float(v) for k, v in group.resources.items()},
                     UNLIMITED if group.max_count == UNLIMITED else int(group.max_count)) for group in groups]
