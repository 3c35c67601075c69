"""Model registry: `name@version` ids, metadata, safe loading of shipped and user models."""

from __future__ import annotations

from lrpseg.registry.catalog import DEFAULT_MODEL, SHIPPED_DIR, Registry, default_registry
from lrpseg.registry.errors import RegistryError
from lrpseg.registry.model_info import ModelInfo, read_model_info
from lrpseg.registry.writing import save_model_dir

__all__ = [
    "DEFAULT_MODEL",
    "SHIPPED_DIR",
    "ModelInfo",
    "Registry",
    "RegistryError",
    "default_registry",
    "read_model_info",
    "save_model_dir",
]
