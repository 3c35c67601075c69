from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lrpseg.metrics import pr_curve
from lrpseg.render import RenderInputError, colorbar_png, pr_curve_png


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
def test_labelled_colorbar_decodes(mode: str) -> None:
    image = decode(colorbar_png(120.0, tau=0.5, mode=mode, width=300, height=20))
    assert image.format == "PNG" and image.size[0] >= 250


def test_labelled_log_colorbar_needs_tau() -> None:
    with pytest.raises(RenderInputError, match="tau"):
        colorbar_png(10.0)
