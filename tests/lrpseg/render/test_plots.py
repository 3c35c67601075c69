from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lrpseg.metrics import pr_curve
from lrpseg.render import (
    RenderInputError,
    colorbar_caption,
    colorbar_png,
    colorbar_rgb,
    colorbar_ticks,
    inverse_transfer,
    pr_curve_png,
)


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_pr_curve_png_plots_several_curves() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((200, 200)) < 0.05
    curves = {"bmm": pr_curve(ref + rng.random(ref.shape), ref), "relevance": pr_curve(rng.random(ref.shape), ref)}
    image = decode(pr_curve_png(curves, no_skill=float(ref.mean()), title="PR", size=(4.0, 3.0), dpi=50))
    assert image.format == "PNG" and 150 <= image.size[0] <= 220 and 120 <= image.size[1] <= 170
    pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # something was drawn


def test_pr_curve_png_needs_a_curve() -> None:
    with pytest.raises(RenderInputError, match="at least one"):
        pr_curve_png({})


def test_plain_colorbar_runs_blue_white_red() -> None:
    image = np.asarray(decode(colorbar_png(width=101, height=5)))
    assert image.shape == (5, 101, 3)
    assert image[0, 50].tolist() == [255, 255, 255]
    assert image[0, 0].tolist() == [0, 0, 255] and image[0, -1].tolist() == [255, 0, 0]


@pytest.mark.parametrize("mode", ["log", "linear"])
def test_labelled_colorbar_holds_the_strip_ticks_and_text(mode: str) -> None:
    image = np.asarray(decode(colorbar_png(120.0, tau=0.5, mode=mode, mass=0.9, width=300, height=20)))
    strip = colorbar_rgb(300, 20)
    rows, cols = image.shape[:2]
    assert rows > 20 + 2 * 11 and cols >= 300
    left = next(x for x in range(cols) if np.array_equal(image[:20, x : x + 300], strip))  # the strip, unscaled
    below = image[20:]
    for value, _ in colorbar_ticks(120.0, tau=0.5, mode=mode):  # a black tick under each labelled value
        x = left + round((value + 1.0) / 2.0 * 299)
        assert below[:4, x].max() == 0
    text = below[6:] < 128
    assert text.any(axis=2).sum() > 200  # labels and caption were drawn


def test_colorbar_ticks_give_the_relevance_at_each_colour() -> None:
    ticks = colorbar_ticks(120.0, tau=0.5)
    assert [t for t, _ in ticks] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert ticks[-1][1] == "120" and ticks[0][1] == "-120" and ticks[2][1] == "0"
    assert float(ticks[3][1]) == pytest.approx(inverse_transfer(0.5, peak=120.0, tau=0.5), rel=1e-2)
    assert [label for _, label in colorbar_ticks(8.0, mode="linear")] == ["-8", "-4", "0", "4", "8"]
    assert colorbar_caption(120.0, tau=0.5, mass=0.9) == (
        "relevance, log scale; max |R| 120; |R| < 0.5 white, pixels holding 90 % of sum |R| coloured"
    )


def test_labelled_log_colorbar_needs_tau() -> None:
    with pytest.raises(RenderInputError, match="tau"):
        colorbar_png(10.0)
