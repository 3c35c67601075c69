from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lrpseg.models import VGG11, UNet, UNetConfig, VGGConfig
from lrpseg.registry import SHIPPED_DIR, ModelInfo, Registry, RegistryError, default_registry, save_model_dir

SMALL_UNET = {"family": "unet", "in_channels": 1, "num_classes": 2, "depth": 2, "base_width": 4}


def unet_dir(root: Path, name: str = "mine", version: str = "1", **overrides) -> Path:
    """A user model directory holding a small random U-Net."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=1, num_classes=2, depth=2, base_width=4))
    config = {"name": name, "version": version, "kind": "segmenter", "architecture": SMALL_UNET,
              "class_names": ["background", "defect"], "normalization": {"mean": [0.5], "std": [0.25]}}  # fmt: skip
    config.update(overrides)
    directory = root / f"{name}@{version}"
    save_model_dir(directory, model, config)
    return directory


def edit_config(directory: Path, change: Callable[[dict], None]) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


class Tiny(nn.Module):
    """An architecture the registry does not define."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.leaky_relu(self.bn(self.conv(x)), 0.1))


def exported_dir(root: Path, module: nn.Module, name: str = "tiny") -> Path:
    directory = root / f"{name}@1"
    directory.mkdir(parents=True)
    batch = {"x": {0: torch.export.Dim("batch", min=1, max=64)}}
    program = torch.export.export(module, (torch.rand(2, 3, 64, 64),), dynamic_shapes=batch)
    torch.export.save(program, directory / "model.pt2")
    config = {
        "name": name,
        "version": "1",
        "kind": "segmenter",
        "input_size": 64,
        "architecture": {"family": "exported", "in_channels": 3, "num_classes": 3},
        "class_names": ["a", "b", "c"],
        "normalization": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.5]},
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def rewrite_archive(path: Path, change: Callable[[str, bytes], bytes]) -> None:
    original = path.with_suffix(".orig")
    shutil.move(path, original)
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, change(item.filename, src.read(item.filename)))
    original.unlink()


# --- the shipped registry -------------------------------------------------------------


def test_default_registry_lists_the_shipped_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LRPSEG_MODELS_DIR", raising=False)
    monkeypatch.delenv("LRPSEG_DEFAULT_MODEL", raising=False)
    registry = default_registry()
    assert registry.ids() == [
        "unet-defects@1",
        "vgg11-128n-defects@1",
        "vgg11-128n-defects@2",
        "vgg11-onefc-defects@1",
        "vgg11-onefc-defects@2",
    ]
    assert registry.default_id == "unet-defects@1" and registry.get().id == "unet-defects@1"
    assert registry.get("vgg11-onefc-defects").kind == "classifier"


def test_shipped_metadata_and_normalisation() -> None:
    info = Registry([SHIPPED_DIR]).get("unet-defects@1")
    assert (info.kind, info.family, info.in_channels, info.num_classes) == ("segmenter", "unet", 1, 2)
    assert info.class_names == ["background", "defect"] and info.input_size is None
    assert info.zbox_bounds == ((0 - info.mean[0]) / info.std[0], (1 - info.mean[0]) / info.std[0]) == (-2.0, 2.0)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(info.normalize(x), (x - 0.5) / 0.25)
    with pytest.raises(ValueError, match=r"expects \(N, 1, H, W\) input, got shape \(2, 3, 8, 8\)"):
        info.normalize(torch.rand(2, 3, 8, 8))
    data = json.loads(json.dumps(info.to_dict()))
    assert data["id"] == "unet-defects@1" and data["zbox_bounds"] == [-2.0, 2.0]
    assert "path" not in data and str(SHIPPED_DIR) not in json.dumps(data)
    assert data["card"] == info.card and "defect_iou" in data["card"]


def test_load_gives_a_cached_eval_float32_module() -> None:
    registry = Registry([SHIPPED_DIR])
    model = registry.load("vgg11-128n-defects@2")
    assert isinstance(model, VGG11) and model.training is False
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad for p in params)
    assert Registry([SHIPPED_DIR]).load("vgg11-128n-defects", device="cpu") is model  # the latest version


def test_unknown_reference_lists_the_known_ids() -> None:
    with pytest.raises(RegistryError, match=r"unknown model 'resnet@2'; known models: unet-defects@1, vgg11-128n"):
        Registry([SHIPPED_DIR]).get("resnet@2")


def test_unknown_default_fails_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRPSEG_DEFAULT_MODEL", "nope@1")
    with pytest.raises(RegistryError, match="unknown model 'nope@1'"):
        default_registry()


# --- user models ----------------------------------------------------------------------


def test_user_directory_from_env_is_listed_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = unet_dir(tmp_path)
    monkeypatch.setenv("LRPSEG_MODELS_DIR", str(tmp_path))
    registry = default_registry()
    assert "mine@1" in registry.ids() and registry.default_id == "unet-defects@1"
    model = registry.load("mine")
    reference = UNet(UNetConfig(in_channels=1, num_classes=2, depth=2, base_width=4))
    reference.load_state_dict(model.state_dict())
    x = torch.randn(1, 1, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x))
    assert registry.get("mine").path == directory


def test_name_resolves_to_the_latest_version(tmp_path: Path) -> None:
    for version in ("2", "10", "1.5"):
        unet_dir(tmp_path, version=version)
    registry = Registry([tmp_path])
    assert registry.get("mine").id == "mine@10"
    assert [m.version for m in registry.list()] == ["1.5", "2", "10"]


def test_exported_program_loads_without_pickle(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Tiny().eval()
    exported_dir(tmp_path, module)
    registry = Registry([tmp_path])
    info = registry.get("tiny@1")
    assert info.family == "exported" and info.num_classes == 3 and info.input_size == 64
    assert info.zbox_bounds == pytest.approx((min(-0.4 / 0.2, -2.0, -1.2), max(0.6 / 0.2, 2.0, 0.8)))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(registry.load("tiny@1")(x), module(x))


@pytest.mark.parametrize(
    ("member", "change", "message"),
    [
        ("model_weights_config.json", lambda d: d.replace(b'"use_pickle": false', b'"use_pickle": true', 1),
         "stored as a pickle"),
        ("models/model.json", lambda d: d.replace(b"torch.ops.aten.leaky_relu.default", b"torch.os.getcwd"),
         "not an allowed operator|not an operator we allow"),
        ("archive_format", lambda d: b"zip", "not a torch.export.save archive"),
    ],
)  # fmt: skip
def test_tampered_archives_are_refused(tmp_path: Path, member: str, change: Callable, message: str) -> None:
    directory = exported_dir(tmp_path, Tiny().eval())
    rewrite_archive(directory / "model.pt2", lambda name, data: change(data) if name.endswith(member) else data)
    with pytest.raises(RegistryError, match=message):
        Registry([tmp_path]).load("tiny@1")


def test_compiled_code_in_the_archive_is_refused(tmp_path: Path) -> None:
    directory = exported_dir(tmp_path, Tiny().eval())
    with zipfile.ZipFile(directory / "model.pt2", "a") as archive:
        root = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(RegistryError, match="holds compiled code"):
        Registry([tmp_path]).load("tiny@1")


def test_program_exported_in_training_mode_is_refused(tmp_path: Path) -> None:
    exported_dir(tmp_path, Tiny().train())
    with pytest.raises(RegistryError, match=r"exported in training mode .*export model.eval\(\)"):
        Registry([tmp_path]).load("tiny@1")


# --- clear errors for bad directories -------------------------------------------------


def broken(root: Path, problem: str) -> Path:
    directory = unet_dir(root)
    if problem == "missing weights":
        (directory / "model.safetensors").unlink()
    elif problem == "bad json":
        (directory / "config.json").write_text('{"name": "mine", "version": 1,')
    elif problem == "unknown family":
        edit_config(directory, lambda c: c["architecture"].update(family="resnet"))
    elif problem == "class count":
        edit_config(directory, lambda c: c.update(class_names=["a", "b", "c"]))
    elif problem == "pickle weights":
        (directory / "model.pt").write_bytes(b"\x80\x04")
        edit_config(directory, lambda c: c.update(weights="model.pt"))
    elif problem == "kind mismatch":
        edit_config(directory, lambda c: c.update(kind="classifier"))
    elif problem == "bad architecture":
        edit_config(directory, lambda c: c["architecture"].update(upsampling="nearest"))
    return directory


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing weights", "weights file model.safetensors is missing"),
        ("bad json", r"config.json is not valid JSON \(Expecting .* at line 1"),
        (
            "unknown family",
            r"unknown family 'resnet'; known: \['exported', 'monai', 'segmentation_models_pytorch', "
            r"'torchvision.models.segmentation', 'unet', 'vgg11'\]",
        ),
        ("class count", "class_names has 3 entries but the model outputs 2 classes"),
        ("pickle weights", "model.pt is a pickle-based file, which is never loaded"),
        ("kind mismatch", "family 'unet' is a segmenter, but kind says 'classifier'"),
        ("bad architecture", "bad unet architecture: upsampling must be"),
    ],
)
def test_bad_directories_are_skipped_and_explained(tmp_path: Path, problem: str, message: str) -> None:
    directory = broken(tmp_path / "models", problem)
    unet_dir(tmp_path / "models", name="good")
    registry = Registry([tmp_path / "models"])
    assert registry.ids() == ["good@1"]
    assert len(registry.errors) == 1 and str(directory) in str(registry.errors[0])
    with pytest.raises(RegistryError, match=message):
        registry.get("mine@1")


def test_wrong_tensor_shapes_are_named_on_load(tmp_path: Path) -> None:
    directory = unet_dir(tmp_path)
    edit_config(directory, lambda c: c["architecture"].update(base_width=8))
    with pytest.raises(RegistryError, match=r"does not match the unet architecture: wrong shape \['bottleneck"):
        Registry([tmp_path]).load("mine@1")


def test_missing_and_extra_tensors_are_named_on_load(tmp_path: Path) -> None:
    directory = unet_dir(tmp_path)
    model = VGG11(VGGConfig(input_size=32))
    save_file(model.state_dict(), directory / "model.safetensors")
    with pytest.raises(RegistryError, match=r"missing \['bottleneck.0.weight'.*unexpected \['classifier"):
        Registry([tmp_path]).load("mine@1")


def test_corrupt_safetensors_is_named(tmp_path: Path) -> None:
    directory = unet_dir(tmp_path)
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RegistryError, match=r"mine@1: cannot read model.safetensors"):
        Registry([tmp_path]).load("mine@1")


def test_wrong_output_shape_is_caught_by_the_load_check(tmp_path: Path) -> None:
    torch.manual_seed(0)
    directory = exported_dir(tmp_path, Tiny().eval())
    edit_config(directory, lambda c: c.update(kind="classifier"))
    with pytest.raises(RegistryError, match=r"a classifier must return logits of shape \(1, 3\).*got \(1, 3, 64, 64\)"):
        Registry([tmp_path]).load("tiny@1")


def test_duplicate_ids_and_missing_folders(tmp_path: Path) -> None:
    unet_dir(tmp_path / "a")
    unet_dir(tmp_path / "b")
    registry = Registry([tmp_path / "a", tmp_path / "b"])
    assert registry.ids() == ["mine@1"] and "already taken" in str(registry.errors[0])
    with pytest.raises(RegistryError, match="models folder .*nowhere does not exist"):
        Registry([tmp_path / "nowhere"])


def test_model_info_is_frozen() -> None:
    info: ModelInfo = Registry([SHIPPED_DIR]).get("unet-defects@1")
    with pytest.raises(AttributeError):
        info.kind = "classifier"  # type: ignore[misc]
