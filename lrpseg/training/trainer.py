"""Seeded training of the shipped model presets on generated data.

Reproducible: the data are a function of their seeds, the weights start from
`torch.manual_seed(seed)`, and batch order and augmentation come from one seeded
generator. Same seed, same device, same thread count -> the same weights.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from lrpseg.data import DefectDatasetConfig, generate_split, split_seeds, stack_samples
from lrpseg.models import build_model
from lrpseg.training.evaluate import card_report, evaluate
from lrpseg.training.losses import segmentation_loss
from lrpseg.training.presets import NORM_MEAN, NORM_STD, PRESETS, SURFACE_DEFECT_CODES, SURFACE_DOMAIN, Preset

SELECTION_METRIC = {"segmenter": "defect_iou", "classifier": "balanced_accuracy"}


class TrainingError(ValueError):
    """Training options that cannot work together."""


@dataclass(frozen=True)
class TrainOptions:
    """What `lrpseg train` accepts; None means the preset's value."""

    model: str = "unet"
    epochs: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    seed: int = 0
    size: int | None = None
    device: str = "auto"
    batch_size: int | None = None
    lr: float | None = None
    base_width: int | None = None
    crop: int | None = None
    name: str | None = None
    version: str = "1"
    progress: bool = True


@dataclass
class TrainResult:
    model: nn.Module
    config: dict[str, Any]  # the model directory's config.json (without format/weights)
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def resolve(options: TrainOptions) -> tuple[Preset, TrainOptions]:
    """The preset and the options with every None filled from it."""
    if options.model not in PRESETS:
        raise TrainingError(f"unknown model {options.model!r}; choose from {sorted(PRESETS)}")
    preset = PRESETS[options.model]
    n_train = options.n_train or preset.n_train
    held_out = max(round(n_train / 3), 8)  # 60/20/20
    size = options.size or preset.size
    default_crop = min(preset.crop, size) if preset.crop else None
    filled = replace(
        options,
        epochs=options.epochs or preset.epochs,
        n_train=n_train,
        n_val=options.n_val or held_out,
        n_test=options.n_test or held_out,
        size=size,
        batch_size=options.batch_size or preset.batch_size,
        lr=options.lr or preset.lr,
        name=options.name or preset.name,
        crop=options.crop or default_crop,
    )
    if preset.kind == "classifier" and filled.size % 32:
        raise TrainingError(f"VGG-11 input size must be a multiple of 32, got {filled.size}")
    if filled.crop is not None and (preset.kind != "segmenter" or not 16 <= filled.crop <= filled.size):
        raise TrainingError(f"crop must be in [16, size] and is for segmenters only, got {filled.crop}")
    for label in ("epochs", "n_train", "n_val", "n_test", "batch_size"):
        if getattr(filled, label) < 1:
            raise TrainingError(f"{label} must be positive, got {getattr(filled, label)}")
    return preset, filled


def architecture(preset: Preset, options: TrainOptions) -> dict[str, Any]:
    arch = dict(preset.architecture)
    if options.base_width:
        arch["base_width"] = options.base_width
    if arch["family"] == "vgg11":
        arch["input_size"] = options.size
    return arch


def init_classifier(model: nn.Module) -> None:
    """He init for convs, small normal for FC layers (VGG without BatchNorm trains from scratch)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def normalize(images: Tensor) -> Tensor:
    return (images - NORM_MEAN) / NORM_STD


def augment(images: Tensor, masks: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random element of the square's symmetry group (flips, 90-degree turns) per sample."""
    choice = torch.randint(0, 8, (len(images),), generator=gen).tolist()
    out_i, out_m = [], []
    for img, msk, c in zip(images, masks, choice):
        img, msk = torch.rot90(img, c % 4, dims=(-2, -1)), torch.rot90(msk, c % 4, dims=(-2, -1))
        if c >= 4:
            img, msk = img.flip(-1), msk.flip(-1)
        out_i.append(img)
        out_m.append(msk)
    return torch.stack(out_i), torch.stack(out_m)


def random_crop(images: Tensor, masks: Tensor, side: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """One random side x side window per sample."""
    high = images.shape[-1] - side + 1
    corners = torch.randint(0, high, (len(images), 2), generator=gen).tolist()
    crops = [(img[..., y : y + side, x : x + side], msk[..., y : y + side, x : x + side])
             for img, msk, (y, x) in zip(images, masks, corners)]  # fmt: skip
    return torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops])


def load_split(split: str, n: int, data: DefectDatasetConfig) -> tuple[Tensor, Tensor, Tensor]:
    images, masks, labels = stack_samples(generate_split(split, n, data))  # type: ignore[arg-type]
    return normalize(images), masks, labels


def loss_of(kind: str, logits: Tensor, masks: Tensor, labels: Tensor) -> Tensor:
    if kind == "segmenter":
        return segmentation_loss(logits, masks)
    return F.cross_entropy(logits, labels)


def train(options: TrainOptions) -> TrainResult:
    """Train one preset; the best validation epoch's weights are kept and tested."""
    preset, opts = resolve(options)
    device = pick_device(opts.device)
    data = DefectDatasetConfig(size=opts.size)
    started = time.perf_counter()
    train_x, train_m, train_y = load_split("train", opts.n_train, data)
    val_x, val_m, val_y = load_split("val", opts.n_val, data)
    torch.manual_seed(opts.seed)
    arch = architecture(preset, opts)
    model = build_model(arch)
    if preset.kind == "classifier":
        init_classifier(model)
    model.to(device)
    batch = min(opts.batch_size, opts.n_train)
    steps = opts.n_train // batch
    optimizer = torch.optim.Adam(model.parameters(), lr=opts.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=opts.epochs * steps, eta_min=opts.lr / 20)
    gen = torch.Generator().manual_seed(opts.seed)
    metric = SELECTION_METRIC[preset.kind]
    best_score, best_state, best_epoch = -1.0, copy.deepcopy(model.state_dict()), 0
    history: list[dict[str, float]] = []
    bar = tqdm(total=opts.epochs * steps, desc=opts.name, unit="batch", disable=not opts.progress)
    for epoch in range(1, opts.epochs + 1):
        model.train()
        order = torch.randperm(opts.n_train, generator=gen)
        total = 0.0
        for step in range(steps):
            idx = order[step * batch : (step + 1) * batch]
            x, m = augment(train_x[idx], train_m[idx], gen)
            if opts.crop:
                x, m = random_crop(x, m, opts.crop, gen)
            logits = model(x.to(device))
            loss = loss_of(preset.kind, logits, m.to(device), train_y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}")
        score = evaluate(model, preset.kind, val_x, val_m, val_y, device)[metric]
        history.append({"epoch": epoch, "train_loss": round(total / steps, 6), f"val_{metric}": round(score, 6)})
        bar.set_postfix(epoch=epoch, loss=f"{total / steps:.4f}", **{f"val_{metric}": f"{score:.4f}"})
        if score > best_score:
            best_score, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch
    bar.close()
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    test_samples = generate_split("test", opts.n_test, data)
    metrics, errors = card_report(model, preset.kind, test_samples, NORM_MEAN, NORM_STD)
    settings = {
        "preset": opts.model,
        "seed": opts.seed,
        "epochs": opts.epochs,
        "best_epoch": best_epoch,
        "batch_size": batch,
        "optimizer": f"Adam lr {opts.lr:g}, cosine decay to {opts.lr / 20:g}",
        "loss": "cross-entropy (defect weight 5) + soft Dice" if preset.kind == "segmenter" else "cross-entropy",
        "augmentation": "random flips and 90-degree rotations"
        + (f", random {opts.crop}x{opts.crop} crops" if opts.crop else ""),
        "selection": f"epoch with the best validation {metric}",
        "device": device.type,
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "history": history,
    }
    config = model_config(preset, opts, arch, data, metrics, settings)
    config["breakdown"] = errors
    return TrainResult(model=model, config=config, metrics=metrics, history=history)


def model_config(preset: Preset, opts: TrainOptions, arch: dict[str, Any], data: DefectDatasetConfig,
                 metrics: dict[str, float], settings: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The model directory's config.json content."""
    splits = {
        name: [seeds.start, seeds.stop]
        for name, seeds in (
            ("train", split_seeds("train", opts.n_train)),
            ("val", split_seeds("val", opts.n_val)),
            ("test", split_seeds("test", opts.n_test)),
        )
    }
    return {
        "name": opts.name,
        "version": opts.version,
        "kind": preset.kind,
        "description": preset.description,
        "architecture": arch,
        "class_names": preset.class_names,
        "input_size": arch.get("input_size"),
        "normalization": {"mean": [NORM_MEAN], "std": [NORM_STD]},
        "metrics": metrics,
        "evaluation": {
            "split": "test",
            "start": 0,
            "n": opts.n_test,
            "data": data.to_dict(),
            "decision": "argmax over classes",
        },
        "data": {
            "generator": "lrpseg.data.generate_sample",
            "config": data.to_dict(),
            "seed_ranges": splits,
            "labels": "pixel masks" if preset.kind == "segmenter" else "image-level labels only",
        },
        "training": {"n_train": opts.n_train, "n_val": opts.n_val, "n_test": opts.n_test, **settings},
        "intended_use": preset.intended_use,
        "limits": preset.limits,
        "domain": SURFACE_DOMAIN,
        "segment_codes": {"defect": SURFACE_DEFECT_CODES} if "defect" in preset.class_names else {},
    }
