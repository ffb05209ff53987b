"""Data for CMDA: the real on-disk formats (Cityscapes, DSEC-Night, Dark Zurich), event voxelization,
modality extractors, rare class sampling and a synthetic twin written in the same formats.

This module holds only constants, so importing it stays cheap (the analysis package reads the class names).
"""

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
