"""Sweep spec -> Ray Tune Tuner: pre-flight checks, construction, run and resume.

The experiment folder is Ray Tune's own layout; we add `sweep.yaml` (the validated sweep with its resolved
`metric`, `mode` and `target`) so that `resume`, `status` and the analysis need nothing but the folder.
Trial folders are named by `tune.configuration.trial_name`; what a run leaves on the nodes is cleaned by
`tune.remote`; the FAILED lines are `tune.status`'s. See docs/ARCHITECTURE.md (tune).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from cmda.io import clean_stale_tmp
from tune import preflight
from tune.callbacks import check_callbacks, result_loggers, tracking_callbacks, without_ray_event_files
from tune.configuration import Configuration, trial_name
from tune.experiment import (
    DRIVER_FILE,
    SWEEP_FILE,
    Experiment,
    ExperimentError,
    is_uri,
    normalize_location,
    open_experiment,
)
from tune.failures import FailureRecorder, forget, known_failures
from tune.live_table import LiveTable
from tune.paths import TrialPath, missing_paths
from tune.preflight import ClusterError
from tune.remote import (
    check_paths_where_trials_run,
    clean_everywhere,
    clean_up_after_fit,
    data_problems,
    is_client_address,
)
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
    """Ray's JSON/CSV result loggers (not its TBX logger: TensorBoard is the trainer's), then W&B / MLflow
    through Ray's own integrations when the sweep enables them (tune.callbacks)."""
    return [*result_loggers(), *tracking_callbacks(spec, experiment_dir(spec))]


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
    (verbose 0): `LiveTable` prints the sweep's progress instead (tune.watch)."""
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
    live = [live_table(spec, live_interval_s)] if live_interval_s > 0 else []
    record = FailureRecorder(experiment_dir(spec))
    callbacks = [*build_callbacks(spec), *live, record, *extra_callbacks]
    return tune.Tuner(
        with_trial_resources(spec, train_fn),
        param_space={},
        tune_config=tune_config,
        run_config=run_config(spec, callbacks, verbose),
    )


def live_table(spec: SweepSpec, interval_s: float) -> LiveTable:
    """The live table with the sweep's N, rungs and expected share of the budget (tune.plan's rules)."""
    from tune.plan import decision_points, expected_iterations_per_trial

    upper = spec.max_trials if spec.decide is not None else None
    return LiveTable(spec.metric, spec.mode, interval_s=interval_s, total=spec.search.num_trials, upper=upper,
                     rungs=decision_points(spec), max_iters=spec.max_iters,
                     expected_share=expected_iterations_per_trial(spec) / spec.max_iters,
                     experiment=spec.name)


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


@dataclasses.dataclass(frozen=True)
class Checked:
    """What the pre-flight settled: the spec with its paths made absolute, the paths its trials read and
    their resolved trainer configs (empty for a stand-in trainer), for the checks where the trials run."""

    spec: SweepSpec
    paths: list[TrialPath]
    configs: list[dict[str, Any]]


def preflight_checks(
    spec: SweepSpec, *, validate_trainer: bool, address: str | None, num_cpus: int | None = None
) -> Checked:
    """Everything that can be checked before Ray starts (see tune.preflight). A local run checks the paths
    and the data here; a cluster checks them where the trials run, once connected (`check_cluster`)."""
    check_callbacks(spec)  # W&B / MLflow settings first: they take no time
    spec, paths = preflight.settle_paths(spec, client=is_client_address(address))
    local = not joins_cluster(address)
    configs: list[dict[str, Any]] = []
    if validate_trainer:
        configs = preflight.check_trial_configs(spec)
        if local and (problems := missing_paths(paths) or data_problems(configs)):
            raise SweepError("\n".join([*problems, "prepare the data (README, Data) or fix the paths; weight "
                                         "files: see pretrained/README.md, or set them to none"]))
    preflight.check_storage(spec, resolve_storage(spec.storage_path))
    if local:
        preflight.check_node_fit(spec, [preflight.local_node(num_cpus)])
    for warning in preflight.misaligned_rungs(spec):
        print(f"cmda-tune: warning: {warning}")
    return Checked(spec, paths, configs)


def joins_cluster(address: str | None) -> bool:
    """Whether the trials run on a cluster this process joins (an address, or a Ray already initialised in
    this process, as tests and notebooks do) rather than on a local Ray this sweep starts."""
    import ray

    return address is not None or ray.is_initialized()


def check_cluster(spec: SweepSpec, address: str | None, checked: Checked | None = None) -> None:
    """After joining a cluster (its nodes are only known then), before any trial is created: a trial fits
    on one node, the shared storage and the paths and data its trials read are there on the nodes that run
    them (tune.remote)."""
    autoscaling = preflight.autoscaling_cluster(spec.autoscaling)
    preflight.check_node_fit(spec, preflight.cluster_nodes(), autoscaling=autoscaling, joined=True)
    paths, configs = (checked.paths, checked.configs) if checked is not None else ([], [])
    with preflight.storage_probe(spec, resolve_storage(spec.storage_path)) as probe:
        for note in check_paths_where_trials_run([*probe, *paths], cpu=spec.cpu, gpu=spec.gpu,
                                                 client=is_client_address(address), configs=configs):
            print(f"cmda-tune: note: {note}")


def settle_concurrency(spec: SweepSpec, *, autoscaling: bool) -> SweepSpec:
    """`max_concurrent_trials: auto` as the number of trials the connected cluster holds (tune.capacity)."""
    from tune import capacity

    if spec.max_concurrent_trials != capacity.AUTO:
        return spec
    resolved = capacity.resolve(
        spec.max_concurrent_trials, cpu=spec.cpu, gpu=spec.gpu, seeds=len(spec.seeds),
        kinds=capacity.cluster_node_kinds(autoscaling), cluster_gpus=spec.cluster_gpus)
    limit = "no limit on" if resolved.trials is None else f"up to {resolved.trials}"
    print(f"cmda-tune: max_concurrent_trials: auto: {limit} trials at once ({resolved.reason})")
    seeds = len(spec.seeds)
    if spec.decide is not None and resolved.trials is not None and resolved.trials < seeds:
        raise SweepError(f"{spec.path}: field 'max_concurrent_trials': auto gives {resolved.trials} trial(s) "
                         f"at once here, and decide: runs a configuration's {seeds} seeds together; use a "
                         f"cluster with at least {seeds} trial slots or fewer seeds")
    return dataclasses.replace(spec, max_concurrent_trials=resolved.trials)


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
    checked = preflight_checks(spec, validate_trainer=train_fn is None, address=address, num_cpus=num_cpus)
    spec = checked.spec
    started_ray = connect(address, num_cpus=num_cpus)
    if joined:
        check_cluster(spec, address, checked if train_fn is None else None)
    spec = settle_concurrency(spec, autoscaling=joined and preflight.autoscaling_cluster(spec.autoscaling))
    tuner = build_tuner(
        spec,
        train_fn=train_fn,
        extra_callbacks=extra_callbacks,
        verbose=verbose,
        live_interval_s=live_interval_s,
    )
    save_sweep_copy(spec)
    return _fit(tuner, spec, started_ray, experiment_dir(spec))


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


def what_trials_train(spec: SweepSpec) -> dict[str, Any]:
    """The settings a resumed sweep must keep: every trainer config key (base config + overrides, paths
    aside: they may be mapped differently on a new cluster), the search and the scheduler."""
    from cmda.checkpoint import flatten
    from cmda.overrides import load_with_overrides
    from tune.paths import PATH_KEYS

    template = load_with_overrides(spec.base_config, dict(spec.overrides))
    settings = {key: value for key, value in flatten(template).items() if key not in PATH_KEYS}
    settings.update(search=spec.raw.get("search"), scheduler=spec.raw.get("scheduler"))
    return settings


def refuse_changed_sweep(location: str, given: SweepSpec) -> None:
    """`resume --sweep FILE` continues the experiment's trials; a FILE that trains something else (another
    train.max_iters, search or scheduler) would mix two sweeps in one experiment, so it is refused, as
    `cmda train --resume` refuses a changed config."""
    experiment = open_experiment(location)
    raw = experiment.sweep()
    if raw is None:
        return
    try:
        saved = what_trials_train(parse_sweep(raw, Path(experiment.where(SWEEP_FILE))))
    except (SweepError, OSError, ValueError):  # the saved copy's base config is not here: nothing to compare
        return
    changed = what_trials_train(given)
    keys = sorted(k for k in saved.keys() | changed.keys() if saved.get(k) != changed.get(k))
    if keys:
        shown = "; ".join(f"{k}: {saved.get(k)!r} -> {changed.get(k)!r}" for k in keys[:8])
        more = f" (and {len(keys) - 8} more)" if len(keys) > 8 else ""
        raise SweepError(
            f"{given.path}: differs from the sweep this experiment ran ({experiment.where(SWEEP_FILE)}): "
            f"{shown}{more}. A resume continues the trials it started; run the changed sweep as a new "
            "experiment (`cmda-tune sweep FILE --name NEW`), or resume without --sweep.")


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
    if sweep_file is not None:
        refuse_changed_sweep(path_text, spec)
    if not is_uri(path_text):
        clean_stale_tmp(path_text)
    joined = joins_cluster(address)
    if not joined:
        preflight.check_node_fit(spec, [preflight.local_node(num_cpus)])
    started_ray = connect(address, num_cpus=num_cpus)
    if joined:
        check_cluster(spec, address)
    # What a killed driver's run left on the nodes: the trials' scratch and Ray's staging (the restored
    # trials start from their checkpoints in storage, in a staging folder of this session).
    remove_leftovers(path_text)
    errored = errored_trials(path_text, restart_errored)
    tuner = tune.Tuner.restore(
        path_text,
        trainable=with_trial_resources(spec, train_fn),
        resume_errored=bool(errored) and not restart_errored,
        restart_errored=restart_errored,
    )
    try:
        return _fit(tuner, spec, started_ray, path_text)
    finally:
        if restart_errored:  # Ray's restore re-creates the old trials' folders, empty: remove them again
            experiment = open_experiment(path_text)
            for name in errored:
                experiment.remove(name)


def remove_leftovers(location: str) -> None:
    """`cmda-tune clean` on every node before a resume: nothing of this experiment runs yet, so whatever
    scratch and staging it has there was left by an earlier, killed driver. Problems are warnings."""
    experiment = open_experiment(location)
    name = experiment.location.rstrip("/").rsplit("/", 1)[-1]  # Ray names its staging after the folder
    try:
        removed, notes = clean_everywhere(experiment.root, name)
    except Exception as error:  # noqa: BLE001 - a leftover must not stop the resume itself
        removed, notes = [], [str(error)]
    if removed:
        print(f"cmda-tune: removed what an earlier (killed) run left on the nodes: {len(removed)} folder(s)")
    for note in notes:
        print(f"cmda-tune: warning: removing an earlier run's scratch and staging: {note}")


def errored_trials(location: str, restart: bool) -> list[str]:
    """Which errored trials the restore reruns. Without `restart`: those whose failure a rerun may fix (not
    recorded as deterministic: tune.failures), continued from their checkpoints; Ray's restore reruns all
    errored trials or none, so with a deterministic failure among them none is rerun (a note says which).
    With `restart`: every errored trial, started over in place: its old folder is removed first (Ray gives
    the restarted trial a new id, hence a new folder), so each seed keeps one folder, and it leaves the
    record."""
    experiment = open_experiment(location)
    trials = [t for t in experiment.trials() if t.status == "ERROR"]
    known = known_failures(experiment)
    if restart:
        for trial in trials:
            experiment.remove(trial.dirname)
        forget(experiment, [t.trial_id for t in trials])
        return [t.dirname for t in trials]
    rerun = [t for t in trials if t.trial_id not in known]
    kept = [t for t in trials if t.trial_id in known]
    for trial in kept:
        print(f"cmda-tune: not rerun: {trial.dirname} failed deterministically "
              f"({known[trial.trial_id].get('error', '')}); `cmda-tune resume --restart-errored` reruns it")
    if rerun and kept:
        print(f"cmda-tune: note: {len(rerun)} errored trial(s) could be rerun but are kept with the failed "
              "ones (Ray reruns all errored trials or none); rerun them with --restart-errored")
        return []
    return [t.dirname for t in rerun]


def _fit(tuner: Any, spec: SweepSpec, started_ray: bool, location: str) -> Any:
    started = time.time()
    experiment = Experiment(location)
    driver = {"host": socket.gethostname(), "pid": os.getpid(), "started": started}
    experiment.write_text(json.dumps(driver) + "\n", DRIVER_FILE)  # `status` tells a killed driver by it
    try:
        with without_ray_event_files(tuner):
            return tuner.fit()
    finally:
        experiment.remove_file(DRIVER_FILE)
        clean_up_after_fit(spec.name, experiment.root, since=started)
        if started_ray:
            import ray

            ray.shutdown()
