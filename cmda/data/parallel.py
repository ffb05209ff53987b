"""One file per job, in worker processes, with a progress bar: the loop of the `cmda data` generators.

Processes are spawned, not forked: the command may run inside a process that already holds torch's thread
pools (tests, notebooks), which a fork would copy in an unusable state. A failing job stops the run with
its own exception (a DataError names its file); jobs not started yet are cancelled.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")


def _one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"  # one file per process: libraries get one thread each


def run_jobs(
    function: Callable[[Job], Result],
    jobs: Sequence[Job],
    workers: int = 1,
    progress: bool = True,
    desc: str | None = None,
    unit: str = "file",
) -> list[Result]:
    """`[function(job) for job in jobs]`, in `workers` processes when there is more than one job; results
    in job order. `function` must be importable (a module-level function) for the worker processes."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, unit=unit, disable=not (progress and jobs), dynamic_ncols=True)
    results: list[Result] = []
    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(function(job))
                bar.update()
            return results
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
            futures = [pool.submit(function, job) for job in jobs]
            try:
                for future in futures:
                    results.append(future.result())
                    bar.update()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return results
    finally:
        bar.close()
