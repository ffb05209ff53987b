"""The memory budget of a config's training step (`cmda.memory`, what `cmda-tune plan --memory` prints) for
every checkpointing mode and batch split, checked against real steps.

    python benchmarks/memory.py configs/cmda_cs2dsec_b5.yaml --validate 128

1. The budget of each setting at the config's resolution (the profile: two real CPU steps at 1/16 and 1/8
   of it), and how long the profile took.
2. `--validate N`: the profile's prediction of the working set (everything alive but the gradients) at
   N x N pixels, batch 1, against one real step of each mode on the CPU at that size, followed allocation
   by allocation (`cmda.memory.LiveBytes`, no saved-tensor hooks).
3. On a GPU, when there is one: the predicted peak against `torch.cuda.max_memory_allocated` over a
   whole training step (`cmda.train.train_step`: DACS step and AdamW step, after a first step that
   creates the optimizer state) at the config's resolution, per mode.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmda import memory as M  # noqa: E402 - needs the repository root on sys.path
from cmda.config import load_config  # noqa: E402

GIB = 2**30


def budget_table(profile: M.StepProfile) -> list[str]:
    lines = [
        "| setting | weights | gradients | optimizer | teacher | activations | transient | peak "
        "| fits (GB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for b in profile.alternatives():
        split = f"batch {b.batch_size}" + (f" x accumulate {b.accumulate}" if b.accumulate > 1 else "")
        parts = (b.weights, b.gradients, b.optimizer, b.teacher, b.activations, b.transient, b.peak)
        cells = " | ".join(f"{n / GIB:.2f}" for n in parts)
        lines.append(
            f"| {b.activation_checkpointing}, {split} | {cells} | {', '.join(map(str, b.fits_gb))} |"
        )
    return lines


def real_working_peak(config, size: int, mode: str) -> int:
    from cmda.models import cpu_kernels
    from cmda.train import build_session

    cfg = config.model_copy(deep=True)
    cfg.model.pretrained, cfg.model.cyclegan, cfg.model.activation_checkpointing = "none", "none", mode
    cfg.data.batch_size, cfg.train.device = 1, "cpu"
    session = build_session(cfg, torch.device("cpu"), None)
    session.model.train()
    live = M.LiveBytes()
    with live.follow(), cpu_kernels.disabled():  # the ops a GPU runs, as the profile measures them
        batch = M.synthetic_batch(cfg, [size, size], [size, size])
        session.step(batch, 1, torch.device("cpu"), contextlib.nullcontext)
    grads = {p.grad.untyped_storage().data_ptr() for p in session.model.parameters() if p.grad is not None}
    return max(live.live(grads))


def gpu_peak(config, mode: str, batch_size: int, accumulate: int) -> int:
    from cmda.train import autocast_factory, build_session, train_step

    cfg = config.model_copy(deep=True)
    cfg.model.pretrained, cfg.model.cyclegan, cfg.model.activation_checkpointing = "none", "none", mode
    cfg.data.batch_size, cfg.train.accumulate, cfg.train.device = batch_size, accumulate, "cuda"
    device = torch.device("cuda")
    session = build_session(cfg, device, None)
    session.model.train()
    source, target = list(cfg.data.source.crop), list(cfg.data.target.training_size)
    micro = [
        {
            part: {k: torch.cat([v] * batch_size) for k, v in sample.items()}
            for part, sample in M.synthetic_batch(cfg, source, target).items()
        }
        for _ in range(accumulate)
    ]
    autocast = autocast_factory(device, cfg.train.amp)
    train_step(session, micro, device, autocast)  # creates the AdamW state
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    train_step(session, micro, device, autocast)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--validate", type=int, default=None, metavar="N", help="compare at N x N on the CPU")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the real steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.set)
    start = time.perf_counter()
    profile = M.profile_step(config)
    seconds = time.perf_counter() - start
    source, target = config.data.source.crop, config.data.target.training_size
    print(
        f"{args.config} ({config.model.backbone}, source {source[0]}x{source[1]}, target sample "
        f"{target[0]}x{target[1]}, {config.train.amp}): profile measured at {profile.measured_at} in "
        f"{seconds:.1f} s (torch {torch.__version__}); GiB\n"
    )
    print("\n".join(budget_table(profile)))
    if args.validate:
        n = args.validate
        print(f"\nworking set at {n}x{n}, batch 1 (MiB): predicted by the profile vs a real CPU step\n")
        print("| mode | predicted | real | predicted / real |")
        print("| --- | ---: | ---: | ---: |")
        for mode in M.MODES:
            predicted = profile.working[mode].peak(n * n)
            real = real_working_peak(config, n, mode)
            print(f"| {mode} | {predicted / 2**20:.1f} | {real / 2**20:.1f} | {predicted / real:.3f} |")
    if torch.cuda.is_available():
        print(
            f"\nGPU ({torch.cuda.get_device_name()}): predicted peak vs torch.cuda.max_memory_allocated "
            "(GiB)\n"
        )
        print("| setting | predicted | measured |")
        print("| --- | ---: | ---: |")
        for budget in profile.alternatives():
            measured = gpu_peak(config, budget.activation_checkpointing, budget.batch_size, budget.accumulate)
            split = f"batch {budget.batch_size} x accumulate {budget.accumulate}"
            print(
                f"| {budget.activation_checkpointing}, {split} | {budget.peak / GIB:.2f} | "
                f"{measured / GIB:.2f} |"
            )
    else:
        print("\nGPU: not measured (no CUDA device on this machine)")


if __name__ == "__main__":
    main()
