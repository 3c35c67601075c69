"""lrpseg: segmentation, whole-output LRP explanations, masks and metrics."""

__version__ = "0.1.0"
