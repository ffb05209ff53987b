"""Forward+backward time and peak memory of the full CMDASegmentor (image + events + ISR branches).

One training-like step = forward of every branch, cross-entropy summed over the four branch logits, backward.
Each (backbone, device) case runs in a fresh subprocess so the CPU peak (``ru_maxrss``) belongs to that case
alone; on CUDA the peak is ``torch.cuda.max_memory_allocated``. Prints a Markdown table.

    python benchmarks/model_step.py --backbones mit_b0 mit_b2 --size 256 256 --batch 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmda.models import CMDASegmentor  # noqa: E402 - needs the repository root on sys.path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mit_b0", "mit_b2"])
    parser.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the segmentor")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)  # "backbone,device" child mode
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, backbone: str, device_name: str) -> dict[str, object]:
    """Time ``args.iters`` full steps after ``args.warmup``; return the row of the table."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(device_name)
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    torch.manual_seed(0)
    model = CMDASegmentor(backbone, num_classes=19).to(device).train()
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    step_model = torch.compile(model) if args.compile else model
    height, width = args.size

    def batch(channels: int) -> torch.Tensor:
        return torch.randn(args.batch, channels, height, width, device=device).to(memory_format=memory_format)

    image, events, isr = batch(3), batch(3), batch(3)
    labels = torch.randint(0, 19, (args.batch, height, width), device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = step_model(image, events, isr)
            loss = sum(
                F.cross_entropy(
                    F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False).float(),
                    labels,
                )
                for logits in out.logits.values()
            )
        loss.backward()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "cuda max_allocated"
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) / 1024
        peak_kind = "maxrss delta"
    return {
        "backbone": backbone,
        "device": device_name,
        "params_m": params_m,
        "step_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "peak_mib": peak_mib,
        "peak_kind": peak_kind,
    }


def run_child(args: argparse.Namespace, backbone: str, device: str) -> dict[str, object]:
    """Re-run this script for one case so its peak RSS is not polluted by earlier cases."""
    command = [
        sys.executable,
        __file__,
        "--single",
        f"{backbone},{device}",
        "--size",
        *map(str, args.size),
        "--batch",
        str(args.batch),
        "--warmup",
        str(args.warmup),
        "--iters",
        str(args.iters),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    command += [
        flag
        for flag, on in (
            ("--bf16", args.bf16),
            ("--channels-last", args.channels_last),
            ("--compile", args.compile),
        )
        if on
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark case {backbone} on {device} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown_table(args: argparse.Namespace, rows: list[dict[str, object]]) -> str:
    flags = (
        ", ".join(
            f
            for f, on in (
                ("bf16", args.bf16),
                ("channels_last", args.channels_last),
                ("compile", args.compile),
            )
            if on
        )
        or "fp32"
    )
    lines = [
        f"Full segmentor step (image + events + isr + fusion, CE summed), {args.size[0]}x{args.size[1]}, "
        f"batch {args.batch}, {flags}, median of {args.iters} after {args.warmup} warm-up, "
        f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} CPU threads",
        "",
        "| backbone | device | params (M) | fwd+bwd median (ms) | min (ms) | peak (MiB) | measured by |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['backbone']} | {row['device']} | {row['params_m']:.1f} | {row['step_ms']:.0f} | "
            f"{row['min_ms']:.0f} | {row['peak_mib']:.0f} | {row['peak_kind']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.single:
        backbone, device = args.single.split(",")
        print(json.dumps(measure(args, backbone, device)))
        return
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = [run_child(args, backbone, device) for device in devices for backbone in args.backbones]
    print(markdown_table(args, rows))


if __name__ == "__main__":
    main()
