"""The memory one training step needs, read before launching (`cmda-tune plan`, `cmda train --dry-run`).

    peak = weights + gradients + optimizer + teacher + activations + transient

- weights: the student's parameters and buffers, and the frozen CycleGAN translator where one is used;
  gradients: one per trainable parameter; optimizer: AdamW's two moments; teacher: the EMA copy. Counted
  from the model's shapes (fp32).
- activations: what the step keeps for its backward, MEASURED: one real step of the model on the CPU at a
  small resolution, with the PyTorch ops a GPU runs (`cmda.models.cpu_kernels.disabled`), counting the
  unique storages autograd saves (`torch.autograd.graph.saved_tensors_hooks`; parameters excluded, a
  storage saved twice counted once). The step has two backwards (source, mixed); the larger is kept. The
  same run records where each activation-checkpointing piece starts and ends
  (`cmda.models.checkpointing.observed`), so the saved tensors of `blocks` and `stages` follow from it: what
  is saved outside the pieces of that kind plus each piece's inputs.
- transient: everything else alive at the step's peak, also measured in that run: every storage the
  step's operations allocate is followed until it is freed (a `TorchDispatchMode`); the peak of the live
  bytes other than gradients, less the saved tensors, is the transient (the output an operation is
  writing, the gradients flowing in the backward...). For `blocks` and `stages` the same timeline is
  replayed with each piece's own saved tensors freed when the piece's forward ends and allocated again
  when its backward starts (its first saved tensor is read), which is when checkpointing recomputes it.
- Activations and transient grow with the pixels of a sample: the run is repeated at two small
  resolutions, a line through the two is evaluated at the trial's resolution, and the result is multiplied
  by the samples of one forward pass (`data.batch_size`; `train.accumulate` does not change it).
- The optimizer step's own peak (weights, gradients, moments and one parameter-sized temporary of
  PyTorch's multi-tensor AdamW) is taken when it is larger.

A card of N GB fits the step when the peak plus `RESERVED_GB` (CUDA context, cuDNN workspaces, the
caching allocator's slack) is at most N GiB. This is an estimate from the CPU's kernels: GPU attention and
convolution kernels keep about the same tensors (benchmarks/README.md compares it with
`torch.cuda.max_memory_allocated` where a GPU was available).
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from cmda.config import Config

GPU_SIZES_GB = (8, 12, 16, 24, 32, 40, 48, 80)
"""Memory of common GPUs, in GB (GiB), smallest first."""
RESERVED_GB = 1.0
"""GiB of a card a training step cannot use (CUDA context, cuDNN workspaces, allocator slack)."""
MODES = ("off", "blocks", "stages")
"""`model.activation_checkpointing` values: `cmda.models.checkpointing.CHECKPOINTING`, repeated so that the
plan can format a budget without importing torch (tests/cmda/test_memory.py checks the two agree)."""
SMALLEST = 1 / 16
"""The first measured resolution, as a fraction of the trial's width and height (at least 32 pixels); the
second has twice its width and height."""
GIB = 2**30


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes of one training step on its device, by part, for one setting."""

    weights: int
    gradients: int
    optimizer: int
    teacher: int
    activations: int
    transient: int
    optimizer_step: int
    """Peak of the optimizer step itself (no activations alive then)."""
    activation_checkpointing: str
    batch_size: int
    accumulate: int

    @property
    def peak(self) -> int:
        forward = (
            self.weights + self.gradients + self.optimizer + self.teacher + self.activations + self.transient
        )
        return max(forward, self.optimizer_step)

    @property
    def fits_gb(self) -> list[int]:
        """The card sizes of `GPU_SIZES_GB` this step fits."""
        return [size for size in GPU_SIZES_GB if self.peak + RESERVED_GB * GIB <= size * GIB]

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(peak=self.peak, fits_gb=self.fits_gb)
        return out


@dataclass(frozen=True)
class Line:
    """bytes = intercept + slope x pixels of one forward pass (batch x pixels per sample)."""

    intercept: float
    slope: float

    @classmethod
    def through(cls, points: list[tuple[float, float]]) -> Line:
        (x0, y0), (x1, y1) = points
        slope = (y1 - y0) / (x1 - x0)
        return cls(y0 - slope * x0, slope)

    def at(self, pixels: float) -> float:
        return max(0.0, self.intercept + self.slope * pixels)


@dataclass(frozen=True)
class Timeline:
    """Live bytes (gradients left out) after every allocation and free of the step, as a line in the pixels
    per event. Both measured steps run the same operations in the same order, shapes aside (where a kernel
    choice depends on the shape, `aligned` pairs the events by operation names and skips the few unmatched
    ones), so an event of one is the same moment of the other, and the peak at any size is the largest
    of the lines there, whether it falls at the end of a forward or inside a backward."""

    intercepts: Any  # numpy arrays, one entry per matched event
    slopes: Any

    @classmethod
    def through(cls, first: tuple[float, list[str], list[int]], second: tuple[float, list[str], list[int]]):
        import numpy as np

        (x0, names0, live0), (x1, names1, live1) = first, second
        pairs = aligned(names0, names1)
        y0 = np.array([live0[i] for i, _ in pairs], dtype=float)
        y1 = np.array([live1[j] for _, j in pairs], dtype=float)
        slopes = (y1 - y0) / (x1 - x0)
        return cls(y0 - slopes * x0, slopes)

    def peak(self, pixels: float) -> float:
        if len(self.slopes) == 0:
            return 0.0
        return max(0.0, float((self.intercepts + self.slopes * pixels).max()))


def aligned(a: list[str], b: list[str]) -> list[tuple[int, int]]:
    """Index pairs of the same events in two sequences of operation names that differ only here and there
    (a kernel choice that depends on the shape, a branch on the data): walk both; at a difference, skip the
    fewest events after which a run of names agrees again (a short look-ahead first, then a longer one with
    a longer run). Linear in the length where a general diff is quadratic on sequences of a few dozen
    distinct names."""
    pairs: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
            continue
        skip = _resync(a, b, i, j, window=32, run=4) or _resync(a, b, i, j, window=1024, run=12)
        if skip is None:
            break
        i, j = i + skip[0], j + skip[1]
    return pairs


def _resync(a: list[str], b: list[str], i: int, j: int, window: int, run: int) -> tuple[int, int] | None:
    """The smallest (skip in a, skip in b), each at most `window`, after which `run` names agree."""
    for total in range(1, 2 * window + 1):
        for di in range(max(0, total - window), min(total, window) + 1):
            dj = total - di
            if a[i + di : i + di + run] == b[j + dj : j + dj + run]:
                return di, dj
    return None


@dataclass(frozen=True)
class StepProfile:
    """The measured step of a config: fixed parts in bytes, the rest as lines in the pixels of a pass."""

    weights: int
    trainable: int
    """Bytes of the trainable parameters (gradients; AdamW keeps two moments of each)."""
    teacher: int
    pixels: float
    """Pixels per sample at the trial's resolution (mean of the source crop and the target sample)."""
    activations: dict[str, Line]
    """Saved for the backward, per checkpointing mode."""
    working: dict[str, Timeline]
    """Everything alive but the gradients, over the step, per checkpointing mode."""
    batch_size: int
    accumulate: int
    activation_checkpointing: str
    measured_at: list[list[int]] = field(default_factory=list)
    """The (width, height) of the target sample at each measured resolution."""

    def budget(self, mode: str | None = None, batch_size: int | None = None, accumulate: int | None = None):
        """The budget of this config, or of the same config with another checkpointing mode / batch split."""
        mode = mode or self.activation_checkpointing
        batch = batch_size or self.batch_size
        pixels = batch * self.pixels
        saved = self.activations[mode].at(pixels)
        return MemoryBudget(
            weights=self.weights,
            gradients=self.trainable,
            optimizer=2 * self.trainable,
            teacher=self.teacher,
            activations=int(saved),
            transient=int(max(0.0, self.working[mode].peak(pixels) - saved)),
            optimizer_step=self.weights + self.teacher + 4 * self.trainable,
            activation_checkpointing=mode,
            batch_size=batch,
            accumulate=accumulate or self.accumulate,
        )

    def alternatives(self) -> list[MemoryBudget]:
        """Every checkpointing mode with every split of the same effective batch (batch_size x accumulate),
        exact settings first (checkpointing changes nothing but compute; a smaller batch changes the
        decoder's BatchNorm statistics)."""
        effective = self.batch_size * self.accumulate
        splits = [(effective // k, k) for k in range(1, effective + 1) if effective % k == 0]
        return [self.budget(mode, batch, k) for batch, k in splits for mode in MODES]


def memory_json(profile: StepProfile) -> dict[str, Any]:
    """`plan --json`'s `memory`: the trial's budget (weights, optimizer, teacher, activations, peak,
    fits_gb and the other parts, bytes) and `alternatives`, the same for the other settings."""
    out = profile.budget().as_json()
    out["reserved_gb"] = RESERVED_GB
    out["measured_at"] = profile.measured_at
    out["alternatives"] = [budget.as_json() for budget in profile.alternatives()]
    return out


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _setting(budget: dict[str, Any]) -> str:
    split = f"batch {budget['batch_size']}"
    if budget["accumulate"] > 1:
        split += f" x accumulate {budget['accumulate']}"
    return f"activation_checkpointing {budget['activation_checkpointing']}, {split}"


def _cards(sizes: list[int]) -> str:
    return f"fits {min(sizes)} GB cards and larger" if sizes else f"fits none of {list(GPU_SIZES_GB)} GB"


def format_memory(memory: dict[str, Any]) -> list[str]:
    """Lines for the plan and the dry run from `memory_json`: the parts, the peak, the cards it fits, and
    the first setting (exact ones first) that fits each smaller card."""
    width, height = memory["measured_at"][-1] if memory.get("measured_at") else (0, 0)
    lines = [
        f"memory of one training step ({_setting(memory)}): peak {_gib(memory['peak'])}, "
        f"{_cards(memory['fits_gb'])}",
        f"  weights {_gib(memory['weights'])}, gradients {_gib(memory['gradients'])}, optimizer "
        f"{_gib(memory['optimizer'])}, teacher {_gib(memory['teacher'])}, activations "
        f"{_gib(memory['activations'])} (measured on the CPU up to {width}x{height}, scaled), largest "
        f"transient {_gib(memory['transient'])}",
    ]
    smallest = min(memory["fits_gb"], default=GPU_SIZES_GB[-1] + 1)
    advice: dict[str, list[int]] = {}  # setting line -> the card sizes it is the first fitting setting for
    for size in (size for size in GPU_SIZES_GB if size < smallest):
        fitting = next((b for b in memory["alternatives"] if size in b["fits_gb"]), None)
        line = (
            "none of these settings"
            if fitting is None
            else f"{_setting(fitting)} (peak {_gib(fitting['peak'])})"
        )
        advice.setdefault(line, []).append(size)
    for line, sizes in advice.items():
        lines.append(f"  to fit {', '.join(map(str, sizes))} GB cards: {line}")
    return lines


# -- the measurement ---------------------------------------------------------------------------------------


class LiveBytes:
    """Follows every storage the operations inside allocate until it is freed: `events` is the step's
    timeline of (storage serial, +bytes at allocation | -bytes at free, operation name)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, str]] = []
        self.alive: dict[int, int] = {}  # data_ptr -> serial
        self.serials = 0

    @property
    def clock(self) -> int:
        return len(self.events)

    @contextlib.contextmanager
    def follow(self) -> Iterator[LiveBytes]:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        live = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                leaves = tree_leaves((args, kwargs))
                inputs = {t.untyped_storage().data_ptr() for t in leaves if _is_tensor(t)}
                for tensor in tree_leaves(out):
                    if _is_tensor(tensor):
                        live.allocated(tensor, inputs, func.__name__)
                return out

        with Mode():
            yield self

    def allocated(self, tensor: torch.Tensor, inputs: set[int], operation: str) -> None:
        storage = tensor.untyped_storage()
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if ptr in inputs or ptr in self.alive or nbytes == 0:  # a view, an in-place result, known already
            return
        self.serials += 1
        self.alive[ptr] = self.serials
        self.events.append((self.serials, nbytes, operation))
        weakref.finalize(storage, self.freed, ptr, self.serials, nbytes)

    def freed(self, ptr: int, serial: int, nbytes: int) -> None:
        if self.alive.get(ptr) == serial:
            del self.alive[ptr]
        self.events.append((serial, -nbytes, "free"))

    def live(self, excluded_ptrs: set[int]) -> list[int]:
        """Live bytes after each event, leaving out the storages alive at the end under `excluded_ptrs`
        (the gradients)."""
        excluded = {self.alive[ptr] for ptr in excluded_ptrs if ptr in self.alive}
        current, out = 0, []
        for serial, delta, _ in self.events:
            if serial not in excluded:
                current += delta
            out.append(current)
        return out

    def freed_at(self) -> dict[int, int]:
        """serial -> the event index of its free (storages alive at the end are absent)."""
        return {serial: index for index, (serial, delta, _) in enumerate(self.events) if delta < 0}


@dataclass
class Piece:
    """One run of a checkpointing piece: its phase, when its forward ended, its inputs, what it saved."""

    phase: int = 0
    end: int = -1
    inputs: set[int] = field(default_factory=set)  # storage pointers
    saved: dict[int, tuple[int, int]] = field(default_factory=dict)  # pointer -> (serial, bytes)


class SavedTensors:
    """Unique storages autograd saves, per forward phase, and per checkpointing piece (told by
    `cmda.models.checkpointing.observed`), timed on a `LiveBytes` clock. A phase ends when the backward
    starts reading (the step has a source and a mixed phase)."""

    def __init__(self, exclude: set[int], live: LiveBytes) -> None:
        self.exclude, self.live = exclude, live
        self.phases: list[dict[str, Any]] = []
        self.reading = True
        self.active: dict[str, list[Piece]] = {mode: [] for mode in MODES[1:]}
        self.pieces: dict[str, list[Piece]] = {mode: [] for mode in MODES[1:]}
        self.first_read: list[dict[int, int]] = []  # per phase: pointer -> clock of its first unpack

    def _phase(self) -> dict[str, Any]:
        if self.reading:
            self.reading = False
            self.phases.append({"all": {}, **{f"kept/{m}": {} for m in MODES[1:]}})
            self.first_read.append({})
        return self.phases[-1]

    @staticmethod
    def storage(tensor: torch.Tensor) -> tuple[int, int]:
        storage = tensor.untyped_storage()
        return storage.data_ptr(), storage.nbytes()

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        ptr, nbytes = self.storage(tensor)
        if ptr in self.exclude or nbytes == 0:
            return tensor
        phase = self._phase()
        phase["all"][ptr] = nbytes
        for mode in MODES[1:]:
            if self.active[mode]:
                piece = self.active[mode][-1]
                if ptr not in piece.inputs:
                    piece.saved[ptr] = (self.live.alive.get(ptr, 0), nbytes)
                    continue
            phase[f"kept/{mode}"][ptr] = nbytes  # saved outside the pieces, or a piece's input
        return tensor

    def unpack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.reading = True
        if self.first_read:
            self.first_read[-1].setdefault(tensor.untyped_storage().data_ptr(), self.live.clock)
        return tensor

    def piece(self, kind: str, args: tuple, entering: bool) -> None:
        import torch

        if not torch.is_grad_enabled():
            return
        if entering:
            phase = self._phase()
            piece = Piece(phase=len(self.phases) - 1)
            for arg in args:
                if isinstance(arg, torch.Tensor):
                    ptr, nbytes = self.storage(arg)
                    if ptr not in self.exclude and nbytes:
                        piece.inputs.add(ptr)
                        phase[f"kept/{kind}"][ptr] = nbytes
            self.active[kind].append(piece)
        else:
            piece = self.active[kind].pop()
            piece.end = self.live.clock
            self.pieces[kind].append(piece)

    def activations(self, mode: str) -> int:
        """Bytes kept for the backward in the larger phase under `mode`."""
        key = "all" if mode == "off" else f"kept/{mode}"
        return max((sum(p[key].values()) for p in self.phases), default=0)

    def live_under(self, mode: str, live: list[int]) -> list[int]:
        """The `off` timeline `live` replayed under `mode`: a storage a piece saves (not its input, not
        saved outside the pieces) is not alive from the end of the piece's forward to the start of its
        backward, when the recomputation brings it back; one the backward never reads is gone for good
        (the recomputation drops it at once)."""
        if mode == "off":
            return live
        freed_at = self.live.freed_at()
        delta = [0] * (len(live) + 1)
        done: set[int] = set()
        for piece in self.pieces[mode]:
            kept, read = self.phases[piece.phase][f"kept/{mode}"], self.first_read[piece.phase]
            own = {ptr: value for ptr, value in piece.saved.items() if ptr not in kept}
            # the recomputation runs when the backward first reads a tensor only this piece saved
            backward = min((read[ptr] for ptr in own if ptr in read), default=len(live))
            for ptr, (serial, nbytes) in own.items():
                if serial in done or serial == 0:
                    continue
                done.add(serial)
                stop = min(backward if ptr in read else len(live), freed_at.get(serial, len(live)))
                if piece.end < stop:
                    delta[piece.end] -= nbytes
                    delta[stop] += nbytes
        out, shift = [], 0
        for index, value in enumerate(live):
            shift += delta[index]
            out.append(value + shift)
        return out


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and value.device.type != "meta"


def scaled(size: list[int], factor: float) -> list[int]:
    """A (width, height) scaled by `factor`, rounded to a multiple of 32 (at least 32): MiT's strides."""
    return [max(32, 32 * round(side * factor / 32)) for side in size]


def synthetic_batch(config: Config, source_wh: list[int], target_wh: list[int]) -> dict[str, dict]:
    """One sample of the shapes the step reads (random values: the memory does not depend on them)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    sw, sh = source_wh
    tw, th = target_wh
    spec = config.target
    source = {
        "image": torch.randn(1, 3, sh, sw, generator=generator),
        "label": torch.randint(0, spec.num_classes, (1, sh, sw), generator=generator),
        "isr_direction": torch.zeros(1, dtype=torch.long),
    }
    target = {
        "image": torch.randn(1, 3, th, tw, generator=generator),
        "isr_direction": torch.zeros(1, dtype=torch.long),
    }
    if spec.second_modality == "events":
        source["motion"] = torch.rand(1, 1, sh, sw, generator=generator) * 2 - 1
    if spec.provides("events"):
        channels = config.data.target.second_channels
        target["events"] = torch.randn(1, channels, th, tw, generator=generator).clamp(-1, 1)
    if spec.loader_isr:
        target["isr"] = torch.rand(1, 3, th, tw, generator=generator) * 2 - 1
    return {"source": source, "target": target}


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def translator_bytes(config: Config) -> int:
    """Weights of the frozen CycleGAN generator when the run uses one (counted on the meta device)."""
    import torch

    from cmda.io import is_unset
    from cmda.models.cyclegan import ResnetGenerator

    if is_unset(config.model.cyclegan) or not config.target.provides("events"):
        return 0
    with torch.device("meta"):
        return _bytes(ResnetGenerator().state_dict().values())


def profile_step(config: Config) -> StepProfile:
    """`measure_step` on one CPU thread: the measured steps are small (a few dozen pixels a side) and gain
    nothing from more threads, which only spin where other jobs share the machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return measure_step(config)
    finally:
        torch.set_num_threads(threads)


def measure_step(config: Config) -> StepProfile:
    """Measure the config's training step on the CPU (see the module docstring): two real steps, at about
    1/16 of the trial's width and height and at twice that, batch 1, on a model with random weights (the
    bytes do not depend on them). Takes seconds: the model is built once (about 3 s for MiT-B5)."""
    import torch

    from cmda.config import config_from_dict
    from cmda.models import cpu_kernels
    from cmda.models.checkpointing import observed
    from cmda.train import autocast_factory, build_session

    data = config.to_dict()
    data["model"].update(pretrained="none", cyclegan="none", activation_checkpointing="off")
    data["data"].update(batch_size=1, num_workers=0)
    data["train"].update(device="cpu", accumulate=1)
    cfg = config_from_dict(data)
    device = torch.device("cpu")
    session = build_session(cfg, device, None)
    model, teacher = session.model, session.step.teacher.model
    model.train()
    weights = _bytes(model.parameters()) + _bytes(model.buffers()) + translator_bytes(config)
    trainable = _bytes(p for p in model.parameters() if p.requires_grad)
    teacher_bytes = _bytes(teacher.parameters()) + _bytes(teacher.buffers())
    exclude = {
        t.untyped_storage().data_ptr() for m in (model, teacher) for t in (*m.parameters(), *m.buffers())
    }
    autocast = autocast_factory(device, config.train.amp)
    source_full = list(config.data.source.crop)
    target_full = list(config.data.target.training_size)
    saved_points: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    timelines: dict[str, list[tuple[float, list[str], list[int]]]] = {mode: [] for mode in MODES}
    measured_at = []
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for factor in (1, 2):
        source_wh = [factor * side for side in scaled(source_full, SMALLEST)]
        target_wh = [factor * side for side in scaled(target_full, SMALLEST)]
        model.load_state_dict(state)  # BatchNorm statistics as built, for both measurements
        model.zero_grad(set_to_none=True)
        live = LiveBytes()
        saved = SavedTensors(exclude, live)
        hooks = torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack)
        with observed(saved.piece), hooks, live.follow(), cpu_kernels.disabled():
            batch = synthetic_batch(cfg, source_wh, target_wh)  # counted: on a GPU it is copied there
            session.step(batch, 1, device, autocast)
        grads = {p.grad.untyped_storage().data_ptr() for p in model.parameters() if p.grad is not None}
        names = [operation for _, _, operation in live.events]
        off = live.live(grads)
        pixels = (source_wh[0] * source_wh[1] + target_wh[0] * target_wh[1]) / 2
        for mode in MODES:
            saved_points[mode].append((pixels, saved.activations(mode)))
            timelines[mode].append((pixels, names, saved.live_under(mode, off)))
        measured_at.append(target_wh)
    return StepProfile(
        weights=weights,
        trainable=trainable,
        teacher=teacher_bytes,
        pixels=(math.prod(source_full) + math.prod(target_full)) / 2,
        activations={mode: Line.through(points) for mode, points in saved_points.items()},
        working={mode: Timeline.through(*points) for mode, points in timelines.items()},
        batch_size=config.data.batch_size,
        accumulate=config.train.accumulate,
        activation_checkpointing=config.model.activation_checkpointing,
        measured_at=measured_at,
    )
