"""Bad input: the OpenAPI schema driven by Schemathesis (in-process, through the ASGI app),
a fuzz test of the upload decoder on mutated JPEG / PNG / WebP bytes, and upload hygiene
(EXIF applied then stripped, no metadata stored, no client path on disk).

Bounded: a fixed number of generated cases, each with a time limit.
"""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from PIL import Image
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.errors import ApiError
from service.app import create_app
from service.auth import make_key_store
from service.imagemeta import strip_metadata
from service.uploads import validate_photo
from workers.settings import Settings

pytestmark = pytest.mark.badinput

# ------------------------------------------------------------------ schemathesis
def _make_schema_app():
    """One app (embedded mode, keys required, a worker heartbeat so /readyz is ready:
    a 503 there would be the truth, not a crash) for every generated case. Made when
    this module is collected (Schemathesis needs the schema then); its data dir is
    removed by ``schema_app`` at the end of the module."""
    import tempfile

    from workers.celery_app import ensure_queue_folders
    from workers.heartbeat import HeartbeatWriter

    settings = Settings(
        data_dir=Path(tempfile.mkdtemp(prefix="avatars-schemathesis-")), allow_anonymous=False,
        max_upload_mb=1, rate_limit_per_s=1e6, rate_limit_burst=10**6, events_max_s=2,
        events_poll_s=0.05, worker_stale_s=3600,
    )
    ensure_queue_folders(settings)
    HeartbeatWriter(settings, ["fit", "inpaint"]).beat()
    store = make_key_store(settings)
    key = store.create("schemathesis")[1]
    store.close()
    app = create_app(settings)
    app.state.test_key = key
    return app


_APP = _make_schema_app()
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.fixture(scope="module")
def schema_app():
    import shutil

    yield _APP
    _APP.state.services.close()
    shutil.rmtree(_APP.state.services.settings.data_dir, ignore_errors=True)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@schema.parametrize()
@hypothesis_settings(
    max_examples=20,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case, schema_app) -> None:
    """No 5xx, and status codes, content types, headers and bodies as documented."""
    started = time.monotonic()
    case.call_and_validate(
        headers={"Authorization": f"Bearer {schema_app.state.test_key}"}, checks=CHECKS
    )
    assert time.monotonic() - started < 30


def test_schema_documents_auth_and_errors(schema_app) -> None:
    spec = schema_app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)
    job = spec["paths"]["/v1/jobs/{job_id}"]
    assert {"get", "delete"} <= set(job)
    assert {"401", "404", "429"} <= set(job["get"]["responses"])
    assert "/v1/jobs/{job_id}/events" in spec["paths"]
    assert "/metrics" in spec["paths"]
    upload = spec["paths"]["/v1/avatars"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in upload["parameters"])


# ------------------------------------------------------------ images to mutate
def _gradient(size=(48, 32)) -> Image.Image:
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    y = np.linspace(0, 255, size[1], dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(x[None, :], y[:, None], 128 * np.ones((1, 1), np.uint8)), -1)
    return Image.fromarray(rgb.astype(np.uint8))


def _exif(orientation: int = 1, gps: bool = True) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "SecretCam"  # Make
    exif[0x9286] = "my home address"  # UserComment
    if gps:
        exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    return exif.tobytes()


def sample_images() -> dict[str, bytes]:
    image = _gradient()
    out = {}
    for fmt, kwargs in (
        ("JPEG", {"quality": 90, "exif": _exif(), "comment": b"a comment"}),
        ("PNG", {"exif": _exif()}),
        ("WEBP", {"quality": 80, "exif": _exif()}),
    ):
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kwargs)
        out[fmt] = buf.getvalue()
    buf = io.BytesIO()
    image.save(buf, format="JPEG", progressive=True, quality=80)
    out["JPEG-progressive"] = buf.getvalue()
    buf = io.BytesIO()
    image.save(buf, format="WEBP", lossless=True)
    out["WEBP-lossless"] = buf.getvalue()
    return out


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random structural or byte-level damage."""
    blob = bytearray(data)
    kind = rng.randrange(9)
    if kind == 0:  # flip bits
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(blob))
            blob[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # overwrite a run with random bytes
        i = rng.randrange(len(blob))
        for j in range(i, min(len(blob), i + rng.randint(1, 32))):
            blob[j] = rng.randrange(256)
    elif kind == 2:  # truncate
        del blob[rng.randrange(1, len(blob)):]
    elif kind == 3:  # insert junk
        i = rng.randrange(len(blob))
        blob[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif kind == 4:  # delete a run
        i = rng.randrange(len(blob))
        del blob[i : i + rng.randint(1, 64)]
    elif kind == 5:  # huge length fields: 0xFF runs
        i = rng.randrange(max(1, len(blob) - 4))
        blob[i : i + 4] = b"\xff\xff\xff\x7f"
    elif kind == 6:  # duplicate a slice (repeated segments / chunks)
        i = rng.randrange(len(blob))
        blob[i:i] = blob[i : i + rng.randint(1, 256)]
    elif kind == 7:  # markers everywhere
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(len(blob) - 1)
            blob[i : i + 2] = bytes((0xFF, rng.choice([0xD8, 0xD9, 0xDA, 0xE1, 0xC0, 0x00, 0xFF])))
    else:  # zero a run
        i = rng.randrange(len(blob))
        blob[i : i + rng.randint(1, 128)] = bytes(min(128, len(blob) - i))
    return bytes(blob)


FUZZ_CASES_PER_IMAGE = 150
FUZZ_CASE_LIMIT_S = 2.0


def test_decoder_fuzz_never_crashes_or_hangs() -> None:
    """Seeded mutations of every sample: each is accepted (and then carries no metadata)
    or refused with a 4xx ApiError, within a time limit."""
    rng = random.Random(20241121)
    accepted = refused = 0
    slowest = 0.0
    for name, original in sample_images().items():
        for case in range(FUZZ_CASES_PER_IMAGE):
            blob = mutate(original, rng)
            started = time.monotonic()
            try:
                photo = validate_photo(io.BytesIO(blob), max_pixels=10**7, index=0, filename="x")
            except ApiError as exc:
                assert 400 <= exc.status_code < 500, (name, case, exc.status_code)
                refused += 1
            else:
                accepted += 1
                stored = photo.fileobj.getvalue()
                assert strip_metadata(stored, photo.fmt).data == stored, (name, case)
                assert strip_metadata(stored, photo.fmt).exif is None
                assert b"SecretCam" not in stored and b"my home address" not in stored
            elapsed = time.monotonic() - started
            slowest = max(slowest, elapsed)
            assert elapsed < FUZZ_CASE_LIMIT_S, (name, case, elapsed)
    assert accepted and refused
    print(f"fuzz: {accepted} accepted, {refused} refused, slowest {slowest * 1000:.0f} ms")


@pytest.fixture
def anon_client(data_dir: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=data_dir, allow_anonymous=True, rate_limit_per_s=1e6,
                        rate_limit_burst=10**6)
    with TestClient(create_app(settings)) as client:
        yield client


def test_mutated_uploads_over_http_are_never_5xx(anon_client: TestClient) -> None:
    rng = random.Random(7)
    samples = list(sample_images().values())
    statuses: dict[int, int] = {}
    for _ in range(60):
        blob = mutate(rng.choice(samples), rng)
        response = anon_client.post(
            "/v1/avatars", files=[("photos", ("../../etc/passwd", blob, "image/jpeg"))]
        )
        assert response.status_code < 500, response.text
        assert set(response.json()) == {"error"} or response.status_code == 202
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
    assert set(statuses) <= {202, 400, 413, 415}


# ---------------------------------------------------------------- hygiene
def _corner_marked(size=(60, 40)) -> Image.Image:
    """White image with a red top-left corner: shows where "up" went."""
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, 10, 10))
    return image


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_orientation_is_applied_then_every_tag_dropped(fmt: str) -> None:
    buf = io.BytesIO()
    save = {"exif": _exif(orientation=6)}
    if fmt == "WEBP":
        save["lossless"] = True
    _corner_marked().save(buf, format=fmt, **save)
    raw = buf.getvalue()
    assert b"SecretCam" in raw
    photo = validate_photo(io.BytesIO(raw), max_pixels=10**7, index=0)
    stored = photo.fileobj.getvalue()
    assert b"SecretCam" not in stored and b"Exif" not in stored
    assert (photo.width, photo.height) == (40, 60)  # orientation 6: turned 90 degrees
    pixels = _decode(stored)
    assert pixels.shape[:2] == (60, 40)
    # orientation 6 means "rotate 90 clockwise to view": the red corner goes top-right
    assert pixels[2, 37, 0] > 200 and pixels[2, 37, 1] < 80, pixels[2, 37]
    with Image.open(io.BytesIO(stored)) as image:
        assert not image.getexif()


def test_upright_jpeg_is_stripped_without_reencoding() -> None:
    buf = io.BytesIO()
    _gradient((64, 48)).save(buf, format="JPEG", quality=90, exif=_exif(1), comment=b"hello")
    raw = buf.getvalue() + b"PK\x03\x04 a zip appended after the image"
    photo = validate_photo(io.BytesIO(raw), max_pixels=10**7, index=0)
    stored = photo.fileobj.getvalue()
    assert len(stored) < len(raw)
    for secret in (b"Exif", b"SecretCam", b"hello", b"PK\x03\x04"):
        assert secret not in stored
    assert stored.endswith(b"\xff\xd9")
    assert np.array_equal(_decode(stored), _decode(buf.getvalue()))  # same pixels exactly


def test_png_text_chunks_and_apng_frames_are_dropped() -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF
        )

    buf = io.BytesIO()
    _gradient().save(buf, format="PNG")
    png = buf.getvalue()
    iend = png.rindex(b"IEND") - 4
    extra = chunk(b"tEXt", b"Author\x00Someone") + chunk(b"tIME", b"\x07\xe8\x01\x01\x00\x00\x00")
    raw = png[:33] + extra + png[33:iend] + chunk(b"eXIf", _exif(1)[6:]) + png[iend:]
    photo = validate_photo(io.BytesIO(raw), max_pixels=10**7, index=0)
    stored = photo.fileobj.getvalue()
    for secret in (b"tEXt", b"Someone", b"tIME", b"eXIf", b"SecretCam"):
        assert secret not in stored
    assert np.array_equal(_decode(stored), _decode(png))
    # a bad CRC is refused
    broken = bytearray(png)
    broken[40] ^= 0xFF
    with pytest.raises(ApiError) as refused:
        validate_photo(io.BytesIO(bytes(broken)), max_pixels=10**7, index=0)
    assert refused.value.status_code == 400


def test_webp_exif_chunk_and_flag_are_dropped() -> None:
    buf = io.BytesIO()
    _gradient().save(buf, format="WEBP", quality=90, exif=_exif(1))
    raw = buf.getvalue()
    assert b"EXIF" in raw
    stored = validate_photo(io.BytesIO(raw), max_pixels=10**7, index=0).fileobj.getvalue()
    assert b"EXIF" not in stored and b"SecretCam" not in stored
    assert struct.unpack("<I", stored[4:8])[0] == len(stored) - 8
    if stored[12:16] == b"VP8X":
        assert stored[20] & 0x0C == 0
    assert _decode(stored).shape == (32, 48, 3)


def test_stored_names_are_the_servers(anon_client: TestClient, data_dir: Path) -> None:
    buf = io.BytesIO()
    _gradient().save(buf, format="PNG")
    names = ["../../../../tmp/evil.png", "/etc/passwd", "C:\\Windows\\x.png", "a\x00b.png",
             "x" * 5000]
    response = anon_client.post(
        "/v1/avatars", files=[("photos", (n, buf.getvalue(), "image/png")) for n in names[:3]]
    )
    assert response.status_code == 202, response.text
    avatar_id = response.json()["avatar_id"]
    files = sorted(p.name for p in (data_dir / "avatars" / avatar_id / "originals").iterdir())
    assert files == ["photo_0.png", "photo_1.png", "photo_2.png"]
    assert not Path("/tmp/evil.png").exists()
    for name in names[3:]:
        response = anon_client.post(
            "/v1/avatars", files=[("photos", (name, buf.getvalue(), "image/png"))]
        )
        assert response.status_code in (202, 400), response.text


# ------------------------------------------------------------ fast paths, same answers
def test_entropy_marker_search_matches_the_regular_expression(monkeypatch) -> None:
    """The numpy search for the marker ending a JPEG scan (used for scans of 64 KiB
    and more: a photo's) finds exactly what the regular expression finds, across block
    boundaries, fill bytes, stuffed bytes and restart markers."""
    from service import imagemeta

    rng = np.random.default_rng(5)
    alphabet = np.array([0xFF, 0x00, 0xD0, 0xD7, 0xD8, 0xD9, 0x01, 0xCF, 0xFE, 0x42], np.uint8)
    monkeypatch.setattr(imagemeta, "_SCAN_NUMPY_MIN", 0)
    for case in range(300):
        n = int(rng.integers(0, 5000))
        data = np.where(rng.random(n) < 0.7, rng.choice(alphabet, n),
                        rng.integers(0, 256, n)).astype(np.uint8).tobytes()
        monkeypatch.setattr(imagemeta, "_SCAN_BLOCK", int(rng.choice([1, 2, 3, 64, 1 << 20])))
        pos = int(rng.integers(0, n + 1))
        match = imagemeta._ENTROPY_MARKER.search(data, pos)
        expected = -1 if match is None else match.start()
        assert imagemeta._next_entropy_marker(data, pos) == expected, case


def test_body_pieces_parse_like_the_chunks_they_came_in() -> None:
    """``split_for_parser`` (whole bodies, cut around a file part's data) gives the
    multipart parser what the original chunks give it, for any chunking."""
    import asyncio
    import os

    from starlette.datastructures import Headers
    from starlette.formparsers import MultiPartParser

    from service.uploads import split_for_parser

    async def parse(pieces: list[bytes], content_type: str) -> list:
        async def stream():
            for piece in pieces:
                yield piece
            yield b""

        form = await MultiPartParser(Headers({"content-type": content_type}), stream()).parse()
        items = []
        for name, value in form.multi_items():
            if hasattr(value, "file"):
                value.file.seek(0)
                items.append((name, value.filename, value.file.read()))
            else:
                items.append((name, value))
        return items

    rng = random.Random(11)
    for case in range(60):
        boundary = "b" + os.urandom(6).hex()
        parts = []
        for k in range(rng.randint(1, 3)):
            if rng.random() < 0.3:
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="strict"'
                             f"\r\n\r\ntrue\r\n".encode())
            else:
                data = os.urandom(rng.randint(0, 200_000)) + rng.choice([b"", b"\r", b"\r\n-"])
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; '
                             f'filename="p{k}.jpg"\r\n\r\n'.encode() + data + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        chunks, i = [], 0
        while i < len(body):
            step = rng.choice([1, 100, 65536, 10**7])
            chunks.append(body[i : i + step])
            i += step
        pieces = split_for_parser(chunks, boundary.encode())
        assert b"".join(pieces) == body
        content_type = f"multipart/form-data; boundary={boundary}"
        assert asyncio.run(parse(pieces, content_type)) == asyncio.run(parse(chunks, content_type))


def test_upload_in_many_chunks_with_a_length_is_stored_whole(
    anon_client: TestClient, data_dir: Path
) -> None:
    """A body with a Content-Length arriving in many messages is read whole first
    (``read_whole_body``) and stored byte for byte."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)).save(
        buf, format="JPEG", quality=95)
    photo = buf.getvalue()
    boundary = "chunkedboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="photos"; '
            f'filename="p.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode() + photo + (
        f"\r\n--{boundary}--\r\n".encode())

    def pieces():
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    response = anon_client.post(
        "/v1/avatars", content=pieces(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}",
                 "content-length": str(len(body))},
    )
    assert response.status_code == 202, response.text
    stored = data_dir / "avatars" / response.json()["avatar_id"] / "originals" / "photo_0.jpg"
    assert stored.read_bytes() == strip_metadata(photo, "JPEG").data
