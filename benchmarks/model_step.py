"""Time and peak memory of the student's training step: the forward of every branch (image, events, ISR,
fusion), the branch-weighted cross-entropies of the DSEC recipe, backward. Against the original network
(XiaRho/CMDA, built from its own code) when a checkout is given, and per activation-checkpointing mode.

Every case runs in a fresh subprocess (the CPU peak, `ru_maxrss`, then belongs to that case alone; on CUDA
the peak is `torch.cuda.max_memory_allocated`), the cases alternate round by round, and each ratio is taken
within a round, so a machine whose load changes between rounds still gives comparable ratios.

    python benchmarks/model_step.py --backbones mit_b2 --size 256 256 --batch 2 --threads 1 \\
        --variants ours strided blocks stages original --original /tmp/orig/CMDA --rounds 5

Variants: `ours` (this repository, `activation_checkpointing: off`), `blocks` / `stages` (checkpointed),
`strided` (ours with the fusion fed channels_last-strided views, as before the layout fix; the decoder's
embeddings have since become 1x1 convs on the map, so only the fusion's part of that fix is undone),
`channels_last` (ours with dense channels_last feature maps, inputs and weights: the other layout
`FEATURE_LAYOUTS` can choose per device), `original` (needs `--original PATH`: a checkout of
XiaRho/CMDA; its dependencies mmcv 1.3.7, installed without compiled ops, and timm 0.3.2 are looked up
in `--original-site`, a pip `--target` folder; two import shims, OpenCV and `torch._six`, are written by
this script; without the checkout the variant is skipped with a message). Both networks start from their
own random initialisation (the time does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("ours", "strided", "channels_last", "blocks", "stages", "original")
LOSS_WEIGHTS = {"image": 0.5, "second": 0.5, "fusion": 0.5, "isr": 0.25}
"""The DSEC-Night recipe (the original's forward_cfg loss_weight: image, events, fusion, img_self_res)."""

CV2_SHIM = '"""OpenCV stand-in: mmcv 1.3.7 imports cv2 at import time; the network never calls it."""\n'
SIX_SHIM = '''"""torch._six (removed in torch 2.0) for timm 0.3.2: the standard-library names it imported."""
import collections.abc
import sys
import types

six = types.ModuleType("torch._six")
six.container_abcs = collections.abc
six.string_classes = (str, bytes)
six.int_classes = int
six.inf = float("inf")
sys.modules["torch._six"] = six
'''


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mit_b0", "mit_b2"])
    parser.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["ours"], choices=VARIANTS)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of every case")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument(
        "--channels-last", action="store_true", help="ours with channels_last feature maps (FEATURE_LAYOUTS)"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile our segmentor")
    parser.add_argument("--original", default=None, help="checkout of XiaRho/CMDA (its mmseg/ and configs/)")
    parser.add_argument(
        "--original-site",
        default="/tmp/orig/site",
        help="pip --target folder with mmcv 1.3.7 (MMCV_WITH_OPS=0), timm 0.3.2, addict, yapf, platformdirs, "
        "prettytable",
    )
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)  # "variant,backbone,device"
    return parser.parse_args(argv)


def batch_inputs(args: argparse.Namespace, device):
    import torch

    height, width = args.size
    generator = torch.Generator().manual_seed(0)

    def image() -> torch.Tensor:
        return torch.randn(args.batch, 3, height, width, generator=generator).to(device)

    label = torch.randint(0, 19, (args.batch, height, width), generator=generator).to(device)
    return image(), image(), image(), label


def ours_step(args: argparse.Namespace, variant: str, backbone: str, device):
    """Our segmentor: forward of every branch, `cmda.uda.dacs.branch_losses`, backward."""
    import torch

    sys.path.insert(0, str(REPO))
    from cmda.models import CMDASegmentor, mit
    from cmda.uda.dacs import branch_losses

    if variant == "strided":  # the layout before the fix: views straight into the convolutions
        from cmda.models import fusion

        fusion.tokens_to_feature_map = mit.tokens_to_map
    channels_last = args.channels_last or variant == "channels_last"
    if channels_last:
        mit.FEATURE_LAYOUTS[device.type] = torch.channels_last
    mode = variant if variant in ("blocks", "stages") else "off"
    torch.manual_seed(0)
    model = CMDASegmentor(backbone, num_classes=19, activation_checkpointing=mode).to(device).train()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    forward = torch.compile(model) if args.compile else model
    image, events, isr, label = batch_inputs(args, device)
    image, events, isr = (x.contiguous(memory_format=memory_format) for x in (image, events, isr))

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = forward(image, events, isr)
            loss = sum(branch_losses(out.logits, label, LOSS_WEIGHTS, "events").values())
        loss.backward()

    return model, step


def original_step(args: argparse.Namespace, backbone: str, device):
    """The original's FusionEncoderDecoder (cs2dsec_image+events_together): forward_train with the same
    inputs (image, events, img_self_res) and its weighted cross-entropies, backward."""
    import torch
    from mmcv import Config
    from mmseg.models import build_segmentor

    config = Config.fromfile(str(Path(args.original) / "configs/fusion/cs2dsec_image+events_together_b5.py"))
    spec = config.model
    spec.pretrained = None
    spec.backbone_image.type = spec.backbone_events.type = backbone
    widths = [32, 64, 160, 256] if backbone == "mit_b0" else [64, 128, 320, 512]
    spec.decode_head.in_channels = spec.fusion_module.in_channels = widths
    torch.manual_seed(0)
    model = build_segmentor(spec).to(device).train()
    forward_cfg = dict(config.uda.forward_cfg)
    image, events, isr, label = batch_inputs(args, device)
    inputs = {"image": image, "events": events, "img_self_res": isr}
    weight = torch.ones(label.shape, device=device)  # the source weight it builds with .cuda() itself

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            losses, _ = model.forward_train(inputs, label[:, None], seg_weight=weight, cfg=forward_cfg)
        losses["decode.loss_seg"].backward()

    return model, step


def measure(args: argparse.Namespace, variant: str, backbone: str, device_name: str) -> dict[str, object]:
    """Time `args.iters` steps after `args.warmup`; return the row."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(device_name)
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if variant == "original":
        model, step = original_step(args, backbone, device)
    else:
        model, step = ours_step(args, variant, backbone, device)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu_times = [], []
    for _ in range(args.iters):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        sync()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before_kib) / 1024
    return {
        "params_m": params_m,
        "step_ms": 1000 * statistics.median(times),
        "cpu_ms": 1000 * statistics.median(cpu_times),
        "peak_mib": peak_mib,
    }


def original_environment(args: argparse.Namespace, shims: Path) -> dict[str, str]:
    (shims / "cv2").mkdir(exist_ok=True)
    (shims / "cv2" / "__init__.py").write_text(
        CV2_SHIM + "__version__ = '0'\n\ndef __getattr__(name):\n    return 0\n"
    )
    (shims / "sitecustomize.py").write_text(SIX_SHIM)
    path = [str(shims), str(Path(args.original_site)), str(Path(args.original))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}


def run_child(args: argparse.Namespace, variant: str, backbone: str, device: str, env) -> dict[str, object]:
    command = [
        sys.executable,
        __file__,
        "--single",
        f"{variant},{backbone},{device}",
        "--size",
        *map(str, args.size),
    ]
    command += ["--batch", str(args.batch), "--warmup", str(args.warmup), "--iters", str(args.iters)]
    command += ["--original", str(args.original)] if args.original else []
    command += ["--threads", str(args.threads)] if args.threads else []
    flags = (("--bf16", args.bf16), ("--channels-last", args.channels_last), ("--compile", args.compile))
    command += [flag for flag, on in flags if on]
    result = subprocess.run(command, capture_output=True, text=True, check=False, env=env, cwd=REPO)
    if result.returncode != 0:
        raise RuntimeError(f"{variant} {backbone} on {device} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(args: argparse.Namespace, results: dict, variants: list[str], clock: str) -> str:
    """One row per (backbone, device, variant): median time over rounds, ratios within rounds (of CPU time
    on one thread, else of wall time), and the median wall time."""
    import torch

    flags = ", ".join(f for f, on in (("bf16", args.bf16), ("channels_last", args.channels_last)) if on)
    threads = args.threads or torch.get_num_threads()
    lines = [
        "Student step (image + events + ISR + fusion, weighted CE, backward), "
        f"{args.size[0]}x{args.size[1]}, batch {args.batch}, {flags or 'fp32'}, {args.rounds} alternating "
        f"rounds x median of {args.iters} after {args.warmup} warm-up, torch {torch.__version__}, "
        f"{threads} CPU threads",
        "",
        f"| backbone | device | variant | params (M) | step, {'CPU' if clock == 'cpu_ms' else 'wall'} (ms) "
        "| / ours (min..max) | / original (min..max) | wall (ms) | peak (MiB) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def ratio(case, reference) -> str:
        if reference not in results[case[:2]] or not results[case[:2]][reference]:
            return ""
        values = [a / b for a, b in zip(results[case[:2]][case[2]], results[case[:2]][reference])]
        return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"

    for (backbone, device), rows in results.items():
        for variant in variants:
            if variant not in rows:
                continue
            info = results[(backbone, device)]["info"][variant]
            ms = statistics.median(rows[variant])
            case = (backbone, device, variant)
            wall = statistics.median(rows[f"{variant}/wall"])
            lines.append(
                f"| {backbone} | {device} | {variant} | {info['params_m']:.1f} | {ms:.0f} | "
                f"{ratio(case, 'ours')} | {ratio(case, 'original')} | {wall:.0f} | {info['peak_mib']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.single:
        variant, backbone, device = args.single.split(",")
        print(json.dumps(measure(args, variant, backbone, device)))
        return
    import torch

    variants = list(dict.fromkeys(args.variants))
    if "original" in variants and not (args.original and (Path(args.original) / "mmseg").is_dir()):
        print(
            f"skipping the original: no checkout of XiaRho/CMDA at --original {args.original!r}",
            file=sys.stderr,
        )
        variants.remove("original")
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    # one CPU thread: CPU time is the cost and hardly moves with other jobs; otherwise wall time
    clock = "cpu_ms" if args.threads == 1 and devices == ["cpu"] else "step_ms"
    results: dict = {}
    with tempfile.TemporaryDirectory() as shims:
        env_original = original_environment(args, Path(shims)) if "original" in variants else None
        for round_index in range(args.rounds):
            order = variants[round_index % len(variants) :] + variants[: round_index % len(variants)]
            for device in devices:
                for backbone in args.backbones:
                    rows = results.setdefault((backbone, device), {"info": {}})
                    for variant in order:
                        env = env_original if variant == "original" else None
                        row = run_child(args, variant, backbone, device, env)
                        rows.setdefault(variant, []).append(row[clock])
                        rows.setdefault(f"{variant}/wall", []).append(row["step_ms"])
                        rows["info"][variant] = row
                        print(
                            f"round {round_index + 1}: {backbone} {device} {variant} {row}", file=sys.stderr
                        )
    print(markdown(args, results, variants, clock))


if __name__ == "__main__":
    main()
