"""The batched torch extractors against a per-sample numpy transcription of the original definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cmda.data import extractors as ex


def numpy_shift(gray: np.ndarray, direction: str, s: int) -> np.ndarray:
    """The original's shifted copies with a duplicated border, one direction at a time."""
    h, w = gray.shape
    out = gray.copy()
    if direction == "right":
        out[:, s:] = gray[:, : w - s]
    elif direction == "left":
        out[:, : w - s] = gray[:, s:]
    elif direction == "down":
        out[s:] = gray[: h - s]
    elif direction == "up":
        out[: h - s] = gray[s:]
    return out


def numpy_minmax(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if x.max() == x.min():  # our documented guard: an empty half stays 0 (the original gives `lo`)
        return np.zeros_like(x)
    return (x - x.min()) / (x.max() - x.min() + 1e-8) * (hi - lo) + lo


def numpy_ic(
    gray: np.ndarray, shifted: np.ndarray, a: float, b: float, tau: float, kappa: float
) -> np.ndarray:
    """get_ic of the original, per image: log residual, threshold, clip, rescale each half."""
    log_range = np.log(b) - np.log(a)
    d = np.log(shifted / 255 * (b - a) + a) - np.log(gray / 255 * (b - a) + a)
    d[np.abs(d) <= tau * log_range] = 0
    pos = numpy_minmax(np.clip(d, 0, kappa * log_range), 0, 1)
    neg = numpy_minmax(np.clip(d, -kappa * log_range, 0), -1, 0)
    return np.where(d == 0, 0.0, pos + neg)


def numpy_isr(rgb_uint8: np.ndarray, params: ex.ISRParams, direction: str) -> np.ndarray:
    gray = np.asarray(Image.fromarray(rgb_uint8).convert("L"), dtype=np.float64)
    horizontal = "right" if direction.startswith("right") else "left"
    vertical = "up" if direction.endswith("up") else "down"
    a, b = params.val_range
    s = params.shift_pixel
    return 0.5 * numpy_ic(
        gray, numpy_shift(gray, horizontal, s), a, b, params.threshold, params.clip_range
    ) + (0.5 * numpy_ic(gray, numpy_shift(gray, vertical, s), a, b, params.threshold, params.clip_range))


def random_images(batch: int, seed: int = 0, h: int = 24, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (batch, h, w, 3)).astype(np.float64)
    # smooth a little so thresholds bite on some pixels and not on others
    base = (base + np.roll(base, 1, axis=1) + np.roll(base, 1, axis=2)) / 3
    return base.astype(np.uint8)


def test_gray_conversion_equals_pil():
    images = random_images(3, seed=1)
    got = ex.to_gray_uint8(torch.from_numpy(images).permute(0, 3, 1, 2))
    for i, image in enumerate(images):
        np.testing.assert_array_equal(got[i, 0].numpy(), np.asarray(Image.fromarray(image).convert("L")))


@pytest.mark.parametrize("params", [ex.CITYSCAPES_ISR, ex.DSEC_ISR, ex.DARK_ZURICH_ISR])
def test_isr_equals_numpy_transcription_for_every_direction(params):
    images = random_images(4, seed=2)
    gray = ex.to_gray_uint8(torch.from_numpy(images).permute(0, 3, 1, 2))
    directions = torch.tensor([0, 1, 2, 3])
    got = ex.image_content_extractor(gray, params, directions)
    assert got.shape == (4, 1, 24, 32) and got.dtype == torch.float32
    assert got.min() >= -1 and got.max() <= 1
    for i, image in enumerate(images):
        expected = numpy_isr(image, params, ex.DIRECTIONS[i])
        np.testing.assert_allclose(got[i, 0].numpy(), expected, atol=1e-5)
    by_name = ex.image_content_extractor(gray[2:3], params, "rightdown")
    torch.testing.assert_close(by_name, got[2:3])


def test_isr_of_a_flat_image_is_zero_not_minus_one():
    """The original's min-max turns an empty negative half into -1 everywhere; we keep it 0."""
    flat = torch.full((1, 1, 8, 8), 90, dtype=torch.uint8)
    assert ex.image_content_extractor(flat, ex.DSEC_ISR, 0).abs().sum() == 0


def test_float_images_are_truncated_like_the_original():
    images = torch.rand(2, 3, 6, 7)
    expected = ex.to_gray_uint8((images * 255).to(torch.uint8))
    torch.testing.assert_close(ex.to_gray_uint8(images), expected)


def test_motion_extractor_matches_the_ic1_definition():
    rng = np.random.default_rng(4)
    now = rng.integers(0, 256, (2, 1, 10, 12)).astype(np.uint8)
    front = np.clip(now.astype(int) + rng.integers(-60, 60, now.shape), 0, 255).astype(np.uint8)
    got = ex.image_motion_extractor(torch.from_numpy(now), torch.from_numpy(front))
    for i in range(2):
        d = np.log(now[i, 0] + 50.0) - np.log(front[i, 0] + 50.0)
        d[np.abs(d) <= 0.1] = 0
        expected = np.where(
            d == 0, 0.0, numpy_minmax(np.clip(d, 0, 0.8), 0, 1) + numpy_minmax(np.clip(d, -0.8, 0), -1, 0)
        )
        np.testing.assert_allclose(got[i, 0].numpy(), expected, atol=1e-5)
    png = ex.motion_to_png_uint8(got)
    np.testing.assert_array_equal(
        png.numpy(), np.round((got.double().numpy() + 1) / 2 * 255).astype(np.uint8)
    )


def test_bad_direction_and_shapes_are_rejected():
    gray = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="unknown ISR direction 'sideways'"):
        ex.image_content_extractor(gray, ex.DSEC_ISR, "sideways")
    with pytest.raises(ValueError, match="0..3"):
        ex.image_content_extractor(gray, ex.DSEC_ISR, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match=r"\[B,3,H,W\]"):
        ex.to_gray_uint8(torch.zeros(1, 4, 2, 2))
