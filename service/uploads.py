"""Upload validation: size while the body streams in, then content, before storing.

Order matters, cheapest and safest first:

1. the request body is counted while it is received (``LimitedBodyRoute``) and
   refused with 413 ``upload_too_large`` once it passes ``max_upload_mb``: no
   unbounded read, and the multipart parser spools large parts to disk; the request
   is authenticated before its body is read. A body whose ``Content-Length`` is at
   most ``PREREAD_MAX_BYTES`` is read whole first and parsed in one piece (see
   ``read_whole_body``: far less CPU than feeding the parser ~50 chunks of 64 KiB);
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
from python_multipart.multipart import parse_options_header
from starlette.formparsers import MultiPartParser
from starlette.types import Message, Receive

from service.api.errors import ApiError
from service.imagemeta import MalformedImageError, exif_orientation, strip_metadata, upright
from workers.storage import NewPhoto

#: Uploaded parts stay in memory up to this size (Starlette's default, 1 MiB, sends a
#: 3 MB photo to a temporary file in ~30 thread hops). Memory per upload is bounded by
#: ``max_upload_mb`` anyway; larger parts still spill to disk.
MultiPartParser.spool_max_size = 8 * 1024 * 1024

#: Request bodies up to this size (declared by ``Content-Length``) are read whole before
#: the form is parsed; larger ones, and bodies without a length, stream through the
#: parser as they arrive. Same bound as the in-memory spool: a body this size is held
#: in memory by the parser anyway.
PREREAD_MAX_BYTES = MultiPartParser.spool_max_size

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


def _read_all(fileobj: BinaryIO, max_bytes: int | None) -> bytes:
    """All bytes of an uploaded file (at most ``max_bytes + 1`` of them).

    A part the multipart parser kept in memory is a ``SpooledTemporaryFile`` over a
    ``BytesIO``, whose ``getvalue()`` hands over its buffer without copying it (where
    ``read()`` copies the 3 MB); anything else is read.
    """
    inner = getattr(fileobj, "_file", fileobj)  # SpooledTemporaryFile's in-memory file
    if isinstance(inner, io.BytesIO):
        data = inner.getvalue()
        return data if max_bytes is None else data[: max_bytes + 1]
    fileobj.seek(0)
    return fileobj.read() if max_bytes is None else fileobj.read(max_bytes + 1)


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
    data = _read_all(fileobj, max_bytes)
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


def split_for_parser(chunks: list[bytes], boundary: bytes | None) -> list[bytes]:
    """The body as pieces for the multipart parser: the chunks joined once, and for a
    body whose last part is a file, cut where that part's data starts and ends.

    Any cut is correct (the parser is a streaming parser); these cuts save a copy: the
    parser hands a part's data on as ``piece[start:end]``, which for a piece that is
    exactly the data is the piece itself, not a copy of 3 MB. Only the first and the
    last chunk are searched (for the first part's header end and the closing
    delimiter); where either is not found there, the body is one piece.
    """
    if len(chunks) < 2 or not boundary:
        return [b"".join(chunks)] if len(chunks) != 1 else chunks
    first, last = chunks[0], chunks[-1]
    opening = first.find(b"--" + boundary)
    head_end = first.find(b"\r\n\r\n", opening) if opening >= 0 else -1
    closing = last.rfind(b"\r\n--" + boundary)
    if head_end < 0 or closing < 0:
        return [b"".join(chunks)]
    head_end += 4
    data = b"".join([first[head_end:], *chunks[1:-1], last[:closing]])
    return [first[:head_end], data, last[closing:]]


async def read_whole_body(receive: Receive, boundary: bytes | None = None) -> Receive:
    """Receive the whole request body now; -> a ``receive`` that replays it in a few
    large messages (see ``split_for_parser``; ``boundary``: the multipart boundary).

    The multipart parser then runs once over the body instead of once per chunk the
    server hands over (~64 KiB each), and each part is written once into its spool
    instead of in ~50 appends to a growing buffer (with 20 uploads at once, every
    growth of a multi-megabyte buffer is a fresh allocation and a copy: ~6 ms of CPU
    per 3 MB upload, more than all the rest of parsing). A disconnect before the end
    is handed on as it came. After the body, calls go to the server's ``receive``
    (where a disconnect shows up).
    """
    chunks: list[bytes] = []
    ending: Message | None = None
    while True:
        message = await receive()
        if message["type"] != "http.request":
            ending = message  # http.disconnect
            break
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    pending: list[Message] = []  # popped from the end
    if ending is None:
        pieces = split_for_parser(chunks, boundary) or [b""]
        for i, piece in enumerate(reversed(pieces)):
            pending.append({"type": "http.request", "body": piece, "more_body": i > 0})
    else:
        pending.append(ending)
    del chunks

    async def replay() -> Message:
        if pending:
            return pending.pop()  # the body is no longer held here once handed over
        return await receive()

    return replay


def multipart_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, else None."""
    if not content_type:
        return None
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    boundary = params.get(b"boundary")
    return boundary if isinstance(boundary, bytes) and boundary else None


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
            receive = limited_receive(request.receive, limit)
            if declared is not None and declared_bytes <= PREREAD_MAX_BYTES:
                boundary = multipart_boundary(request.headers.get("content-type"))
                receive = await read_whole_body(receive, boundary)
            return await handler(Request(request.scope, receive))

        return limited_handler
