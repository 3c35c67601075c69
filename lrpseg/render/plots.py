"""PR curves (matplotlib Agg, no pyplot state) and the labelled colour bar (Pillow)."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from lrpseg.metrics.segmentation import PRCurve, curve_points
from lrpseg.render.colors import DEFAULT_CMAP, colorize
from lrpseg.render.errors import RenderInputError
from lrpseg.render.png import encode_png
from lrpseg.render.transfer import Mode, inverse_transfer

MAX_PLOT_POINTS = 2000  # a 512 x 512 score map has up to 262k points; the eye needs far fewer


def figure_png(figure: Figure, dpi: int) -> bytes:
    """Render with Agg; the canvas is attached here, so no pyplot or global backend is involved."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    return buffer.getvalue()


def pr_curve_png(
    curves: Mapping[str, PRCurve],
    no_skill: float | None = None,
    *,
    title: str | None = None,
    size: tuple[float, float] = (5.0, 4.0),
    dpi: int = 100,
) -> bytes:
    """PR curves (legend with average precision) and, when given, the no-skill line (seed 001 Figs 4-7)."""
    if not curves:
        raise RenderInputError("pr_curve_png needs at least one curve")
    figure = Figure(figsize=size)
    axes = figure.add_subplot()
    for name, curve in curves.items():
        keep = curve_points(curve.recall, curve.precision, MAX_PLOT_POINTS)
        axes.plot(curve.recall[keep], curve.precision[keep], label=f"{name} (AP {curve.average_precision:.3f})")
    if no_skill is not None:
        axes.axhline(no_skill, color="black", linewidth=1.0, label=f"no skill ({no_skill:.3g})")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0.0, 1.0), ylim=(0.0, 1.02))
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return figure_png(figure, dpi)


def colorbar_rgb(width: int = 256, height: int = 16, *, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """uint8 (height, width, 3): transfer values -1 (left) .. +1 (right)."""
    if width < 2 or height < 1:
        raise RenderInputError(f"colour bar needs width >= 2 and height >= 1, got {width} x {height}")
    row = colorize(np.linspace(-1.0, 1.0, width), cmap)
    return np.repeat(row[None], height, axis=0)


TICKS = (-1.0, -0.5, 0.0, 0.5, 1.0)  # transfer values that get a labelled tick


def colorbar_ticks(max_abs: float, *, tau: float | None = None, mode: Mode = "log") -> list[tuple[float, str]]:
    """(transfer value, label) of each tick: the relevance at that colour, 3 significant digits."""
    if not (np.isfinite(max_abs) and max_abs > 0):
        raise RenderInputError(f"max_abs must be a positive finite number, got {max_abs}")
    if mode == "log" and not (tau is not None and np.isfinite(tau) and tau > 0):
        raise RenderInputError("a labelled log-mode colour bar needs the threshold tau (> 0)")
    values = inverse_transfer(np.array(TICKS), peak=max_abs, tau=tau or 1.0, mode=mode)
    return [(t, "0" if t == 0.0 else f"{v:.3g}") for t, v in zip(TICKS, values)]


def colorbar_caption(max_abs: float, *, tau: float | None = None, mode: Mode = "log",
                     mass: float | None = None) -> str:  # fmt: skip
    """The scale in words: per-image normalisation, threshold and (mass mode) the share it keeps."""
    if mode == "linear":
        return f"relevance, linear; +-1 = max |R| {max_abs:.3g}"
    kept = f", pixels holding {100 * mass:.3g} % of sum |R| coloured" if mass is not None else ""
    return f"relevance, log scale; max |R| {max_abs:.3g}; |R| < {tau:.3g} white{kept}"


def colorbar_png(
    max_abs: float | None = None,
    *,
    tau: float | None = None,
    mode: Mode = "log",
    mass: float | None = None,
    cmap: str = DEFAULT_CMAP,
    width: int = 256,
    height: int = 16,
) -> bytes:
    """The colour scale of relevance_png.

    Without max_abs: a bare width x height strip. With max_abs (and tau in log
    mode, both in relevance units as log_transfer resolved them): the strip with
    ticks at transfer values -1, -0.5, 0, 0.5, 1 labelled with the relevance they
    stand for, and a caption with the scale (colorbar_caption; mass: the share of
    sum |R| that the threshold keeps, when tau came from it). Drawn with Pillow's
    built-in font in about a millisecond, so every job can have one.
    """
    strip = colorbar_rgb(width, height, cmap=cmap)
    if max_abs is None:
        return encode_png(strip)
    ticks = colorbar_ticks(max_abs, tau=tau, mode=mode)
    caption = colorbar_caption(max_abs, tau=tau, mode=mode, mass=mass)
    return encode_png(labelled_strip(strip, ticks, caption))


def labelled_strip(strip: np.ndarray, ticks: list[tuple[float, str]], caption: str) -> np.ndarray:
    """uint8 RGB: the strip on white, tick marks below it, labels under the ticks, caption last."""
    font = ImageFont.load_default(size=FONT_SIZE)
    height, width = strip.shape[:2]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(probe.textlength(text, font=font) for _, text in ticks)
    margin = int(np.ceil(label_w / 2)) + 2
    caption_w = int(np.ceil(probe.textlength(caption, font=font)))
    canvas_w = max(width + 2 * margin, caption_w + 4)
    left = (canvas_w - width) // 2
    image = Image.new("RGB", (canvas_w, height + TICK + 2 * (FONT_SIZE + 4)), "white")
    image.paste(Image.fromarray(strip), (left, 0))
    draw = ImageDraw.Draw(image)
    for value, text in ticks:
        x = left + round((value + 1.0) / 2.0 * (width - 1))
        draw.line([(x, height), (x, height + TICK - 1)], fill="black")
        draw.text((x, height + TICK + 1), text, fill="black", font=font, anchor="ma")
    draw.text((canvas_w // 2, height + TICK + FONT_SIZE + 5), caption, fill="black", font=font, anchor="ma")
    return np.asarray(image)


FONT_SIZE = 11
TICK = 4  # tick mark length in pixels
