"""Checks that run before Ray starts, so that a sweep that cannot succeed fails in seconds, not per trial.

- every trial's trainer config passes the trainer's own validation (`cmda.config.config_from_dict`, what
  `cmda train` runs), with the trial's variant, lambdas, seed and search-space setting in place (each
  search-space key and value is checked on its own first, `check_space`);
- the data roots and weight files those configs name exist (`tune.paths`, called from `tune.driver`);
- the storage path can be written;
- the experiment folder is new (an existing one is continued with `cmda-tune resume`, never overwritten);
- each trial's resources fit on ONE node (a trial cannot span nodes); on an autoscaling cluster a request no
  current node fits is a warning naming the autoscaler, since it may start such a node on demand.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tune.configuration import BASELINE_VARIANT, Configuration, trial_label
from tune.experiment import ExperimentError, is_uri
from tune.paths import FILE, TrialPath, missing_paths, resolve_sweep_paths, sweep_paths
from tune.remote import alive_nodes, data_problems, fits
from tune.sweep import ASHA_TYPES, GridSearch, SweepError, SweepSpec, make_configuration

log = logging.getLogger(__name__)
# What Ray itself puts into a new experiment folder before anything else (its storage probe).
RAY_STORAGE_MARKER = ".validate_storage_marker"


class ClusterError(RuntimeError):
    """No cluster to connect to, or one that cannot host the sweep's trials."""


def representative_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial of a grid; for Optuna, each variant at both ends of its lambda-scale range on every seed
    (the configurations it samples lie in between and change nothing but the lambdas' values)."""
    if isinstance(spec.search, GridSearch):
        return spec.grid_trials()
    trials = []
    for variant in spec.search.variants:
        rng = spec.search.ranges.get(variant)
        scales = [None] if variant == BASELINE_VARIANT or rng is None else [rng.low, rng.high]
        for scale in scales:
            configuration = make_configuration(variant, scale, None)
            trials.extend(spec.trial_params(configuration, seed) for seed in spec.seeds)
    return trials


def check_trial_configs(spec: SweepSpec) -> list[dict[str, Any]]:
    """The resolved trainer config of every trial, each validated as `cmda train` validates its config."""
    from cmda.config import config_from_dict
    from tune.trainable import resolve_trial_config

    check_space(spec)  # each search-space key and value on its own first: the error names search.space.<key>
    configs = []
    source = f"{spec.base_config} with the overrides of {spec.path}"
    for params in representative_trials(spec):
        resolved = resolve_trial_config(params)
        try:
            config_from_dict(resolved, source)
        except ValueError as exc:
            raise SweepError(
                f"{spec.path}: trial {trial_label(Configuration.from_params(params), params['seed'])}: "
                f"the trainer rejects its config: {exc}"
            ) from None
        configs.append(resolved)
    return configs


def check_space(spec: SweepSpec) -> None:
    """The search space's keys and values against the trainer's schema (tune.space.check_against_trainer),
    on the config of the sweep's first trial: a bad key, a value out of range or of the wrong type is a
    SweepError naming `search.space.<key>`."""
    from cmda.overrides import load_with_overrides
    from tune.space import check_against_trainer
    from tune.trainable import trainer_overrides

    space = spec.search.space
    if not space.entries:
        return
    first = representative_trials(spec)[0]
    trial = {k: v for k, v in trainer_overrides(first).items() if k not in space.keys}
    template = load_with_overrides(spec.base_config, dict(spec.overrides))

    def fail(where: str, message: str) -> SweepError:
        return SweepError(f"{spec.path}: field '{where}': {message}")

    check_against_trainer(space, template, trial, fail)


def settle_paths(spec: SweepSpec, client: bool = False) -> tuple[SweepSpec, list[TrialPath]]:
    """Data and weight paths as every node must see them (tune.paths), joined to the overrides; plus the
    list of paths the trials read (the base config included), for the existence checks."""
    settled = resolve_sweep_paths(spec.base_config, spec.overrides, spec.path, path_map=spec.path_map,
                                  client=client)
    spec = dataclasses.replace(spec, overrides={**spec.overrides, **settled})
    base = TrialPath("base_config", str(spec.base_config), FILE, f"{spec.path}: field 'base_config'")
    return spec, [base, *sweep_paths(spec.base_config, spec.overrides, spec.path)]


def misaligned_rungs(spec: SweepSpec) -> list[str]:
    """A rung that is no multiple of train.eval_interval is judged at the next evaluation: the scheduler
    then decides later than its ladder says (and per-trial ASHA no longer matches Ray's ASHA)."""
    ladder = spec.scheduler.ladder if spec.scheduler.type in ASHA_TYPES else None
    late = ladder.misaligned(spec.eval_interval) if ladder is not None else ()
    if not late:
        return []
    shown = ", ".join(f"{m:g}" for m in late)
    return [f"{spec.path}: field 'scheduler': rung(s) at iteration {shown} are no multiple of "
            f"train.eval_interval={spec.eval_interval}; each is judged at the evaluation after it. Choose "
            f"grace_period and reduction_factor so that every rung is a multiple of {spec.eval_interval}."]


def sweep_warnings(spec: SweepSpec, configs: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """What `sweep` would refuse or warn about, for `plan` (which never refuses them: the plan is often made
    on a machine without the data): missing data and weights, bad data, unwritable storage, late rungs."""
    problems = list(misaligned_rungs(spec))
    settled, paths = settle_paths(spec)
    missing = missing_paths(paths)
    problems.extend(missing)
    if not missing:
        problems.extend(data_problems(configs))
    if not is_uri(spec.storage_path):  # a bucket is reached from the cluster, often not from here
        problems.extend(unwritable_storage(spec))
    return problems


def unwritable_storage(spec: SweepSpec) -> list[str]:
    """Whether `sweep` could create and write the storage folder, judged without creating anything (a plan
    must leave no folder behind): the nearest existing folder on its path must be a writable folder."""
    path = Path(spec.storage_path).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return []
    why = "is not a folder" if not existing.is_dir() else "is not writable"
    return [f"{spec.path}: field 'storage_path': cannot write to {spec.storage_path!r}: {existing} {why}"]


def check_storage(spec: SweepSpec, storage: str) -> None:
    """Create the storage folder (local or URI) and write and delete a probe file in it."""
    import pyarrow.fs

    try:
        if is_uri(storage):
            fs, root = pyarrow.fs.FileSystem.from_uri(storage)
        else:
            fs, root = pyarrow.fs.LocalFileSystem(), str(Path(storage).expanduser().resolve())
        fs.create_dir(root, recursive=True)
        probe = f"{root.rstrip('/')}/.cmda_write_probe_{uuid.uuid4().hex}"
        with fs.open_output_stream(probe) as handle:
            handle.write(b"ok")
        fs.delete_file(probe)
    except Exception as exc:  # noqa: BLE001 - any failure means trials could not save anything
        raise SweepError(f"{spec.path}: field 'storage_path': cannot write to {storage!r}: {exc}") from None


STORAGE_PROBE = ".cmda_storage_probe_"


@contextlib.contextmanager
def storage_probe(spec: SweepSpec, storage: str) -> Iterator[list[TrialPath]]:
    """A file the driver writes into a local (shared) storage folder, as a path every node that runs trials
    must see: a node without the shared mount would write its checkpoints to its own disk without a word.
    Nothing for a bucket (every node reaches it the same way). The file goes when the check is done."""
    if is_uri(storage):
        yield []
        return
    probe = Path(storage).expanduser() / f"{STORAGE_PROBE}{uuid.uuid4().hex}"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("written by the driver: the nodes that run trials must see it\n")
    origin = (f"{spec.path}: field 'storage_path' (the folder every node must share: a file the driver "
              "wrote there is not visible on this node; mount the shared volume at the same path, or use a "
              "bucket URI)")
    try:
        yield [TrialPath("storage_path", str(probe), FILE, origin)]
    finally:
        probe.unlink(missing_ok=True)


def experiment_exists(experiment_dir: str) -> bool:
    """Whether a folder (local or URI) already holds anything besides Ray's storage probe."""
    import pyarrow.fs

    try:
        if is_uri(experiment_dir):
            fs, path = pyarrow.fs.FileSystem.from_uri(experiment_dir)
        else:
            fs, path = pyarrow.fs.LocalFileSystem(), experiment_dir
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    except (OSError, ValueError) as error:  # an endpoint that cannot be reached, a bad URI
        raise ExperimentError(f"{experiment_dir}: cannot reach the storage (storage_path): {error}") from None
    return any(Path(info.path).name != RAY_STORAGE_MARKER for info in infos)


def refuse_existing(spec: SweepSpec, experiment_dir: str) -> None:
    if experiment_exists(experiment_dir):
        raise SweepError(
            f"{spec.path}: field 'name': the experiment folder {experiment_dir} already exists; continue it "
            f"with `cmda-tune resume {experiment_dir}` (or `cmda-tune sweep --resume`), or choose another "
            f"--name / --storage. Writing a second sweep into it would count its seeds twice."
        )


def local_node(num_cpus: float | None = None, num_gpus: float | None = None) -> dict[str, float]:
    """What the local Ray this process would start offers (Ray counts cores and visible GPUs the same way)."""
    if num_gpus is None:
        try:
            import torch

            num_gpus = torch.cuda.device_count()
        except Exception:  # noqa: BLE001 - no usable CUDA means no GPUs for Ray either
            num_gpus = 0
    return {"CPU": float(num_cpus if num_cpus is not None else os.cpu_count() or 1), "GPU": float(num_gpus)}


def check_node_fit(
    spec: SweepSpec, nodes: Sequence[Mapping[str, float]], *, autoscaling: bool = False, joined: bool = False
) -> str | None:
    """Raise ClusterError when no node can hold one trial; on an autoscaling cluster return a warning."""
    if any(fits(node, spec.cpu, spec.gpu) for node in nodes):
        return None
    have = ", ".join(f"{{CPU: {n.get('CPU', 0):g}, GPU: {n.get('GPU', 0):g}}}" for n in nodes) or "no nodes"
    message = (
        f"{spec.path}: field 'resources': each trial asks for {{cpu: {spec.cpu:g}, gpu: {spec.gpu:g}}} "
        f"on one node, but no node has that (nodes: {have})"
    )
    if autoscaling:
        warning = (
            f"{message}. The cluster autoscaler has to start a node of a type that fits (check the "
            f"node types and max_workers of your cluster config); trials stay PENDING until it does."
        )
        log.warning(warning)
        return warning
    fix = " set resources.gpu: 0 to train on CPU or" if spec.gpu > 0 else ""
    scaling = (" If the cluster starts nodes on demand (an autoscaler not recognised here), say so with "
               "resources.autoscaling: true.") if joined else ""
    raise ClusterError(
        f"{message};{fix} lower resources.cpu, or connect to a cluster that fits (--address).{scaling}")


def cluster_nodes() -> list[dict[str, float]]:
    """Resources of the alive nodes of the connected Ray cluster."""
    return [dict(node["Resources"]) for node in alive_nodes()]


KUBERAY_ENV = "RAY_USAGE_STATS_KUBERAY_IN_USE"
"""Set by the KubeRay operator in every pod of a RayCluster (Ray reads it for its usage stats)."""


def autoscaling_cluster(declared: bool = False) -> bool:
    """Whether the connected cluster adds nodes by itself, so that a trial no node fits yet waits for one:
    `resources.autoscaling: true` in the sweep (`declared`), a KubeRay pod (its operator creates the worker
    pods after the head, and its autoscaler scales GPU groups from zero), the Ray cluster launcher's bootstrap
    file, or an autoscaler that published its node types to the GCS. The last two are Ray internals that may
    change; the sweep's flag is the explicit answer."""
    if declared or os.environ.get(KUBERAY_ENV):
        return True
    if Path("~/ray_bootstrap_config.yaml").expanduser().exists():
        return True
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        return bool(config is not None and config.node_group_configs)
    except Exception:  # noqa: BLE001 - unknown means "not autoscaling": the strict answer
        return False
