"""Pictures: seed 000's threshold + log transfer, heatmap/overlay/mask/segmentation PNGs, PR-curve plots."""

from lrpseg.render.colors import DEFAULT_CMAP, class_palette, colorize
from lrpseg.render.errors import RenderInputError
from lrpseg.render.images import display_rgb
from lrpseg.render.plots import colorbar_png, colorbar_rgb, pr_curve_png
from lrpseg.render.png import (
    encode_png,
    mask_png,
    overlay_png,
    overlay_rgb,
    relevance_png,
    relevance_rgb,
    segmentation_png,
    segmentation_rgb,
)
from lrpseg.render.transfer import inverse_transfer, log_transfer, resolve_tau

__all__ = [
    "DEFAULT_CMAP",
    "RenderInputError",
    "class_palette",
    "colorbar_png",
    "colorbar_rgb",
    "colorize",
    "display_rgb",
    "encode_png",
    "inverse_transfer",
    "log_transfer",
    "mask_png",
    "overlay_png",
    "overlay_rgb",
    "pr_curve_png",
    "relevance_png",
    "relevance_rgb",
    "resolve_tau",
    "segmentation_png",
    "segmentation_rgb",
]
