"""`lrpseg explain IMAGE|FOLDER ...`: submit images to a running service (lrpseg.client), show
progress, save each job's artifacts and result.json.

One image goes to `--out` (default `<stem>-lrpseg/`); several (or a folder) go to
`--out/<stem>/` (default `lrpseg-out/`) with a progress bar. An output folder that is not
empty is refused unless `--overwrite`, which clears it first, and only if an earlier
`lrpseg explain` wrote it (it holds OUT_MARK), so a typo cannot wipe other files.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lrpseg.client import DEFAULT_URL, Client, ClientError, Submitted

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".dcm", ".dicom")
OUT_MARK = ".lrpseg-explain"
BATCH_OUT = Path("lrpseg-out")


class UsageError(ClientError):
    """The command line asks for something we refuse (exit 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", type=Path, nargs="+", help="PNG, JPEG, TIFF, .npy or DICOM files, or folders of them")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"service base URL (default {DEFAULT_URL})")
    parser.add_argument("--params", help="JobParams JSON, or @file.json")
    parser.add_argument("--model", help="model reference name@version (shortcut for params.model)")
    parser.add_argument("--ground-truth", type=Path, help="ground-truth mask of the target class (one image only)")
    parser.add_argument(
        "--out", type=Path, help=f"output folder (default: <image stem>-lrpseg, or {BATCH_OUT} for several)"
    )
    parser.add_argument("--overwrite", action="store_true", help="clear an earlier lrpseg explain output in --out")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each job")
    parser.add_argument("--quiet", action="store_true", help="no progress line or bar")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LRPSEG_API_KEY"),
        help="API key sent as X-API-Key (default: LRPSEG_API_KEY); needed when the service requires keys",
    )


def load_params(raw: str | None, model: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if raw:
        text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
        params = json.loads(text)
        if not isinstance(params, dict):
            raise UsageError("--params must be a JSON object")
    if model:
        params["model"] = model
    return params


def expand(paths: list[Path]) -> list[Path]:
    """Files as given; folders as their image files (by suffix, sorted)."""
    images: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"{path}/ holds no image ({', '.join(IMAGE_SUFFIXES)})")
            images.extend(found)
        elif path.is_file():
            images.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise UsageError(f"several images are named {', '.join(twice)}: their outputs would collide")
    return images


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty output folder, unless --overwrite and an earlier lrpseg explain wrote it.
    Nothing is touched yet: a failed submission leaves the folder as it was."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"--out {out}/ is not empty; pass --overwrite to replace it, or choose another folder")
        if not (out / OUT_MARK).exists():
            raise UsageError(f"--out {out}/ was not written by lrpseg explain; it is left alone (clear it yourself)")


def make_out(out: Path) -> None:
    """The checked output folder, emptied and marked as ours."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / OUT_MARK).write_text("written by lrpseg explain; --overwrite may clear this folder\n")


def summary(result: dict[str, Any]) -> str:
    lines = [f"model     {result['model']['id']}"]
    if result.get("segmentation"):
        shares = ", ".join(f"{c['name']} {100 * c['share']:.1f}%" for c in result["segmentation"]["classes"])
        lines.append(f"segment   {shares}")
    if result.get("classification"):
        c = result["classification"]
        lines.append(f"class     {c['predicted_name']} ({100 * c['probabilities'][c['predicted_name']]:.1f}%)")
    e = result.get("explanation")
    if e:
        cons = "n/a" if e.get("conservation") is None else f"{e['conservation']:.4f}"
        lines.append(f"explain   {e['method']} {e.get('composite') or ''} target={e['target']} conservation={cons}")
    for name, m in result.get("masks", {}).items():
        iou = (m.get("vs_ground_truth") or m.get("vs_model") or {}).get("iou")
        lines.append(f"mask {name:<5} {m['pixels']} px" + ("" if iou is None else f", IoU {iou:.3f}"))
    t = dict(result["timings"])
    batch = t.pop("batch_size", 1)
    line = ", ".join(f"{k} {v:.1f} ms" for k, v in t.items() if v is not None)
    lines.append("timings   " + line + (f" (a batch of {batch})" if batch > 1 else ""))
    lines.extend(f"WARNING   {w}" for w in result.get("warnings") or [])
    return "\n".join(lines)


def progress_line(view: dict[str, Any]) -> None:
    progress = view.get("progress") or {}
    where = f" (position {view['position']})" if view.get("position") is not None else ""
    line = f"\r{view['status']:<9} {progress.get('stage', ''):<8} {100 * progress.get('fraction', 0):5.1f}%{where}"
    print(line.ljust(60), end="", file=sys.stderr, flush=True)


def save(client: Client, view: dict[str, Any], out: Path) -> list[Path]:
    saved = client.download(view, out)
    (out / "result.json").write_text(json.dumps(view["result"], indent=2))
    return saved


def explain_one(client: Client, args: argparse.Namespace, image: Path, params: dict[str, Any], out: Path) -> int:
    job = client.submit(image, params, ground_truth=args.ground_truth)
    on_progress: Callable[[dict[str, Any]], None] | None = None if args.quiet else progress_line
    try:
        view = client.wait(job, args.timeout, on_progress)
    finally:
        if not args.quiet:
            print(file=sys.stderr)
    make_out(out)
    saved = save(client, view, out)
    print(summary(view["result"]))
    print(f"saved {len(saved)} artifacts and result.json to {out}/")
    return 0


def explain_many(
    client: Client, args: argparse.Namespace, images: list[Path], params: dict[str, Any], out: Path
) -> int:
    """Submit all (a 429/503 waits and retries), then collect them in order under a progress bar."""
    jobs: list[tuple[Path, Submitted]] = []
    failed = 0
    for image in images:
        try:
            jobs.append((image, client.submit(image, params)))
        except ClientError as exc:
            if getattr(exc, "status", 0) in (400, 413, 415, 422):  # this image is bad; the others may be fine
                print(f"{image}: refused: {exc}", file=sys.stderr)
                failed += 1
                continue
            raise
    make_out(out)
    done = 0
    bar = tqdm(total=len(jobs), unit="image", disable=args.quiet, file=sys.stderr)
    for image, job in jobs:
        try:
            view = client.wait(job, args.timeout)
        except ClientError as exc:
            tqdm.write(f"{image}: {exc}", file=sys.stderr)
            failed += 1
        else:
            save(client, view, out / image.stem)
            done += 1
            for warning in view["result"].get("warnings") or []:
                tqdm.write(f"{image}: WARNING {warning}", file=sys.stderr)
        bar.update(1)
    bar.close()
    print(f"{done} of {len(images)} images explained; results in {out}/")
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    try:
        images = expand(args.images)
        if args.ground_truth is not None and len(images) > 1:
            raise UsageError("--ground-truth goes with one image")
        single = len(images) == 1 and not args.images[0].is_dir()
        out = args.out or (Path(f"{images[0].stem}-lrpseg") if single else BATCH_OUT)
        params = load_params(args.params, args.model)
        check_out(out, args.overwrite)
        with Client(args.url, api_key=args.api_key) as client:
            if single:
                return explain_one(client, args, images[0], params, out)
            return explain_many(client, args, images, params, out)
    except UsageError as exc:
        print(f"lrpseg explain: {exc}", file=sys.stderr)
        return 2
    except (ClientError, OSError, json.JSONDecodeError) as exc:
        print(f"lrpseg explain: {exc}", file=sys.stderr)
        return 1
