"""GPU placement inside a trial: see exactly the GPUs Ray assigned, and train on the device that follows.

Ray 2.60 sets `CUDA_VISIBLE_DEVICES` for a task that holds GPUs, but leaves it alone for a task that holds
none (unless `RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO=1` is set on the worker; Ray issue 54868). A CPU trial on a
GPU node then sees every GPU and `train.device: auto` picks cuda: CPU trials pile onto GPU 0 next to the GPU
trials. So each trial pins the variable itself to what Ray assigned it (empty for none), before anything
initialises CUDA, and its config names the device explicitly, so `resolved_config.yaml` says what ran.

Fractional GPUs (`resources.gpu: 0.5`) put several trials on one GPU. Ray only does the bookkeeping: the
trials share the GPU's compute and, unless told otherwise, its memory, so one trial's peak can OOM the
other. A trial with a fraction therefore caps its CUDA caching allocator at that fraction of the device's
memory (`torch.cuda.set_per_process_memory_fraction`): a trial that outgrows its share fails alone, with an
out-of-memory error naming itself. The CUDA context comes on top of the share (README, Running on a cluster).

Nothing here imports torch at module level; `ray` only inside a trial.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
NOSET_VISIBLE_DEVICES = "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"
"""Ray's own opt-out: whoever sets it manages GPU visibility themselves, and we leave it alone too."""


class PlacementError(ValueError):
    """A trial's device setting contradicts the GPUs it was given."""


def device_for(requested: str, gpu_ids: Sequence[str]) -> str:
    """The device a trial trains on, given `train.device` and the GPU ids Ray assigned it.

    "auto" follows the assignment (cuda with GPUs, cpu without); "cpu" stays cpu; "cuda" / "cuda:N" need a
    GPU, and N counts within the trial's visible GPUs (the trial sees only its own, renumbered from 0).
    """
    text = str(requested).strip().lower()
    if text == "auto":
        return "cuda" if gpu_ids else "cpu"
    if text == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise PlacementError(f"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {requested!r}")
    if not gpu_ids:
        raise PlacementError(
            f"train.device is {requested!r} but the trial was given no GPU (resources.gpu: 0); set "
            "resources.gpu > 0 in the sweep or train.device: auto"
        )
    index = int(match.group(1) or 0)
    if index >= len(gpu_ids):
        raise PlacementError(
            f"train.device is {requested!r} but the trial sees {len(gpu_ids)} GPU(s) (cuda:0.."
            f"cuda:{len(gpu_ids) - 1}); devices are numbered within the trial's own GPUs"
        )
    return text


def memory_share(gpus: float) -> float | None:
    """Fraction of one GPU's memory a trial may use: its fractional request, or None for whole GPUs."""
    if 0 < gpus < 1:
        return float(gpus)
    return None


def gpus_in_request(gpus: float) -> int:
    """How many GPU ids a request of `gpus` yields (a fraction still sees one whole device)."""
    return math.ceil(gpus) if gpus > 0 else 0


@dataclass(frozen=True)
class Placement:
    """What one trial was given: GPU ids (as Ray names them) and its GPU request (fractions allowed)."""

    gpu_ids: tuple[str, ...]
    gpus: float

    def device(self, requested: str) -> str:
        return device_for(requested, self.gpu_ids)

    def pin_visible_devices(self, environ: MutableMapping[str, str] = os.environ) -> None:
        """Make the process see exactly its assigned GPUs (none: an empty list), unless the user opted out
        of Ray's handling with RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES."""
        if environ.get(NOSET_VISIBLE_DEVICES, "").strip().lower() in ("1", "true"):
            return
        environ[VISIBLE_DEVICES] = ",".join(self.gpu_ids)

    def limit_memory(self, device: str) -> float | None:
        """Cap this process's CUDA allocator at its share of a shared GPU; returns the share applied."""
        share = memory_share(self.gpus)
        if share is None or not device.startswith("cuda"):
            return None
        import torch

        if not torch.cuda.is_available():
            return None
        torch.cuda.set_per_process_memory_fraction(share, torch.device(device).index or 0)
        return share


def current_placement(required_gpus: float) -> Placement:
    """The placement of the running Ray task or actor (call inside a trial)."""
    import ray

    ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    return Placement(gpu_ids=tuple(str(i) for i in ids), gpus=float(required_gpus))


def place_trial(requested_device: str, required_gpus: float) -> tuple[Placement, str]:
    """Pin the trial's GPU visibility to Ray's assignment and choose its device; call before torch uses CUDA.

    Returns the placement and the device string to write into the trial's `train.device`.
    """
    placement = current_placement(required_gpus)
    placement.pin_visible_devices()
    return placement, placement.device(requested_device)
