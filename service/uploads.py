"""Upload validation: size while the body streams in, then content, before storing.

Order matters, cheapest and safest first:

1. the request body is counted while it is received (``LimitedBodyRoute``) and
   refused with 413 ``upload_too_large`` once it passes ``max_upload_mb``: no
   unbounded read, and the multipart parser spools large parts to disk;
2. each photo's leading bytes must be a JPEG, PNG or WebP signature (the client's
   filename and content type are not trusted) -> otherwise 415 ``invalid_image``;
3. Pillow opens it restricted to that format and the pixel count from the header is
   checked against ``max_pixels`` before any decoding -> 413 ``image_too_large``;
4. ``load()`` decodes it fully, which catches truncated and corrupt files -> 400.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import BinaryIO

from fastapi import Request, Response
from fastapi.routing import APIRoute
from PIL import Image, UnidentifiedImageError
from starlette.types import Message, Receive

from service.api.errors import ApiError
from workers.storage import NewPhoto

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
    fileobj: BinaryIO, *, max_pixels: int, index: int, filename: str | None = None
) -> NewPhoto:
    """Check one uploaded photo; returns it ready to store or raises ``ApiError``.

    Blocking (decodes the image): call it from a worker thread.
    """
    details = {"photo": index, "filename": filename}
    fileobj.seek(0)
    head = fileobj.read(16)
    if not head:
        raise ApiError(400, "empty_upload", "A photo is empty.", details)
    fmt = sniff_format(head)
    if fmt is None:
        raise ApiError(415, "invalid_image", "A photo is not a JPEG, PNG or WebP image.", details)
    fileobj.seek(0)
    too_large = ApiError(
        413,
        "image_too_large",
        f"A photo has more than {max_pixels} pixels.",
        {**details, "max_pixels": max_pixels},
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fileobj, formats=[fmt]) as image:
                width, height = image.size
                if width < 1 or height < 1:
                    raise ApiError(400, "invalid_image", "A photo has no pixels.", details)
                if width * height > max_pixels:
                    raise too_large
                image.load()
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise too_large from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ApiError(
            400,
            "invalid_image",
            "A photo could not be decoded (truncated or corrupt).",
            details,
        ) from exc
    return NewPhoto(
        fileobj=fileobj, fmt=fmt, width=width, height=height, original_filename=filename
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
    actually received (so a lying or chunked one is cut off).
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def limited_handler(request: Request) -> Response:
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
