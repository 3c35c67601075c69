"""Size and frame checks shared by every decoder, run on header values before decoding."""

from __future__ import annotations

from dataclasses import dataclass

from lrpseg.io.errors import ImageDecodeError

__all__ = ["Limits", "select_frame"]


@dataclass(frozen=True)
class Limits:
    """Per-image pixel budget: ``max_pixels`` = H*W of the decoded frame, ``max_side`` per side;
    a volume's slices obey both, and ``max_voxels`` bounds D*H*W (its depth obeys ``max_side``)."""

    max_pixels: int = 16_777_216
    max_side: int = 8192
    max_voxels: int = 256**3

    def check_volume(self, depth: int, height: int, width: int, what: str = "volume") -> None:
        """Raise 422 for an empty volume, 413 for one over the budget (slice size, depth or voxels)."""
        if depth <= 0:
            raise ImageDecodeError(422, "empty_image", f"{what} has no slices")
        self.check(height, width, f"{what}'s slice")
        if depth > self.max_side:
            raise ImageDecodeError(413, "side_too_large", f"{what} has {depth} slices; at most {self.max_side}")
        voxels = depth * height * width
        if voxels > self.max_voxels:
            raise ImageDecodeError(
                413,
                "too_many_voxels",
                f"{what} is {depth}x{height}x{width} = {voxels} voxels; at most {self.max_voxels} are accepted",
            )

    def check(self, height: int, width: int, what: str = "image") -> None:
        """Raise 422 for an empty image, 413 for one over the budget."""
        if height <= 0 or width <= 0:
            raise ImageDecodeError(422, "empty_image", f"{what} has zero size ({height}x{width})")
        if height > self.max_side or width > self.max_side:
            raise ImageDecodeError(
                413,
                "side_too_large",
                f"{what} is {height}x{width}; each side must be at most {self.max_side} pixels",
            )
        if height * width > self.max_pixels:
            raise ImageDecodeError(
                413,
                "too_many_pixels",
                f"{what} is {height}x{width} = {height * width} pixels; at most {self.max_pixels} are accepted",
            )


def select_frame(frames: int, frame: int | None, what: str) -> int:
    """Return the 0-based frame index to decode, or raise 422.

    A multi-frame source needs an explicit ``frame``; a single-frame one accepts None or 0.
    """
    if frame is None:
        if frames > 1:
            raise ImageDecodeError(
                422,
                "multi_frame",
                f"{what} has {frames} frames; choose one with the frame parameter (0..{frames - 1})",
            )
        return 0
    if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < frames:
        raise ImageDecodeError(
            422,
            "frame_out_of_range",
            f"frame {frame!r} is out of range; {what} has {frames} frame(s) (0..{frames - 1})",
        )
    return frame
