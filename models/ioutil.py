"""Atomic file writes and photo loading shared by the pipeline stages.

Every artefact is written to a temporary file in its final directory, flushed, fsynced and
renamed into place: a reader sees the old file or the new one, never half of one, and a
stage that dies midway leaves nothing that looks finished.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PROCESS_MAX_SIDE = 1024  # photos are processed at most this large; originals are kept


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path`: temp file in the same directory, fsync, rename, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes 0600; other processes (gateway, workers) read these
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def encode_png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def atomic_write_png(path: Path, img: np.ndarray) -> None:
    atomic_write_bytes(path, encode_png(img))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def load_photo(path: Path, max_side: int = PROCESS_MAX_SIDE) -> np.ndarray:
    """Decode a photo, apply its EXIF orientation, return uint8 RGB at most max_side large."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        scale = max_side / max(im.size)
        if scale < 1:
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        return np.asarray(im, dtype=np.uint8).copy()


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
