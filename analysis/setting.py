"""What an experiment measured and how: headline metric, target, backbone, budget and scheduler rungs.

Everything is read from the experiment itself (its `sweep.yaml` copy first, then a trial's
`resolved_config.yaml`), so a Dark Zurich sweep is headlined by its own metric without a flag, and the
published CMDA number is drawn only next to the setting it was measured in. The rungs are the scheduler's
own (`tune.configuration.Ladder`). See docs/ARCHITECTURE.md (analysis).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cmda.data.targets import DEFAULT_TARGET, UnknownTargetError, get_target
from cmda.io import parse_yaml
from cmda.overrides import dotted_get
from tune.configuration import ITERATION, Ladder
from tune.experiment import Experiment, ExperimentError, TrialRecord, saved_ranking
from tune.sweep import ASHA_TYPES, SchedulerSpec
from tune.trainable import RESOLVED_CONFIG_NAME


@dataclass(frozen=True)
class Reference:
    """A published number and the exact setting it belongs to."""

    value: float
    metric: str
    target: str
    backbone: str
    max_iters: int
    label: str


PUBLISHED_CMDA = Reference(value=60.05, metric="miou18", target="dsec_night", backbone="mit_b5",
                           max_iters=40000, label="published CMDA (ICCV 2023, MiT-B5, 40k iterations)")


@dataclass(frozen=True)
class Setting:
    """The experiment's measurement setting; `notes` say where something had to be assumed."""

    metric: str
    mode: str = "max"
    target: str = DEFAULT_TARGET
    backbone: str | None = None
    max_iters: int | None = None
    scheduler: str = "unknown"
    rungs: tuple[int, ...] = ()
    """The iterations at which the scheduler decided (its first evaluation at or after each milestone)."""
    gpus_per_trial: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def metric_label(self) -> str:
        """How people write the metric: miou18 -> mIoU18."""
        return self.metric.replace("miou", "mIoU", 1) if self.metric.startswith("miou") else self.metric

    @property
    def reference(self) -> Reference | None:
        """The published CMDA number, only when this experiment is exactly its setting."""
        ref = PUBLISHED_CMDA
        same = (self.metric, self.target, self.backbone, self.max_iters) == (
            ref.metric, ref.target, ref.backbone, ref.max_iters)
        return ref if same else None

    @property
    def classes(self) -> tuple[int, ...] | None:
        """The trainIds the headline metric averages over (None when the target does not define it)."""
        try:
            return get_target(self.target).metrics.get(self.metric)
        except UnknownTargetError:
            return None


def scheduler_rungs(scheduler: Mapping[str, Any], max_iters: float | None,
                    eval_interval: float | None) -> tuple[int, ...]:
    """The iterations at which the sweep's scheduler (its `sweep.yaml` section) decides; () when it does
    not decide on iterations. Without a known evaluation interval, every iteration is assumed evaluated."""
    if scheduler.get("type") not in ASHA_TYPES or scheduler.get("time_attr", ITERATION) != ITERATION:
        return ()
    grace = _number(scheduler.get("grace_period")) or float(SchedulerSpec.grace_period)
    rf = _number(scheduler.get("reduction_factor")) or float(SchedulerSpec.reduction_factor)
    max_t = _number(scheduler.get("max_t")) or max_iters
    if max_t is None:
        return ()
    try:
        ladder = Ladder(grace, rf, max_t)
    except ValueError:
        return ()
    return ladder.decision_points(int(eval_interval or 1), int(max_iters or math.ceil(max_t)))


def _target_name(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("name")
    return str(value) if value else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def read_resolved_config(experiment: Experiment, trials: Sequence[TrialRecord],
                         baseline: str) -> tuple[str, str] | None:
    """(trial folder, text) of the first trial's resolved trainer config, a baseline trial preferred."""
    ordered = sorted(trials, key=lambda t: (t.params.get("ablation", {}).get("variant") != baseline,
                                            t.dirname))
    for trial in ordered:
        if trial.started and experiment.is_file(trial.dirname, RESOLVED_CONFIG_NAME):
            return trial.dirname, experiment.read_text(trial.dirname, RESOLVED_CONFIG_NAME)
    return None


def experiment_setting(experiment: Experiment, sweep: Mapping[str, Any] | None,
                       resolved: tuple[str, str] | None, trials: Sequence[TrialRecord],
                       gpus: float) -> Setting:
    """One experiment's setting from its sweep copy, a resolved trainer config and the trials' reports."""
    notes: list[str] = []
    config = None
    if resolved is not None:
        where = experiment.where(resolved[0], RESOLVED_CONFIG_NAME)
        try:
            config = parse_yaml(resolved[1], where)
        except Exception as error:  # noqa: BLE001 - a corrupt copy is reported, the analysis goes on
            notes.append(f"{where}: unreadable ({error}); the target and backbone are assumed")
    scheduler = dotted_get(sweep, "scheduler") if isinstance(dotted_get(sweep, "scheduler"), Mapping) else {}
    metric, mode = saved_ranking(sweep)

    target = _target_name(dotted_get(sweep, "target")) or _target_name(dotted_get(config, "data.target"))
    if target is None:
        target = DEFAULT_TARGET
        notes.append(f"neither sweep.yaml nor a resolved trainer config names the target: assuming "
                     f"{DEFAULT_TARGET!r}, the trainer's default")
    if not metric:
        try:
            metric = get_target(target).headline_metric
        except UnknownTargetError as error:
            raise ExperimentError(f"{experiment.location}: no metric in sweep.yaml and {error}") from None

    backbones = [t.params.get("backbone") for t in trials if t.params.get("backbone")]
    backbone = max(set(backbones), key=backbones.count) if backbones else dotted_get(config, "model.backbone")
    reported = [t.max_iters for t in trials if t.max_iters is not None]
    max_iters = max(reported) if reported else _number(dotted_get(config, "train.max_iters"))
    kind = str(scheduler.get("type", "none" if sweep is not None else "unknown"))
    rungs = scheduler_rungs(scheduler, max_iters, _number(dotted_get(config, "train.eval_interval")))
    resources = dotted_get(sweep, "resources")
    gpu = _number(resources.get("gpu")) if isinstance(resources, Mapping) else None
    return Setting(metric=str(metric), mode=mode, target=target, backbone=backbone,
                   max_iters=int(max_iters) if max_iters else None, scheduler=kind, rungs=rungs,
                   gpus_per_trial=gpu if gpu is not None else gpus, notes=tuple(notes))


def merge_settings(settings: Sequence[tuple[str, Setting]]) -> Setting:
    """Several experiments analysed together must measure the same thing on the same target."""
    (first_location, first), *rest = settings
    for location, other in rest:
        for name in ("metric", "target", "mode"):
            if getattr(other, name) != getattr(first, name):
                raise ExperimentError(
                    f"{location}: {name} is {getattr(other, name)!r} but {first_location} uses "
                    f"{getattr(first, name)!r}; analyse experiments of different settings separately")
    notes = tuple(dict.fromkeys(n for _, s in settings for n in s.notes))
    max_iters = max((s.max_iters for _, s in settings if s.max_iters), default=None)
    return Setting(metric=first.metric, mode=first.mode, target=first.target, backbone=first.backbone,
                   max_iters=max_iters, scheduler=first.scheduler, rungs=first.rungs,
                   gpus_per_trial=first.gpus_per_trial, notes=notes)
