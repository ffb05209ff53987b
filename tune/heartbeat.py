"""Where each running trial is between two evaluations (minutes to an hour apart in the study).

A trial reports to Ray only at evaluations (each report is a result row the schedulers, searchers and the
analysis read), so its progress in between travels outside the results: the trainer calls its `heartbeat`
at every logged iteration, and the trial sends that iteration to one small actor the driver starts (a named
Ray actor, so it works from any node); the live table reads it. Fire-and-forget: a lost heartbeat costs
nothing but a staler line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

ACTOR_PREFIX = "cmda_heartbeat:"


class HeartbeatBoard:
    """trial id -> (latest iteration, when it was sent)."""

    def __init__(self) -> None:
        self._beats: dict[str, tuple[int, float]] = {}

    def beat(self, trial_id: str, iteration: int, sent_at: float) -> None:
        previous = self._beats.get(trial_id)
        if previous is None or sent_at >= previous[1]:  # the latest sent (a resumed trial goes back)
            self._beats[trial_id] = (int(iteration), float(sent_at))

    def snapshot(self) -> dict[str, tuple[int, float]]:
        return dict(self._beats)


def actor_name(experiment_name: str) -> str:
    return f"{ACTOR_PREFIX}{experiment_name}"


def start_board(experiment_name: str) -> Any:
    """The driver's board for one experiment (lives as long as the driver; no CPU of its own)."""
    import ray

    remote = ray.remote(num_cpus=0)(HeartbeatBoard)
    return remote.options(name=actor_name(experiment_name), get_if_exists=True).remote()


def read_board(board: Any, timeout_s: float = 1.0) -> dict[str, tuple[int, float]]:
    """The latest beats; {} when the board does not answer in time (the table then shows reports only)."""
    import ray

    try:
        return ray.get(board.snapshot.remote(), timeout=timeout_s)
    except Exception:  # noqa: BLE001 - a busy or lost board must never stop the sweep
        return {}


def trial_heartbeat(experiment_name: str, trial_id: str) -> Callable[[int], None] | None:
    """The trainer's `heartbeat(iteration)` inside a trial; None when no board runs (no live table)."""
    import ray

    try:
        board = ray.get_actor(actor_name(experiment_name))
    except ValueError:
        return None

    def heartbeat(iteration: int) -> None:
        board.beat.remote(trial_id, int(iteration), time.time())

    return heartbeat
