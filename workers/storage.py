"""Local-directory storage of avatars.

Layout: ``{data_dir}/avatars/{avatar_id}/`` holds ``originals/photo_{i}.{ext}``
(the uploaded photos, upright and without metadata), ``avatar.json`` (id, tenant,
created_at, photos, job_id) and whatever the pipeline writes
(``fit/``, ``texture/``, ``avatar.glb``, ``quality.json``).

Why it is built this way:
- Ids are server-generated (uuid4 hex) and every id that reaches this module is
  checked against ``ID_RE`` before it becomes part of a path, so a URL segment
  such as ``..`` or ``%2e%2e`` can never address anything outside the store.
- Every file is written atomically (temp file in the same directory, fsync,
  ``os.replace``): a reader sees the old file or the new one, never half of one.
- A new avatar is assembled under a hidden temporary directory and renamed into
  place only once all its originals and its metadata are written and durable, so a
  failed or rejected upload (or a crash) leaves nothing under a valid id, and what
  ``create`` returned survives a crash. The files inside that directory need no
  temporary names of their own: all are written first, then fsynced together, then
  the two directories (``originals/``, the avatar's), then the rename and the store's
  directory: one fsync per file plus three, the least that makes the rename durable
  with everything it points to (on a journalling filesystem the later fsyncs find
  their changes already committed by the first and cost little).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from models.ioutil import atomic_write_bytes, fsync_dir

log = logging.getLogger(__name__)

#: Avatar and job ids: 32 lowercase hex characters (uuid4().hex).
ID_RE = re.compile(r"\A[0-9a-f]{32}\Z")

#: Prefix of directories being assembled; never matches ``ID_RE``.
INCOMING_PREFIX = ".incoming-"

#: File extension stored for each accepted image format.
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}

_COPY_CHUNK = 1024 * 1024


class InvalidIdError(ValueError):
    """An id that is not a server-generated id; it never becomes a path."""


def new_id() -> str:
    """A fresh server-generated id (avatar or job)."""
    return uuid.uuid4().hex


def is_valid_id(value: object) -> bool:
    """True when ``value`` has the exact shape of an id this server generates."""
    return isinstance(value, str) and ID_RE.match(value) is not None


def utc_now() -> str:
    """Current time as an ISO 8601 UTC string (the format of every stored timestamp)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def atomic_write_stream(path: Path, source: BinaryIO) -> tuple[int, str]:
    """Copy ``source`` to ``path`` atomically; returns (bytes written, sha256 hex)."""
    path = Path(path)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(_COPY_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        _unlink_quietly(Path(tmp_name))
        raise
    fsync_dir(path.parent)
    return size, digest.hexdigest()


def _copy_hashed(source: BinaryIO, fd: int) -> tuple[int, str]:
    """Copy ``source`` to the open file ``fd``; returns (bytes written, sha256 hex)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(_COPY_CHUNK):
        _write_all(fd, chunk)
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


#: Files the gateway may store beside the photos (see ``Storage.create``).
EXTRA_NAME = re.compile(r"(keypoints_\d+\.json|mask_\d+\.png|options\.json)")


def _create_file(path: Path) -> int:
    """A new file (``O_EXCL``: never an existing one), open for writing; -> its descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    """Write all of ``data`` to ``fd`` (no copy; ``os.write`` may write less than asked)."""
    view = memoryview(data).cast("B")
    written = 0
    while written < view.nbytes:
        written += os.write(fd, view[written:])
    return written


def _bytes_of(source: io.BytesIO) -> bytes:
    """The bytes a ``BytesIO`` holds. ``getvalue()`` returns the very ``bytes`` object a
    ``BytesIO(data)`` was made from (no copy), unlike ``getbuffer()``, which copies it."""
    return source.getvalue()


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode("utf-8") + b"\n")


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def display_name(filename: str | None, limit: int = 200) -> str | None:
    """The client's file name reduced to display metadata: no directories, no control chars."""
    if not filename:
        return None
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:limit] or None


@dataclass(frozen=True)
class NewPhoto:
    """One validated photo, ready to be stored.

    ``fileobj`` is positioned anywhere; it is rewound before copying. ``fmt`` is the
    format Pillow decoded ("JPEG", "PNG" or "WEBP"), not what the client claimed.
    ``sha256``, when given, is the digest of the bytes ``fileobj`` holds (a
    ``BytesIO``): they are then written in one piece without hashing them again.
    """

    fileobj: BinaryIO
    fmt: str
    width: int
    height: int
    original_filename: str | None = None
    sha256: str | None = None


class AvatarStorage:
    """Avatars on the local filesystem under ``root`` (normally ``data_dir/avatars``)."""

    META_NAME = "avatar.json"
    GLB_NAME = "avatar.glb"
    QUALITY_NAME = "quality.json"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- paths ---------------------------------------------------------------
    def avatar_dir(self, avatar_id: str) -> Path:
        """Directory of an avatar; raises ``InvalidIdError`` for anything but a valid id."""
        if not is_valid_id(avatar_id):
            raise InvalidIdError("invalid avatar id")
        return self.root / avatar_id

    def glb_path(self, avatar_id: str) -> Path:
        return self.avatar_dir(avatar_id) / self.GLB_NAME

    def exists(self, avatar_id: str) -> bool:
        """True for a completely stored avatar (its metadata file exists)."""
        if not is_valid_id(avatar_id):
            return False
        return (self.root / avatar_id / self.META_NAME).is_file()

    # -- reading -------------------------------------------------------------
    def read_meta(self, avatar_id: str) -> dict[str, Any] | None:
        """``avatar.json`` of an avatar, or None when there is no such avatar."""
        if not is_valid_id(avatar_id):
            return None
        try:
            return json.loads((self.root / avatar_id / self.META_NAME).read_text("utf-8"))
        except FileNotFoundError:
            return None

    def read_quality(self, avatar_id: str) -> dict[str, Any] | None:
        """The pipeline's ``quality.json`` when present and readable, else None."""
        path = self.avatar_dir(avatar_id) / self.QUALITY_NAME
        try:
            return json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            log.warning("unreadable quality report %s", path, exc_info=True)
            return None

    def glb_if_ready(self, avatar_id: str) -> Path | None:
        path = self.glb_path(avatar_id)
        return path if path.is_file() else None

    # -- writing -------------------------------------------------------------
    def create(
        self,
        photos: Sequence[NewPhoto],
        *,
        job_id: str,
        avatar_id: str | None = None,
        tenant: str = "anonymous",
        extras: dict[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """Store a new avatar's originals and metadata; returns the metadata.

        ``extras``: more files for ``originals/`` beside the photos, by name: uploaded fit
        inputs (``keypoints_<i>.json``, ``mask_<i>.png``) and ``options.json``.

        All files are written under a hidden temporary directory which is renamed
        to its final name last: on any error the temporary directory is removed and
        nothing is left under the avatar id.
        """
        if not photos:
            raise ValueError("an avatar needs at least one photo")
        avatar_id = avatar_id or new_id()
        final_dir = self.avatar_dir(avatar_id)
        if not is_valid_id(job_id):
            raise InvalidIdError("invalid job id")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f"{INCOMING_PREFIX}{avatar_id}-", dir=self.root))
        fds: list[int] = []  # written files, fsynced together once all are written
        try:
            originals = tmp_dir / "originals"
            originals.mkdir()
            entries = []
            for index, photo in enumerate(photos):
                ext = EXTENSIONS[photo.fmt]
                name = f"photo_{index}.{ext}"
                fd = _create_file(originals / name)
                fds.append(fd)
                if photo.sha256 is not None and isinstance(photo.fileobj, io.BytesIO):
                    size = _write_all(fd, _bytes_of(photo.fileobj))
                    sha256 = photo.sha256
                else:
                    photo.fileobj.seek(0)
                    size, sha256 = _copy_hashed(photo.fileobj, fd)
                entries.append(
                    {
                        "index": index,
                        "file": f"originals/{name}",
                        "format": photo.fmt.lower(),
                        "width": photo.width,
                        "height": photo.height,
                        "bytes": size,
                        "sha256": sha256,
                        "original_filename": display_name(photo.original_filename),
                    }
                )
            for name, data in sorted((extras or {}).items()):
                if not EXTRA_NAME.fullmatch(name):
                    raise ValueError(f"not an originals file name: {name!r}")
                fd = _create_file(originals / name)
                fds.append(fd)
                _write_all(fd, data)
            meta = {
                "id": avatar_id,
                "tenant": tenant,
                "created_at": utc_now(),
                "job_id": job_id,
                "photos": entries,
            }
            # Inside the directory being assembled no file needs a temporary name of
            # its own: the directory is renamed into place whole, after everything in
            # it is durable (files, then the two directories' entries).
            fd = _create_file(tmp_dir / self.META_NAME)
            fds.append(fd)
            _write_all(fd, json.dumps(meta, indent=2, sort_keys=True).encode("utf-8") + b"\n")
            while fds:
                fd = fds.pop()
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_dir(originals)
            fsync_dir(tmp_dir)
            # rename(2) onto an existing non-empty directory fails, which is what we
            # want: a fresh uuid never collides, and if it did we must not merge.
            os.rename(tmp_dir, final_dir)
        except BaseException:
            for fd in fds:
                os.close(fd)
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        fsync_dir(self.root)  # the rename is durable before the caller answers
        return meta

    def delete(self, avatar_id: str) -> None:
        """Remove an avatar: renamed away first so it disappears in one step."""
        path = self.avatar_dir(avatar_id)
        if not path.exists():
            return
        doomed = self.root / f"{INCOMING_PREFIX}deleted-{avatar_id}-{new_id()[:8]}"
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def sweep_incomplete(self, older_than_s: float = 3600.0) -> int:
        """Remove temporary directories left by uploads interrupted by a crash."""
        if not self.root.is_dir():
            return 0
        removed = 0
        cutoff = time.time() - older_than_s
        for entry in self.root.iterdir():
            if entry.name.startswith(INCOMING_PREFIX) and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    def check_writable(self) -> None:
        """Raise ``OSError`` unless a file can be created, synced and removed in the store."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".probe-", dir=self.root)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            _unlink_quietly(Path(name))

    def list_ids(self) -> list[str]:
        """Ids of all completely stored avatars."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if is_valid_id(p.name) and self.exists(p.name)
        )
