"""Model directories of MONAI / smp / torchvision networks and exported (.pt2) programs:
loaded by the registry, explained, run as pipeline jobs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lrpseg import lrp
from lrpseg.io import decode_image
from lrpseg.models import build_model
from lrpseg.pipeline import run_job
from lrpseg.registry import Registry, RegistryError, save_model_dir
from schemas.params import JobParams
from schemas.results import JobResult
from tests.service import factories

pytest.importorskip("monai")
pytest.importorskip("segmentation_models_pytorch")

MONAI_UNET = {"family": "monai", "class": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
              "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 2}  # fmt: skip
MONAI_UNET_3D = {**MONAI_UNET, "spatial_dims": 3, "channels": [4, 8], "strides": [2], "num_res_units": 1}
SMP_UNET = {"family": "segmentation_models_pytorch", "class": "Unet", "encoder_name": "resnet18",
            "encoder_depth": 3, "decoder_channels": [16, 8, 4], "in_channels": 1, "classes": 2}  # fmt: skip
TV_LRASPP = {"family": "torchvision.models.segmentation", "class": "lraspp_mobilenet_v3_large", "num_classes": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def family_dir(root: Path, name: str, arch: dict, **extra) -> Path:
    """A model directory as a user writes it: config.json + model.safetensors of a random network."""
    torch.manual_seed(0)
    config = {"name": name, "version": "1", "kind": "segmenter", "architecture": arch,
              "class_names": ["background", "lesion"], **extra}  # fmt: skip
    save_model_dir(root / f"{name}@1", build_model(arch), config)
    return root / f"{name}@1"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("models")
    family_dir(root, "monai-unet", MONAI_UNET)
    family_dir(root, "monai-unet-3d", MONAI_UNET_3D)
    family_dir(root, "smp-unet", SMP_UNET)
    tv = family_dir(root, "tv-lraspp", TV_LRASPP, normalization={"mean": [0.485, 0.456, 0.406],
                                                                 "std": [0.229, 0.224, 0.225]})  # fmt: skip
    tv.joinpath("config.json").write_text(tv.joinpath("config.json").read_text().replace('"lesion"', '"defect"'))
    bad = family_dir(root, "downloads", SMP_UNET)
    config = json.loads((bad / "config.json").read_text())
    config["architecture"]["encoder_weights"] = "imagenet"
    (bad / "config.json").write_text(json.dumps(config))
    return Registry([root])


def test_family_directories_load_without_code(registry: Registry) -> None:
    assert {"monai-unet@1", "monai-unet-3d@1", "smp-unet@1", "tv-lraspp@1"} <= set(registry.ids())
    info = registry.get("monai-unet-3d")
    assert (info.family, info.spatial_dims, info.in_channels, info.num_classes) == ("monai", 3, 1, 2)
    assert registry.get("tv-lraspp").in_channels == 3
    out = registry.load("tv-lraspp")(torch.zeros(1, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 64, 64)  # not torchvision's {"out": ...}
    volume = registry.load("monai-unet-3d")(torch.zeros(1, 1, 16, 16, 16))
    assert volume.shape == (1, 2, 16, 16, 16)
    with pytest.raises(RegistryError, match="encoder_weights='imagenet' would download weights"):
        registry.get("downloads@1")


@pytest.mark.parametrize("model_id", ["monai-unet@1", "smp-unet@1"])
def test_a_pipeline_job_runs_on_a_library_model(registry: Registry, model_id: str) -> None:
    info, model = registry.get(model_id), registry.load(model_id)
    image, truth = factories.defect_image(64)
    out = run_job(model, info, decode_image(factories.png_bytes(image)), JobParams(), truth)
    result = JobResult.model_validate(out.result)
    relevance = np.load(__import__("io").BytesIO(out.artifacts["relevance.npy"]), allow_pickle=False)
    assert relevance.shape == (1, 64, 64) and np.isfinite(relevance).all()
    x = info.normalize(torch.from_numpy(decode_image(factories.png_bytes(image)).array)[None])
    composite = result.explanation.composite  # the default composite
    expected = lrp.explain(model, x, target="class", cls=1, rules=composite, bounds=info.zbox_bounds)
    np.testing.assert_allclose(relevance, expected.relevance[0].numpy(), rtol=1e-5, atol=1e-7)
    assert result.explanation.explained_pixels == int(expected.mask[0, 1].sum())


class _PReLUNet(nn.Module):
    """Instance norm, PReLU, a sigmoid gate, a residual add, bilinear upsampling: exported to aten."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.n1 = nn.InstanceNorm2d(4, affine=True)
        self.a1 = nn.PReLU()
        self.c2 = nn.Conv2d(4, 4, 3, padding=1, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.gate = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.a1(self.n1(self.c1(x)))
        d = torch.relu(self.bn(self.c2(s)))
        d = d * torch.sigmoid(self.gate(d))
        u = nn.functional.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.head(u + s)


def test_exported_program_is_explained_through_its_aten_graph(tmp_path: Path) -> None:
    """A .pt2 of the same network gives the relevance of the original (float64, every composite)."""
    torch.manual_seed(0)
    net = _PReLUNet().eval()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 1.5)
    directory = tmp_path / "exported@1"
    directory.mkdir()
    batch = {"x": {0: torch.export.Dim("batch", min=1, max=8)}}
    program = torch.export.export(net, (torch.rand(2, 1, 16, 16),), dynamic_shapes=batch)
    torch.export.save(program, directory / "model.pt2")
    config = {"name": "exported", "version": "1", "kind": "segmenter", "input_size": 16,
              "architecture": {"family": "exported", "in_channels": 1, "num_classes": 2}}  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    loaded = Registry([tmp_path]).load("exported@1").double()
    original = net.double()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    prepared = lrp.prepare(loaded)
    assert {i.module.__class__.__name__ for i in prepared.infos.values() if i.module is not None} >= {
        "Conv2d",
        "AnyInstanceNorm",
    }
    assert "c1" in prepared.param_names  # named after the parameters it reads
    for composite in lrp.COMPOSITES:
        ours = lrp.propagate(loaded, x, lambda out: out, rules=composite, bounds=(-3.0, 3.0))
        reference = lrp.propagate(original, x, lambda out: out, rules=composite, bounds=(-3.0, 3.0))
        assert float((ours - reference).abs().max() / reference.abs().max()) < 1e-9, composite
