"""The web viewer: the page and its assets over HTTP, and the whole flow in a real headless Chromium.

The browser tests start a real uvicorn server (the app with the test registry), a real worker
process (`python -m launch worker`), and Debian's Chromium driven by Playwright: upload a
sample, wait for the result, move the threshold slider, and compare what the page drew with
lrpseg.render's pixels for the same threshold.
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pydicom.data
import pytest
import redis
import uvicorn
from PIL import Image

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from core.security import hash_key
from core.settings import Settings
from lrpseg import render
from lrpseg.registry import Registry
from lrpseg.render.colors import diverging_lut
from service import samples
from service.app import create_app
from service.routers.viewer import CONTENT_SECURITY_POLICY
from tests.service import factories

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SAMPLE = samples.SAMPLES_DIR / "crack-1.png"
SAMPLE_TRUTH = samples.SAMPLES_DIR / "crack-1-truth.png"
REPO = Path(__file__).resolve().parents[2]
API_KEY = "lrpseg_viewer-test-key"


@pytest.fixture
def keyed_settings(settings: Settings) -> Settings:
    """The test settings with one API key required."""
    return Settings(**{**settings.model_dump(), "auth": "on", "api_keys": f"viewer:{hash_key(API_KEY)}"})


# ---- over plain HTTP -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/viewer"])
def test_page_is_served_with_a_same_origin_csp(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name  # nothing from another origin, nothing inline
    assert "http" not in csp and "*" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    html = response.text
    assert '<script type="module" src="/static/viewer.js">' in html
    assert "http://" not in html and "https://" not in html  # no CDN, nothing from the internet


def test_page_opens_without_a_key_but_preview_needs_one(
    make_client: Callable[[Settings], TestClient], keyed_settings: Settings
) -> None:
    client = make_client(keyed_settings)
    for path in ("/", "/viewer", "/static/viewer.js", "/static/samples/index.json", "/viewer/colors.json"):
        assert client.get(path).status_code == 200, path  # the page must load to ask for the key
    assert client.get("/v1/models").status_code == 401
    files = {"image": ("s.png", SAMPLE.read_bytes(), "image/png")}
    response = client.post("/viewer/preview", files=files)
    assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"
    assert client.post("/viewer/preview", files=files, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/viewer/preview", files=files, headers={"X-API-Key": API_KEY}).status_code == 200
    assert (
        client.post("/viewer/preview", files=files, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
    )


def test_static_assets_have_their_media_types(client: TestClient) -> None:
    expected = {
        "/static/viewer.js": "text/javascript",
        "/static/render.js": "text/javascript",
        "/static/viewer.css": "text/css",
        "/static/samples/index.json": "application/json",
        "/static/samples/crack-1.png": "image/png",
    }
    for path, media_type in expected.items():
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].split(";")[0] in (media_type, "application/javascript"), path
        assert response.headers["x-content-type-options"] == "nosniff"
    for path in ("/static/nothing.js", "/static/%2e%2e/app.py", "/static/..%2Fapp.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"


def test_static_assets_load_nothing_from_elsewhere() -> None:
    static = samples.SAMPLES_DIR.parent
    for name in ("index.html", "viewer.js", "render.js", "viewer.css"):
        text = (static / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        assert "@import" not in text and "url(" not in text, name
    assert ' style="' not in (static / "index.html").read_text()  # the CSP forbids inline styles


def test_viewer_routes_are_not_api_operations(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p in ("/", "/viewer") or p.startswith(("/static", "/viewer"))]


def test_colors_are_lrpseg_renders(client: TestClient) -> None:
    body = client.get("/viewer/colors.json").json()
    assert np.array_equal(np.array(body["lut"]), diverging_lut(body["colormap"]))
    assert len(body["lut"]) % 2 == 1  # transfer value 0 has its own centre entry
    assert np.array_equal(np.array(body["palette"][:4]), render.class_palette(4))


def test_preview_decodes_like_a_job(client: TestClient) -> None:
    grey16 = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    buffer = io.BytesIO()
    np.save(buffer, grey16)
    cases = {
        "sample.png": (SAMPLE.read_bytes(), np.asarray(Image.open(SAMPLE))),
        "grey16.npy": (buffer.getvalue(), None),
        "CT_small.dcm": (Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes(), None),
    }
    for name, (data, grey) in cases.items():
        response = client.post("/viewer/preview", files={"image": (name, data, "application/octet-stream")})
        assert response.status_code == 200, (name, response.text)
        assert response.headers["content-type"] == "image/png"
        pixels = np.asarray(Image.open(io.BytesIO(response.content)))
        assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8
        assert (int(response.headers["x-image-height"]), int(response.headers["x-image-width"])) == pixels.shape[:2]
        if grey is not None:  # 8-bit: shown as it is
            assert np.array_equal(pixels[..., 0], grey)
        else:  # 16-bit, DICOM: scaled into the display range as the job scales them
            assert pixels.min() < 30 and pixels.max() > 220, name
    ct = np.asarray(
        Image.open(
            io.BytesIO(client.post("/viewer/preview", files={"image": ("ct", cases["CT_small.dcm"][0])}).content)
        )
    )
    assert ct.shape == (128, 128, 3)


def test_preview_rejects_bad_uploads_as_problems(client: TestClient) -> None:
    response = client.post("/viewer/preview", files={"image": ("x.png", b"not an image", "image/png")})
    assert response.status_code == 400
    body = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert body["errors"][0]["field"] == "image"
    response = client.post("/viewer/preview", files={"image": ("x.png", b"", "image/png")})
    assert response.status_code == 422
    response = client.post("/viewer/preview", data={"frame": "1"}, files={"image": ("s.png", SAMPLE.read_bytes())})
    assert response.status_code == 422 and "frame" in response.json()["detail"]
    assert client.post("/viewer/preview").status_code == 422  # no image part


def test_preview_keeps_the_pixel_limits(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    small = make_client(settings.model_copy(update={"max_pixels": 64 * 64}))
    response = small.post("/viewer/preview", files={"image": ("s.png", SAMPLE.read_bytes(), "image/png")})
    assert response.status_code == 413
    assert "pixels" in response.json()["detail"]


def test_shipped_samples_match_the_generator_and_decode(client: TestClient) -> None:
    assert samples.differences() == [], "regenerate with: .venv/bin/python -m service.samples"
    assert samples.main(["--check"]) == 0
    index = client.get("/static/samples/index.json").json()
    assert [s["name"] for s in index] == [s.name for s in samples.SAMPLES]
    for entry in index:
        image = factories.decode_png(client.get(f"/static/samples/{entry['image']}").content)
        truth = factories.decode_png(client.get(f"/static/samples/{entry['ground_truth']}").content)
        assert image.dtype == np.uint8 and image.shape == (entry["height"], entry["width"])
        assert truth.shape == image.shape and set(np.unique(truth)) <= {0, 255}
        assert int((truth > 0).sum()) == entry["defect_pixels"]
        assert image.std() > 1  # a textured surface, not a flat picture
    assert sum(e["defect_pixels"] > 0 for e in index) >= 2 and any(e["defect_pixels"] == 0 for e in index)


def test_sample_check_finds_a_changed_file(tmp_path: Path) -> None:
    for name, data in samples.files().items():
        (tmp_path / name).write_bytes(data)
    assert samples.differences(tmp_path) == []
    pixels = np.asarray(Image.open(tmp_path / "crack-1.png")).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(tmp_path / "crack-1.png")
    (tmp_path / "clean-1-truth.png").unlink()
    assert samples.differences(tmp_path) == ["crack-1.png: pixels differ", "clean-1-truth.png: missing"]


# ---- in a real browser -----------------------------------------------------------------

requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
)


def redis_url_of(connection: redis.Redis) -> str:
    kwargs = connection.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


@pytest.fixture
def serve(redis_conn: redis.Redis, registry: Registry) -> Iterator[Callable[[Settings], str]]:
    """Start the app on a free loopback port, served by uvicorn in a thread; its base URL."""
    stops: list[Callable[[], None]] = []

    def start(settings: Settings) -> str:
        url, stop = start_server(create_app(settings, registry=registry, connection=redis_conn))
        stops.append(stop)
        return url

    yield start
    for stop in stops:
        stop()


@pytest.fixture
def live_server(serve: Callable[[Settings], str], settings: Settings) -> str:
    return serve(settings)


def start_server(app: Any) -> tuple[str, Callable[[], None]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return f"http://127.0.0.1:{port}", stop


@pytest.fixture
def worker_process(redis_conn: redis.Redis, registry: Registry, settings: Settings) -> Iterator[subprocess.Popen]:
    """A real worker process on the test queue with the test models."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LRPSEG_") and k != "REDIS_URL"},
        "REDIS_URL": redis_url_of(redis_conn),
        "LRPSEG_QUEUE_NAME": settings.queue_name,
        "LRPSEG_KEY_PREFIX": settings.key_prefix,
        "LRPSEG_MODELS_DIR": str(registry.dirs[0]),
        "LRPSEG_DEFAULT_MODEL": factories.SEGMENTER,
        "LRPSEG_PRELOAD": "default",
        "LRPSEG_DEVICE": "cpu",
        "LRPSEG_TORCH_THREADS": "1",
        "LRPSEG_PARENT_PID": str(os.getpid()),
        "LRPSEG_LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch", "worker"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    assert proc.returncode in (0, -15), out.decode(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield instance
        instance.close()


class PageLog:
    """Every request the page made, and every console error or uncaught exception."""

    def __init__(self, page: Any) -> None:
        self.requests: list[Any] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def foreign(self, origin: str) -> list[str]:
        host = urlparse(origin).netloc
        return [
            r.url for r in self.requests if not r.url.startswith(("blob:", "data:")) and urlparse(r.url).netloc != host
        ]


def canvas_rgb(page: Any, canvas_id: str) -> np.ndarray:
    shape, data = page.evaluate(
        """(id) => { const c = document.getElementById(id);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            return [[c.height, c.width], Array.from(d)]; }""",
        canvas_id,
    )
    return np.array(data, dtype=np.uint8).reshape(shape[0], shape[1], 4)[..., :3]


def assert_close_pixels(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Same pixels up to a rounding tie now and then: |diff| <= 1 LUT step on <= 0.1 % of them."""
    assert got.shape == want.shape, what
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 2, f"{what}: max difference {diff.max()}"
    assert (diff.max(axis=2) > 0).mean() <= 1e-3, f"{what}: {(diff.max(axis=2) > 0).sum()} pixels differ"


def wait_rendered(page: Any, before: int) -> int:
    page.wait_for_function("(n) => Number(document.getElementById('results').dataset.rendered || 0) > n", arg=before)
    return int(page.get_attribute("#results", "data-rendered"))


def wait_for_result(page: Any, worker: subprocess.Popen, previous: str | None = None, timeout: float = 90) -> str:
    """The id of the job the page shows once it is done; fails early if the worker died or the page shows an error."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        shown = page.evaluate(
            """() => { const d = document.getElementById('results').dataset;
                return [d.state || '', d.job || '', document.getElementById('form-error').textContent,
                        document.getElementById('progress-text').textContent]; }"""
        )
        if shown[0] == "done" and shown[1] and shown[1] != previous:
            return shown[1]
        assert not shown[2], f"the page shows an error: {shown[2]}"
        assert worker.poll() is None, "the worker process exited"
        time.sleep(0.2)
    raise AssertionError(f"no result within {timeout} s; progress: {shown[3]!r}")


def value_at(obj: Any, path: str) -> Any:
    for key in path.split("."):
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    return obj


@requires_chromium
@pytest.mark.slow
def test_viewer_end_to_end_in_chromium(
    browser: Any,
    serve: Callable[[Settings], str],
    keyed_settings: Settings,
    worker_process: subprocess.Popen,
    tmp_path: Path,
) -> None:
    live_server = serve(keyed_settings)  # API keys required: the page must send the one typed in
    key = {"X-API-Key": API_KEY}
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    log = PageLog(page)
    page.goto(f"{live_server}/")
    page.wait_for_selector("body[data-ready=true]")
    assert "Unauthorized" in page.text_content("#form-error")  # no key yet: the page says so
    assert page.locator("#model option").count() == 0
    log.errors.clear()  # the browser reports the 401 on the console; that one was expected
    keyed_from = len(log.requests)  # every API call from now on carries the key
    page.fill("#api-key", API_KEY)
    page.keyboard.press("Tab")  # change -> the models are loaded again, now with the key
    page.wait_for_function("() => document.querySelectorAll('#model option').length === 2")  # the test registry's two
    assert page.input_value("#model") == factories.SEGMENTER
    assert page.text_content("#form-error") == ""

    # Upload through the file pickers, as a person would: image and its ground truth.
    page.set_input_files("#image-file", str(SAMPLE))
    page.set_input_files("#truth-file", str(SAMPLE_TRUTH))
    page.wait_for_function("() => document.getElementById('input-canvas').width === 128")
    assert np.array_equal(canvas_rgb(page, "input-canvas")[..., 0], np.asarray(Image.open(SAMPLE)))
    page.evaluate(
        """() => { window.progressSeen = [];
            const text = document.getElementById('progress-text');
            new MutationObserver(() => window.progressSeen.push(text.textContent))
                .observe(text, {childList: true, characterData: true, subtree: true}); }"""
    )
    page.click("#submit")
    job_id = wait_for_result(page, worker_process)
    assert "Finished" in page.text_content("#progress-text")
    seen = page.evaluate("() => window.progressSeen")
    assert seen[0] == "Uploading…" and any(t.startswith(("Queued", "Running: ")) for t in seen), seen
    assert page.get_attribute("#progress-text", "aria-live") == "polite"
    assert not log.errors, log.errors

    job = httpx.get(f"{live_server}/v1/jobs/{job_id}", headers=key).json()
    assert job["status"] == "finished"
    result = job["result"]
    assert result["ground_truth"] is not None and "pr-curve.png" in job["links"]["artifacts"]
    assert page.is_visible("#fig-pr")

    # The metrics shown are the API's numbers, and their text reads as those numbers.
    cells = page.eval_on_selector_all(
        "[data-path]", "els => els.map(e => [e.dataset.path, e.dataset.value, e.textContent])"
    )
    assert len(cells) > 30
    paths = {path for path, _, _ in cells}
    for must in (
        "explanation.conservation",
        "masks.bmm.vs_ground_truth.iou",
        "ground_truth.relevance_average_precision",
    ):
        assert must in paths, must
    for path, shown_json, text in cells:
        value = value_at(result, path)
        assert json.loads(shown_json) == value, path
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            assert math.isclose(float(text), value, rel_tol=5e-4, abs_tol=1e-12), (path, text, value)
        elif value is None:
            assert text == "—", path
        else:
            assert text == str(value), path

    # What the browser drew is what lrpseg.render draws for the same threshold.
    rel2d = np.load(io.BytesIO(httpx.get(job["links"]["artifacts"]["relevance.npy"], headers=key).content)).sum(
        0, dtype=np.float64
    )
    image = np.asarray(Image.open(SAMPLE))
    vis = result["params"]["visualisation"]
    assert (vis["threshold"], vis["threshold_mode"], vis["transfer"]) == (50.0, "percentile", "log")
    before = canvas_rgb(page, "heatmap-canvas")
    assert_close_pixels(before, render.relevance_rgb(rel2d, percentile=50.0), "heatmap at p50")
    assert_close_pixels(
        canvas_rgb(page, "overlay-canvas"), render.overlay_rgb(image, rel2d, percentile=50.0), "overlay at p50"
    )
    server_png = factories.decode_png(httpx.get(job["links"]["artifacts"]["relevance.png"], headers=key).content)
    assert_close_pixels(before, server_png, "heatmap vs the job's relevance.png")

    # Move the threshold slider with the keyboard: PageUp twice (10 % of the range each), then
    # ArrowRight and ArrowLeft (one step of 0.5 each) -> the 70th percentile.
    page.focus("#view-threshold")
    for key_name in ("PageUp", "PageUp", "ArrowRight", "ArrowLeft"):
        page.keyboard.press(key_name)
    assert page.input_value("#view-threshold") == "70"
    page.wait_for_function(
        "() => document.getElementById('heatmap-canvas').dataset.view === JSON.stringify({mode: 'log', percentile: 70})"
    )
    rendered = int(page.get_attribute("#results", "data-rendered"))
    after = canvas_rgb(page, "heatmap-canvas")
    assert (after != before).any(axis=2).mean() > 0.05, "the heatmap did not change"
    assert_close_pixels(after, render.relevance_rgb(rel2d, percentile=70.0), "heatmap at p70")
    assert_close_pixels(
        canvas_rgb(page, "overlay-canvas"), render.overlay_rgb(image, rel2d, percentile=70.0), "overlay at p70"
    )
    tau = float(page.text_content("#scale-note").split("|R| < ")[1].split(" ")[0])
    assert math.isclose(tau, render.resolve_tau(rel2d, percentile=70.0), rel_tol=5e-4)
    screenshot = Path(os.environ.get("LRPSEG_VIEWER_SCREENSHOT", tmp_path / "viewer.png"))
    page.screenshot(path=str(screenshot), full_page=True)
    with Image.open(screenshot) as shot:
        assert shot.width == 1440
    assert screenshot.stat().st_size < 500_000

    page.select_option("#view-mode", "fraction")
    rendered = wait_rendered(page, rendered)
    assert_close_pixels(canvas_rgb(page, "heatmap-canvas"), render.relevance_rgb(rel2d, fraction=0.05), "fraction 0.05")
    page.check("#view-linear")
    rendered = wait_rendered(page, rendered)
    assert page.is_disabled("#view-threshold")
    assert_close_pixels(canvas_rgb(page, "heatmap-canvas"), render.relevance_rgb(rel2d, mode="linear"), "linear")
    page.check("#view-log")
    wait_rendered(page, rendered)

    # Download links for every artifact, pointing at this origin.
    links = page.eval_on_selector_all("#download-list a", "els => els.map(a => a.getAttribute('href'))")
    assert {h.rsplit("/", 1)[1] for h in links if h.startswith("/v1/")} == set(job["links"]["artifacts"])

    # Draw a rectangle on the input: it becomes the region (seed 003) of the next job.
    box = page.locator("#input-canvas").bounding_box()
    scale = box["width"] / 128
    page.mouse.move(box["x"] + 20.5 * scale, box["y"] + 30.5 * scale)
    page.mouse.down()
    page.mouse.move(box["x"] + 40 * scale, box["y"] + 50 * scale)
    page.mouse.move(box["x"] + 60.5 * scale, box["y"] + 70.5 * scale)
    page.mouse.up()
    assert [page.input_value(f"#{k}") for k in ("x0", "y0", "x1", "y1")] == ["20", "30", "61", "71"]
    assert page.input_value("#target-kind") == "region"
    page.click("#submit")
    region_job = httpx.get(f"{live_server}/v1/jobs/{wait_for_result(page, worker_process, job_id)}", headers=key).json()
    target = region_job["result"]["params"]["target"]
    assert target["kind"] == "region" and target["region"] == [{"x0": 20, "y0": 30, "x1": 61, "y1": 71}]
    assert region_job["result"]["explanation"]["target"].startswith("region")

    pick_a_sample_then_drop_a_dicom(page, live_server, worker_process, key)

    # Everything came from this server; the key typed in was sent on every API call.
    assert log.foreign(live_server) == []
    api_calls = [r for r in log.requests[keyed_from:] if urlparse(r.url).path.startswith(("/v1/", "/viewer/preview"))]
    assert api_calls and all(r.headers.get("x-api-key") == API_KEY for r in api_calls)
    assert page.evaluate("sessionStorage.getItem('lrpseg.apiKey')") == API_KEY
    assert not log.errors, log.errors
    page.close()


def pick_a_sample_then_drop_a_dicom(page: Any, live_server: str, worker: subprocess.Popen, key: dict[str, str]) -> None:
    """A shipped sample from the list; then a DICOM file dropped on the drop zone, run as a job.

    Part of the end-to-end test (one worker process for both): the page has shown a result.
    """
    previous = page.get_attribute("#results", "data-job")
    page.select_option("#target-kind", "class")
    entry = json.loads(page.locator("#sample option").nth(3).get_attribute("value"))
    page.select_option("#sample", index=3)
    page.wait_for_function(
        "(name) => document.getElementById('image-note').textContent.startsWith(name + ': 128')", arg=entry["image"]
    )
    shown = canvas_rgb(page, "input-canvas")[..., 0]
    assert np.array_equal(shown, np.asarray(Image.open(samples.SAMPLES_DIR / entry["image"])))
    assert entry["ground_truth"] in page.text_content("#truth-note")

    # The drop zone works from the keyboard too: Enter opens the file chooser.
    # (Whether Chromium then shows its dialog depends on its pop-up policy, so the test watches the click.)
    page.evaluate(
        """() => document.getElementById('image-file').addEventListener('click', (e) => {
            e.preventDefault(); window.chooserOpened = true; })"""
    )
    page.focus("#drop-zone")
    page.keyboard.press("Enter")
    assert page.evaluate("() => window.chooserOpened") is True

    dicom = Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()
    transfer = page.evaluate_handle(
        """(bytes) => { const dt = new DataTransfer();
            dt.items.add(new File([Uint8Array.from(bytes)], 'CT_small.dcm', {type: 'application/dicom'}));
            return dt; }""",
        list(dicom),
    )
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": transfer})
    page.wait_for_function("() => document.getElementById('image-note').textContent.includes('128×128')")
    assert page.text_content("#truth-note") == ""  # the sample's ground truth does not belong to this image
    page.uncheck("#mask-gmm")
    page.click("#submit")
    job = httpx.get(f"{live_server}/v1/jobs/{wait_for_result(page, worker, previous)}", headers=key).json()
    assert job["result"]["input"]["dicom"] is True
    assert job["result"]["params"]["masks"] == ["simple", "bmm"]
    assert {"seg.dcm", "relevance.dcm"} <= set(job["links"]["artifacts"])
    names = page.eval_on_selector_all("#download-list a", "els => els.map(a => a.textContent)")
    assert "seg.dcm" in names and "relevance.dcm" in names
    assert page.locator("#mask-figures img").count() == 2


@requires_chromium
@pytest.mark.slow
def test_every_control_is_labelled(browser: Any, live_server: str) -> None:
    page = browser.new_page()
    page.goto(f"{live_server}/")
    page.wait_for_selector("body[data-ready=true]")
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, canvas, img, progress')].filter((e) => {
            if (e.tagName === 'IMG') return !e.alt;
            if (e.tagName === 'CANVAS') return e.getAttribute('role') !== 'img' || !e.getAttribute('aria-label');
            if (e.tagName === 'BUTTON') return !e.textContent.trim();
            const named = e.getAttribute('aria-label') || e.getAttribute('aria-labelledby');
            return !(e.labels && e.labels.length) && !named;
        }).map((e) => e.id || e.outerHTML.slice(0, 80))"""
    )
    assert unlabelled == []
    # Tab reaches the controls in order, starting with the skip link, and focus is drawn.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip-link"
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "api-key"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    page.close()


@requires_chromium
@pytest.mark.slow
def test_js_transfer_equals_lrpseg_render(browser: Any, live_server: str) -> None:
    """render.js's tau and transfer values against lrpseg.render on heavy-tailed signed maps."""
    rng = np.random.default_rng(3)
    maps = {
        "heavy-tailed": rng.standard_cauchy((48, 40)) * rng.choice([1e-4, 1.0, 30.0], (48, 40)),
        "sparse": np.where(rng.random((32, 32)) < 0.9, 0.0, rng.normal(0, 1, (32, 32))),
        "tiny": rng.normal(0, 1e-30, (16, 16)),
    }
    options = [
        {"mode": "log", "percentile": 50.0},
        {"mode": "log", "percentile": 0.0},
        {"mode": "log", "percentile": 99.5},
        {"mode": "log", "percentile": 100.0},
        {"mode": "log", "fraction": 0.0},
        {"mode": "log", "fraction": 0.2},
        {"mode": "linear"},
    ]
    page = browser.new_page()
    log = PageLog(page)
    page.goto(f"{live_server}/viewer")
    page.wait_for_selector("body[data-ready=true]")
    for name, rel in maps.items():
        for opts in options:
            got = page.evaluate(
                """async ([values, opts]) => {
                    const R = await import('/static/render.js');
                    const out = R.transfer(Float64Array.from(values), opts);
                    return [Array.from(out.values), out.tau];
                }""",
                [rel.ravel().tolist(), opts],
            )
            kw = {k: v for k, v in opts.items() if k != "mode"}
            want = render.log_transfer(rel, mode=opts["mode"], **kw).ravel()
            assert np.allclose(got[0], want, rtol=1e-12, atol=1e-12), (
                name,
                opts,
                np.abs(np.array(got[0]) - want).max(),
            )
            if opts["mode"] == "log":
                assert math.isclose(got[1], render.resolve_tau(rel, **kw), rel_tol=1e-12), (name, opts)
    # .npy parsing (float32, C order) and the channel sum, against numpy.
    cube = rng.normal(0, 1, (3, 5, 7)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, cube)
    summed = page.evaluate(
        """async (bytes) => {
            const R = await import('/static/render.js');
            const s = R.sumChannels(R.parseNpy(Uint8Array.from(bytes).buffer));
            return [s.height, s.width, Array.from(s.values)];
        }""",
        list(buffer.getvalue()),
    )
    assert summed[:2] == [5, 7]
    assert np.array_equal(np.array(summed[2]), cube.sum(0, dtype=np.float64).ravel())
    assert not log.errors, log.errors
    page.close()


def test_screenshot_in_docs_is_small_and_readable() -> None:
    shot = REPO / "docs" / "viewer.png"
    assert shot.stat().st_size < 500_000
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.width >= 1280
