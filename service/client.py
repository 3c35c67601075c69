"""`lrpseg explain IMAGE`: submit to a running service, show progress, save the artifacts."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(RuntimeError):
    pass


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="PNG, JPEG, TIFF, .npy or DICOM file")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"service base URL (default {DEFAULT_URL})")
    parser.add_argument("--params", help="JobParams JSON, or @file.json")
    parser.add_argument("--model", help="model reference name@version (shortcut for params.model)")
    parser.add_argument("--ground-truth", type=Path, help="ground-truth mask of the target class")
    parser.add_argument("--out", type=Path, help="output folder (default: <image stem>-lrpseg)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
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
            raise ClientError("--params must be a JSON object")
    if model:
        params["model"] = model
    return params


def _problem(response: httpx.Response) -> ClientError:
    try:
        body = response.json()
        text = f"{body.get('title')}: {body.get('detail')} (request id {body.get('request_id')})"
    except ValueError:
        text = response.text[:200]
    return ClientError(f"HTTP {response.status_code}: {text}")


def submit(client: httpx.Client, image: Path, params: dict[str, Any], ground_truth: Path | None) -> str:
    files = {"image": (image.name, image.read_bytes())}
    if ground_truth is not None:
        files["ground_truth"] = (ground_truth.name, ground_truth.read_bytes())
    response = client.post("/v1/jobs", files=files, data={"params": json.dumps(params)})
    if response.status_code != 202:
        raise _problem(response)
    return response.headers["Location"]


def wait(client: httpx.Client, location: str, timeout: float, show: bool) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(location)
        if response.status_code != 200:
            raise _problem(response)
        view = response.json()
        if show:
            progress = view.get("progress") or {}
            where = f" (position {view['position']})" if view.get("position") is not None else ""
            line = (
                f"\r{view['status']:<9} {progress.get('stage', ''):<8} {100 * progress.get('fraction', 0):5.1f}%{where}"
            )
            print(line.ljust(60), end="", file=sys.stderr, flush=True)
        if view["status"] in ("finished", "failed", "canceled"):
            if show:
                print(file=sys.stderr)
            ended: dict[str, Any] = view
            return ended
        if time.monotonic() > deadline:
            raise ClientError(f"gave up after {timeout:g} s; the job is still {view['status']}: {location}")
        time.sleep(0.1 if view["status"] == "started" else 0.25)


def save(client: httpx.Client, view: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, url in (view["links"].get("artifacts") or {}).items():
        response = client.get(url)
        if response.status_code != 200:
            raise _problem(response)
        path = out / name
        path.write_bytes(response.content)
        saved.append(path)
    (out / "result.json").write_text(json.dumps(view["result"], indent=2))
    return saved


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
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    out = args.out or Path(f"{args.image.stem}-lrpseg")
    try:
        params = load_params(args.params, args.model)
        headers = {"X-API-Key": args.api_key} if args.api_key else {}
        with httpx.Client(base_url=args.url, timeout=30.0, headers=headers) as client:
            location = submit(client, args.image, params, args.ground_truth)
            view = wait(client, location, args.timeout, show=not args.quiet)
            if view["status"] != "finished":
                error = view.get("error") or {}
                raise ClientError(f"job {view['status']}: {error.get('code')}: {error.get('detail')}")
            saved = save(client, view, out)
    except (ClientError, OSError, httpx.HTTPError, json.JSONDecodeError) as exc:
        print(f"lrpseg explain: {exc}", file=sys.stderr)
        return 1
    print(summary(view["result"]))
    print(f"saved {len(saved)} artifacts and result.json to {out}/")
    return 0
