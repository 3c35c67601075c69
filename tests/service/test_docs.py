"""/docs and /redoc load their scripts and styles from this server, never from a CDN."""

from __future__ import annotations

import re
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def test_docs_pages_use_only_local_assets(client: TestClient) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href|spec-url)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert assets, page
        for asset in assets:
            assert asset.startswith("/"), (page, asset)  # same origin: nothing from the internet
            response = client.get(asset)
            assert response.status_code == 200 and len(response.content) > 100, (page, asset)
        assert "cdn" not in html and "https://" not in html.replace("https://github.com", ""), page
