"""Settings of the procedural surface-defect generator."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


class DatasetConfigError(ValueError):
    """A generator setting is out of its allowed range."""


@dataclass(frozen=True)
class DefectDatasetConfig:
    """What the generated images look like.

    Geometric sizes are given for a 128-pixel image and scale with `size`
    (crack widths scale more gently, so small images keep visible cracks).
    """

    size: int = 128
    defect_rate: float = 0.5  # share of images with a defect
    crack_share: float = 0.6  # share of defective images with cracks (the rest: blowholes)
    max_distractors: int = 3  # stains, deposits, brightness edges, scratches per image
    noise_std: tuple[float, float] = (0.01, 0.03)  # sensor noise range
    crack_depth: tuple[float, float] = (0.3, 0.65)  # relative darkening at a crack's centre
    blowhole_depth: tuple[float, float] = (0.35, 0.7)

    def __post_init__(self) -> None:
        if not 16 <= self.size <= 4096:
            raise DatasetConfigError(f"size must be in [16, 4096], got {self.size}")
        for name in ("defect_rate", "crack_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise DatasetConfigError(f"{name} must be in [0, 1], got {value}")
        if self.max_distractors < 0:
            raise DatasetConfigError(f"max_distractors must be >= 0, got {self.max_distractors}")
        for name in ("noise_std", "crack_depth", "blowhole_depth"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high < 1.0:
                raise DatasetConfigError(f"{name} must be a range 0 <= low <= high < 1, got {(low, high)}")

    @property
    def scale(self) -> float:
        return self.size / 128.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DefectDatasetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DatasetConfigError(f"unknown dataset settings: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
