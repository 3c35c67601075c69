"""Make docs/viewer.png: `lrpseg serve` with the SHIPPED models (embedded Redis in a temporary
folder, one worker), the viewer in Debian's headless Chromium, the shipped sample crack-1 with
its ground truth, default options; a screenshot once the result is shown.

    .venv/bin/python docs/make_viewer_png.py [--out docs/viewer.png]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRPSEG_") and k != "REDIS_URL"}
    env.update({"LRPSEG_DATA_DIR": str(folder), "LRPSEG_TORCH_THREADS": "2", "LRPSEG_LOG_LEVEL": "warning"})
    command = [sys.executable, "-m", "launch", "serve", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"lrpseg serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit("lrpseg serve was not ready within 180 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "viewer.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        proc, url = serve(Path(folder))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(url + "/")
                page.wait_for_selector("body[data-ready=true]")
                value = page.eval_on_selector(
                    "#sample", "s => [...s.options].find(o => o.value.includes('crack-1.png')).value"
                )
                page.select_option("#sample", value)
                page.wait_for_function("() => document.getElementById('image-note').textContent.includes('128×128')")
                page.click("#submit")
                page.wait_for_selector("#results[data-state=done]", timeout=300_000)
                model = page.input_value("#model")
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"wrote {args.out} ({model}, sample crack-1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
