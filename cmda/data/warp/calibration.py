"""Calibration for `cmda data warp-dsec`: what the warp reads from a sequence's cam_to_cam.yaml.

DSEC names: cam0 = left events, cam1 = left frames, camRectX = rectified camX, T_10 maps cam0 points into
cam1. `reference_calibration` writes zurich_city_09's geometry with DSEC's field names (the synthetic
twin, the tests and the benchmark use it). The package docstring (cmda/data/warp/__init__.py) says why
the warp exists; docs/ARCHITECTURE.md ("cmda.data") has the contracts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cmda.data.dsec_layout import CALIBRATION_FILE
from cmda.io import load_yaml

DSEC_EVENT_SIZE = (640, 480)  # camRect0 (W, H), used when cam_to_cam.yaml gives no resolution
DSEC_FRAME_SIZE = (1440, 1080)  # camRect1 (W, H)

# zurich_city_09's rectified calibration (DSEC gives zurich_city_00-03, 09, 10, 12 and 14 one calibration), as
# transcribed in public code from its cam_to_cam.yaml. The synthetic twin, the tests and the benchmark use it;
# the event stereo baseline (Q of cams_03) is not part of the transcription, 0.6 m is an assumption.
ZURICH_CITY_09 = {
    "camRect0": [583.3081203392971, 583.3081203392971, 336.83414459228516, 220.91131019592285],
    "camRect1": [1150.8249465165975, 1150.8249465165975, 724.4121398925781, 569.1058044433594],
    "T_10": [
        [0.9997112144904777, 0.00986845600843356, 0.02191121169595574, -0.04410796144531285],
        [-0.00996970822323083, 0.9999401008187403, 0.00451660188111385, 0.000933594786315412],
        [-0.02186532734534335, -0.0047337459393644215, 0.9997497182342509, -0.01216624740013352],
        [0.0, 0.0, 0.0, 1.0],
    ],
    "R_rect0": [
        [0.9999534546309575, -0.0030745983972593127, 0.009145240090297576],
        [0.003087094888434143, 0.9999943200819906, -0.0013526451518654562],
        [-0.009141029305467696, 0.001380814416433941, 0.9999572665543184],
    ],
    "R_rect1": [
        [0.9998378277031966, -0.01324800441141771, -0.01219871603357244],
        [0.013290206303291856, 0.9999059517045085, 0.0033849907410636757],
        [0.012152724392852067, -0.0035465652420619918, 0.9999198633714681],
    ],
}
EVENT_BASELINE_M = 0.6


class WarpError(ValueError):
    """Bad input for warp-dsec; the message names the file (and the field) and what was expected."""


# -- calibration --------------------------------------------------------------------------------------------


def _matrix(data: Any, path: Path, dotted: str, shape: tuple[int, ...], expected: str) -> np.ndarray:
    node = data
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise WarpError(f"{path}: missing field {dotted} (expected {expected})")
        node = node[key]
    try:
        array = np.asarray(node, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != shape or not np.isfinite(array).all():
        raise WarpError(f"{path}: field {dotted} must be {expected}, got {node!r}")
    return array


def _camera_matrix(fx_fy_cx_cy: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = fx_fy_cx_cy
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Calibration:
    """What the warp needs from a sequence's cam_to_cam.yaml (DSEC names: see the module docstring)."""

    path: Path
    k_event: np.ndarray  # camRect0 3x3
    k_frame: np.ndarray  # camRect1 3x3
    r_rect0: np.ndarray  # cam0 -> camRect0
    r_rect1: np.ndarray  # cam1 -> camRect1
    t_10: np.ndarray  # 4x4, cam0 -> cam1
    q_event: np.ndarray  # 4x4, disparity_to_depth.cams_03: [x, y, d, 1] in camRect0 -> homogeneous 3D
    event_size: tuple[int, int]  # (W, H) of camRect0
    frame_size: tuple[int, int]  # (W, H) of camRect1

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        if not path.is_file():
            raise WarpError(
                f"{path}: calibration file not found (DSEC ships it as <sequence>/{CALIBRATION_FILE})"
            )
        return cls.from_dict(load_yaml(path), path)

    @classmethod
    def from_dict(cls, data: Any, path: Path) -> Calibration:
        k4 = "a list [fx, fy, cx, cy]"
        sizes = []
        for camera, default in (("camRect0", DSEC_EVENT_SIZE), ("camRect1", DSEC_FRAME_SIZE)):
            node = data.get("intrinsics", {}).get(camera, {}) if isinstance(data, dict) else {}
            if isinstance(node, dict) and "resolution" in node:
                size = _matrix(data, path, f"intrinsics.{camera}.resolution", (2,), "[width, height]")
                if (size < 2).any() or (size != np.round(size)).any():
                    raise WarpError(f"{path}: intrinsics.{camera}.resolution must be two integers >= 2")
                sizes.append((int(size[0]), int(size[1])))
            else:
                sizes.append(default)
        return cls(
            path=path,
            k_event=_camera_matrix(_matrix(data, path, "intrinsics.camRect0.camera_matrix", (4,), k4)),
            k_frame=_camera_matrix(_matrix(data, path, "intrinsics.camRect1.camera_matrix", (4,), k4)),
            r_rect0=_matrix(data, path, "extrinsics.R_rect0", (3, 3), "a 3x3 rotation"),
            r_rect1=_matrix(data, path, "extrinsics.R_rect1", (3, 3), "a 3x3 rotation"),
            t_10=_matrix(data, path, "extrinsics.T_10", (4, 4), "a 4x4 transform"),
            q_event=_matrix(data, path, "disparity_to_depth.cams_03", (4, 4), "the 4x4 Q matrix"),
            event_size=sizes[0],
            frame_size=sizes[1],
        )

    def homography(self) -> np.ndarray:
        """3x3 map from event pixels to frame pixels for points at infinite depth."""
        rotation = self.r_rect1 @ self.t_10[:3, :3] @ np.linalg.inv(self.r_rect0)
        return self.k_frame @ rotation @ np.linalg.inv(self.k_event)


def reference_calibration(scale: float = 1.0, event_baseline: float = EVENT_BASELINE_M) -> dict:
    """cam_to_cam.yaml content with DSEC's field names and zurich_city_09's geometry; intrinsics and
    resolutions scaled by `scale` (the synthetic twin's small size uses 0.25)."""
    intrinsics = {}
    for camera, size in (("camRect0", DSEC_EVENT_SIZE), ("camRect1", DSEC_FRAME_SIZE)):
        k = [value * scale for value in ZURICH_CITY_09[camera]]
        intrinsics[camera] = {
            "camera_model": "pinhole",
            "camera_matrix": k,
            "resolution": [round(size[0] * scale), round(size[1] * scale)],
        }
    f, cx, cy = intrinsics["camRect0"]["camera_matrix"][0], *intrinsics["camRect0"]["camera_matrix"][2:]
    q = [
        [1.0, 0.0, 0.0, -cx],
        [0.0, 1.0, 0.0, -cy],
        [0.0, 0.0, 0.0, f],
        [0.0, 0.0, 1.0 / event_baseline, 0.0],
    ]
    return {
        "intrinsics": intrinsics,
        "extrinsics": {name: copy.deepcopy(ZURICH_CITY_09[name]) for name in ("T_10", "R_rect0", "R_rect1")},
        "disparity_to_depth": {"cams_03": q},
    }
