"""Data for CMDA: the real on-disk formats (Cityscapes, DSEC-Night, Dark Zurich), event voxelization,
modality extractors, rare class sampling and a synthetic twin written in the same formats.

This module holds only constants, so importing it stays cheap (the analysis package reads the class names,
and the target registry reads the ISR parameter sets without importing torch).
"""

from dataclasses import dataclass

CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic_light",
    "traffic_sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
"""The 19 Cityscapes trainIds in order (index = trainId)."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)
"""Cityscapes colours (RGB) per trainId, used for colour-coded predictions."""

IGNORE_INDEX = 255
NUM_CLASSES = len(CLASSES)
DSEC_EXCLUDED_CLASS = 14
"""truck: never present in the DSEC-Night test labels, so the 18-class mean leaves it out."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


DIRECTIONS: tuple[str, ...] = ("leftdown", "leftup", "rightdown", "rightup")
"""ISR shift directions; index 2*a + b is entry [a][b] of the original's table
[['leftdown', 'leftup'], ['rightdown', 'rightup']]."""


@dataclass(frozen=True)
class ISRParams:
    """Parameters of the content extractor: log range (a, b), threshold tau, clip kappa, shift in pixels."""

    val_range: tuple[float, float]
    threshold: float
    clip_range: float
    shift_pixel: int


CITYSCAPES_ISR = ISRParams((1.0, 10.0), 0.03, 0.2, 3)
"""Source (day) ISR, the same in both of the original's settings."""
DSEC_ISR = ISRParams((0.01, 1.01), 0.005, 0.1, 1)
"""Target (night) ISR of the DSEC recipe."""
MIXED_ISR = DSEC_ISR
"""The ISR the DSEC recipe recomputes from the ClassMix-mixed image inside the training step."""
DARK_ZURICH_ISR = ISRParams((1.0, 100.0), 0.01, 0.1, 3)
"""Target and mixed ISR of the Dark Zurich recipe (the original's `isr_parms` in cs2dz_image+raw-isr)."""
