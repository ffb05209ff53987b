"""Events/s of `events_to_voxel_grid` against a straightforward per-corner reference, in the same run.

The reference is how DSEC's and CMDA's code splat: a Python loop over the 2x2(x2) corners, each building
its own weights, mask and flat index and calling `index_put_(..., accumulate=True)`. Ours computes all
corners by broadcasting and accumulates once.

    python benchmarks/voxel.py [--counts 100000 1000000 5000000] [--bins 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from cmda.data.events import events_to_voxel_grid, use_compiled_voxelizer

HEIGHT, WIDTH = 480, 640


def per_corner_reference(x, y, t, p, bins: int, height: int, width: int) -> torch.Tensor:
    grid = torch.zeros(bins, height, width, device=x.device).flatten()
    value = p * 2 - 1
    t_norm = (bins - 1) * (t - t[0]) / max(float(t[-1] - t[0]), 1e-9) if bins > 1 else torch.zeros_like(x)
    x0, y0, t0 = x.int(), y.int(), t_norm.int()
    for xl in (x0, x0 + 1):
        for yl in (y0, y0 + 1):
            for tl in (t0, t0 + 1) if bins > 1 else (t0,):
                mask = (xl >= 0) & (yl >= 0) & (tl >= 0) & (xl < width) & (yl < height) & (tl < bins)
                weight = value * (1 - (xl - x).abs()) * (1 - (yl - y).abs()) * (1 - (tl - t_norm).abs())
                index = height * width * tl.long() + width * yl.long() + xl.long()
                grid.index_put_((index[mask],), weight[mask], accumulate=True)
    return grid.view(bins, height, width)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--bins", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (the goal is per core)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compiled", action="store_true", help="also time the torch.compile'd splat")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print("| device | events | bins | variant | ours (Mev/s) | per-corner reference (Mev/s) | speed-up |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
    variants = ["eager", "compiled"] if args.compiled else ["eager"]
    for device in devices:
        for count in args.counts:
            gen = torch.Generator().manual_seed(0)
            x = (torch.rand(count, generator=gen) * WIDTH).to(device)
            y = (torch.rand(count, generator=gen) * HEIGHT).to(device)
            t = torch.sort(torch.randint(0, 50_000, (count,), generator=gen)).values.float().to(device)
            p = torch.randint(0, 2, (count,), generator=gen).float().to(device)
            inputs = (x, y, t, p, args.bins, HEIGHT, WIDTH)
            ref = timed(functools.partial(per_corner_reference, *inputs), device, args.repeats)
            for variant in variants:
                use_compiled_voxelizer(variant == "compiled")
                ours = timed(functools.partial(events_to_voxel_grid, *inputs), device, args.repeats)
                print(
                    f"| {device.type} | {count:,} | {args.bins} | {variant} | {count / ours / 1e6:.1f} "
                    f"| {count / ref / 1e6:.1f} | {ref / ours:.2f}x |"
                )


if __name__ == "__main__":
    main()
