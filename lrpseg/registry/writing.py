"""Writing a model directory the registry loads as it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from lrpseg.registry.model_info import CONFIG_FILE, FORMAT, ModelInfo, read_model_info

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.md"


def save_model_dir(directory: Path, model: nn.Module, config: dict[str, Any], card: str | None = None) -> ModelInfo:
    """Write config.json, model.safetensors (float32 state dict) and card.md; return the parsed info."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.float() if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, directory / WEIGHTS_FILE, metadata={"format": "pt"})
    full = {"format": FORMAT, "weights": WEIGHTS_FILE, **config}
    (directory / CONFIG_FILE).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    if card is not None:
        (directory / CARD_FILE).write_text(card, encoding="utf-8")
    return read_model_info(directory)
