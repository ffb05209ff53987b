"""A sweep without training: simulated trials driven through a real scheduler object the way Ray drives it.

Used by the scheduler tests (each case of `tune.schedulers` with fake trials and no cluster) and by
`benchmarks/scheduler_simulation.py` (the study's shape: how much of the full budget early stopping spends,
per trial and per configuration, in Ray's grid order and in configuration-major order).

`SimController` implements the part of Ray's TuneController a scheduler may call (`get_trials`,
`stop_trial`, `_set_trial_status`, `search_alg`) with Ray's semantics: stopping a RUNNING trial calls the
scheduler's `on_trial_complete`, a PENDING or PAUSED one `on_trial_remove`; PAUSE parks a trial. `run_sweep`
plays a whole sweep: at most `concurrency` trials are live (running or paused, as Ray's concurrency limit
counts them), pending and paused trials (re)start in the scheduler's choice order, every trial advances at
its own speed and reports its metric every `eval_interval` iterations.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers.trial_scheduler import TrialScheduler

from tune.configuration import ITERATION, MAX_ITERS


@dataclass
class _Metadata:
    last_result: dict[str, Any] = field(default_factory=dict)
    num_failures: int = 0


@dataclass(eq=False)
class SimTrial:
    """The attributes of ray.tune.experiment.Trial that schedulers read."""

    trial_id: str
    config: dict[str, Any]
    status: str = Trial.PENDING
    run_metadata: _Metadata = field(default_factory=_Metadata)
    error_file: str | None = None
    storage: Any = None

    @property
    def last_result(self) -> dict[str, Any]:
        return self.run_metadata.last_result

    def __str__(self) -> str:
        return self.trial_id


class _SearchAlg:
    def __init__(self) -> None:
        self.completed: list[tuple[str, bool]] = []

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.completed.append((trial_id, error))


class SimController:
    """The scheduler-facing part of Ray's TuneController, for simulated trials."""

    def __init__(self, scheduler: TrialScheduler) -> None:
        self.scheduler = scheduler
        self.trials: list[SimTrial] = []
        self.search_alg = _SearchAlg()
        self.stopped_by_scheduler: list[str] = []

    def get_trials(self) -> list[SimTrial]:
        return list(self.trials)

    def get_live_trials(self) -> set[SimTrial]:
        return {t for t in self.trials if t.status in (Trial.PENDING, Trial.RUNNING, Trial.PAUSED)}

    def _set_trial_status(self, trial: SimTrial, status: str) -> None:
        trial.status = status

    def add(self, trial: SimTrial) -> SimTrial:
        if trial not in self.trials:
            self.trials.append(trial)
        self.scheduler.on_trial_add(self, trial)
        return trial

    def stop_trial(self, trial: SimTrial) -> None:
        if trial.status in (Trial.ERROR, Trial.TERMINATED):
            return
        if trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, dict(trial.last_result))
        else:
            self.scheduler.on_trial_remove(self, trial)
        trial.status = Trial.TERMINATED
        self.stopped_by_scheduler.append(trial.trial_id)

    def report(self, trial: SimTrial, result: Mapping[str, Any]) -> str:
        """One result, as Ray processes it: the scheduler decides; STOP ends the trial."""
        trial.status = Trial.RUNNING
        trial.run_metadata.last_result = dict(result)
        decision = self.scheduler.on_trial_result(self, trial, dict(result))
        if decision == TrialScheduler.STOP:
            self.stop_trial(trial)
        elif decision == TrialScheduler.PAUSE:
            trial.status = Trial.PAUSED  # Ray saves its checkpoint; it resumes from there when chosen
        return decision

    def finish(self, trial: SimTrial) -> None:
        """The trial's function returned (it reached max_iters)."""
        if trial.status == Trial.RUNNING:
            self.scheduler.on_trial_complete(self, trial, dict(trial.last_result))
            trial.status = Trial.TERMINATED

    def fail(self, trial: SimTrial, *, retry: bool, error_text: str = "") -> None:
        """A failure as Ray 2.60 handles it: a retry is marked ERROR, told (`on_trial_error`) and requeued
        (`on_trial_add`); a final failure is told first and marked ERROR after."""
        trial.run_metadata.num_failures += 1
        if trial.error_file:
            with open(trial.error_file, "a") as handle:
                handle.write(f"Failure # {trial.run_metadata.num_failures}\n{error_text}\n")
        if retry:
            trial.status = Trial.ERROR
            self.scheduler.on_trial_error(self, trial)
            trial.status = Trial.PENDING
            self.scheduler.on_trial_add(self, trial)
        else:
            self.scheduler.on_trial_error(self, trial)
            self.search_alg.on_trial_complete(trial.trial_id, error=True)
            trial.status = Trial.ERROR


Curve = Callable[[SimTrial, int], float]


@dataclass
class SweepOutcome:
    iterations: dict[str, float]  # trial_id -> iterations it trained (also past its last report)
    last_report: dict[str, int]  # trial_id -> iteration of its last report
    makespan: float


def run_sweep(
    scheduler: TrialScheduler,
    trials: Sequence[SimTrial],
    curve: Curve,
    *,
    max_iters: int,
    eval_interval: int,
    concurrency: int,
    speed: Callable[[SimTrial], float] | None = None,
    metric: str = "miou18",
    launch_group: Callable[[SimTrial], Hashable] | None = None,
) -> SweepOutcome:
    """Play a sweep: trials (in launch order) start as slots free up and report every `eval_interval`.

    Like Ray with `max_concurrent_trials`, a trial is created (`on_trial_add`) only when a slot is free, so
    the launch order decides which seeds run side by side. `speed(trial)` is iterations per time unit; a
    trial stopped between two reports (a sibling stopped at once) has trained until that moment.
    With `launch_group` (e.g. a trial's configuration), consecutive trials of one group start together,
    only once a slot is free for each of them.
    """
    controller = SimController(scheduler)
    queue = list(trials)
    events: list[tuple[float, int, SimTrial, int]] = []  # (time of next report, tie, trial, iteration)
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    last_report: dict[str, int] = {}
    paused_at: dict[str, float] = {}
    idle: dict[str, float] = {}  # time spent paused (no training)
    now, tie = 0.0, 0
    pace = speed or (lambda trial: 1.0)

    def running() -> int:
        return sum(t.status in (Trial.RUNNING, Trial.PAUSED) for t in controller.trials)

    def start(chosen: SimTrial) -> None:
        nonlocal tie
        chosen.status = Trial.RUNNING
        started.setdefault(chosen.trial_id, now)
        paused_at.pop(chosen.trial_id, None)
        tie += 1
        iteration = last_report.get(chosen.trial_id, 0) + eval_interval
        heapq.heappush(events, (now + eval_interval / pace(chosen), tie, chosen, iteration))

    def resume_paused() -> None:
        while any(t.status == Trial.PAUSED for t in controller.trials):
            chosen = scheduler.choose_trial_to_run(controller)
            if chosen is None or chosen.status != Trial.PAUSED:
                return
            idle[chosen.trial_id] = idle.get(chosen.trial_id, 0.0) + now - paused_at[chosen.trial_id]
            start(chosen)

    def next_launch() -> list[SimTrial]:
        if launch_group is None:
            return queue[:1]
        key = launch_group(queue[0])
        return list(itertools.takewhile(lambda t: launch_group(t) == key, queue))

    def fill() -> None:
        resume_paused()
        while queue:
            group = next_launch()
            if len(group) > concurrency:
                raise ValueError(f"a launch group of {len(group)} trials cannot fit {concurrency} slots")
            if concurrency - running() < len(group):
                return
            del queue[: len(group)]
            for trial in group:
                controller.add(trial)
            for _ in group:
                chosen = scheduler.choose_trial_to_run(controller)
                if chosen is None:
                    continue
                start(chosen)

    def close_ended() -> None:
        for trial in controller.trials:
            if trial.status == Trial.PAUSED:
                paused_at.setdefault(trial.trial_id, now)
            elif trial.trial_id in started and trial.trial_id not in ended and trial.status != Trial.RUNNING:
                ended[trial.trial_id] = now
                if trial.trial_id in paused_at:  # stopped while paused: it trained until it paused
                    idle[trial.trial_id] = idle.get(trial.trial_id, 0.0) + now - paused_at.pop(trial.trial_id)

    fill()
    while events:
        now, _, trial, iteration = heapq.heappop(events)
        if trial.status != Trial.RUNNING:
            continue  # stopped by the scheduler while it was training
        last_report[trial.trial_id] = iteration
        result = {ITERATION: iteration, MAX_ITERS: max_iters, metric: curve(trial, iteration)}
        decision = controller.report(trial, result)
        if decision == TrialScheduler.PAUSE:
            pass
        elif decision != TrialScheduler.STOP and iteration < max_iters:
            tie += 1
            heapq.heappush(events, (now + eval_interval / pace(trial), tie, trial, iteration + eval_interval))
        elif decision != TrialScheduler.STOP:
            controller.finish(trial)
        close_ended()
        fill()
    stalled = [t.trial_id for t in (*controller.trials, *queue) if t.status == Trial.PAUSED or t in queue]
    if stalled:  # e.g. seeds waiting at a rung for siblings that cannot start: every slot holds a waiting one
        raise RuntimeError(f"the sweep stalled with {len(stalled)} trials waiting: {', '.join(stalled[:5])}")
    iterations = {t: (ended.get(t, now) - started[t] - idle.get(t, 0.0)) * pace(_by_id(controller, t))
                  for t in started}
    return SweepOutcome(iterations, last_report, now)


def _by_id(controller: SimController, trial_id: str) -> SimTrial:
    return next(t for t in controller.trials if t.trial_id == trial_id)


def saturating_curve(
    quality: Mapping[str, float], tau: float, noise: Callable[[SimTrial, int], float]
) -> Curve:
    """miou(t) = quality[trial_id] * (1 - exp(-t / tau)) + noise(trial, t)."""

    def curve(trial: SimTrial, iteration: int) -> float:
        return quality[trial.trial_id] * (1 - math.exp(-iteration / tau)) + noise(trial, iteration)

    return curve
