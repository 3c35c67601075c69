"""The viewer's shipped sample images: generated surface-defect pictures with their exact masks.

They are made by `lrpseg.data`'s generator from fixed test-split seeds, so they can be
regenerated at any time and checked against the committed files:

    .venv/bin/python -m service.samples          # rewrite service/static/samples/
    .venv/bin/python -m service.samples --check  # exit 1 if a committed file differs
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from lrpseg.data import generate_sample

SAMPLES_DIR = Path(__file__).parent / "static" / "samples"
INDEX = "index.json"


@dataclass(frozen=True)
class SampleSpec:
    name: str
    seed: int
    title: str


# Test-split seeds (never seen in training): two cracks, a blowhole, a defect-free surface with look-alikes.
SAMPLES = (
    SampleSpec("crack-1", 800000, "Crack across a brightness edge"),
    SampleSpec("blowhole-1", 800001, "Blowhole next to a deposit"),
    SampleSpec("crack-2", 800009, "Thin crack beside a scratch"),
    SampleSpec("clean-1", 800005, "No defect: a scratch and a deposit"),
)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def render(spec: SampleSpec) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H, W) image and uint8 (H, W) ground truth (255 = defect) of one sample."""
    sample = generate_sample(spec.seed)
    image = np.rint(np.clip(sample.image, 0.0, 1.0) * 255).astype(np.uint8)
    truth = np.where(sample.mask, 255, 0).astype(np.uint8)
    return image, truth


def index() -> list[dict[str, object]]:
    """What the viewer lists: name, title, image and ground-truth file names, size."""
    entries = []
    for spec in SAMPLES:
        image, truth = render(spec)
        entries.append(
            {
                "name": spec.name,
                "title": spec.title,
                "seed": spec.seed,
                "image": f"{spec.name}.png",
                "ground_truth": f"{spec.name}-truth.png",
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "defect_pixels": int((truth > 0).sum()),
            }
        )
    return entries


def files() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for spec in SAMPLES:
        image, truth = render(spec)
        out[f"{spec.name}.png"] = png(image)
        out[f"{spec.name}-truth.png"] = png(truth)
    out[INDEX] = (json.dumps(index(), indent=2) + "\n").encode()
    return out


def differences(folder: Path = SAMPLES_DIR) -> list[str]:
    """Files in `folder` whose content (pixels, for PNGs) differs from a fresh generation."""
    problems = []
    for name, data in files().items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif name.endswith(".png"):
            shipped = np.asarray(Image.open(path))
            fresh = np.asarray(Image.open(io.BytesIO(data)))
            if shipped.shape != fresh.shape or not np.array_equal(shipped, fresh):
                problems.append(f"{name}: pixels differ")
        elif json.loads(path.read_text()) != json.loads(data):
            problems.append(f"{name}: content differs")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.samples", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    for name, data in files().items():
        (SAMPLES_DIR / name).write_bytes(data)
        print(SAMPLES_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
