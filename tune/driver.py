"""Sweep spec -> Ray Tune Tuner: pre-flight checks, construction, run and resume.

The experiment folder is Ray Tune's own layout; we add `sweep.yaml` (the validated sweep with its resolved
`metric`, `mode` and `target`) so that `resume`, `status` and the analysis need nothing but the folder.
Trial folders are named by `tune.configuration.trial_name`; what a run leaves on the nodes is cleaned by
`tune.remote`; the FAILED lines are `tune.status`'s. See docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cmda.io import clean_stale_tmp
from tune import preflight
from tune.configuration import Configuration, trial_name
from tune.experiment import (
    SWEEP_FILE,
    Experiment,
    ExperimentError,
    is_uri,
    normalize_location,
    open_experiment,
)
from tune.live_table import LiveTable
from tune.paths import FILE, TrialPath, missing_paths, resolve_sweep_paths, sweep_paths
from tune.preflight import ClusterError
from tune.remote import check_paths_where_trials_run, clean_up_after_fit, is_client_address
from tune.sweep import SweepError, SweepSpec, load_sweep, parse_sweep
from tune.trainable import TrainFn, make_trainable

# Trials resolve relative data paths against the driver's cwd: keep Ray from chdir-ing into trial folders.
TRIAL_ENV = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}
__all__ = [
    "ClusterError",
    "SweepError",
    "run_sweep",
    "resume_sweep",
    "experiment_dir",
]


def trial_name_creator(trial: Any) -> str:
    """Ray's trial (folder) name: the configuration's slug, the seed and Ray's trial id."""
    return trial_name(Configuration.from_params(trial.config), trial.config.get("seed", 0), trial.trial_id)


def connect(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> bool:
    """Start a private local Ray (address None) or join a running cluster; True when this call connected."""
    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"env_vars": dict(TRIAL_ENV)}
    os.environ.update(TRIAL_ENV)
    if address is None:
        # "local" always starts a private instance: without it ray.init() attaches to whatever Ray was
        # last started on this machine (another user's sweep, a test cluster) and dies with it.
        ray.init(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            runtime_env=runtime_env,
            include_dashboard=False,
        )
        return True
    try:
        ray.init(address=address, runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"could not connect to a Ray cluster at --address {address!r}: {exc}\n"
            "Start one first (`ray start --head`, `ray up configs/cluster/cluster.yaml`) or drop --address "
            "to run locally."
        ) from exc
    return True


def build_scheduler(spec: SweepSpec) -> Any:
    from tune.schedulers import build_scheduler as make

    s = spec.scheduler
    return make(
        s.type,
        metric=spec.metric,
        mode=spec.mode,
        time_attr=s.time_attr,
        grace_period=s.grace_period,
        max_t=s.max_t,
        reduction_factor=s.reduction_factor,
        seeds=len(spec.seeds),
        protected=() if spec.reference is None else (spec.reference.key,),
        initial_seeds=spec.seeds if spec.decide is not None else None,
        wait_at_rungs=spec.waits_at_rungs,
    )


def build_callbacks(spec: SweepSpec) -> list[Any]:
    """W&B / MLflow through Ray's own integrations; imported only when the sweep enables them."""
    callbacks: list[Any] = []
    for name, options in spec.callbacks.items():
        if importlib.util.find_spec(name) is None:
            raise ImportError(
                f"{spec.path}: field 'callbacks.{name}': enabled but the '{name}' package is not installed "
                f"(pip install {name}), or remove callbacks.{name}"
            )
        if name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            callbacks.append(WandbLoggerCallback(**{"project": spec.name, **options}))
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            callbacks.append(MLflowLoggerCallback(**{"experiment_name": spec.name, **options}))
    return callbacks


def resolve_storage(storage: str) -> str:
    """Local folders become absolute (Ray requires it); URIs (s3://, gs://, ...) pass through."""
    if is_uri(storage):
        return storage
    return str(Path(storage).expanduser().resolve())


def with_trial_resources(spec: SweepSpec, train_fn: TrainFn | None) -> Any:
    from ray import tune

    return tune.with_resources(make_trainable(train_fn), {"cpu": spec.cpu, "gpu": spec.gpu})


def run_config(spec: SweepSpec, callbacks: Sequence[Any], verbose: int) -> Any:
    """Storage: the kept checkpoints are the best `num_to_keep` by the sweep's metric plus the latest (Ray
    never deletes the latest); small files reach storage through Ray's artifact sync, from any node."""
    from ray import tune

    return tune.RunConfig(
        name=spec.name,
        storage_path=resolve_storage(spec.storage_path),
        verbose=verbose,
        callbacks=list(callbacks),
        failure_config=tune.FailureConfig(max_failures=spec.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=spec.num_to_keep,
            checkpoint_score_attribute=spec.metric,
            checkpoint_score_order=spec.mode,
        ),
        sync_config=tune.SyncConfig(sync_artifacts=True),
    )


def build_tuner(
    spec: SweepSpec,
    *,
    train_fn: TrainFn | None = None,
    extra_callbacks: Sequence[Any] = (),
    verbose: int = 0,
    live_interval_s: float = 30.0,
) -> Any:
    """The Tuner for a validated sweep (no Ray calls beyond object construction). Ray's own table is off
    (verbose 0): `LiveTable` prints variant, lambda, seed, iteration and the metric instead."""
    from ray import tune

    from tune.searchers import build_searcher

    searcher = build_searcher(spec, experiment_dir(spec))
    tune_config = tune.TuneConfig(
        metric=spec.metric,
        mode=spec.mode,
        scheduler=build_scheduler(spec),
        search_alg=searcher,
        num_samples=spec.max_trials,
        max_concurrent_trials=spec.max_concurrent_trials,
        trial_name_creator=trial_name_creator,
        trial_dirname_creator=trial_name_creator,
    )
    live = [LiveTable(spec.metric, spec.mode, interval_s=live_interval_s)] if live_interval_s > 0 else []
    callbacks = [*build_callbacks(spec), *live, *extra_callbacks]
    return tune.Tuner(
        with_trial_resources(spec, train_fn),
        param_space={},
        tune_config=tune_config,
        run_config=run_config(spec, callbacks, verbose),
    )


def experiment_dir(spec: SweepSpec) -> str:
    """Where Ray writes this sweep (a local path or a URI)."""
    return resolve_storage(spec.storage_path).rstrip("/") + "/" + spec.name


def saved_sweep(spec: SweepSpec) -> dict[str, Any]:
    """The sweep as saved in the experiment folder: the file's fields with paths made absolute, plus the
    resolved `metric`, `mode` and `target` (read by `status` and the analysis)."""
    raw = dict(spec.raw)
    raw.update(
        name=spec.name,
        base_config=str(spec.base_config),
        storage_path=resolve_storage(spec.storage_path),
        overrides=dict(spec.overrides),
        metric=spec.metric,
        mode=spec.mode,
        target=spec.target,
    )
    return raw


def save_sweep_copy(spec: SweepSpec) -> None:
    """Keep the sweep next to its results (a folder or a bucket) so `resume`, `status` and the analysis
    need only the experiment location; its overrides are the settled ones (absolute paths, tune.paths)."""
    text = yaml.safe_dump(saved_sweep(spec), sort_keys=False)
    Experiment(experiment_dir(spec)).write_text(text, SWEEP_FILE)


def settle_paths(spec: SweepSpec, address: str | None) -> tuple[SweepSpec, list[TrialPath]]:
    """Data and weight paths as every node must see them (tune.paths), joined to the overrides; plus the
    list of paths the trials read (the base config included), for the existence checks."""
    settled = resolve_sweep_paths(spec.base_config, spec.overrides, spec.path, path_map=spec.path_map,
                                  client=is_client_address(address))
    spec = dataclasses.replace(spec, overrides={**spec.overrides, **settled})
    base = TrialPath("base_config", str(spec.base_config), FILE, f"{spec.path}: field 'base_config'")
    return spec, [base, *sweep_paths(spec.base_config, spec.overrides, spec.path)]


def preflight_checks(
    spec: SweepSpec, *, validate_trainer: bool, address: str | None, num_cpus: int | None = None
) -> tuple[SweepSpec, list[TrialPath]]:
    """Everything that can be checked before Ray starts (see tune.preflight); returns the spec with its
    paths settled and the paths its trials read. A local run checks those paths here; on a cluster they are
    checked where the trials run, once connected (`check_cluster`)."""
    spec, paths = settle_paths(spec, address)
    local = not joins_cluster(address)
    if validate_trainer:
        preflight.check_trial_configs(spec)
        if local and (problems := missing_paths(paths)):
            raise SweepError("\n".join([*problems, "prepare the data (README, Data) or fix the paths; weight "
                                         "files: see pretrained/README.md, or set them to none"]))
    preflight.check_storage(spec, resolve_storage(spec.storage_path))
    if local:
        preflight.check_node_fit(spec, [preflight.local_node(num_cpus)])
    return spec, paths


def joins_cluster(address: str | None) -> bool:
    """Whether the trials run on a cluster this process joins (an address, or a Ray already initialised in
    this process, as tests and notebooks do) rather than on a local Ray this sweep starts."""
    import ray

    return address is not None or ray.is_initialized()


def check_cluster(spec: SweepSpec, address: str | None, paths: Sequence[TrialPath] = ()) -> None:
    """After joining a cluster (its nodes are only known then), before any trial is created: a trial fits
    on one node, and the paths its trials read exist on the nodes that run them (tune.remote)."""
    preflight.check_node_fit(spec, preflight.cluster_nodes(), autoscaling=preflight.autoscaling_cluster())
    for note in check_paths_where_trials_run(paths, cpu=spec.cpu, gpu=spec.gpu,
                                             client=is_client_address(address)):
        print(f"cmda-tune: note: {note}")


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    train_fn: TrainFn | None = None,
    extra_callbacks: Sequence[Any] = (),
    num_cpus: int | None = None,
    verbose: int = 0,
    resume_existing: bool = False,
    live_interval_s: float = 30.0,
) -> Any:
    """Check, connect, and run every trial; returns Ray's ResultGrid. An existing experiment folder is
    refused (or continued with `resume_existing`). `train_fn` replaces cmda.train.run in tests, which
    also skips the trainer-config and data checks (they only apply to the real trainer)."""
    exp = experiment_dir(spec)
    if preflight.experiment_exists(exp):
        if not resume_existing:
            preflight.refuse_existing(spec, exp)
        return resume_sweep(exp, address=address, train_fn=train_fn, num_cpus=num_cpus)
    joined = joins_cluster(address)
    spec, paths = preflight_checks(
        spec, validate_trainer=train_fn is None, address=address, num_cpus=num_cpus
    )
    started_ray = connect(address, num_cpus=num_cpus)
    if joined:
        check_cluster(spec, address, paths if train_fn is None else ())
    tuner = build_tuner(
        spec,
        train_fn=train_fn,
        extra_callbacks=extra_callbacks,
        verbose=verbose,
        live_interval_s=live_interval_s,
    )
    save_sweep_copy(spec)
    return _fit(tuner, spec, started_ray)


def load_experiment_sweep(path: str, sweep_file: str | Path | None = None) -> SweepSpec:
    """The sweep an experiment (folder or URI) was started from: its saved copy, or an explicit file."""
    if sweep_file is not None:
        return load_sweep(sweep_file)
    experiment = open_experiment(path)
    raw = experiment.sweep()
    if raw is None:
        raise FileNotFoundError(
            f"{experiment.where(SWEEP_FILE)}: no sweep copy in the experiment; pass the original sweep "
            "file with --sweep"
        )
    return parse_sweep(raw, Path(experiment.where(SWEEP_FILE)))


def check_restorable_state(location: str) -> None:
    """Refuse to resume from an experiment state Ray cannot read.

    Ray 2.60 rewrites `experiment_state-*.json` in place while its background sync may be uploading the
    previous version, so a driver killed at that moment can leave the file empty or cut short in storage.
    `Tuner.restore` then does not fail: it silently starts a new experiment with one empty trial. The trials'
    own folders (results, checkpoints) are intact; only the experiment state is lost.
    """
    experiment = open_experiment(location)
    try:
        state = experiment.state()
    except ExperimentError as error:
        raise ExperimentError(
            f"{error}. Ray cannot resume from it (the driver died while Ray was saving it); the trials' "
            f"results and checkpoints are intact (`cmda-tune status {location}` reads them); to finish the "
            "study, run the sweep again under a new name (its trials start over)."
        ) from error
    if state is None:
        raise ExperimentError(f"{location}: no experiment_state-*.json yet; Ray has nothing to resume from")


def resume_sweep(
    path: str | Path,
    *,
    address: str | None = None,
    train_fn: TrainFn | None = None,
    sweep_file: str | Path | None = None,
    num_cpus: int | None = None,
    restart_errored: bool = False,
) -> Any:
    """Finish an interrupted sweep: unfinished trials continue from their last checkpoint, finished ones
    are kept; errored ones continue from their checkpoint, or start over with `restart_errored`."""
    from ray import tune

    path_text = normalize_location(path)
    if not tune.Tuner.can_restore(path_text):
        raise FileNotFoundError(f"{path_text}: not a Ray Tune experiment folder (no tuner.pkl)")
    check_restorable_state(path_text)
    spec = load_experiment_sweep(path_text, sweep_file)
    if not is_uri(path_text):
        clean_stale_tmp(path_text)
    joined = joins_cluster(address)
    if not joined:
        preflight.check_node_fit(spec, [preflight.local_node(num_cpus)])
    started_ray = connect(address, num_cpus=num_cpus)
    if joined:
        check_cluster(spec, address)
    tuner = tune.Tuner.restore(
        path_text,
        trainable=with_trial_resources(spec, train_fn),
        resume_errored=not restart_errored,
        restart_errored=restart_errored,
    )
    return _fit(tuner, spec, started_ray)


def _fit(tuner: Any, spec: SweepSpec, started_ray: bool) -> Any:
    started = time.time()
    try:
        return tuner.fit()
    finally:
        clean_up_after_fit(spec.name, Experiment(experiment_dir(spec)).root, since=started)
        if started_ray:
            import ray

            ray.shutdown()
