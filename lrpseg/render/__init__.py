"""Pictures: seed 000's log transfer with a cumulative-mass threshold, heatmap/overlay/mask/segmentation PNGs, PR-curve plots."""

from lrpseg.render.colors import DEFAULT_CMAP, class_palette, colorize
from lrpseg.render.errors import RenderInputError
from lrpseg.render.images import display_rgb
from lrpseg.render.plots import colorbar_caption, colorbar_png, colorbar_rgb, colorbar_ticks, pr_curve_png
from lrpseg.render.png import (
    Heatmap,
    encode_png,
    heatmap,
    mask_pixels,
    mask_png,
    overlay_png,
    overlay_rgb,
    relevance_png,
    relevance_rgb,
    segmentation_png,
    segmentation_rgb,
)
from lrpseg.render.transfer import DEFAULT_MASS, coloured_share, inverse_transfer, log_transfer, mass_tau, resolve_tau

__all__ = [
    "DEFAULT_CMAP",
    "DEFAULT_MASS",
    "Heatmap",
    "RenderInputError",
    "class_palette",
    "colorbar_caption",
    "colorbar_png",
    "colorbar_rgb",
    "colorbar_ticks",
    "colorize",
    "coloured_share",
    "display_rgb",
    "encode_png",
    "heatmap",
    "inverse_transfer",
    "log_transfer",
    "mask_pixels",
    "mask_png",
    "mass_tau",
    "overlay_png",
    "overlay_rgb",
    "pr_curve_png",
    "relevance_png",
    "relevance_rgb",
    "resolve_tau",
    "segmentation_png",
    "segmentation_rgb",
]
