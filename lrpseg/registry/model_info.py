"""A model directory's metadata: what `config.json` declares, checked.

Layout of a model directory (the shipped ones and the ones users drop in alike):

    name@version/
        config.json         name, version, kind, architecture, classes, normalisation, metrics
        model.safetensors   weights for a family we define ("unet", "vgg11"), or
        model.pt2           a program saved with torch.export.save (family "exported")
        card.md             optional, for people
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lrpseg.models import UNetConfig, VGGConfig
from lrpseg.models.families import FAMILIES as LIBRARY_FAMILIES
from lrpseg.models.families import FamilyError, channels
from lrpseg.registry.errors import RegistryError
from lrpseg.registry.metadata import ModelMetadata, read_metadata

CONFIG_FILE = "config.json"
FORMAT = "lrpseg-model/1"
KINDS = ("segmenter", "classifier")
# family -> (kind it must have, weights file suffix, config class or None)
FAMILIES: dict[str, tuple[str | None, str, type | None]] = {
    "unet": ("segmenter", ".safetensors", UNetConfig),
    "vgg11": ("classifier", ".safetensors", VGGConfig),
    "exported": (None, ".pt2", None),
    # networks of other libraries, built from the architecture's keyword arguments (lrpseg.models.families)
    **{name: ("segmenter", ".safetensors", None) for name in LIBRARY_FAMILIES},
}
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, eq=False)
class ModelInfo:
    """Everything a caller needs to feed a model and read its output."""

    id: str
    name: str
    version: str
    kind: str
    family: str
    in_channels: int
    num_classes: int
    class_names: list[str]
    input_size: int | None
    mean: list[float]
    std: list[float]
    zbox_bounds: tuple[float, float]
    description: str
    card: dict[str, Any]
    path: Path
    architecture: dict[str, Any] = field(default_factory=dict)
    weights_file: str = "model.safetensors"
    evaluation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metadata: ModelMetadata = field(default_factory=ModelMetadata)  # domain, intended use, codes, window
    spatial_dims: int = 2  # 3: the model takes volumes (N, C, D, H, W)
    input_defaults: dict[str, Any] = field(default_factory=dict)  # config "input": bits/window/channels

    @property
    def zbox_bounds_per_channel(self) -> list[tuple[float, float]]:
        """z^B (low, high) per input channel: pixels 0 and 1 after normalisation."""
        return [((0.0 - m) / s, (1.0 - m) / s) for m, s in zip(self.mean, self.std)]

    def normalize(self, x01: Tensor) -> Tensor:
        """(N, C, H, W) pixels in [0, 1] (3-D models: (N, C, D, H, W)) -> the model's input space."""
        if x01.ndim != 2 + self.spatial_dims or x01.shape[1] != self.in_channels:
            axes = "D, H, W" if self.spatial_dims == 3 else "H, W"
            raise ValueError(
                f"model {self.id} expects (N, {self.in_channels}, {axes}) input, got shape {tuple(x01.shape)}"
            )
        view = (1, -1) + (1,) * self.spatial_dims
        mean = torch.tensor(self.mean, dtype=x01.dtype, device=x01.device).view(view)
        std = torch.tensor(self.std, dtype=x01.dtype, device=x01.device).view(view)
        return (x01 - mean) / std

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description (no filesystem path)."""
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "family": self.family,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "input_size": self.input_size,
            "spatial_dims": self.spatial_dims,
            "mean": list(self.mean),
            "std": list(self.std),
            "zbox_bounds": list(self.zbox_bounds),
            "description": self.description,
            "card": json.loads(json.dumps(self.card)),
            **self.metadata.to_dict(),
        }


def fail(directory: Path, problem: str) -> RegistryError:
    return RegistryError(f"model directory {directory}: {problem}")


INPUT_KEYS = ("bits", "window", "channels")


def input_defaults(directory: Path, config: dict[str, Any]) -> dict[str, Any]:
    """config.json "input": how this model's images are usually sent (a job's params.input overrides)."""
    value = config.get("input") or {}
    if not isinstance(value, dict) or set(value) - set(INPUT_KEYS):
        raise fail(directory, f"input must be a JSON object with keys from {list(INPUT_KEYS)}")
    return dict(value)


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise fail(directory, f"no {CONFIG_FILE} (a model directory holds {CONFIG_FILE} and its weights)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        where = f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
        raise fail(directory, f"{CONFIG_FILE} is not valid JSON ({where})") from None
    except UnicodeDecodeError:
        raise fail(directory, f"{CONFIG_FILE} is not UTF-8 text") from None
    if not isinstance(config, dict):
        raise fail(directory, f"{CONFIG_FILE} must hold a JSON object, got {type(config).__name__}")
    return config


def name_and_version(directory: Path, config: dict[str, Any]) -> tuple[str, str]:
    """From the config, falling back to a directory named "name@version"."""
    dir_name, _, dir_version = directory.name.partition("@")
    name = config.get("name", dir_name)
    version = config.get("version", dir_version or None)
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    for label, value in (("name", name), ("version", version)):
        if not isinstance(value, str) or not NAME_PATTERN.match(value):
            raise fail(directory, f"{label} {value!r} must be a string of letters, digits, '.', '_' or '-'")
    return name, version


def architecture(directory: Path, config: dict[str, Any]) -> tuple[str, dict[str, Any], int, int, int | None]:
    """(family, params, in_channels, num_classes, fixed input size) of the declared architecture."""
    arch = config.get("architecture")
    if not isinstance(arch, dict) or "family" not in arch:
        raise fail(directory, f'config needs "architecture": {{"family": one of {sorted(FAMILIES)}, ...}}')
    params = dict(arch)
    family = params.pop("family")
    if family not in FAMILIES:
        raise fail(directory, f"unknown family {family!r}; known: {sorted(FAMILIES)}")
    if family in LIBRARY_FAMILIES:
        try:
            in_channels, num_classes, _ = channels(family, params)
        except FamilyError as exc:
            raise fail(directory, str(exc)) from None
        return family, params, in_channels, num_classes, None
    config_class = FAMILIES[family][2]
    if config_class is None:
        try:
            in_channels, num_classes = int(params["in_channels"]), int(params["num_classes"])
        except (KeyError, TypeError, ValueError):
            need = 'an exported model declares integer "in_channels" and "num_classes" in "architecture"'
            raise fail(directory, need) from None
        if in_channels < 1 or num_classes < 1:
            raise fail(directory, "in_channels and num_classes must be positive")
        return family, params, in_channels, num_classes, None
    try:
        arch_config = config_class(**params)
    except (TypeError, ValueError) as exc:
        raise fail(directory, f"bad {family} architecture: {exc}") from None
    fixed = getattr(arch_config, "input_size", None)
    return family, params, arch_config.in_channels, arch_config.num_classes, fixed


def channel_list(directory: Path, values: Any, label: str, channels: int) -> list[float]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values] * channels
    if not isinstance(values, list) or len(values) != channels:
        raise fail(directory, f"normalization {label} must be a number or a list of {channels} numbers, got {values!r}")
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise fail(directory, f"normalization {label} must hold numbers, got {values!r}") from None


def normalization(directory: Path, config: dict[str, Any], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std; absent means the model takes pixels in [0, 1] as they are."""
    norm = config.get("normalization", {"mean": 0.0, "std": 1.0})
    if not isinstance(norm, dict):
        raise fail(directory, 'normalization must be {"mean": [...], "std": [...]}')
    mean = channel_list(directory, norm.get("mean", 0.0), "mean", channels)
    std = channel_list(directory, norm.get("std", 1.0), "std", channels)
    if any(s <= 0 for s in std):
        raise fail(directory, f"normalization std must be positive, got {std}")
    return mean, std


def weights_file(directory: Path, config: dict[str, Any], family: str) -> str:
    suffix = FAMILIES[family][1]
    name = config.get("weights", f"model{suffix}")
    if not isinstance(name, str) or Path(name).name != name:
        raise fail(directory, f"weights must be a file name inside the directory, got {name!r}")
    if name.endswith(PICKLE_SUFFIXES):
        raise fail(
            directory,
            f"{name} is a pickle-based file, which is never loaded (it can run code); save weights with "
            "safetensors.torch.save_file, or an architecture we do not define with torch.export.save as .pt2",
        )
    if not name.endswith(suffix):
        raise fail(directory, f"family {family!r} loads weights from a {suffix} file, got {name!r}")
    if not (directory / name).is_file():
        raise fail(directory, f"weights file {name} is missing")
    return name


def class_names(directory: Path, config: dict[str, Any], num_classes: int) -> list[str]:
    names = config.get("class_names", [f"class_{i}" for i in range(num_classes)])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise fail(directory, "class_names must be a list of strings")
    if len(names) != num_classes:
        raise fail(directory, f"class_names has {len(names)} entries but the model outputs {num_classes} classes")
    return names


def input_size(directory: Path, config: dict[str, Any], fixed: int | None) -> int | None:
    size = config.get("input_size", fixed)
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise fail(directory, f"input_size must be a positive integer or null, got {size!r}")
    if fixed is not None and size != fixed:
        raise fail(directory, f"input_size {size} contradicts the architecture's input_size {fixed}")
    return size


def read_model_info(directory: Path) -> ModelInfo:
    """Parse and check a model directory's config.json (weights are checked on load)."""
    directory = Path(directory)
    config = read_config(directory)
    fmt = config.get("format", FORMAT)
    if fmt != FORMAT:
        raise fail(directory, f"format {fmt!r} is not supported; expected {FORMAT!r}")
    name, version = name_and_version(directory, config)
    family, params, in_channels, num_classes, fixed = architecture(directory, config)
    required_kind = FAMILIES[family][0]
    kind = config.get("kind", required_kind)
    if kind not in KINDS:
        raise fail(directory, f"kind must be one of {list(KINDS)}, got {kind!r}")
    if required_kind is not None and kind != required_kind:
        raise fail(directory, f"family {family!r} is a {required_kind}, but kind says {kind!r}")
    mean, std = normalization(directory, config, in_channels)
    lows, highs = zip(*(((0.0 - m) / s, (1.0 - m) / s) for m, s in zip(mean, std)))
    metrics = config.get("metrics", {})
    if not isinstance(metrics, dict):
        raise fail(directory, "metrics must be a JSON object")
    names = class_names(directory, config, num_classes)
    return ModelInfo(
        id=f"{name}@{version}",
        name=name,
        version=version,
        kind=kind,
        family=family,
        in_channels=in_channels,
        num_classes=num_classes,
        class_names=names,
        input_size=input_size(directory, config, fixed),
        mean=mean,
        std=std,
        zbox_bounds=(min(lows), max(highs)),
        description=str(config.get("description", "")),
        card=metrics,
        path=directory,
        architecture={"family": family, **params},
        weights_file=weights_file(directory, config, family),
        evaluation=dict(config.get("evaluation") or {}),
        training=dict(config.get("training") or {}),
        metadata=read_metadata(directory, config, names),
        spatial_dims=channels(family, params)[2] if family in LIBRARY_FAMILIES else spatial_dims(directory, params),
        input_defaults=input_defaults(directory, config),
    )


def spatial_dims(directory: Path, params: dict[str, Any]) -> int:
    """2 (images) or 3 (volumes), as the architecture declares it ("spatial_dims", default 2)."""
    dims = params.get("spatial_dims", 2)
    if dims not in (2, 3) or isinstance(dims, bool):
        raise fail(directory, f"spatial_dims must be 2 or 3, got {dims!r}")
    return int(dims)
