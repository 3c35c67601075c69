"""VGG-11 classifiers without BatchNorm, in seed 001's two variants."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from torch import Tensor, nn

# VGG-11 ("A"): conv widths as multiples of the base width, "M" = 2x2 max-pool.
VGG11_PLAN: tuple[int | str, ...] = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")


@dataclass(frozen=True)
class VGGConfig:
    in_channels: int = 1
    num_classes: int = 2
    base_width: int = 8
    input_size: int = 64
    head: Literal["128n", "one-fc"] = "128n"
    hidden: int = 128

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {self.input_size}")
        if self.head not in ("128n", "one-fc"):
            raise ValueError(f"head must be '128n' or 'one-fc', got {self.head!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"family": "vgg11", **asdict(self)}


class VGG11(nn.Module):
    """VGG-11 feature extractor + the "128N" (two FC of `hidden`) or "one-FC" head.

    Expects inputs of exactly `input_size` x `input_size` (the FC layers fix it).
    """

    def __init__(self, config: VGGConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or VGGConfig()
        layers: list[nn.Module] = []
        cin = config.in_channels
        for item in VGG11_PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                cout = config.base_width * int(item)
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
                cin = cout
        self.features = nn.Sequential(*layers)
        flat = cin * (config.input_size // 32) ** 2
        if config.head == "128n":
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(flat, config.hidden),
                nn.ReLU(),
                nn.Linear(config.hidden, config.hidden),
                nn.ReLU(),
                nn.Linear(config.hidden, config.num_classes),
            )
        else:
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, config.num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
