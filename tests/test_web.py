"""The web page of the gateway, without a browser: it is served at ``/`` with its assets,
uses relative URLs only and honours ``root_path`` (a reverse proxy's path prefix); the
texture download it links to; its messages (run in Node) put every error code a person
can meet into a sentence. The page in a real browser: ``tests/browser/``.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Mount

from service.app import create_app
from service.web.router import STATIC_DIR
from workers.settings import Settings

STATIC_FILES = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
TEXT_ASSETS = ["index.html", "app.js", "messages.js", "viewer.js", "style.css"]


def image_bytes() -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize((64, 48)).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------- the page
def test_page_is_served_at_root(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<script type="module" src="static/app.js"></script>' in page
    assert 'href="static/style.css"' in page
    assert "<base" not in page  # no root_path: plain relative URLs
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    # the things a person needs are on the page, each with a label
    for element_id in ("photos", "api-key", "motion", "size", "viewer-motion"):
        assert f'for="{element_id}"' in page, element_id
    for element_id in ("progress", "stream", "dl-glb", "dl-mp4", "dl-texture", "open-3d"):
        assert f'id="{element_id}"' in page, element_id


def test_index_html_redirects_to_the_page(client: TestClient) -> None:
    response = client.get("/index.html", follow_redirects=False)
    assert response.status_code == 308
    assert response.headers["location"] == "/"


def test_page_routes_are_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(p.startswith("/static") for p in paths)


@pytest.mark.parametrize("path", [p.relative_to(STATIC_DIR).as_posix() for p in STATIC_FILES])
def test_every_static_file_is_served_with_its_type(client: TestClient, path: str) -> None:
    response = client.get(f"/static/{path}")
    assert response.status_code == 200, path
    expected = {
        ".html": "text/html",
        ".js": "text/javascript",
        ".css": "text/css",
        ".svg": "image/svg+xml",
        ".LICENSE": "text/plain",
    }[Path(path).suffix]
    assert response.headers["content-type"].startswith(expected)
    assert response.content == (STATIC_DIR / path).read_bytes()


@pytest.mark.parametrize(
    "path",
    ["../router.py", "%2e%2e/router.py", "..%2frouter.py", "vendor/../../router.py", "nothing.js", ""],
)
def test_static_route_serves_nothing_outside_its_folder(client: TestClient, path: str) -> None:
    response = client.get(f"/static/{path}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_vendored_three_js_is_there_with_its_licence() -> None:
    bundle = STATIC_DIR / "vendor" / "three.bundle.min.js"
    head = bundle.read_text(encoding="utf-8")[:300]
    assert "three.js" in head and "MIT" in head
    assert "MIT License" in (STATIC_DIR / "vendor" / "three.LICENSE").read_text()
    assert bundle.stat().st_size < 1_500_000  # tree-shaken and minified


@pytest.mark.parametrize("name", TEXT_ASSETS)
def test_assets_use_relative_urls_only(name: str) -> None:
    """Behind a reverse proxy with a path prefix a root-relative URL ('/v1/...') would miss
    the prefix; a full URL would leave the gateway (no CDN: the page works offline)."""
    text = (STATIC_DIR / name).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href|action)=["']/""", text), name
    assert not re.search(r"""["'`]/(v1|static|docs|healthz)""", text), name
    assert not re.search(r"url\(\s*['\"]?/", text), name
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name


# -------------------------------------------------------------- path prefix
def _base_href(page: str) -> str | None:
    match = re.search(r'<base href="([^"]*)">', page)
    return match.group(1) if match else None


def test_page_mounted_under_a_prefix_gets_a_base_and_its_assets(settings: Settings) -> None:
    """A reverse proxy (here: a Starlette Mount) serves the gateway under /proxy/avatars."""
    outer = Starlette(routes=[Mount("/proxy/avatars", app=create_app(settings))])
    with TestClient(outer) as client:
        page = client.get("/proxy/avatars/")
        assert page.status_code == 200
        assert _base_href(page.text) == "/proxy/avatars/"
        for asset in ("static/app.js", "static/viewer.js", "static/style.css", "v1/motions"):
            assert client.get(f"/proxy/avatars/{asset}").status_code == 200, asset
        assert client.get("/proxy/avatars/index.html", follow_redirects=False).headers[
            "location"
        ] == "/proxy/avatars/"


def test_page_honours_fastapi_root_path(settings: Settings) -> None:
    app: FastAPI = create_app(settings)
    app.root_path = "/gateway"
    with TestClient(app) as client:
        page = client.get("/")
        assert _base_href(page.text) == "/gateway/"
        assert client.get("/static/app.js").status_code == 200


def test_root_path_is_escaped_in_the_page(settings: Settings) -> None:
    with TestClient(create_app(settings), root_path='/a"><script>x</script>') as client:
        page = client.get("/").text
    assert "<script>x</script>" not in page
    assert _base_href(page) == "/a&quot;&gt;&lt;script&gt;x&lt;/script&gt;/"


# ---------------------------------------------------------- texture download
def test_texture_download(client: TestClient, data_dir: Path) -> None:
    created = client.post("/v1/avatars", files=[("photos", ("p.png", image_bytes(), "image/png"))])
    assert created.status_code == 202, created.text
    avatar_id = created.json()["avatar_id"]
    url = f"/v1/avatars/{avatar_id}/texture.png"
    not_ready = client.get(url)
    assert not_ready.status_code == 409
    assert not_ready.json()["error"]["code"] == "avatar_not_ready"

    avatar_dir = data_dir / "avatars" / avatar_id
    (avatar_dir / "avatar.glb").write_bytes(b"glTF")  # built: the glb is there
    missing = client.get(url)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "texture_not_found"

    (avatar_dir / "texture").mkdir(exist_ok=True)
    texture = image_bytes()
    (avatar_dir / "texture" / "inpainted.png").write_bytes(texture)
    response = client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == texture
    assert f'filename="{avatar_id}-texture.png"' in response.headers["content-disposition"]
    assert client.get(f"/v1/avatars/{'0' * 32}/texture.png").status_code == 404
    assert "/v1/avatars/{avatar_id}/texture.png" in client.get("/openapi.json").json()["paths"]


# ------------------------------------------------------------ the messages
def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (scripts/test-deps.sh installs it)")
    return node


def _run_module(tmp_path: Path, script: str) -> dict:
    """Run ``script`` (an ES module importing ./messages.mjs) in Node; its JSON output."""
    shutil.copy(STATIC_DIR / "messages.js", tmp_path / "messages.mjs")
    (tmp_path / "main.mjs").write_text(script)
    result = subprocess.run(
        [_node(), str(tmp_path / "main.mjs")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_error_codes_become_sentences(tmp_path: Path) -> None:
    codes = [
        "no_person_detected", "fit_failed", "pose_unsupported", "invalid_image", "invalid_photo", "empty_upload",
        "upload_too_large", "image_too_large", "too_many_photos", "storage_unavailable",
        "queue_unavailable", "job_store_unavailable", "avatar_not_found", "job_not_found",
        "model_asset_missing", "network_error", "webgl_unavailable", "http_401",
        "api_key_required", "invalid_api_key", "too_many_streams", "rate_limited",
    ]  # fmt: skip
    out = _run_module(
        tmp_path,
        "import { explain } from './messages.mjs';\n"
        f"const codes = {json.dumps(codes)};\n"
        "const out = Object.fromEntries(codes.map((c) => [c, explain(c)]));\n"
        "out.__default = explain('some_new_code');\n"
        "out.__limit = explain('upload_too_large', { limit_bytes: 20 * 1024 * 1024 });\n"
        "out.__photos = explain('too_many_photos', { max_photos: 8 });\n"
        "console.log(JSON.stringify(out));\n",
    )
    default = out.pop("__default")
    assert "try again" in default.lower()
    for code in codes:
        sentence = out[code]
        assert sentence != default, code  # each code has its own sentence
        assert sentence.endswith(".") and "_" not in sentence, (code, sentence)
    assert "person" in out["no_person_detected"]
    assert "standing upright" in out["fit_failed"] and "standing upright" in out["pose_unsupported"]
    assert "JPEG, PNG or WebP" in out["invalid_image"]
    assert "20 MB" in out["__limit"] and "at most 8" in out["__photos"]


def test_quality_report_in_plain_words(tmp_path: Path) -> None:
    quality = {
        "fit": {"keypoint_error_pct": [1.25], "silhouette_iou": [0.9]},
        "texture": {"size": 1024, "observed_fraction": 0.41},
        "warnings": ["person_cut_off", "something_new"],
    }
    out = _run_module(
        tmp_path,
        "import { describeQuality } from './messages.mjs';\n"
        f"console.log(JSON.stringify([describeQuality({json.dumps(quality)}), "
        "describeQuality(null), describeQuality({fit: {silhouette_iou: 0.4}, warnings: []})]));\n",
    )
    full, none, poor = out
    text = " ".join(full["lines"])
    assert "very good" in text and "90 %" in text and "IoU 0.90" in text
    assert "1.3 %" in text and "41 %" in text
    assert full["warnings"][0].startswith("Part of the person is cut off")
    assert full["warnings"][1] == "Warning: something new."
    assert none["lines"] == ["No quality report is available for this avatar."]
    assert "poor" in poor["lines"][0] and poor["warnings"] == []


@pytest.mark.parametrize("name", ["app.js", "viewer.js", "messages.js"])
def test_scripts_parse_as_es_modules(tmp_path: Path, name: str) -> None:
    copy = tmp_path / (Path(name).stem + ".mjs")
    shutil.copy(STATIC_DIR / name, copy)
    result = subprocess.run(
        [_node(), "--check", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
