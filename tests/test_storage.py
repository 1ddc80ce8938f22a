"""Avatar storage: atomic writes, id validation, nothing left by a failed upload."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest

from workers.storage import (
    INCOMING_PREFIX,
    AvatarStorage,
    InvalidIdError,
    NewPhoto,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_stream,
    display_name,
    is_valid_id,
    new_id,
)


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def photo(data: bytes = b"\xff\xd8\xff fake jpeg", fmt: str = "JPEG", name: str = "me.jpg"):
    return NewPhoto(io.BytesIO(data), fmt, 10, 20, name)


class FailingReader(io.BytesIO):
    """A file object that breaks after its first chunk, like a dropped upload."""

    def read(self, size: int = -1) -> bytes:
        if self.tell() > 0:
            raise OSError("connection lost")
        return super().read(4)


# ------------------------------------------------------------------ atomic writes
def test_atomic_write_bytes_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert all_files(tmp_path) == ["a.json"]


def test_atomic_write_json_roundtrip(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": [1, 2], "b": 1}


def test_failed_stream_write_keeps_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "photo.jpg"
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="connection lost"):
        atomic_write_stream(target, FailingReader(b"0123456789"))
    assert target.read_bytes() == b"old"
    assert all_files(tmp_path) == ["photo.jpg"]


def test_atomic_write_stream_reports_size_and_digest(tmp_path: Path) -> None:
    import hashlib

    data = os.urandom(3 * 1024 * 1024 + 7)
    size, digest = atomic_write_stream(tmp_path / "x", io.BytesIO(data))
    assert size == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "x").read_bytes() == data


# ---------------------------------------------------------------------- ids
def test_new_ids_are_valid_and_unique() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(is_valid_id(i) for i in ids)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        "../../etc/passwd",
        "0" * 31,
        "0" * 33,
        "A" * 32,
        "g" * 32,
        "0" * 31 + "/",
        "0" * 32 + "\n",
        "%2e%2e" + "0" * 26,
        None,
        123,
    ],
)
def test_invalid_ids_never_become_paths(tmp_path: Path, bad: object) -> None:
    storage = AvatarStorage(tmp_path)
    assert not is_valid_id(bad)
    with pytest.raises(InvalidIdError):
        storage.avatar_dir(bad)  # type: ignore[arg-type]
    assert storage.read_meta(bad) is None  # type: ignore[arg-type]
    assert not storage.exists(bad)  # type: ignore[arg-type]


def test_display_name_drops_directories_and_control_chars() -> None:
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("C:\\Users\\me\\photo.jpg") == "photo.jpg"
    assert display_name("a\x00b\nc.png") == "abc.png"
    assert display_name("") is None
    assert display_name(None) is None
    assert len(display_name("x" * 1000) or "") == 200


# -------------------------------------------------------------- avatar storage
def test_create_writes_layout_and_metadata(tmp_path: Path) -> None:
    storage = AvatarStorage(tmp_path / "avatars")
    job_id = new_id()
    meta = storage.create(
        [photo(name="../secret/me.jpg"), photo(b"\x89PNG\r\n\x1a\n...", "PNG", "b.png")],
        job_id=job_id,
    )
    avatar_id = meta["id"]
    assert is_valid_id(avatar_id)
    assert all_files(storage.root) == [
        avatar_id,
        f"{avatar_id}/avatar.json",
        f"{avatar_id}/originals",
        f"{avatar_id}/originals/photo_0.jpg",
        f"{avatar_id}/originals/photo_1.png",
    ]
    stored = storage.read_meta(avatar_id)
    assert stored == meta
    assert stored["job_id"] == job_id
    assert stored["photos"][0]["original_filename"] == "me.jpg"
    assert stored["photos"][0]["file"] == "originals/photo_0.jpg"
    assert stored["photos"][1]["format"] == "png"
    assert storage.exists(avatar_id)
    assert storage.list_ids() == [avatar_id]
    assert storage.glb_if_ready(avatar_id) is None
    assert storage.read_quality(avatar_id) is None


def test_failed_upload_leaves_nothing(tmp_path: Path) -> None:
    storage = AvatarStorage(tmp_path / "avatars")
    avatar_id = new_id()
    broken = NewPhoto(FailingReader(b"0123456789"), "JPEG", 1, 1, "x.jpg")
    with pytest.raises(OSError):
        storage.create([photo(), broken], job_id=new_id(), avatar_id=avatar_id)
    assert not storage.exists(avatar_id)
    assert all_files(storage.root) == []


def test_create_refuses_bad_ids_and_empty_list(tmp_path: Path) -> None:
    storage = AvatarStorage(tmp_path / "avatars")
    with pytest.raises(ValueError):
        storage.create([], job_id=new_id())
    with pytest.raises(InvalidIdError):
        storage.create([photo()], job_id="not-an-id")
    with pytest.raises(InvalidIdError):
        storage.create([photo()], job_id=new_id(), avatar_id="../escape")
    assert not storage.root.exists() or all_files(storage.root) == []


def test_create_never_merges_into_an_existing_avatar(tmp_path: Path) -> None:
    storage = AvatarStorage(tmp_path / "avatars")
    meta = storage.create([photo()], job_id=new_id())
    with pytest.raises(OSError):
        storage.create([photo(), photo()], job_id=new_id(), avatar_id=meta["id"])
    assert storage.read_meta(meta["id"]) == meta
    assert [p.name for p in storage.root.iterdir()] == [meta["id"]]


def test_quality_report_is_read_when_present(tmp_path: Path) -> None:
    storage = AvatarStorage(tmp_path / "avatars")
    avatar_id = storage.create([photo()], job_id=new_id())["id"]
    atomic_write_json(storage.avatar_dir(avatar_id) / "quality.json", {"psnr": 21.5})
    assert storage.read_quality(avatar_id) == {"psnr": 21.5}
    (storage.avatar_dir(avatar_id) / "quality.json").write_text("{not json")
    assert storage.read_quality(avatar_id) is None


def test_delete_and_sweep(tmp_path: Path) -> None:
    storage = AvatarStorage(tmp_path / "avatars")
    avatar_id = storage.create([photo()], job_id=new_id())["id"]
    storage.delete(avatar_id)
    assert not storage.exists(avatar_id)
    assert all_files(storage.root) == []

    stale = storage.root / f"{INCOMING_PREFIX}{new_id()}-abc"
    stale.mkdir()
    fresh = storage.root / f"{INCOMING_PREFIX}{new_id()}-def"
    fresh.mkdir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    assert storage.sweep_incomplete(older_than_s=3600) == 1
    assert [p.name for p in storage.root.iterdir()] == [fresh.name]


def test_check_writable(tmp_path: Path) -> None:
    storage = AvatarStorage(tmp_path / "avatars")
    storage.check_writable()
    assert all_files(storage.root) == []


def test_create_makes_everything_durable_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    """Every file and both directories of the new avatar are fsynced before the rename
    that publishes it, and the store's directory after it: once ``create`` returns, a
    crash loses nothing and never leaves half an avatar under its id."""
    storage = AvatarStorage(tmp_path / "avatars")
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst) -> None:
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    meta = storage.create([photo(), photo(b"\x89PNG\r\n\x1a\n...", "PNG", "b.png")],
                          job_id=new_id(), extras={"options.json": b'{"strict": true}'})
    final = str(storage.root / meta["id"])
    renamed = events.index(("rename", final))
    before = {Path(p).name if "/originals" in p or p.endswith(".json") else p
              for kind, p in events[:renamed] if kind == "fsync"}
    assert {"photo_0.jpg", "photo_1.png", "options.json", "avatar.json"} <= before
    synced_dirs = [p for kind, p in events[:renamed] if kind == "fsync" and INCOMING_PREFIX in p]
    assert any(p.endswith("/originals") for p in synced_dirs)
    assert any(Path(p).name.startswith(INCOMING_PREFIX) for p in synced_dirs)
    assert events[renamed + 1:] == [("fsync", str(storage.root))]
    assert len([e for e in events if e[0] == "fsync"]) == 4 + 3  # files + 2 dirs + root
