"""The web viewer: one page at / and /viewer, its static files, and two helpers it needs.

None of these are API operations (include_in_schema=False). The page talks to the public
API (/v1/models, /v1/jobs, artifacts) like any other client; the helpers here only give
it what a browser cannot do itself:

- POST /viewer/preview: any accepted upload (16-bit, DICOM, .npy) as a display PNG, so the
  input can be shown and a region drawn on it before a job is submitted;
- GET /viewer/colors.json: lrpseg.render's relevance colormap and class palette, so the
  page re-renders the heatmap with exactly the server's colours.

The page may load nothing from another origin: a Content-Security-Policy says so.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from lrpseg import render
from lrpseg.render.colors import DEFAULT_CMAP, diverging_lut
from service.deps import PrincipalDep, SettingsDep
from service.single_parts import JOB_PARTS, single_parts
from service.submission import decode, read_upload

PALETTE_SIZE = 32  # class colours sent to the page (segmentation legend); more than any shipped model has
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Same origin only; images may also be blob:/data: URLs the page made from fetched artifacts.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)
static_files = StaticFiles(directory=STATIC_DIR)


@lru_cache(maxsize=1)
def page() -> str:
    return (STATIC_DIR / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse)
@router.get("/viewer", response_class=HTMLResponse)
async def viewer_page() -> HTMLResponse:
    return HTMLResponse(page(), headers=PAGE_HEADERS)


@router.get("/static/{path:path}", name="viewer_static")
async def static(path: str, request: Request) -> Response:
    """The page's scripts, styles and sample images (Starlette's StaticFiles: media types, ETags, no traversal)."""
    response = await static_files.get_response(path, request.scope)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


@router.get("/viewer/colors.json")
async def colors() -> JSONResponse:
    lut = diverging_lut(DEFAULT_CMAP)
    return JSONResponse(
        {"colormap": DEFAULT_CMAP, "lut": lut.tolist(), "palette": render.class_palette(PALETTE_SIZE).tolist()},
        headers={"Cache-Control": "max-age=3600"},
    )


@router.post("/viewer/preview", response_class=Response, dependencies=[Depends(single_parts(JOB_PARTS))])
def preview(
    settings: SettingsDep,
    principal: PrincipalDep,  # the same access rule as submitting a job
    image: Annotated[UploadFile, File()],
    frame: Annotated[int | None, Form(ge=0)] = None,
) -> Response:
    """The upload decoded as a job would decode it (same limits and errors), as an 8-bit RGB PNG."""
    upload = read_upload(image, "image", settings.max_upload_bytes)
    assert upload is not None
    decoded = decode(upload, "image", settings, frame)
    pixels = (render.display_rgb(decoded.array) * 255).round().astype("uint8")
    headers = {
        "Cache-Control": "no-store",
        "X-Image-Width": str(decoded.width),
        "X-Image-Height": str(decoded.height),
        "X-Image-Channels": str(decoded.channels),
        "X-Image-Frames": str(decoded.frames),
    }
    return Response(render.encode_png(pixels), media_type="image/png", headers=headers)
