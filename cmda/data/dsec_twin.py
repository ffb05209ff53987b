"""The synthetic twin of DSEC-Night: event files, rectify maps, timestamps, warp images and labels, plus what
`cmda data warp-dsec` reads (calibration, frame-camera images, disparity), in DSEC's own formats.

The synthetic sequences are named `zurich_city_synth_{a..e}`, not the real zurich_city_09_a..e: those get
the original's fixed training exclusions (frames 0..797, ...), which would leave a sequence of 40 frames
without a training frame. Events fire where the scene's log intensity changes between frames, as an event
camera's do. Paths are cmda/data/dsec_layout.py's; cmda/data/synthetic.py runs this writer with the
others; docs/ARCHITECTURE.md ("cmda.data") has the contracts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from cmda.data import dsec_layout as layout
from cmda.data.scenes import class_textures, gray, make_scene, png_bytes, rasterize, render_day, render_night
from cmda.data.synthetic import Twin
from cmda.io import write_bytes_atomic

DSEC_SEQUENCES = tuple(f"zurich_city_synth_{s}" for s in "abcde")


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
    from cmda.data.event_files import write_dsec_events_h5, write_rectify_map_h5
    from cmda.data.warp import apply_taps
    from cmda.io import write_yaml_atomic

    width, height = size
    geometry = dsec_geometry(size)
    frame_taps = frame_view_taps(geometry, size)
    for seq_index, name in enumerate(DSEC_SEQUENCES[:sequences]):
        seq = root / name
        rng = np.random.default_rng([seed, 2, seq_index])
        scene = make_scene(rng, with_truck=False)
        textures = class_textures(width, height, rng)
        noise = rng.normal(0.0, 3.0, (height, width, 3))
        rect_map = make_rectify_map(width, height, rng)
        write_yaml_atomic(seq / layout.CALIBRATION_FILE, geometry.calibration)
        valid = lidar_like_mask(np.random.default_rng([seed, 2, seq_index, 1]), size)
        disparity_png = png_bytes(np.where(valid, np.round(geometry.disparity * 256), 0).astype(np.uint16))
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
            write_bytes_atomic(layout.warp_image_path(seq, frame), png_bytes(night))
            frame_view = np.clip(np.rint(apply_taps(night, frame_taps)), 0, 255).astype(np.uint8)
            write_bytes_atomic(layout.frame_image_path(seq, frame), png_bytes(frame_view))
            if frame % 2 == 0:  # DSEC has disparity at even frame indices only
                write_bytes_atomic(layout.disparity_path(seq, frame), disparity_png)
            if frame in labelled:
                write_bytes_atomic(layout.label_path(seq, frame), png_bytes(label))
        tail_end = int(timestamps[-1]) + 20_000
        tail = synthesize_events(
            previous_log, previous_log, rect_map, int(timestamps[-1]), tail_end, rng, contrast,
            max(noise_events_per_window // 2, 1),
        )  # fmt: skip
        for part, store in zip(tail, (xs, ys, ts, ps)):
            store.append(part)
        write_bytes_atomic(seq / layout.TIMESTAMPS_FILE, "".join(f"{t}\n" for t in timestamps).encode())
        (seq / layout.EVENTS_FILE).parent.mkdir(parents=True, exist_ok=True)
        write_dsec_events_h5(
            seq / layout.EVENTS_FILE, np.concatenate(xs), np.concatenate(ys), np.concatenate(ts),
            np.concatenate(ps), compress=True,
        )  # fmt: skip
        write_rectify_map_h5(seq / layout.RECTIFY_MAP_FILE, rect_map)


@dataclass(frozen=True)
class DsecTwin(Twin):
    """The DSEC-Night twin writer (`cmda data synth`): its options and the index files it prepares."""

    size: tuple[int, int] = (160, 120)
    """(W, H) of the event sensor (the warp images are on its grid)."""
    frames_per_sequence: int = 40
    label_every: int = 6
    event_contrast: float = 0.15
    """Log-intensity change per event."""
    noise_events_per_window: int = 200
    sequences: int = len(DSEC_SEQUENCES)
    REAL_SIZE: ClassVar = {"size": (640, 480), "frames_per_sequence": 12, "label_every": 3}

    def __post_init__(self) -> None:
        if self.frames_per_sequence < 4:
            raise ValueError(
                f"frames_per_sequence must be >= 4 (train needs frames after the labels), got "
                f"{self.frames_per_sequence}"
            )
        if not 1 <= self.sequences <= len(DSEC_SEQUENCES):
            raise ValueError(f"sequences must be 1..{len(DSEC_SEQUENCES)}, got {self.sequences}")

    def write(self, folder: Path, seed: int, workers: int = 1) -> None:
        from cmda.data.dsec import build_index_files

        write_dsec(
            folder, seed, tuple(self.size), self.frames_per_sequence, self.label_every, self.event_contrast,
            self.noise_events_per_window, self.sequences,
        )  # fmt: skip
        build_index_files(folder)
