"""PNGs decode with the right size, mode and colours."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from lrpseg.masks.synthetic import lrp_like_map
from lrpseg.render import (
    RenderInputError,
    class_palette,
    heatmap,
    mask_png,
    overlay_png,
    overlay_rgb,
    relevance_png,
    relevance_rgb,
    segmentation_png,
    segmentation_rgb,
)
from lrpseg.render.colors import diverging_lut
from lrpseg.render.images import display_rgb


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.fixture
def relevance() -> np.ndarray:
    return lrp_like_map((48, 64), seed=5)[0]


def test_relevance_colours_are_diverging_with_white_zero() -> None:
    r = np.array([[-4.0, -0.01, 0.0, 0.01, 4.0]])
    rgb = relevance_rgb(r, tau=1.0)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 5, 3)
    assert rgb[0, 2].tolist() == [255, 255, 255]  # zero
    assert rgb[0, 1].tolist() == rgb[0, 3].tolist() == [255, 255, 255]  # below tau
    assert rgb[0, 4].tolist() == [255, 0, 0] and rgb[0, 0].tolist() == [0, 0, 255]  # bwr ends


def test_relevance_png_decodes_as_rgb(relevance: np.ndarray) -> None:
    image = decode(relevance_png(relevance, percentile=90.0))
    assert image.mode == "RGB" and image.size == (64, 48)
    assert np.array_equal(np.asarray(image), relevance_rgb(relevance, percentile=90.0))


def test_mask_png_is_8_bit_grey_0_255() -> None:
    mask = np.zeros((7, 9), dtype=bool)
    mask[2:5, 3] = True
    image = decode(mask_png(mask))
    assert image.mode == "L" and image.size == (9, 7)
    assert np.array_equal(np.asarray(image), np.where(mask, 255, 0))
    assert np.array_equal(np.asarray(decode(mask_png(mask.astype(np.uint8)))), np.asarray(image))


def test_segmentation_png_uses_class_colours() -> None:
    labels = np.arange(12).reshape(3, 4) % 5
    image = np.asarray(decode(segmentation_png(labels, 5)))
    palette = class_palette(5)
    assert image.shape == (3, 4, 3)
    assert np.array_equal(image, palette[labels])
    assert palette[0].tolist() == [0, 0, 0] and len({tuple(c) for c in class_palette(40)}) == 40


def test_segmentation_png_draws_classes_over_the_input() -> None:
    labels = np.zeros((4, 5), dtype=np.int64)
    labels[1:3, 2:4] = 1
    grey = np.linspace(0, 255, 20).reshape(4, 5).astype(np.uint8)
    image = np.asarray(decode(segmentation_png(labels, 2, grey, alpha=0.5))).astype(np.float64)
    base = np.repeat(grey[..., None], 3, axis=2)
    assert np.array_equal(image[labels == 0], base[labels == 0])  # background shows the input
    colour = class_palette(2)[1].astype(np.float64)
    expected = np.round((base[labels == 1] / 255 * 0.5 + colour / 255 * 0.5) * 255)
    assert np.array_equal(image[labels == 1], expected)
    with pytest.raises(RenderInputError, match="does not match"):
        segmentation_png(labels, 2, np.zeros((3, 3)))


@pytest.mark.parametrize("kind", ["float", "uint16", "rgb-uint8"])
def test_segmentation_blends_only_where_a_class_is_and_equals_the_whole_image_blend(kind: str) -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, (9, 11)) * (rng.random((9, 11)) < 0.3)
    image = {
        "float": rng.random((9, 11)).astype(np.float32),
        "uint16": rng.integers(0, 4096, (9, 11)).astype(np.uint16),
        "rgb-uint8": rng.integers(0, 256, (3, 9, 11)).astype(np.uint8),
    }[kind]
    base = display_rgb(image)
    opacity = np.where(labels != 0, 0.3, 0.0)[..., None]
    expected = np.round((base * (1.0 - opacity) + class_palette(4)[labels] / 255.0 * opacity) * 255).astype(np.uint8)
    assert np.array_equal(segmentation_rgb(labels, 4, image, alpha=0.3), expected)


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).integers(1000, 4000, (1, 48, 64)).astype(np.uint16),  # 12-bit in 16-bit
        np.random.default_rng(1).integers(0, 65535, (3, 48, 64)).astype(np.uint16),  # 48-bit RGB
        np.random.default_rng(2).integers(0, 255, (3, 48, 64)).astype(np.uint8),
        np.random.default_rng(3).random((48, 64)),
        np.random.default_rng(4).normal(0, 300, (1, 48, 64)).astype(np.int16),  # signed, CT-like
    ],
    ids=["grey16", "rgb16", "rgb8", "float", "int16"],
)
def test_overlay_png_handles_grey_rgb_and_bit_depths(image: np.ndarray, relevance: np.ndarray) -> None:
    decoded = decode(overlay_png(image, relevance))
    assert decoded.mode == "RGB" and decoded.size == (64, 48)


def test_overlay_leaves_pixels_without_relevance_unchanged(relevance: np.ndarray) -> None:
    image = np.random.default_rng(0).integers(0, 256, (3, 48, 64)).astype(np.uint8)
    untouched = np.asarray(decode(overlay_png(image, np.zeros((48, 64)))))
    assert np.array_equal(untouched, image.transpose(1, 2, 0))
    shown = np.asarray(decode(overlay_png(image, relevance, alpha=0.8, percentile=70.0)))
    below = np.abs(relevance) < np.percentile(np.abs(relevance), 70.0)
    assert np.array_equal(shown[below], image.transpose(1, 2, 0)[below])
    assert np.any(shown[~below] != image.transpose(1, 2, 0)[~below])


def test_overlay_stretches_16_bit_grey_to_full_range() -> None:
    image = np.full((1, 4, 4), 1000, dtype=np.uint16)
    image[0, 0, 0], image[0, 3, 3] = 200, 5000
    out = np.asarray(decode(overlay_png(image, np.zeros((4, 4)))))
    assert out[0, 0].tolist() == [0, 0, 0] and out[3, 3].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: overlay_png(np.zeros((4, 48, 64)), r), "1 or 3 channels"),
        (lambda r: overlay_png(np.zeros((1, 48, 60)), r), "does not match"),
        (lambda r: overlay_png(np.zeros((48, 64)), r, alpha=2.0), "alpha"),
        (lambda r: relevance_png(r[None]), "2-D"),
        (lambda r: relevance_png(r, cmap="nope"), "unknown colormap"),
        (lambda r: mask_png(r), "0/1"),
        (lambda r: segmentation_png(np.full((2, 2), 3), 3), r"\[0, 2\]"),
        (lambda r: segmentation_png(np.zeros((2, 2)), 3), "integers"),
    ],
)
def test_bad_inputs_are_rejected(relevance: np.ndarray, call, message: str) -> None:
    with pytest.raises(RenderInputError, match=message):
        call(relevance)


def numpy_relevance_rgb(relevance: np.ndarray) -> np.ndarray:
    """The numpy procedure (before the transfer moved to tensors): seed 000's transfer, tau by 90 % mass, LUT."""
    a = np.abs(relevance)
    ordered = np.sort(a[a > 0])[::-1]
    running = np.cumsum(ordered / ordered[0])
    tau = ordered[min(int(np.searchsorted(running, 0.9 * running[-1])), ordered.size - 1)]
    f = np.where(a >= tau, np.sign(relevance) * np.logaddexp(0, np.log(a) - np.log(tau)), 0.0)
    f = np.clip(f / np.logaddexp(0, np.log(a.max()) - np.log(tau)), -1, 1)
    return diverging_lut("bwr")[np.rint((f + 1.0) * 255).astype(np.intp)]


@pytest.mark.parametrize("seed", [0, 3])
def test_relevance_rgb_on_a_tensor_equals_the_numpy_procedure(seed: int) -> None:
    relevance = lrp_like_map((96, 80), seed=seed)[0]
    expected = numpy_relevance_rgb(relevance)
    assert np.array_equal(relevance_rgb(relevance), expected)
    assert np.array_equal(relevance_rgb(torch.from_numpy(relevance)), expected)


@pytest.mark.parametrize("transfer", [{}, {"mode": "linear"}, {"tau": 1e-3}, {"mass": 0.5}])
def test_one_heatmap_draws_both_pictures_as_the_map_does(transfer: dict) -> None:
    relevance = lrp_like_map((96, 80), seed=2)[0]
    image = np.linspace(0, 1, relevance.size).reshape(1, *relevance.shape)
    heat = heatmap(torch.from_numpy(relevance), **transfer)
    assert heat.shape == relevance.shape and heat.colours.dtype == torch.uint8
    assert np.array_equal(relevance_rgb(heat), relevance_rgb(relevance, **transfer))
    assert np.array_equal(overlay_rgb(image, heat), overlay_rgb(image, relevance, **transfer))
    with pytest.raises(RenderInputError, match="does not match"):
        overlay_rgb(image[:, :50], heat)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pictures_on_cuda_equal_the_cpu_ones() -> None:
    relevance = lrp_like_map((96, 80), seed=1)[0]
    image = np.linspace(0, 1, relevance.size).reshape(1, *relevance.shape)
    on_gpu = torch.from_numpy(relevance).cuda()
    # the GPU's scan may sum in another order: at most a pixel at tau can change colour
    assert np.mean(relevance_rgb(on_gpu) != relevance_rgb(relevance)) < 1e-3
    assert np.mean(overlay_rgb(image, on_gpu) != overlay_rgb(image, relevance)) < 1e-3
