"""Rendering endpoints on an avatar built by the real pipeline: MJPEG stream with camera
parameters, PNG frames with alpha, MP4, the live WebSocket; bad parameters are 4xx JSON;
a client that goes away stops the rendering (checked against a real uvicorn server).
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.websockets import WebSocketDisconnect

from service.app import create_app
from service.streaming import BOUNDARY
from tests.conftest import free_port, wait_until
from workers.jobs import JobState, make_job_store
from workers.settings import Settings
from workers.storage import AvatarStorage, NewPhoto, new_id


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def built_glb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """avatar.glb of a synthetic person, made once by the real pipeline."""
    from models.pipeline import create_avatar
    from models.synth.quick import person_photo

    work = tmp_path_factory.mktemp("built")
    photo = work / "person.png"
    person_photo(seed=0, size=512).save(photo)
    return create_avatar([photo], work / "avatar")


def register_built_avatar(settings: Settings, glb: Path) -> str:
    """Store an avatar whose job succeeded with ``glb`` as its bundle; returns its id."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buf, format="PNG")
    avatar_id, job_id = new_id(), new_id()
    storage = AvatarStorage(settings.avatars_dir)
    storage.create([NewPhoto(buf, "PNG", 32, 32, "person.png")], job_id=job_id, avatar_id=avatar_id)
    jobs = make_job_store(settings)
    try:
        jobs.create(job_id, avatar_id)
        shutil.copyfile(glb, storage.glb_path(avatar_id))
        jobs.update(job_id, state=JobState.SUCCEEDED, stage=None, progress=1.0)
    finally:
        jobs.close()
    return avatar_id


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("data")
    return Settings(data_dir=data, redis_url=None)


@pytest.fixture(scope="module")
def avatar_id(module_settings: Settings, built_glb: Path) -> str:
    return register_built_avatar(module_settings, built_glb)


@pytest.fixture(scope="module")
def http(module_settings: Settings, avatar_id: str) -> Iterator[TestClient]:
    with TestClient(create_app(module_settings)) as client:
        yield client


class LiveServer:
    def __init__(self, app, port: int) -> None:
        import uvicorn

        self.app = app
        self.base = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def player(self, avatar_id: str):
        services = self.app.state.services
        return services.players.get(avatar_id, services.storage.glb_path(avatar_id))


@pytest.fixture(scope="module")
def live_server(module_settings: Settings, avatar_id: str) -> Iterator[LiveServer]:
    """The gateway under a real uvicorn (disconnects behave as in production)."""
    server = LiveServer(create_app(module_settings), free_port())
    server.thread.start()
    try:
        wait_until(lambda: server.server.started, 30, 0.05, what="uvicorn to start")
        yield server
    finally:
        server.server.should_exit = True
        server.thread.join(timeout=30)


# ------------------------------------------------------------------------- helpers
def mjpeg_frames(body: bytes) -> list[np.ndarray]:
    """Decoded (BGR) frames of a complete multipart MJPEG body."""
    frames = []
    for part in body.split(f"--{BOUNDARY}".encode())[1:]:
        if part.startswith(b"--"):
            break
        jpeg = part.split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")
        frames.append(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR))
    return frames


def jpeg_image(data: bytes) -> np.ndarray:
    assert data[:2] == b"\xff\xd8"
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    return body["error"]


def pose(elbow: float, yaw: float | None = None, size: int = 128) -> str:
    msg = {
        "rotations": {
            "left_shoulder": [0, 0, -1.2],
            "right_shoulder": [0, 0, 1.2],
            "left_elbow": [0, elbow, 0],
            "right_elbow": [0, -elbow, 0],
        },
        "root_translation": [0, 0, 0],
        "size": size,
    }
    if yaw is not None:
        msg["yaw"] = yaw
    return json.dumps(msg)


# --------------------------------------------------------------------------- MJPEG
def test_mjpeg_stream_with_view_params(http: TestClient, avatar_id: str) -> None:
    url = f"/v1/avatars/{avatar_id}/stream"
    base = {"motion": "idle", "size": 128, "frames": 3, "pace": "false"}
    front = http.get(url, params={**base, "background": "00ff00"})
    assert front.status_code == 200, front.text
    assert front.headers["content-type"].startswith("multipart/x-mixed-replace")
    frames = mjpeg_frames(front.content)
    assert len(frames) == 3 and frames[0].shape == (128, 128, 3)
    corner = frames[0][:8, :8].reshape(-1, 3).mean(0)  # BGR
    assert corner[1] > 200 and corner[0] < 60 and corner[2] < 60, corner  # green background

    side = mjpeg_frames(http.get(url, params={**base, "background": "#00ff00", "yaw": 90}).content)
    near = mjpeg_frames(
        http.get(url, params={**base, "background": "00ff00", "distance": 1.2, "fov": 40}).content
    )
    high = mjpeg_frames(
        http.get(url, params={**base, "background": "00ff00", "elevation": 60}).content
    )

    def person(img: np.ndarray) -> np.ndarray:
        return np.abs(img.astype(int) - (0, 255, 0)).sum(-1) > 60

    widths = [person(f[0]).any(0).sum() for f in (frames, side)]
    assert widths[1] < 0.8 * widths[0], widths  # seen from the side the body is narrower
    assert person(near[0]).mean() > 1.5 * person(frames[0]).mean()  # closer: bigger
    assert np.abs(high[0].astype(int) - frames[0]).mean() > 5  # another camera


# ----------------------------------------------------------------------------- PNG
def test_png_frame_has_alpha(http: TestClient, avatar_id: str) -> None:
    response = http.get(
        f"/v1/avatars/{avatar_id}/frame.png",
        params={"motion": "wave", "t": 0.25, "size": 160, "transparent": "true"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(response.content))
    assert img.mode == "RGBA" and img.size == (160, 160)
    rgba = np.asarray(img)
    alpha = rgba[..., 3]
    for corner in (alpha[:5, :5], alpha[:5, -5:], alpha[-5:, :5], alpha[-5:, -5:]):
        assert (corner == 0).all()
    assert (alpha[45:70, 76:86] == 255).all()  # the torso is opaque
    assert ((alpha > 0) & (alpha < 255)).sum() > 20  # antialiased silhouette
    assert 0.05 < (alpha > 0).mean() < 0.6

    opaque = http.get(
        f"/v1/avatars/{avatar_id}/frame.png",
        params={"motion": "wave", "t": 0.25, "size": 160, "background": "ff0000"},
    )
    img = np.asarray(Image.open(io.BytesIO(opaque.content)))
    assert img.shape == (160, 160, 3)
    assert tuple(img[0, 0]) == (255, 0, 0)
    # Same picture where the avatar is fully opaque.
    inside = alpha == 255
    assert np.abs(img[inside].astype(int) - rgba[..., :3][inside]).max() <= 1


# ----------------------------------------------------------------------------- MP4
def test_mp4_decodes_with_the_requested_frames(http: TestClient, avatar_id: str) -> None:
    import av

    response = http.get(
        f"/v1/avatars/{avatar_id}/render.mp4",
        params={"motion": "wave", "size": 96, "fps": 10, "frames": 7, "yaw": 20},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(response.content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 7
    assert frames[0].shape == (96, 96, 3)
    assert np.abs(frames[0].astype(int) - frames[3]).mean() > 0.5  # it moves


def test_render_mp4_stops_when_asked(built_glb: Path, tmp_path: Path) -> None:
    from models.render.player import AvatarPlayer, RenderCancelled, render_mp4

    player = AvatarPlayer.from_glb(built_glb)
    before = player.frames_rendered
    out = tmp_path / "x.mp4"
    with pytest.raises(RenderCancelled):
        render_mp4(built_glb, out, size=64, frames=100, player=player,
                   should_stop=lambda: player.frames_rendered - before >= 3)
    assert player.frames_rendered - before == 3
    assert list(tmp_path.iterdir()) == []  # no partial file left


# ----------------------------------------------------------------------- WebSocket
def test_websocket_three_poses_give_three_different_jpegs(http: TestClient, avatar_id: str) -> None:
    with http.websocket_connect(f"/v1/avatars/{avatar_id}/live") as ws:
        images = []
        for elbow, yaw in ((0.0, None), (1.4, None), (1.4, 45)):
            ws.send_text(pose(elbow, yaw))
            images.append(jpeg_image(ws.receive_bytes()))
    assert all(img.shape == (128, 128, 3) for img in images)
    assert np.abs(images[0].astype(int) - images[1]).mean() > 0.3
    assert np.abs(images[1].astype(int) - images[2]).mean() > 0.3


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        (json.dumps({"rotations": {"tail": [0, 0, 1]}}), "invalid_message"),
        (json.dumps({"rotations": {"left_elbow": [0, 1]}}), "invalid_message"),
        (json.dumps({"rotations": {"left_elbow": [0, "x", 0]}}), "invalid_message"),
        (json.dumps({"rotations": {}, "size": 5000}), "invalid_message"),
        (json.dumps({"rotations": {}, "yaw": "left"}), "invalid_message"),
        (json.dumps({"rotation": {}}), "invalid_message"),
        ('{"rotations": {"left_elbow": [0, NaN, 0]}}', "invalid_message"),
    ],
)
def test_websocket_malformed_message_keeps_the_socket(
    http: TestClient, avatar_id: str, message: str, code: str
) -> None:
    with http.websocket_connect(f"/v1/avatars/{avatar_id}/live") as ws:
        ws.send_text(message)
        answer = ws.receive_json()
        assert set(answer) == {"error"} and answer["error"]["code"] == code, answer
        ws.send_bytes(b"\x00\x01")
        assert ws.receive_json()["error"]["code"] == "invalid_message"
        ws.send_text(pose(0.5))
        assert jpeg_image(ws.receive_bytes()).shape == (128, 128, 3)


def test_websocket_unknown_avatar_is_closed_with_4404(http: TestClient) -> None:
    for avatar in (new_id(), "not-an-id"):
        with http.websocket_connect(f"/v1/avatars/{avatar}/live") as ws:
            assert ws.receive_json()["error"]["code"] == "avatar_not_found"
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 4404


# ----------------------------------------------------------------- bad parameters
@pytest.mark.parametrize("endpoint", ["stream", "frame.png", "render.mp4"])
@pytest.mark.parametrize(
    "query",
    [
        "yaw=1000",
        "yaw=nan",
        "elevation=95",
        "distance=-1",
        "distance=inf",
        "fov=0",
        "fov=abc",
        "background=zzzzzz",
        "background=fff",
        "size=32",
    ],
)
def test_bad_view_params_are_422_json(
    http: TestClient, avatar_id: str, endpoint: str, query: str
) -> None:
    response = http.get(f"/v1/avatars/{avatar_id}/{endpoint}?{query}")
    assert_error(response, 422, "invalid_request")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("frame.png?t=-1", 422, "invalid_request"),
        ("frame.png?transparent=maybe", 422, "invalid_request"),
        ("frame.png?motion=moonwalk", 400, "unknown_motion"),
        ("render.mp4?frames=100000", 422, "invalid_request"),
        ("render.mp4?size=2048", 422, "invalid_request"),
        ("render.mp4?fps=0", 422, "invalid_request"),
        ("render.mp4?motion=moonwalk", 400, "unknown_motion"),
    ],
)
def test_bad_frame_and_mp4_params(
    http: TestClient, avatar_id: str, path: str, status: int, code: str
) -> None:
    assert_error(http.get(f"/v1/avatars/{avatar_id}/{path}"), status, code)


def test_unknown_avatar_is_404_on_every_render_endpoint(http: TestClient) -> None:
    for suffix in ("stream", "frame.png", "render.mp4"):
        assert_error(http.get(f"/v1/avatars/{new_id()}/{suffix}"), 404, "avatar_not_found")


# ------------------------------------------------------------ client disconnects
def _settled(player, quiet_s: float = 0.6, timeout_s: float = 10.0) -> int:
    """The player's frame counter once it stopped moving for quiet_s."""
    last, since = player.frames_rendered, time.monotonic()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = player.frames_rendered
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError("rendering did not stop after the client left")


def test_mjpeg_loop_stops_rendering_when_the_client_leaves(
    live_server: LiveServer, avatar_id: str
) -> None:
    import httpx

    player = live_server.player(avatar_id)
    start = player.frames_rendered
    url = f"{live_server.base}/v1/avatars/{avatar_id}/stream"
    params = {"motion": "walk", "size": 64, "loop": "true", "pace": "false"}
    received = 0
    with httpx.Client(timeout=30) as client:
        with client.stream("GET", url, params=params) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received += chunk.count(b"\xff\xd8\xff")
                if received >= 5:
                    break
    stopped = _settled(player)
    # At most the frames in flight (socket buffers, the one being rendered) beyond those
    # received: an unbounded loop would keep going for ever.
    assert 5 <= stopped - start <= received + 50, (received, stopped - start)
    time.sleep(0.5)
    assert player.frames_rendered == stopped  # nothing more is rendered


def test_websocket_disconnect_stops_rendering(live_server: LiveServer, avatar_id: str) -> None:
    from websockets.sync.client import connect

    player = live_server.player(avatar_id)
    start = player.frames_rendered
    url = live_server.base.replace("http", "ws") + f"/v1/avatars/{avatar_id}/live"
    with connect(url, open_timeout=10) as ws:
        ws.send(pose(0.3, size=64))
        assert jpeg_image(ws.recv(timeout=30)).shape == (64, 64, 3)
        for i in range(4):  # leave with frames still asked for
            ws.send(pose(0.1 * i, size=64))
    stopped = _settled(player)
    assert 1 <= stopped - start <= 5
    time.sleep(0.5)
    assert player.frames_rendered == stopped


def test_live_unknown_avatar_closes_with_4404_over_uvicorn(live_server: LiveServer) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    url = live_server.base.replace("http", "ws") + f"/v1/avatars/{new_id()}/live"
    with connect(url, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["error"]["code"] == "avatar_not_found"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4404


# --------------------------------------------------------------- render path
def test_fast_posing_matches_the_numpy_reference(built_glb: Path) -> None:
    """The fused numba skin + clip kernel and numba FK give the reference numbers."""
    from models.animation.motions import get_motion
    from models.render.player import AvatarPlayer, View
    from models.render.skinning import forward_kinematics

    player = AvatarPlayer.from_glb(built_glb)
    mesh = player.mesh
    frame = get_motion("dance").frame(0.7)
    rots = player.retarget.local_rotations(frame.rotations)
    A = forward_kinematics(rots, player.heads, player.parents, frame.root_translation)
    assert np.abs(player.pose_matrices(frame) - A).max() < 1e-9
    J = mesh.joints.astype(int)
    W = mesh.weights.astype(np.float64)
    ref = np.einsum("vk,vkij,vj->vi", W, A[J][..., :3], mesh.positions.astype(np.float64))
    ref += np.einsum("vk,vki->vi", W, A[J][..., 3])
    assert np.abs(player.pose_vertices(frame) - ref).max() < 1e-5
    M = player.clip_matrix(256, View(yaw_deg=30)).astype(np.float64)
    clip = player.skin.clip_into(player.pose_matrices(frame), M, player.new_state().clip)
    assert np.abs(clip - (ref @ M[:, :3].T + M[:, 3])).max() < 1e-4


def test_back_face_culling_does_not_change_the_picture(built_glb: Path) -> None:
    from models.animation.motions import get_motion
    from models.render.player import AvatarPlayer, View

    culled = AvatarPlayer.from_glb(built_glb)
    assert culled.cull_backfaces  # the pipeline's mesh is closed and wound outward
    plain = AvatarPlayer(culled.mesh, cull_backfaces=False)
    for motion, t, yaw in (("walk", 0.3, 0), ("dance", 1.1, 90), ("arms_raise", 1.5, 200)):
        A = culled.motion_matrices(get_motion(motion), t)
        a, alpha_a = culled.render_matrices(A, 128, View(yaw_deg=yaw), culled.new_state())
        b, alpha_b = plain.render_matrices(A, 128, View(yaw_deg=yaw), plain.new_state())
        assert (np.abs(a.astype(int) - b).max(-1) > 10).mean() < 0.002, (motion, t, yaw)
        assert (alpha_a != alpha_b).mean() < 0.002


def test_cached_motion_poses_are_the_poses(built_glb: Path) -> None:
    from models.animation.motions import get_motion
    from models.render.player import AvatarPlayer

    player = AvatarPlayer.from_glb(built_glb)
    walk = get_motion("walk")
    for t in (0.0, 0.37, 0.37 + walk.duration_s):
        cached = player.motion_matrices(walk, t)
        assert cached is player.motion_matrices(walk, t)
        assert np.abs(cached - player.pose_matrices(walk.frame(t))).max() < 1e-5
    assert 1e6 < player.memory_bytes() < 50e6
