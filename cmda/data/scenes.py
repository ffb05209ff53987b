"""The street scenes every synthetic twin draws: class layouts that move, rendered by day and by night.

Why: tests, demos and the Ray Tune sweeps need data that exercises the exact loader code paths, without the
real datasets (tens of GB, not downloadable here). The scenes are LEARNABLE, so a tiny model can show that
training works end to end:
- a layout of class regions (sky on top, road at the bottom, buildings/vegetation/terrain near the horizon,
  sidewalks, poles with signs, cars, persons, trucks) whose colour AND texture identify the class;
- night frames are darker, colour-cast and have glare blobs (the day/night domain gap);
- objects move between frames, so events (log-intensity changes, as an event camera sees them) fire at the
  boundaries of moving objects, and the Cityscapes IC1 image shows the same motion;
- trucks appear only in Cityscapes, as in DSEC-Night where truck never occurs.
Each dataset's twin writer (beside its loader) draws these scenes into its own on-disk format;
cmda/data/synthetic.py runs every writer. docs/ARCHITECTURE.md ("cmda.data") has the contracts.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from cmda.data import PALETTE

ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR, TRUCK = (
    0, 1, 2, 5, 7, 8, 9, 10, 11, 13, 14,
)  # fmt: skip
MOVING_CLASSES = (PERSON, CAR, TRUCK)

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


def class_textures(width: int, height: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
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


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def palette_image(train_ids: np.ndarray) -> np.ndarray:
    """trainIds -> RGB uint8 with the Cityscapes palette (ignore and unknown ids black), as the colour
    label files and `cmda test`'s prediction PNGs show them."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(PALETTE)] = np.asarray(PALETTE, dtype=np.uint8)
    return table[train_ids]
