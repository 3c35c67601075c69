"""`lrpseg train`: train a shipped-model preset and write a registry-ready model directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lrpseg.registry import save_model_dir
from lrpseg.training.card import render_card
from lrpseg.training.presets import PRESETS
from lrpseg.training.trainer import TrainOptions, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=sorted(PRESETS), default="unet", help="which preset to train")
    parser.add_argument("--out", type=Path, help="model directory to write (default runs/<name>@<version>)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    parser.add_argument("--n-train", type=int, help="training images; validation and test get a third each")
    parser.add_argument("--n-val", type=int, help="validation images (default n_train / 3)")
    parser.add_argument("--n-test", type=int, help="test images for the card's metrics (default n_train / 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batch order and augmentation")
    parser.add_argument("--size", type=int, help="image side in pixels (default 128 U-Net, 64 VGG)")
    parser.add_argument("--crop", type=int, help="U-Net: train on random crops of this side")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--base-width", type=int, help="channels of the first conv block")
    parser.add_argument("--name", help="model name (default: the preset's)")
    parser.add_argument("--version", default="1")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    options = TrainOptions(
        model=args.model,
        epochs=args.epochs,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        seed=args.seed,
        size=args.size,
        crop=args.crop,
        device=args.device,
        batch_size=args.batch_size,
        lr=args.lr,
        base_width=args.base_width,
        name=args.name,
        version=args.version,
        progress=not args.quiet,
    )
    result = train(options)
    out = args.out or Path("runs") / f"{result.config['name']}@{result.config['version']}"
    info = save_model_dir(out, result.model, result.config, render_card(result.config))
    print(f"wrote {info.id} to {out}", file=sys.stderr)
    print(json.dumps(result.metrics, indent=2))
    return 0
