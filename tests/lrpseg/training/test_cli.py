from __future__ import annotations

import json
from pathlib import Path

import pytest

from launch.cli import main
from lrpseg.registry import Registry


def test_lrpseg_train_writes_a_registry_ready_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "models" / "small-vgg@7"
    argv = ["train", "--model", "vgg11-128n", "--size", "32", "--n-train", "16", "--epochs", "1",
            "--name", "small-vgg", "--version", "7", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"balanced_accuracy", "tpr", "tnr", "accuracy"}
    assert sorted(p.name for p in out.iterdir()) == ["card.md", "config.json", "model.safetensors"]
    registry = Registry([tmp_path / "models"])
    info = registry.get("small-vgg")
    assert info.id == "small-vgg@7" and info.kind == "classifier" and info.input_size == 32
    assert info.card == metrics
    assert registry.load("small-vgg@7").training is False


def test_unknown_preset_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--model", "resnet50"])
    assert "invalid choice: 'resnet50'" in capsys.readouterr().err
