"""Gateway API with FastAPI's TestClient: every bad input gets a clean 4xx JSON error
and leaves no avatar behind; unknown ids are 404 JSON; health and docs answer.

These tests run in the embedded mode (filesystem queue, SQLite job store) without a
worker: an accepted upload only has to be stored, recorded and enqueued.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import struct
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.streaming import BOUNDARY, PlayerCache, mjpeg_part, mjpeg_stream
from workers.settings import Settings
from workers.storage import new_id


# ------------------------------------------------------------------- helpers
def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize(size).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def files(*blobs: bytes, name: str = "photo.jpg") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("photos", (f"{i}-{name}", blob, "image/jpeg")) for i, blob in enumerate(blobs)]


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    return body["error"]


def assert_nothing_stored(data_dir: Path) -> None:
    avatars = data_dir / "avatars"
    assert not avatars.exists() or list(avatars.iterdir()) == []
    messages = data_dir / "queue" / "messages"
    assert not messages.exists() or list(messages.iterdir()) == []
    with sqlite3.connect(data_dir / "jobs.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


# ---------------------------------------------------------------- health, docs
def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_without_worker_is_503_with_details(client: TestClient) -> None:
    error = assert_error(client.get("/readyz"), 503, "not_ready")
    checks = error["details"]["checks"]
    assert checks["storage"]["ok"] and checks["jobs"]["ok"]
    assert not checks["broker"]["ok"]
    assert error["details"]["mode"] == "embedded"


def test_readyz_with_fresh_worker_heartbeat(client: TestClient, settings: Settings) -> None:
    from workers.heartbeat import HeartbeatWriter

    writer = HeartbeatWriter(settings, ["fit", "inpaint"])
    writer.beat()
    try:
        response = client.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ready"
    finally:
        writer.stop()
    assert client.get("/readyz").status_code == 503


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    for path in (
        "/v1/avatars",
        "/v1/avatars/{avatar_id}",
        "/v1/avatars/{avatar_id}/avatar.glb",
        "/v1/avatars/{avatar_id}/stream",
        "/v1/jobs/{job_id}",
        "/v1/motions",
        "/healthz",
        "/readyz",
    ):
        assert path in schema["paths"], path


def test_motions(client: TestClient) -> None:
    """Depends on models.animation.motions."""
    response = client.get("/v1/motions")
    assert response.status_code == 200, response.text
    names = [m["name"] for m in response.json()["motions"]]
    assert "turntable" in names


# ------------------------------------------------------------- router errors
def test_unknown_route_is_404_json(client: TestClient) -> None:
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")


def test_wrong_method_is_405_json(client: TestClient) -> None:
    assert_error(client.delete("/healthz"), 405, "method_not_allowed")


@pytest.mark.parametrize("bad_id", [new_id(), "not-an-id", "A" * 32, "..", "%2e%2e"])
def test_unknown_avatar_ids_are_404(client: TestClient, bad_id: str) -> None:
    for suffix in ("", "/avatar.glb", "/stream"):
        response = client.get(f"/v1/avatars/{bad_id}{suffix}")
        assert response.status_code == 404, (suffix, response.text)
        assert response.json()["error"]["code"] in {"avatar_not_found", "not_found"}


@pytest.mark.parametrize("bad_id", [new_id(), "not-an-id", "0" * 31])
def test_unknown_job_ids_are_404(client: TestClient, bad_id: str) -> None:
    assert_error(client.get(f"/v1/jobs/{bad_id}"), 404, "job_not_found")


def test_unexpected_errors_are_500_without_traceback(settings: Settings) -> None:
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals /etc/shadow")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    error = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text and "shadow" not in response.text
    assert error["details"] is None


# ------------------------------------------------------------------ uploads
def test_accepted_upload_is_stored_recorded_and_enqueued(
    client: TestClient, data_dir: Path
) -> None:
    jpeg, png, webp = image_bytes("JPEG"), image_bytes("PNG"), image_bytes("WEBP")
    response = client.post(
        "/v1/avatars",
        files=[
            ("photos", ("front.jpg", jpeg, "image/jpeg")),
            ("photos", ("../../evil.png", png, "application/octet-stream")),
            ("photos", ("side", webp, "image/webp")),
        ],
    )
    assert response.status_code == 202, response.text
    body = response.json()
    avatar_id, job_id = body["avatar_id"], body["job_id"]
    assert body["links"] == {
        "job": f"/v1/jobs/{job_id}",
        "avatar": f"/v1/avatars/{avatar_id}",
        "glb": f"/v1/avatars/{avatar_id}/avatar.glb",
        "stream": f"/v1/avatars/{avatar_id}/stream?motion=turntable",
    }
    assert response.headers["location"] == f"/v1/jobs/{job_id}"

    originals = data_dir / "avatars" / avatar_id / "originals"
    assert sorted(p.name for p in originals.iterdir()) == [
        "photo_0.jpg",
        "photo_1.png",
        "photo_2.webp",
    ]
    assert (originals / "photo_0.jpg").read_bytes() == jpeg

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "queued" and job["avatar_id"] == avatar_id and job["progress"] == 0

    avatar = client.get(f"/v1/avatars/{avatar_id}").json()
    assert avatar["id"] == avatar_id
    assert avatar["state"] == "queued" and avatar["ready"] is False
    assert [p["format"] for p in avatar["photos"]] == ["jpeg", "png", "webp"]
    assert avatar["photos"][1]["original_filename"] == "evil.png"
    assert avatar["photos"][0]["width"] == 64 and avatar["photos"][0]["height"] == 48
    assert avatar["quality"] is None

    messages = list((data_dir / "queue" / "messages").iterdir())
    assert [m.name.split(".", 1)[1] for m in messages] == ["fit.msg"]

    error = assert_error(client.get(f"/v1/avatars/{avatar_id}/avatar.glb"), 409, "avatar_not_ready")
    assert error["details"]["state"] == "queued"


def test_no_photos_is_empty_upload(client: TestClient, data_dir: Path) -> None:
    assert_error(client.post("/v1/avatars"), 400, "empty_upload")
    assert_error(client.post("/v1/avatars", data={"other": "x"}), 400, "empty_upload")
    assert_error(
        client.post("/v1/avatars", files=[("wrong_field", ("a.jpg", image_bytes(), "image/jpeg"))]),
        400,
        "empty_upload",
    )
    assert_nothing_stored(data_dir)


def test_empty_file_is_empty_upload(client: TestClient, data_dir: Path) -> None:
    assert_error(client.post("/v1/avatars", files=files(b"")), 400, "empty_upload")
    assert_error(client.post("/v1/avatars", files=files(image_bytes(), b"")), 400, "empty_upload")
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize(
    "blob",
    [
        b"hello, this is plain text and not a photo at all",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"%PDF-1.4\n",
        b"BM" + b"\x00" * 60,
    ],
)
def test_not_an_image_is_415(client: TestClient, data_dir: Path, blob: bytes) -> None:
    assert_error(client.post("/v1/avatars", files=files(blob)), 415, "invalid_image")
    assert_nothing_stored(data_dir)


def test_client_content_type_is_not_trusted(client: TestClient, data_dir: Path) -> None:
    response = client.post(
        "/v1/avatars", files=[("photos", ("x.jpg", b"MZ\x90\x00 not a jpeg", "image/jpeg"))]
    )
    assert_error(response, 415, "invalid_image")
    assert_nothing_stored(data_dir)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_image_is_400(client: TestClient, data_dir: Path, fmt: str) -> None:
    blob = image_bytes(fmt, (256, 256))
    truncated = blob[: len(blob) // 2]
    error = assert_error(client.post("/v1/avatars", files=files(truncated)), 400, "invalid_image")
    assert error["details"]["photo"] == 0
    assert_nothing_stored(data_dir)


def test_corrupt_image_with_valid_signature_is_400(client: TestClient, data_dir: Path) -> None:
    blob = b"\x89PNG\r\n\x1a\n" + b"garbage" * 20
    assert_error(client.post("/v1/avatars", files=files(blob)), 400, "invalid_image")
    assert_nothing_stored(data_dir)


def test_one_bad_photo_rejects_the_whole_upload(client: TestClient, data_dir: Path) -> None:
    response = client.post("/v1/avatars", files=files(image_bytes(), image_bytes(), b"nope"))
    error = assert_error(response, 415, "invalid_image")
    assert error["details"]["photo"] == 2
    assert_nothing_stored(data_dir)


def test_too_many_photos(client: TestClient, data_dir: Path, settings: Settings) -> None:
    blobs = [image_bytes()] * (settings.max_photos + 1)
    assert_error(client.post("/v1/avatars", files=files(*blobs)), 400, "too_many_photos")
    assert_nothing_stored(data_dir)


def test_pixel_count_over_limit_is_413_before_decoding(client: TestClient, data_dir: Path) -> None:
    blob = png_header_only(8000, 8000)  # 64 MP > 50 MP; the file itself is tiny
    assert len(blob) < 1000
    error = assert_error(client.post("/v1/avatars", files=files(blob)), 413, "image_too_large")
    assert error["details"]["max_pixels"] == 50_000_000
    assert_nothing_stored(data_dir)


def test_pillow_decompression_bomb_error_is_413(client: TestClient, data_dir: Path) -> None:
    blob = png_header_only(30000, 30000)  # beyond Pillow's own hard limit
    assert_error(client.post("/v1/avatars", files=files(blob)), 413, "image_too_large")
    assert_nothing_stored(data_dir)


def test_pillow_decompression_bomb_warning_is_413(data_dir: Path) -> None:
    # With a generous max_pixels, Pillow's warning (between its limit and twice it)
    # is what stops the image.
    settings = Settings(data_dir=data_dir, max_pixels=10**10)
    blob = png_header_only(10000, 10000)  # 100 MP: Pillow warns
    with TestClient(create_app(settings)) as client:
        assert_error(client.post("/v1/avatars", files=files(blob)), 413, "image_too_large")
    assert_nothing_stored(data_dir)


def test_upload_over_limit_is_413(client: TestClient, data_dir: Path) -> None:
    big = image_bytes() + b"\x00" * (3 * 1024 * 1024)  # limit is 2 MiB in these tests
    assert_error(client.post("/v1/avatars", files=files(big)), 413, "upload_too_large")
    assert_nothing_stored(data_dir)


def test_chunked_upload_over_limit_is_cut_off_while_streaming(
    client: TestClient, data_dir: Path
) -> None:
    """No Content-Length: the limit applies to the bytes as they arrive."""
    boundary = "testboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; '
        f'filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    ).encode()
    sent = []

    def body():
        yield head + image_bytes()
        for _ in range(64):  # up to 4 MiB of 64 KiB chunks
            sent.append(1)
            yield b"\x00" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post(
        "/v1/avatars",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_error(response, 413, "upload_too_large")
    assert_nothing_stored(data_dir)


def test_job_store_down_gives_503_and_stores_nothing(data_dir: Path) -> None:
    from conftest import free_port

    settings = Settings(
        data_dir=data_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0", allow_anonymous=True
    )
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/avatars", files=files(image_bytes()))
        assert_error(response, 503, "job_store_unavailable")
        ready = assert_error(client.get("/readyz"), 503, "not_ready")
        assert ready["details"]["mode"] == "redis"
        assert not ready["details"]["checks"]["broker"]["ok"]
    assert list((data_dir / "avatars").iterdir()) == []


# ------------------------------------------------------------------ streaming
@pytest.fixture
def stored_avatar(client: TestClient) -> str:
    response = client.post("/v1/avatars", files=files(image_bytes()))
    assert response.status_code == 202
    return response.json()["avatar_id"]


@pytest.mark.parametrize(
    "query",
    [
        "size=32",
        "size=4096",
        "fps=0",
        "fps=61",
        "frames=0",
        "frames=abc",
        "loop=maybe",
        "frames=5&loop=true",
        "frames=1000000",
    ],
)
def test_stream_parameter_validation(client: TestClient, stored_avatar: str, query: str) -> None:
    response = client.get(f"/v1/avatars/{stored_avatar}/stream?{query}")
    assert_error(response, 422, "invalid_request")


def test_stream_unknown_motion_is_400(client: TestClient, stored_avatar: str) -> None:
    """Depends on models.animation.motions."""
    response = client.get(f"/v1/avatars/{stored_avatar}/stream?motion=moonwalk-xyz")
    error = assert_error(response, 400, "unknown_motion")
    assert "turntable" in error["details"]["motions"]


def test_stream_of_unbuilt_avatar_is_409(client: TestClient, stored_avatar: str) -> None:
    """Depends on models.animation.motions (the motion is checked first)."""
    response = client.get(f"/v1/avatars/{stored_avatar}/stream?motion=turntable&frames=3")
    assert_error(response, 409, "avatar_not_ready")


def test_mjpeg_part_format() -> None:
    part = mjpeg_part(b"JPEGDATA")
    assert part == (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: 8\r\n\r\n".encode()
        + b"JPEGDATA\r\n"
    )


def test_mjpeg_stream_yields_frames_then_closing_boundary() -> None:
    async def collect() -> list[bytes]:
        return [chunk async for chunk in mjpeg_stream(iter([b"a", b"bb"]), fps=60, pace=False)]

    chunks = asyncio.run(collect())
    assert chunks == [mjpeg_part(b"a"), mjpeg_part(b"bb"), f"--{BOUNDARY}--\r\n".encode()]


def test_mjpeg_stream_paces_frames() -> None:
    import time

    async def run() -> float:
        start = time.monotonic()
        async for _ in mjpeg_stream(iter([b"x"] * 6), fps=20, pace=True):
            pass
        return time.monotonic() - start

    assert 0.2 <= asyncio.run(run()) < 2.0  # 6 frames at 20 fps: >= 5 intervals


def test_mjpeg_stream_stops_rendering_when_client_leaves() -> None:
    """Closing the stream (what a disconnect does) closes the frame generator."""
    produced = []
    closed = []

    def frames():
        try:
            for i in range(10**9):  # "loop forever"
                produced.append(i)
                yield b"f"
        finally:
            closed.append(True)

    async def run() -> None:
        stream = mjpeg_stream(frames(), fps=30, pace=False)
        for _ in range(3):
            await stream.__anext__()
        await stream.aclose()

    asyncio.run(run())
    assert closed == [True]
    assert len(produced) == 3


def test_player_cache_is_lru_keyed_by_mtime(tmp_path: Path) -> None:
    import os

    loads = []

    def loader(path: Path) -> tuple[str, int]:
        loads.append(path.name)
        return (path.name, len(loads))

    cache = PlayerCache(capacity=2, loader=loader)
    paths = {}
    for name in "abc":
        paths[name] = tmp_path / f"{name}.glb"
        paths[name].write_bytes(b"glb")
    a1 = cache.get("a", paths["a"])
    assert cache.get("a", paths["a"]) is a1  # hit
    cache.get("b", paths["b"])
    cache.get("a", paths["a"])  # a is most recent now
    cache.get("c", paths["c"])  # evicts b
    assert len(cache) == 2
    cache.get("b", paths["b"])  # reloaded
    assert loads == ["a.glb", "b.glb", "c.glb", "b.glb"]
    # a rebuilt avatar (new mtime) is loaded again and replaces the old entry
    stat = paths["c"].stat()
    os.utime(paths["c"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    c2 = cache.get("c", paths["c"])
    assert c2[1] == 5 and len(cache) == 2


def test_gateway_never_imports_torch_or_task_code(tmp_path: Path) -> None:
    """Design decision 2: the gateway, including the render path, starts light."""
    import subprocess
    import sys

    code = f"""
import sys
from fastapi.testclient import TestClient
from service.app import create_app
from workers.settings import Settings
client = TestClient(create_app(Settings(data_dir={str(tmp_path)!r})))
assert client.get("/v1/motions").status_code == 200
import models.render.player
heavy = [m for m in ("torch", "workers.tasks", "models.pipeline") if m in sys.modules]
print("HEAVY", heavy)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
