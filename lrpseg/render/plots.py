"""Matplotlib figures (Agg, no pyplot state): PR curves and the colour bar."""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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


def colorbar_png(
    max_abs: float | None = None,
    *,
    tau: float | None = None,
    mode: Mode = "log",
    cmap: str = DEFAULT_CMAP,
    width: int = 256,
    height: int = 16,
    dpi: int = 100,
) -> bytes:
    """The colour scale of relevance_png.

    Without max_abs: a bare width x height strip. With max_abs (and tau in log
    mode, both in relevance units as log_transfer resolved them): a labelled
    figure whose ticks give the relevance at transfer values -1, -0.5, 0, 0.5, 1.
    """
    strip = colorbar_rgb(width, height, cmap=cmap)
    if max_abs is None:
        return encode_png(strip)
    if not (np.isfinite(max_abs) and max_abs > 0):
        raise RenderInputError(f"max_abs must be a positive finite number, got {max_abs}")
    if mode == "log" and not (tau is not None and np.isfinite(tau) and tau > 0):
        raise RenderInputError("a labelled log-mode colour bar needs the threshold tau (> 0)")
    ticks = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    values = inverse_transfer(ticks, peak=max_abs, tau=tau or 1.0, mode=mode)
    figure = Figure(figsize=(max(width / dpi, 3.0), max(height / dpi, 0.2)))
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.imshow(strip, aspect="auto", extent=(-1.0, 1.0, 0.0, 1.0))
    axes.set_yticks([])
    axes.set_xticks(ticks, [f"{v:.3g}" for v in values], fontsize="small")
    if mode == "log":
        axes.set_xlabel(f"relevance (log scale, |R| < {tau:.3g} shown as 0)", fontsize="small")
    else:
        axes.set_xlabel("relevance (linear scale)", fontsize="small")
    return figure_png(figure, dpi)
