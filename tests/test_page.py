"""The page's routes over real HTTP: what is served, with which headers, and what is not."""

import socket
from urllib.parse import urlsplit

import httpx
import pytest

from sidecar.api.page import WEB_DIR
from sidecar.testing import running_sidecar


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET `path` byte for byte (httpx would normalise `..` away before sending)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_root_serves_the_page_with_the_configured_row_cap_and_a_strict_csp():
    with running_sidecar(**{"web.max_rows": 250}) as sc:
        r = httpx.get(sc.url + "/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<meta name="sidecar-max-rows" content="250">' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path, media_type",
    [("/web/app.js", "javascript"), ("/web/app.css", "text/css")],
)
def test_assets_are_served_from_the_package_with_revalidation(sidecar, path, media_type):
    r = httpx.get(sidecar.url + path)
    assert r.status_code == 200
    assert media_type in r.headers["content-type"]
    assert r.headers["cache-control"] == "no-cache" and r.headers["etag"]
    assert r.content == (WEB_DIR / path.removeprefix("/web/")).read_bytes()
    again = httpx.get(sidecar.url + path, headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("path", ["/web/index.html", "/web//index.html", "/web/./index.html", "/web/x/../index.html"])
def test_the_template_path_serves_the_filled_page_never_the_raw_template(spawn, path):
    proc = spawn(config="web:\n  max_rows: 250\n")
    status, body = raw_get(proc.url, path)
    assert status == 200
    assert b"{{" not in body and b'<meta name="sidecar-max-rows" content="250">' in body
    assert body == httpx.get(proc.url + "/").content
    r = httpx.get(proc.url + "/web/index.html")
    assert r.headers["cache-control"] == "no-cache" and r.headers["etag"] == httpx.get(proc.url + "/").headers["etag"]
    assert httpx.get(proc.url + "/", headers={"If-None-Match": r.headers["etag"]}).status_code == 304


def test_the_page_loads_nothing_from_outside_the_sidecar():
    for name in ("index.html", "app.js", "app.css"):
        text = (WEB_DIR / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name


@pytest.mark.parametrize(
    "path",
    [
        "/web/../page.py",
        "/web/..%2fpage.py",
        "/web/%2e%2e/page.py",
        "/web/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/web/..%5cpage.py",
        "/web//etc/passwd",
        "/web/%2fetc%2fpasswd",
        "/web/../../../../../../etc/passwd",
    ],
)
def test_paths_outside_the_web_directory_are_not_served(sidecar, path):
    status, body = raw_get(sidecar.url, path)
    assert status in (400, 404)
    assert b"root:" not in body and b"page_routes" not in body and b"[project]" not in body


def test_unknown_asset_is_404(sidecar):
    assert httpx.get(sidecar.url + "/web/nope.js").status_code == 404


def test_page_can_be_turned_off():
    with running_sidecar(**{"web.enabled": False}) as sc:
        assert httpx.get(sc.url + "/").status_code == 404
        assert httpx.get(sc.url + "/web/app.js").status_code == 404
        assert httpx.get(sc.url + "/healthz").status_code == 200
