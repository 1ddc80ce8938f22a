"""API keys and tenants: hashed keys in SQLite and Redis, the CLI, 401s, per-tenant 404s.

The gateway tests run in the embedded mode with anonymous access off; the isolation
of built avatars through a real Redis and real workers is in tests/test_faults.py.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.app import create_app
from service.auth import (
    InvalidTenantError,
    KeyStore,
    RedisKeyStore,
    SQLiteKeyStore,
    digest,
    make_key_store,
)
from tests.conftest import REPO_ROOT, avatars_command, service_env, small_jpeg
from workers.settings import Settings
from workers.storage import new_id


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ----------------------------------------------------------------- key stores
@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyStore]:
    if request.param == "sqlite":
        key_store: KeyStore = SQLiteKeyStore(tmp_path / "jobs.sqlite")
    else:
        url = request.getfixturevalue("redis_server")
        key_store = RedisKeyStore(url, prefix=f"test:{new_id()}:apikey:")
    yield key_store
    key_store.close()


def test_keys_are_stored_hashed_and_checked(store: KeyStore) -> None:
    record, key = store.create("acme", "ci")
    assert key.startswith(f"avk_{record.id}_")
    assert store.lookup(key) == record
    assert record.tenant == "acme" and record.name == "ci" and record.active
    # the store holds the SHA-256, never the key
    found = store._fetch(record.id)
    assert found is not None and found[1] == digest(key) and key not in repr(found)
    # same id, other secret; malformed; empty
    forged = key[: key.rindex("_") + 1] + "x" * 43
    for bad in (forged, key + "x", "avk_nothing", "", key.upper()):
        assert store.lookup(bad) is None, bad


def test_revoke_and_list(store: KeyStore) -> None:
    first, key1 = store.create("acme")
    second, key2 = store.create("globex", "other")
    assert [r.id for r in store.list()] == [first.id, second.id]
    assert store.revoke(first.id) is True
    assert store.revoke(first.id) is True  # twice is fine
    assert store.revoke("0" * 16) is False
    assert store.lookup(key1) is None
    assert store.lookup(key2) == second
    listed = {r.id: r for r in store.list()}
    assert listed[first.id].revoked_at and listed[second.id].revoked_at is None


@pytest.mark.parametrize("tenant", ["", "Acme", "a b", "../x", "x" * 65, "anonymous", "-x"])
def test_bad_tenant_names_are_refused(store: KeyStore, tenant: str) -> None:
    with pytest.raises(InvalidTenantError):
        store.create(tenant)


def test_sqlite_file_has_no_plain_key(tmp_path: Path) -> None:
    store = SQLiteKeyStore(tmp_path / "jobs.sqlite")
    _, key = store.create("acme")
    with sqlite3.connect(tmp_path / "jobs.sqlite") as conn:
        dump = "\n".join(conn.iterdump())
    assert key not in dump and digest(key) in dump


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    env = service_env(tmp_path / "data", redis_url=None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            avatars_command("keys", *args), env=env, cwd=REPO_ROOT, capture_output=True,
            text=True, timeout=120, check=False,
        )

    created = run("create", "--tenant", "acme", "--name", "ci")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("avk_") and "\n" not in key
    key_id = key.split("_")[1]
    listed = run("list", "--json")
    records = json.loads(listed.stdout)
    assert [(r["id"], r["tenant"], r["name"]) for r in records] == [(key_id, "acme", "ci")]
    assert key not in listed.stdout
    assert run("create", "--tenant", "Bad Name").returncode != 0
    assert run("revoke", key_id).returncode == 0
    assert json.loads(run("list", "--json").stdout)[0]["revoked_at"]
    missing = run("revoke", "0" * 16)
    assert missing.returncode != 0 and "no key" in missing.stderr
    store = make_key_store(Settings(data_dir=tmp_path / "data"))
    assert store.lookup(key) is None


# ------------------------------------------------------------------- gateway
@pytest.fixture
def locked_settings(data_dir: Path) -> Settings:
    """Embedded mode with keys required; lookups not cached (revocation is immediate)."""
    return Settings(data_dir=data_dir, allow_anonymous=False, auth_cache_s=0)


@pytest.fixture
def locked(locked_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(locked_settings)) as client:
        yield client


@pytest.fixture
def two_keys(locked_settings: Settings) -> tuple[str, str]:
    store = make_key_store(locked_settings)
    try:
        return store.create("tenant-a")[1], store.create("tenant-b")[1]
    finally:
        store.close()


def test_settings_anonymous_default() -> None:
    assert Settings(redis_url=None, host="127.0.0.1").anonymous_allowed
    assert Settings(redis_url=None, host="::1").anonymous_allowed
    assert not Settings(redis_url=None, host="0.0.0.0").anonymous_allowed
    assert not Settings(redis_url="redis://localhost:6379/0").anonymous_allowed
    assert Settings(redis_url="redis://x:1/0", allow_anonymous=True).anonymous_allowed
    assert not Settings(redis_url=None, allow_anonymous=False).anonymous_allowed


@pytest.mark.parametrize("path", ["/v1/motions", f"/v1/jobs/{new_id()}", f"/v1/avatars/{new_id()}"])
def test_no_key_is_401(locked: TestClient, path: str) -> None:
    response = locked.get(path)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "api_key_required"
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_upload_without_key_is_401_before_the_body_is_read(locked: TestClient) -> None:
    response = locked.post("/v1/avatars", files=[("photos", ("a.jpg", small_jpeg(), "image/jpeg"))])
    assert response.status_code == 401
    assert not (locked.app.state.services.settings.avatars_dir).exists() or not list(
        locked.app.state.services.settings.avatars_dir.iterdir()
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer avk_0123456789abcdef_" + "x" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"X-API-Key": "nope"},
    ],
)
def test_bad_keys_are_401(locked: TestClient, headers: dict[str, str]) -> None:
    response = locked.get("/v1/motions", headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_both_headers_work_and_health_needs_no_key(locked: TestClient, two_keys) -> None:
    key_a, _ = two_keys
    assert locked.get("/v1/motions", headers=bearer(key_a)).status_code == 200
    assert locked.get("/v1/motions", headers={"X-API-Key": key_a}).status_code == 200
    assert locked.get("/healthz").status_code == 200
    assert locked.get("/metrics").status_code == 200
    assert locked.get("/openapi.json").status_code == 200


def test_revoked_key_stops_working(locked: TestClient, locked_settings: Settings) -> None:
    store = make_key_store(locked_settings)
    record, key = store.create("acme")
    assert locked.get("/v1/motions", headers=bearer(key)).status_code == 200
    store.revoke(record.id)
    assert locked.get("/v1/motions", headers=bearer(key)).status_code == 401


def test_tenants_only_see_their_own(locked: TestClient, two_keys, locked_settings) -> None:
    key_a, key_b = two_keys
    created = locked.post(
        "/v1/avatars", headers=bearer(key_a), files=[("photos", ("a.jpg", small_jpeg(), "image/jpeg"))]
    )
    assert created.status_code == 202, created.text
    avatar_id, job_id = created.json()["avatar_id"], created.json()["job_id"]
    meta = json.loads((locked_settings.avatars_dir / avatar_id / "avatar.json").read_text())
    assert meta["tenant"] == "tenant-a"

    a, b = bearer(key_a), bearer(key_b)
    assert locked.get(f"/v1/avatars/{avatar_id}", headers=a).status_code == 200
    assert locked.get(f"/v1/jobs/{job_id}", headers=a).status_code == 200
    base = f"/v1/avatars/{avatar_id}"
    for method, path in [
        ("GET", base),
        ("GET", f"{base}/avatar.glb"),
        ("GET", f"{base}/texture.png"),
        ("GET", f"{base}/stream?frames=2"),
        ("GET", f"{base}/frame.png"),
        ("GET", f"{base}/render.mp4?frames=2"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("DELETE", f"/v1/jobs/{job_id}"),
    ]:
        response = locked.request(method, path, headers=b)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] in ("avatar_not_found", "job_not_found")
    response = locked.post(f"{base}/render", headers=b, data={"motion_name": "wave"})
    assert response.status_code == 404
    # tenant A's own view is unchanged: the job was not cancelled by B
    assert locked.get(f"/v1/jobs/{job_id}", headers=a).json()["state"] == "queued"
    with locked.websocket_connect(f"{base}/live", headers=b) as ws:
        assert ws.receive_json()["error"]["code"] == "avatar_not_found"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4404


def test_websocket_needs_a_key(locked: TestClient, two_keys) -> None:
    avatar = f"/v1/avatars/{new_id()}/live"
    with locked.websocket_connect(avatar) as ws:
        assert ws.receive_json()["error"]["code"] == "api_key_required"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4401
    with locked.websocket_connect(f"{avatar}?api_key={two_keys[0]}") as ws:
        assert ws.receive_json()["error"]["code"] == "avatar_not_found"


def test_anonymous_avatars_are_their_own_tenant(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, allow_anonymous=True, auth_cache_s=0)
    with TestClient(create_app(settings)) as client:
        created = client.post("/v1/avatars", files=[("photos", ("a.jpg", small_jpeg(), "image/jpeg"))])
        assert created.status_code == 202
        job_id = created.json()["job_id"]
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
        store = make_key_store(settings)
        _, key = store.create("acme")
        # a key holder is a tenant of its own, even where anonymous access is on
        assert client.get(f"/v1/jobs/{job_id}", headers=bearer(key)).status_code == 404
        assert client.get("/v1/motions", headers=bearer("avk_bad")).status_code == 401
