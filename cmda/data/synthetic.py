"""A small synthetic twin of Cityscapes, DSEC-Night and Dark Zurich, written in the real on-disk formats.

Why: tests, demos and the Ray Tune sweeps need data that exercises the exact loader code paths, without the
real datasets (tens of GB, not downloadable here). The scenes are LEARNABLE, so a tiny model can show that
training works end to end:
- a layout of class regions (sky on top, road at the bottom, buildings/vegetation/terrain near the horizon,
  sidewalks, poles with signs, cars, persons, trucks) whose colour AND texture identify the class;
- night frames are darker, colour-cast and have glare blobs (the day/night domain gap);
- objects move between frames, so events (log-intensity changes, as an event camera sees them) fire at the
  boundaries of moving objects, and the Cityscapes IC1 image shows the same motion;
- trucks appear only in Cityscapes, as in DSEC-Night where truck never occurs.
Everything is drawn from per-item generators seeded with (seed, domain, item), so the same seed gives
byte-identical image/label/text files regardless of order.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmda.data.cityscapes import LABEL_ID_TO_TRAIN_ID, prepare_cityscapes
from cmda.data.dsec import build_index_files
from cmda.data.targets import TARGETS
from cmda.io import write_bytes_atomic

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR, TRUCK = (
    0, 1, 2, 5, 7, 8, 9, 10, 11, 13, 14,
)  # fmt: skip
SYNTHETIC_CLASSES = (ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR, TRUCK)
MOVING_CLASSES = (PERSON, CAR, TRUCK)
DSEC_SEQUENCES = tuple(f"zurich_city_synth_{s}" for s in "abcde")
"""Not the real names zurich_city_09_a..e: those get the original's fixed training exclusions (frames
0..797, ...), which would leave a synthetic sequence of 40 frames without any training frame."""
EGO_VEHICLE_LABEL_ID = 1  # Cityscapes "ego vehicle": a labelId that maps to ignore (255)

# Day colour (RGB) per trainId; textures below make classes separable even where colours are close.
DAY_COLOURS = {
    ROAD: (95, 92, 98), SIDEWALK: (160, 140, 135), BUILDING: (125, 85, 65), POLE: (55, 55, 60),
    SIGN: (225, 205, 45), VEGETATION: (60, 135, 45), TERRAIN: (160, 175, 95), SKY: (135, 185, 235),
    PERSON: (185, 45, 55), CAR: (35, 55, 165), TRUCK: (40, 100, 115),
}  # fmt: skip
NIGHT_CAST = np.array([1.15, 0.95, 0.7])  # sodium-lamp orange cast
NIGHT_GAIN = 0.45


@dataclass
class Shape:
    """One class region in normalised coordinates (x right, y down, both 0..1)."""

    cls: int
    kind: str  # "rect" | "ellipse" | "road" (trapezoid) | "fill_above"
    params: tuple[float, ...]
    velocity: float = 0.0  # normalised x displacement per frame


@dataclass
class Scene:
    shapes: list[Shape] = field(default_factory=list)
    lights: list[tuple[float, ...]] = field(default_factory=list)  # x, y, sigma, x velocity (normalised)


@dataclass(frozen=True)
class SyntheticPaths:
    """Where `generate` wrote the two datasets."""

    root: Path
    cityscapes: Path
    dsec: Path
    dark_zurich: Path


def make_scene(rng: np.random.Generator, with_truck: bool) -> Scene:
    """Random street layout; drawing order = list order (later shapes occlude earlier ones)."""
    horizon = rng.uniform(0.38, 0.5)
    scene = Scene()
    scene.shapes.append(Shape(SKY, "fill_above", (1.0,)))
    x = -0.05
    while x < 1.0:
        width = rng.uniform(0.15, 0.35)
        top = horizon - rng.uniform(0.12, 0.3)
        scene.shapes.append(Shape(BUILDING, "rect", (x, top, x + width, horizon + 0.1)))
        x += width + rng.uniform(0.0, 0.08)
    for _ in range(int(rng.integers(2, 5))):
        cx, r = rng.uniform(0.0, 1.0), rng.uniform(0.06, 0.14)
        scene.shapes.append(Shape(VEGETATION, "ellipse", (cx, horizon + 0.02, r, r * 1.3)))
    scene.shapes.append(Shape(TERRAIN, "rect", (0.0, horizon + 0.08, 1.0, horizon + 0.2)))
    road_top = horizon + 0.1
    scene.shapes.append(Shape(SIDEWALK, "road", (road_top, 0.16, 0.95)))
    scene.shapes.append(Shape(ROAD, "road", (road_top, 0.1, 0.7)))
    for _ in range(int(rng.integers(1, 4))):
        px = rng.choice([rng.uniform(0.02, 0.25), rng.uniform(0.75, 0.98)])
        top = horizon - rng.uniform(0.15, 0.25)
        scene.shapes.append(Shape(POLE, "rect", (px - 0.008, top, px + 0.008, horizon + 0.22)))
        scene.shapes.append(Shape(SIGN, "rect", (px - 0.035, top, px + 0.035, top + 0.06)))
        scene.lights.append((px, top, rng.uniform(0.03, 0.06), 0.0))
    if with_truck:
        x0 = rng.uniform(0.05, 0.55)
        speed = rng.choice([-1, 1]) * rng.uniform(0.006, 0.012)
        scene.shapes.append(Shape(TRUCK, "rect", (x0, horizon - 0.05, x0 + 0.35, horizon + 0.3), speed))
    for _ in range(int(rng.integers(1, 4))):
        y1 = rng.uniform(horizon + 0.25, 0.95)
        size = 0.12 + 0.35 * (y1 - horizon)
        x0 = rng.uniform(0.1, 0.9 - size)
        speed = rng.choice([-1, 1]) * rng.uniform(0.008, 0.02)
        scene.shapes.append(Shape(CAR, "rect", (x0, y1 - size * 0.55, x0 + size, y1), speed))
        scene.lights.append((x0 + size * 0.5, y1 - size * 0.2, size * 0.25, speed))
    for _ in range(int(rng.integers(1, 3))):
        cx = rng.choice([rng.uniform(0.05, 0.25), rng.uniform(0.75, 0.95)])
        cy = rng.uniform(horizon + 0.12, 0.7)
        height = 0.1 + 0.3 * (cy - horizon)
        speed = rng.choice([-1, 1]) * rng.uniform(0.004, 0.01)
        scene.shapes.append(Shape(PERSON, "ellipse", (cx, cy, height * 0.22, height * 0.5), speed))
    return scene


def rasterize(scene: Scene, width: int, height: int, frame: float) -> np.ndarray:
    """Label map (uint8 trainIds) of the scene at time `frame` (moving shapes shifted by velocity*frame)."""
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    xx, yy = np.meshgrid(xs, ys)
    label = np.full((height, width), 255, dtype=np.uint8)
    for shape in scene.shapes:
        shift = shape.velocity * frame
        p = shape.params
        if shape.kind == "fill_above":
            mask = yy < p[0]
        elif shape.kind == "rect":
            mask = (xx >= p[0] + shift) & (xx < p[2] + shift) & (yy >= p[1]) & (yy < p[3])
        elif shape.kind == "ellipse":
            mask = ((xx - p[0] - shift) / p[2]) ** 2 + ((yy - p[1]) / p[3]) ** 2 < 1.0
        elif shape.kind == "road":
            top, half_top, half_bottom = p
            t = np.clip((yy - top) / max(1.0 - top, 1e-6), 0.0, 1.0)
            mask = (yy >= top) & (np.abs(xx - 0.5) < half_top + (half_bottom - half_top) * t)
        else:
            raise ValueError(f"unknown shape kind {shape.kind!r}")
        label[mask] = shape.cls
    return label


def _class_textures(width: int, height: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Multiplicative texture per class (screen-fixed, so only boundaries change when objects move)."""
    xs = np.arange(width) / width
    ys = np.arange(height) / height
    xx, yy = np.meshgrid(xs, ys)
    fine = rng.normal(0.0, 1.0, (height, width))
    coarse = np.kron(rng.normal(0.0, 1.0, (height // 8 + 1, width // 8 + 1)), np.ones((8, 8)))
    coarse = coarse[:height, :width]
    return {
        ROAD: 1.0 + 0.06 * fine,
        SIDEWALK: 1.0 + 0.18 * np.sign(np.sin(2 * np.pi * 24 * xx) * np.sin(2 * np.pi * 18 * yy)),
        BUILDING: np.where((np.mod(xx * 22, 1.0) < 0.45) & (np.mod(yy * 16, 1.0) < 0.5), 0.55, 1.05),
        POLE: np.ones_like(xx),
        SIGN: np.ones_like(xx),
        VEGETATION: 1.0 + 0.3 * fine,
        TERRAIN: 1.0 + 0.12 * coarse,
        SKY: 1.1 - 0.3 * yy,
        PERSON: 1.0 + 0.25 * np.sign(np.sin(2 * np.pi * 30 * xx)),
        CAR: np.where(np.mod(yy * 10, 1.0) < 0.3, 1.4, 0.9),
        TRUCK: 1.0 + 0.2 * np.sign(np.sin(2 * np.pi * 14 * yy)),
    }


def render_day(label: np.ndarray, textures: dict[int, np.ndarray], noise: np.ndarray) -> np.ndarray:
    """Day RGB uint8: class colour x class texture + static sensor noise."""
    image = np.zeros((*label.shape, 3), dtype=np.float64)
    for cls, colour in DAY_COLOURS.items():
        mask = label == cls
        if mask.any():
            image[mask] = np.asarray(colour, dtype=np.float64) * textures[cls][mask][:, None]
    image += noise
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def render_night(day: np.ndarray, scene: Scene, frame: float) -> np.ndarray:
    """Night RGB uint8: darker, orange cast, additive glare blobs at lamps and car lights."""
    height, width = day.shape[:2]
    image = day.astype(np.float64) * NIGHT_GAIN * NIGHT_CAST
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    glare = np.zeros((height, width))
    for lx, ly, sigma, velocity in scene.lights:
        gx = np.exp(-((xs - lx - velocity * frame) ** 2) / (2 * sigma**2))
        gy = np.exp(-((ys - ly) ** 2) / (2 * (sigma * width / height) ** 2))
        glare += np.outer(gy, gx)
    image += 210.0 * np.clip(glare, 0, 1.2)[..., None] * np.array([1.0, 0.85, 0.6])
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as float (what PIL 'L' computes), used for events."""
    return image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114


def make_rectify_map(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Mild lens-like distortion: raw (x, y) -> rectified (x, y), float32 [H, W, 2] like DSEC's."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    cx, cy = (width - 1) / 2 + rng.uniform(-2, 2), (height - 1) / 2 + rng.uniform(-2, 2)
    focal = 0.9 * width
    u, v = (xs - cx) / focal, (ys - cy) / focal
    r2 = u * u + v * v
    k1 = rng.uniform(0.04, 0.08)
    angle = rng.uniform(-0.004, 0.004)
    ur, vr = u * (1 + k1 * r2), v * (1 + k1 * r2)
    ur, vr = ur * np.cos(angle) - vr * np.sin(angle), ur * np.sin(angle) + vr * np.cos(angle)
    return np.stack([ur * focal + cx, vr * focal + cy], axis=-1).astype(np.float32)


def synthesize_events(
    log_prev: np.ndarray,
    log_now: np.ndarray,
    rect_map: np.ndarray,
    t_start: int,
    t_end: int,
    rng: np.random.Generator,
    contrast: float,
    noise_events: int,
) -> tuple[np.ndarray, ...]:
    """Events (raw sensor coords) for the log-intensity change log_prev -> log_now within (t_start, t_end].

    Each raw pixel looks up the rectified frame through the rectify map (nearest), emits floor(|dL|/C)
    events (capped at 4) of the change's polarity at uniform times, plus uniform background noise events.
    """
    height, width = rect_map.shape[:2]
    xi = np.clip(np.round(rect_map[..., 0]).astype(np.int64), 0, log_now.shape[1] - 1)
    yi = np.clip(np.round(rect_map[..., 1]).astype(np.int64), 0, log_now.shape[0] - 1)
    change = (log_now - log_prev)[yi, xi]
    counts = np.minimum(np.floor(np.abs(change) / contrast), 4).astype(np.int64)
    ys, xs = np.nonzero(counts)
    reps = counts[ys, xs]
    x = np.repeat(xs, reps)
    y = np.repeat(ys, reps)
    p = np.repeat((change[ys, xs] > 0).astype(np.uint8), reps)
    x = np.concatenate([x, rng.integers(0, width, noise_events)])
    y = np.concatenate([y, rng.integers(0, height, noise_events)])
    p = np.concatenate([p, rng.integers(0, 2, noise_events).astype(np.uint8)])
    t = rng.integers(t_start + 1, t_end + 1, x.shape[0])
    order = np.argsort(t, kind="stable")
    return x[order].astype(np.uint16), y[order].astype(np.uint16), t[order].astype(np.int64), p[order]


_write_bytes_atomic = write_bytes_atomic


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _palette_image(train_ids: np.ndarray) -> np.ndarray:
    from cmda.data import PALETTE

    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(PALETTE)] = np.asarray(PALETTE, dtype=np.uint8)
    return table[train_ids]


def _train_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    table = np.zeros(256, dtype=np.uint8)  # 0 = "unlabeled" -> ignore
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        table[train_id] = label_id
    return table[train_ids]


def write_cityscapes(
    root: Path, seed: int, size: tuple[int, int], cities: tuple[str, ...], images_per_city: int
) -> None:
    """leftImg8bit, leftImg8bit_IC1 (IME of a synthetic previous frame) and gtFine labelIds + colour PNGs."""
    import torch

    from cmda.data import extractors

    width, height = size
    for city_index, city in enumerate(cities):
        for item in range(images_per_city):
            rng = np.random.default_rng([seed, 1, city_index, item])
            scene = make_scene(rng, with_truck=bool(rng.random() < 0.5))
            textures = _class_textures(width, height, rng)
            noise = rng.normal(0.0, 3.0, (height, width, 3))
            label = rasterize(scene, width, height, frame=0.0)
            ego_rows = max(1, height // 20)
            label_ids = _train_to_label_ids(label)
            label_ids[-ego_rows:] = EGO_VEHICLE_LABEL_ID
            image = render_day(label, textures, noise)
            previous = render_day(rasterize(scene, width, height, frame=-1.0), textures, noise)
            now_gray = extractors.to_gray_uint8(torch.from_numpy(image).permute(2, 0, 1)[None])
            front_gray = extractors.to_gray_uint8(torch.from_numpy(previous).permute(2, 0, 1)[None])
            motion = extractors.motion_to_png_uint8(extractors.image_motion_extractor(now_gray, front_gray))
            motion = np.asarray(motion).reshape(height, width).astype(np.uint8)
            stem = f"{city}_000000_{item:06d}"
            _write_bytes_atomic(
                root / "leftImg8bit/train" / city / f"{stem}_leftImg8bit.png", _png_bytes(image)
            )
            _write_bytes_atomic(
                root / "leftImg8bit_IC1/train" / city / f"{stem}_leftImg8bit.png", _png_bytes(motion)
            )
            gt_dir = root / "gtFine/train" / city
            _write_bytes_atomic(gt_dir / f"{stem}_gtFine_labelIds.png", _png_bytes(label_ids))
            colour = _palette_image(np.where(label_ids == EGO_VEHICLE_LABEL_ID, 255, label).astype(np.uint8))
            _write_bytes_atomic(gt_dir / f"{stem}_gtFine_color.png", _png_bytes(colour))


SYNTHETIC_GROUND_DEPTH_M = (40.0, 6.0)  # depth of the synthetic ground plane at the top and bottom event rows


@dataclass(frozen=True)
class DsecGeometry:
    """The synthetic DSEC rig: zurich_city_09's calibration scaled to the event size, looking at one plane
    (a ground plane, far at the top of the event view, near at the bottom), so `cmda data warp-dsec` has a
    calibration, disparity maps and frame-camera images whose exact warp is known."""

    calibration: dict  # cam_to_cam.yaml content
    disparity: np.ndarray  # float64 [H, W] event disparity of the plane, pixels
    frame_from_event: np.ndarray  # 3x3 homography of the plane: event pixel -> frame pixel
    frame_size: tuple[int, int]  # (W, H) of the rectified frame images


def dsec_geometry(size: tuple[int, int]) -> DsecGeometry:
    """Calibration, plane disparity and plane homography for an event view of `size` (W, H)."""
    from cmda.data.warp import Calibration, reference_calibration

    width, height = size
    data = reference_calibration(scale=width / 640)
    data["intrinsics"]["camRect0"]["resolution"] = [width, height]
    calib = Calibration.from_dict(data, Path("cam_to_cam.yaml"))
    far, near = SYNTHETIC_GROUND_DEPTH_M
    # 1/Z of a plane is affine in pixel coordinates: here it depends on the row only
    inverse_depth = np.array([0.0, (1 / near - 1 / far) / max(height - 1, 1), 1 / far])
    baseline = 1.0 / calib.q_event[3, 2]
    focal = calib.k_event[0, 0]
    ys = np.arange(height, dtype=np.float64)
    disparity = np.repeat((focal * baseline * (inverse_depth[1] * ys + inverse_depth[2]))[:, None], width, 1)
    normal = inverse_depth @ calib.k_event  # plane n.X = 1 in camRect0 coordinates
    motion = calib.t_10[:3, :3] @ np.linalg.inv(calib.r_rect0) + np.outer(calib.t_10[:3, 3], normal)
    homography = calib.k_frame @ calib.r_rect1 @ motion @ np.linalg.inv(calib.k_event)
    return DsecGeometry(data, disparity, homography, calib.frame_size)


def lidar_like_mask(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """Where a synthetic disparity map is valid: nothing in the top quarter (sky), 70% of pixels below."""
    width, height = size
    mask = rng.random((height, width)) < 0.7
    mask[: height // 4] = False
    return mask


def frame_view_taps(geometry: DsecGeometry, event_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear taps that draw the frame camera's rectified image from the event view (edges extended)."""
    from cmda.data.warp import apply_homography, bilinear_taps

    width, height = geometry.frame_size
    ys, xs = np.mgrid[0:height, 0:width]
    back = apply_homography(np.linalg.inv(geometry.frame_from_event), xs.ravel(), ys.ravel())
    return bilinear_taps(back.reshape(height, width, 2), event_size)


def write_dsec(
    root: Path,
    seed: int,
    size: tuple[int, int],
    frames: int,
    label_every: int,
    contrast: float,
    noise_events_per_window: int,
    sequences: int = len(DSEC_SEQUENCES),
) -> None:
    """Up to five DSEC-Night sequences: events.h5 (Blosc-ZSTD), rectify_map.h5, timestamps, labels, warp
    images, and what `cmda data warp-dsec` reads: calibration/cam_to_cam.yaml, frame-camera images
    (images/left/rectified, 1440x1080 scaled like the events) and disparity/event at even frames."""
    from cmda.data import events as ev
    from cmda.data.warp import apply_taps
    from cmda.io import write_yaml_atomic

    width, height = size
    geometry = dsec_geometry(size)
    frame_taps = frame_view_taps(geometry, size)
    for seq_index, name in enumerate(DSEC_SEQUENCES[:sequences]):
        seq = root / name
        rng = np.random.default_rng([seed, 2, seq_index])
        scene = make_scene(rng, with_truck=False)
        textures = _class_textures(width, height, rng)
        noise = rng.normal(0.0, 3.0, (height, width, 3))
        rect_map = make_rectify_map(width, height, rng)
        write_yaml_atomic(seq / "calibration/cam_to_cam.yaml", geometry.calibration)
        valid = lidar_like_mask(np.random.default_rng([seed, 2, seq_index, 1]), size)
        disparity_png = _png_bytes(np.where(valid, np.round(geometry.disparity * 256), 0).astype(np.uint16))
        t_offset = 50_000_000_000 + seq_index * 1_000_000_000
        timestamps = t_offset + 30_000 + 50_000 * np.arange(frames, dtype=np.int64)
        label_until = int(frames * rng.uniform(0.35, 0.55))
        labelled = set(range(2, label_until + 1, label_every))
        xs, ys, ts, ps = [], [], [], []
        pre = synthesize_events(
            np.zeros((height, width)), np.zeros((height, width)), rect_map, t_offset,
            int(timestamps[0]), rng, contrast, max(noise_events_per_window // 2, 1),
        )  # fmt: skip
        for part, store in zip(pre, (xs, ys, ts, ps)):
            store.append(part)
        previous_log = None
        for frame in range(frames):
            label = rasterize(scene, width, height, frame=float(frame))
            night = render_night(render_day(label, textures, noise), scene, float(frame))
            log_now = np.log(gray(night) + 1.0)
            if previous_log is not None:
                window = synthesize_events(
                    previous_log, log_now, rect_map, int(timestamps[frame - 1]), int(timestamps[frame]),
                    rng, contrast, noise_events_per_window,
                )  # fmt: skip
                for part, store in zip(window, (xs, ys, ts, ps)):
                    store.append(part)
            previous_log = log_now
            _write_bytes_atomic(seq / "warp_images" / f"{frame:06d}.png", _png_bytes(night))
            frame_view = np.clip(np.rint(apply_taps(night, frame_taps)), 0, 255).astype(np.uint8)
            _write_bytes_atomic(seq / "images/left/rectified" / f"{frame:06d}.png", _png_bytes(frame_view))
            if frame % 2 == 0:  # DSEC has disparity at even frame indices only
                _write_bytes_atomic(seq / "disparity/event" / f"{frame:06d}.png", disparity_png)
            if frame in labelled:
                label_name = f"{name}_{frame:06d}_grey_gtFine_labelTrainIds.png"
                _write_bytes_atomic(seq / "labels" / label_name, _png_bytes(label))
        tail_end = int(timestamps[-1]) + 20_000
        tail = synthesize_events(
            previous_log, previous_log, rect_map, int(timestamps[-1]), tail_end, rng, contrast,
            max(noise_events_per_window // 2, 1),
        )  # fmt: skip
        for part, store in zip(tail, (xs, ys, ts, ps)):
            store.append(part)
        _write_bytes_atomic(seq / "images/timestamps.txt", "".join(f"{t}\n" for t in timestamps).encode())
        (seq / "events/left").mkdir(parents=True, exist_ok=True)
        ev.write_dsec_events_h5(
            seq / "events/left/events.h5", np.concatenate(xs), np.concatenate(ys), np.concatenate(ts),
            np.concatenate(ps), compress=True,
        )  # fmt: skip
        ev.write_rectify_map_h5(seq / "events/left/rectify_map.h5", rect_map)


DARK_ZURICH_SEQUENCES = ("GOPR0351", "GOPR0356")


def write_dark_zurich(
    root: Path,
    seed: int,
    size: tuple[int, int],
    sequences: int,
    train_per_sequence: int,
    val_per_sequence: int,
) -> None:
    """Dark Zurich's night part: rgb_anon/{train,val}/night/<GOPRxxxx>/<GOPRxxxx>_frame_NNNNNN_rgb_anon.png
    and, for val, gt/val/night/<seq>/<...>_gt_labelTrainIds.png (+ _gt_labelColor.png), at a 16:9 size."""
    width, height = size
    for seq_index, name in enumerate(DARK_ZURICH_SEQUENCES[:sequences]):
        for split, count, offset in (("train", train_per_sequence, 0), ("val", val_per_sequence, 1000)):
            for item in range(count):
                rng = np.random.default_rng([seed, 3, seq_index, offset + item])
                scene = make_scene(rng, with_truck=False)
                label = rasterize(scene, width, height, frame=0.0)
                noise = rng.normal(0.0, 3.0, (height, width, 3))
                day = render_day(label, _class_textures(width, height, rng), noise)
                stem = f"{name}_frame_{offset + 7 * item:06d}"
                _write_bytes_atomic(
                    root / "rgb_anon" / split / "night" / name / f"{stem}_rgb_anon.png",
                    _png_bytes(render_night(day, scene, 0.0)),
                )
                if split == "val":
                    gt = root / "gt" / split / "night" / name
                    _write_bytes_atomic(gt / f"{stem}_gt_labelTrainIds.png", _png_bytes(label))
                    _write_bytes_atomic(gt / f"{stem}_gt_labelColor.png", _png_bytes(_palette_image(label)))


def generate(
    root: str | Path,
    *,
    seed: int = 0,
    cityscapes_size: tuple[int, int] = (256, 128),
    cities: tuple[str, ...] = ("aachen", "bochum", "cologne"),
    images_per_city: int = 8,
    dsec_size: tuple[int, int] = (160, 120),
    frames_per_sequence: int = 40,
    label_every: int = 6,
    event_contrast: float = 0.15,
    noise_events_per_window: int = 200,
    dsec_sequences: int = 5,
    dark_zurich_size: tuple[int, int] = (192, 108),
    dark_zurich_sequences: int = 2,
    dark_zurich_train: int = 6,
    dark_zurich_val: int = 3,
    workers: int = 1,
) -> SyntheticPaths:
    """Write ROOT/cityscapes and every target's twin (ROOT/DSEC_Night, ROOT/dark_zurich), then prepare them
    exactly as the real data is prepared."""
    if frames_per_sequence < 4:
        raise ValueError(
            f"frames_per_sequence must be >= 4 (train needs frames after the labels), got "
            f"{frames_per_sequence}"
        )
    root = Path(root)
    paths = SyntheticPaths(
        root,
        root / "cityscapes",
        root / TARGETS["dsec_night"].synthetic_dir,
        root / TARGETS["dark_zurich"].synthetic_dir,
    )
    write_cityscapes(paths.cityscapes, seed, tuple(cityscapes_size), tuple(cities), images_per_city)
    write_dsec(
        paths.dsec, seed, tuple(dsec_size), frames_per_sequence, label_every, event_contrast,
        noise_events_per_window, dsec_sequences,
    )  # fmt: skip
    write_dark_zurich(
        paths.dark_zurich, seed, tuple(dark_zurich_size), dark_zurich_sequences, dark_zurich_train,
        dark_zurich_val,
    )  # fmt: skip
    prepare_cityscapes(paths.cityscapes, workers=workers)
    build_index_files(paths.dsec)
    return paths


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `cmda data synth ROOT`."""
    parser.add_argument(
        "root", type=Path, help="output folder (cityscapes/, DSEC_Night/ and dark_zurich/ are created)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size",
        choices=("small", "real"),
        default="small",
        help="small: 256x128 / 160x120 (seconds); real: 2048x1024 / 640x480 resolutions",
    )
    parser.add_argument("--images-per-city", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None, help="frames per DSEC sequence")
    parser.add_argument("--noise-events", type=int, default=None, help="background events per window")
    parser.add_argument("--workers", type=int, default=1)


def run_synth(args: argparse.Namespace) -> SyntheticPaths:
    """Execute `cmda data synth` from parsed arguments."""
    options: dict = {"seed": args.seed, "workers": args.workers}
    if args.size == "real":
        options.update(
            cityscapes_size=(2048, 1024),
            dsec_size=(640, 480),
            images_per_city=2,
            frames_per_sequence=12,
            label_every=3,
            dark_zurich_size=(1920, 1080),
            dark_zurich_train=2,
            dark_zurich_val=1,
        )
    if args.images_per_city is not None:
        options["images_per_city"] = args.images_per_city
    if args.frames is not None:
        options["frames_per_sequence"] = args.frames
    if args.noise_events is not None:
        options["noise_events_per_window"] = args.noise_events
    paths = generate(args.root, **options)
    print(f"wrote {paths.cityscapes}, {paths.dsec} and {paths.dark_zurich}")
    return paths
