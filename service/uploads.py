"""Upload validation: size while the body streams in, then content, before storing.

Order matters, cheapest and safest first:

1. the request body is counted while it is received (``LimitedBodyRoute``) and
   refused with 413 ``upload_too_large`` once it passes ``max_upload_mb``: no
   unbounded read, and the multipart parser spools large parts to disk; the request
   is authenticated before its body is read;
2. each photo's leading bytes must be a JPEG, PNG or WebP signature (the client's
   filename and content type are not trusted) -> otherwise 415 ``invalid_image``;
3. Pillow opens it restricted to that format and the pixel count from the header is
   checked against ``max_pixels`` before any decoding -> 413 ``image_too_large``;
4. the container is walked (``service.imagemeta``): JPEG segments to the end-of-image
   marker, PNG chunks with their CRCs to IEND, WebP's RIFF chunks; truncated or
   malformed files -> 400 ``invalid_image``. The walk also drops every metadata
   segment (EXIF, XMP, IPTC, comments, text chunks, trailers after the image), so
   the stored copy carries no metadata. A photo whose EXIF orientation is not
   upright is decoded, turned upright and re-encoded (the only case where the
   gateway decodes pixels).

Pixels are otherwise decoded by the workers (``models.ioutil.load_photo``): a photo
whose compressed data is corrupt beyond what the walk sees fails its job with
``invalid_photo``. Keeping full decodes off the request path keeps uploads fast (a
12-megapixel JPEG takes ~100-250 ms of CPU to decode).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Awaitable, Callable
from struct import error as struct_error
from typing import BinaryIO

from fastapi import Request, Response
from fastapi.routing import APIRoute
from PIL import Image, UnidentifiedImageError
from starlette.formparsers import MultiPartParser
from starlette.types import Message, Receive

from service.api.errors import ApiError
from service.imagemeta import MalformedImageError, exif_orientation, strip_metadata, upright
from workers.storage import NewPhoto

#: Uploaded parts stay in memory up to this size (Starlette's default, 1 MiB, sends a
#: 3 MB photo to a temporary file in ~30 thread hops). Memory per upload is bounded by
#: ``max_upload_mb`` anyway; larger parts still spill to disk.
MultiPartParser.spool_max_size = 8 * 1024 * 1024

#: Pillow format names by file signature.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
)


def sniff_format(head: bytes) -> str | None:
    """The image format from the first bytes (JPEG, PNG, WEBP), or None."""
    for signature, fmt in _SIGNATURES:
        if head.startswith(signature):
            return fmt
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def upload_too_large(limit_bytes: int) -> ApiError:
    return ApiError(
        413,
        "upload_too_large",
        f"The upload is larger than {limit_bytes / (1024 * 1024):g} MiB.",
        {"limit_bytes": limit_bytes},
    )


def validate_photo(
    fileobj: BinaryIO,
    *,
    max_pixels: int,
    index: int,
    filename: str | None = None,
    max_bytes: int | None = None,
) -> NewPhoto:
    """Check one uploaded photo; returns a metadata-free copy ready to store, or raises
    ``ApiError``. Blocking (reads the file, sometimes decodes): call it from a thread.
    """
    details = {"photo": index, "filename": filename}
    fileobj.seek(0)
    data = fileobj.read() if max_bytes is None else fileobj.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise upload_too_large(max_bytes)
    if not data:
        raise ApiError(400, "empty_upload", "A photo is empty.", details)
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise ApiError(415, "invalid_image", "A photo is not a JPEG, PNG or WebP image.", details)
    too_large = ApiError(
        413,
        "image_too_large",
        f"A photo has more than {max_pixels} pixels.",
        {**details, "max_pixels": max_pixels},
    )
    corrupt = ApiError(
        400, "invalid_image", "A photo could not be decoded (truncated or corrupt).", details
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[fmt]) as image:
                width, height = image.size
                if width < 1 or height < 1:
                    raise ApiError(400, "invalid_image", "A photo has no pixels.", details)
                if width * height > max_pixels:
                    raise too_large
        stripped = strip_metadata(data, fmt)
        orientation = exif_orientation(stripped.exif)
        if orientation != 1:
            stored, width, height = upright(data, fmt, orientation)
        else:
            stored = stripped.data
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_large from exc
    except (
        MalformedImageError, UnidentifiedImageError, OSError, ValueError, SyntaxError,
        EOFError, IndexError, KeyError, TypeError, struct_error, ZeroDivisionError,
    ) as exc:
        raise corrupt from exc
    return NewPhoto(
        fileobj=io.BytesIO(stored),
        fmt=fmt,
        width=width,
        height=height,
        original_filename=filename,
        sha256=hashlib.sha256(stored).hexdigest(),
    )


def limited_receive(receive: Receive, limit_bytes: int) -> Receive:
    """Wrap an ASGI ``receive`` so the body raises 413 as soon as it passes the limit."""
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit_bytes:
                raise upload_too_large(limit_bytes)
        return message

    return wrapped


class LimitedBodyRoute(APIRoute):
    """A route whose request body may not exceed ``settings.max_upload_bytes``.

    The check runs before FastAPI parses the form, both on ``Content-Length`` (so an
    honest oversize request is refused without reading it) and on the bytes
    actually received (so a lying or chunked one is cut off). The request is
    authenticated (and rate-limited) first.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def limited_handler(request: Request) -> Response:
            from service.api.deps import authenticate_request

            await authenticate_request(request)  # no body is read for unknown clients
            limit = request.app.state.services.settings.max_upload_bytes
            declared = request.headers.get("content-length")
            if declared is not None:
                try:
                    declared_bytes = int(declared)
                except ValueError:
                    raise ApiError(400, "bad_request", "Invalid Content-Length header.") from None
                if declared_bytes > limit:
                    raise upload_too_large(limit)
            limited = Request(request.scope, limited_receive(request.receive, limit))
            return await handler(limited)

        return limited_handler
