"""The registry: model directories found in a list of folders, addressed as name@version."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from lrpseg.registry.errors import RegistryError
from lrpseg.registry.loading import load_model
from lrpseg.registry.model_info import ModelInfo, read_model_info

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models" / "shipped"
DEFAULT_MODEL = "unet-defects@1"
MODELS_DIR_ENV = "LRPSEG_MODELS_DIR"
DEFAULT_MODEL_ENV = "LRPSEG_DEFAULT_MODEL"

# Loaded modules, shared by every Registry in the process:
# (model dir, weights mtime, device) -> module.
_LOADED: dict[tuple[str, int, str], nn.Module] = {}
_LOCK = threading.Lock()


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Orders "2" < "10" and "1.2" < "1.10"; numeric parts sort before text parts."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-_]", version))


class Registry:
    """Models found in `dirs` (each holding one sub-directory per model).

    Directories that fail their config checks do not stop the others from being
    listed: they are kept in `errors`, and asking for one raises its error.
    """

    def __init__(self, dirs: Sequence[Path | str], default: str | None = None) -> None:
        self.dirs = [Path(d) for d in dirs]
        self._models: dict[str, ModelInfo] = {}
        self._broken: dict[str, RegistryError] = {}
        for folder in self.dirs:
            self._scan(folder)
        for error in self._broken.values():
            log.warning("skipping model: %s", error)
        self.default_id: str | None = self.get(default).id if default else self._first_id()

    def _scan(self, folder: Path) -> None:
        if not folder.is_dir():
            raise RegistryError(f"models folder {folder} does not exist or is not a directory")
        for directory in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            try:
                info = read_model_info(directory)
            except RegistryError as exc:
                self._broken[directory.name] = exc
                continue
            if info.id in self._models:
                self._broken[info.id] = RegistryError(
                    f"model directory {directory}: id {info.id} is already taken by {self._models[info.id].path}"
                )
                continue
            self._models[info.id] = info

    def _first_id(self) -> str | None:
        models = self.list()
        segmenters = [m for m in models if m.kind == "segmenter"]
        return (segmenters or models)[0].id if models else None

    @property
    def errors(self) -> list[RegistryError]:
        """Problems of the model directories that were skipped."""
        return list(self._broken.values())

    def list(self) -> list[ModelInfo]:
        """All usable models, by name then version."""
        return sorted(self._models.values(), key=lambda m: (m.name, version_key(m.version)))

    def ids(self) -> list[str]:
        return [m.id for m in self.list()]

    def get(self, ref: str | None = None) -> ModelInfo:
        """`name@version`, or `name` for its latest version, or None for the default."""
        ref = ref or self.default_id
        if ref is None:
            raise RegistryError(f"no models found in {[str(d) for d in self.dirs]}")
        if ref in self._models:
            return self._models[ref]
        name, _, version = ref.partition("@")
        if not version:
            versions = [m for m in self._models.values() if m.name == name]
            if versions:
                return max(versions, key=lambda m: version_key(m.version))
        if ref in self._broken or name in self._broken:
            raise self._broken.get(ref) or self._broken[name]
        raise RegistryError(f"unknown model {ref!r}; known models: {', '.join(self.ids()) or 'none'}")

    def load(self, ref: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
        """The model as a module in eval mode, float32, on `device`; loaded once per process.

        The module is shared: do not modify it in place (copy.deepcopy it first).
        """
        info = self.get(ref)
        weights = info.path / info.weights_file
        key = (str(info.path.resolve()), weights.stat().st_mtime_ns, str(torch.device(device)))
        with _LOCK:
            if key not in _LOADED:
                _LOADED[key] = load_model(info, device)
            return _LOADED[key]


def default_registry() -> Registry:
    """Shipped models plus the folder named by $LRPSEG_MODELS_DIR (if set).

    The default model is $LRPSEG_DEFAULT_MODEL, else unet-defects@1.
    """
    dirs: list[Path] = [SHIPPED_DIR]
    extra = os.environ.get(MODELS_DIR_ENV)
    if extra:
        dirs.append(Path(extra))
    return Registry(dirs, default=os.environ.get(DEFAULT_MODEL_ENV) or DEFAULT_MODEL)
