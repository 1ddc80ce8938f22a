"""``POST /v1/avatars/{id}/render`` on an avatar built by the real pipeline.

One synthetic person (models.synth.quick) is turned into an avatar once per module with
``models.pipeline.create_avatar`` inside the gateway's storage layout
(``data_dir/avatars/<id>/``) and its job is marked succeeded; then BVH, AMASS npz and
JSON motions are uploaded and the MP4s decoded with PyAV.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from workers.jobs import JobState, make_job_store
from workers.settings import Settings
from workers.storage import AvatarStorage, NewPhoto, new_id

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------ motion files
ROT3 = "Zrotation Xrotation Yrotation"


def bvh_arm_raise(frames: int = 10, frame_time: float = 1 / 30) -> bytes:
    """A Mixamo-like rig (cm, y up, facing +z) raising the left arm from the T-pose to
    straight up over ``frames`` frames."""
    text = f"""HIERARCHY
ROOT mixamorig:Hips
{{
  OFFSET 0 100 0
  CHANNELS 6 Xposition Yposition Zposition {ROT3}
  JOINT mixamorig:Spine
  {{
    OFFSET 0 30 0
    CHANNELS 3 {ROT3}
    JOINT mixamorig:Neck
    {{
      OFFSET 0 15 0
      CHANNELS 3 {ROT3}
      JOINT mixamorig:Head
      {{
        OFFSET 0 10 0
        CHANNELS 3 {ROT3}
        End Site
        {{
          OFFSET 0 15 0
        }}
      }}
    }}
    JOINT mixamorig:LeftShoulder
    {{
      OFFSET 5 10 0
      CHANNELS 3 {ROT3}
      JOINT mixamorig:LeftArm
      {{
        OFFSET 10 0 0
        CHANNELS 3 {ROT3}
        JOINT mixamorig:LeftForeArm
        {{
          OFFSET 25 0 0
          CHANNELS 3 {ROT3}
          JOINT mixamorig:LeftHand
          {{
            OFFSET 25 0 0
            CHANNELS 3 {ROT3}
            End Site
            {{
              OFFSET 10 0 0
            }}
          }}
        }}
      }}
    }}
  }}
  JOINT mixamorig:LeftUpLeg
  {{
    OFFSET 10 -5 0
    CHANNELS 3 {ROT3}
    JOINT mixamorig:LeftLeg
    {{
      OFFSET 0 -45 0
      CHANNELS 3 {ROT3}
      JOINT mixamorig:LeftFoot
      {{
        OFFSET 0 -45 0
        CHANNELS 3 {ROT3}
        End Site
        {{
          OFFSET 0 -5 10
        }}
      }}
    }}
  }}
}}
MOTION
Frames: {frames}
Frame Time: {frame_time:.8f}
"""
    # channels: Hips 6, Spine 3, Neck 3, Head 3, LeftShoulder 3, LeftArm 3 (index 18 = Z) ...
    n_channels = 6 + 3 * 10
    rows = []
    for i in range(frames):
        values = np.zeros(n_channels)
        values[1] = 100.0
        values[18] = 90.0 * i / max(1, frames - 1)  # LeftArm Zrotation: raise the arm
        rows.append(" ".join(f"{v:.4f}" for v in values))
    return (text + "\n".join(rows) + "\n").encode()


def amass_npz(frames: int = 60, rate: float = 120.0) -> bytes:
    poses = np.zeros((frames, 156))  # SMPL-H width
    poses[:, :3] = [np.pi / 2, 0, 0]  # upright in AMASS's z-up world
    poses[:, 17 * 3 + 2] = -np.linspace(0, 1.2, frames)  # right_shoulder: raise the right arm
    trans = np.zeros((frames, 3))
    trans[:, 2] = 0.9
    buf = io.BytesIO()
    np.savez(buf, poses=poses, trans=trans, mocap_framerate=np.array(rate))
    return buf.getvalue()


def json_motion() -> bytes:
    frames = [
        {
            "rotations": {"left_shoulder": [0, 0, -1.2 + 0.2 * i], "right_shoulder": [0, 0, 1.2]},
            "root_translation": [0, 0.01 * i, 0],
        }
        for i in range(6)
    ]
    return json.dumps({"fps": 12, "frames": frames}).encode()


# ------------------------------------------------------------------ the app
@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("render-data")
    return Settings(data_dir=data_dir, redis_url=None, max_upload_mb=1, stream_max_frames=200)


def _store_avatar(settings: Settings, photo: bytes, state: JobState) -> tuple[str, str]:
    storage = AvatarStorage(settings.avatars_dir)
    avatar_id, job_id = new_id(), new_id()
    storage.create(
        [NewPhoto(fileobj=io.BytesIO(photo), fmt="PNG", width=512, height=512)],
        job_id=job_id,
        avatar_id=avatar_id,
    )
    jobs = make_job_store(settings)
    try:
        jobs.create(job_id, avatar_id)
        if state is not JobState.QUEUED:
            jobs.update(job_id, state=state, stage=None, progress=1.0)
    finally:
        jobs.close()
    return avatar_id, job_id


@pytest.fixture(scope="module")
def built_avatar(
    module_settings: Settings, person_photo: bytes, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """An avatar built by the real pipeline into data_dir/avatars/<id>/, job succeeded."""
    from models.pipeline import create_avatar

    avatar_id, _ = _store_avatar(module_settings, person_photo, JobState.QUEUED)
    photo = tmp_path_factory.mktemp("photo") / "person.png"
    photo.write_bytes(person_photo)
    glb = create_avatar([photo], module_settings.avatars_dir / avatar_id)
    assert glb == module_settings.avatars_dir / avatar_id / "avatar.glb" and glb.is_file()
    jobs = make_job_store(module_settings)
    try:
        job_id = json.loads((glb.parent / "avatar.json").read_text())["job_id"]
        jobs.update(job_id, state=JobState.SUCCEEDED, stage=None, progress=1.0)
    finally:
        jobs.close()
    return avatar_id


@pytest.fixture(scope="module")
def unbuilt_avatar(module_settings: Settings, person_photo: bytes) -> str:
    return _store_avatar(module_settings, person_photo, JobState.QUEUED)[0]


@pytest.fixture(scope="module")
def render_client(module_settings: Settings) -> Iterator[TestClient]:
    from service.app import create_app

    with TestClient(create_app(module_settings)) as client:
        yield client


def post_render(
    client: TestClient,
    avatar_id: str,
    blob: bytes | None = None,
    filename: str = "motion.bvh",
    **form,
):
    files = {"motion": (filename, blob, "application/octet-stream")} if blob is not None else None
    data = {k: str(v) for k, v in form.items()}
    return client.post(f"/v1/avatars/{avatar_id}/render", files=files, data=data)


def decode_mp4(content: bytes) -> list[np.ndarray]:
    import av

    with av.open(io.BytesIO(content)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text
    return body["error"]


def person_mask(rgb: np.ndarray) -> np.ndarray:
    return np.abs(rgb.astype(int) - 255).sum(-1) > 60


# ------------------------------------------------------------------ rendering
def test_bvh_upload_renders_an_mp4_with_the_arm_raised(
    render_client: TestClient, built_avatar: str
) -> None:
    response = post_render(
        render_client, built_avatar, bvh_arm_raise(10), "raise.bvh", size=128, fps=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["x-frame-count"] == "10"
    frames = decode_mp4(response.content)
    assert len(frames) == 10 and frames[0].shape == (128, 128, 3)
    first, last = person_mask(frames[0]), person_mask(frames[-1])
    assert 0.03 < first.mean() < 0.6
    # the raised arm reaches above the head: the silhouette's top row moves up

    def top(mask: np.ndarray) -> int:
        return int(np.argmax(mask.any(axis=1)))

    assert top(last) < top(first) - 3, (top(first), top(last))
    # ... on the avatar's left, which the front camera shows on the image's right
    above_head = last[: top(first)]
    cols = np.nonzero(above_head.any(axis=0))[0]
    assert cols.size and cols.mean() > 64


def test_npz_upload_resampled_to_the_requested_fps(
    render_client: TestClient, built_avatar: str
) -> None:
    response = post_render(
        render_client, built_avatar, amass_npz(60, 120.0), "walk.npz", size=64, fps=10
    )
    assert response.status_code == 200, response.text
    frames = decode_mp4(response.content)
    assert len(frames) == 5  # 60 frames at 120 fps = 0.5 s, at 10 fps
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 0.5  # it moves


def test_json_upload_with_frames_and_odd_size(render_client: TestClient, built_avatar: str) -> None:
    response = post_render(
        render_client, built_avatar, json_motion(), "pose.json", size=65, fps=24, frames=7
    )
    assert response.status_code == 200, response.text
    frames = decode_mp4(response.content)
    assert len(frames) == 7 and frames[0].shape == (66, 66, 3)  # yuv420p: even size


def test_builtin_motion_by_name_as_mjpeg(render_client: TestClient, built_avatar: str) -> None:
    from service.streaming import BOUNDARY

    response = post_render(
        render_client,
        built_avatar,
        None,
        motion_name="wave",
        size=64,
        fps=10,
        frames=3,
        format="mjpeg",
        pace="false",
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
    assert response.content.count(b"Content-Type: image/jpeg") == 3
    assert response.content.count(b"\xff\xd8") >= 3
    assert response.content.endswith(f"--{BOUNDARY}--\r\n".encode())


def test_builtin_motion_mp4_is_one_loop(render_client: TestClient, built_avatar: str) -> None:
    response = post_render(render_client, built_avatar, None, motion_name="wave", size=64, fps=8)
    assert response.status_code == 200, response.text
    assert len(decode_mp4(response.content)) == 8  # wave lasts 1 s


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "blob, filename",
    [
        (b"HIERARCHY\nROOT Hips\n{\n  OFFSET 0 0\n}\nMOTION\n", "broken.bvh"),
        (bvh_arm_raise(3).replace(b"Frames: 3", b"Frames: 4"), "short.bvh"),
        (b"PK\x03\x04 not really a zip", "motion.npz"),
        (b"\x00\x01\x02\x03 binary garbage", "motion.npz"),
        (b'{"fps": 30, "frames": [{"rotations": {"left_tentacle": [0, 0, 1]}}]}', "m.json"),
        (b'{"fps": 30, "frames": [', "m.json"),
        (b"", "empty.bvh"),
        (b"just some text", "notes.txt"),
    ],
)
def test_malformed_motion_is_400(
    render_client: TestClient, built_avatar: str, blob: bytes, filename: str
) -> None:
    response = post_render(render_client, built_avatar, blob, filename, size=64)
    error = assert_error(response, 400, "invalid_motion")
    assert error["message"]


def test_npz_missing_keys_is_400_naming_them(render_client: TestClient, built_avatar: str) -> None:
    buf = io.BytesIO()
    np.savez(buf, poses=np.zeros((4, 165)))
    error = assert_error(
        post_render(render_client, built_avatar, buf.getvalue(), "m.npz"), 400, "invalid_motion"
    )
    assert "trans" in error["message"] and "mocap_framerate" in error["message"]


def test_unknown_motion_name_is_400(render_client: TestClient, built_avatar: str) -> None:
    response = post_render(render_client, built_avatar, None, motion_name="moonwalk-xyz")
    error = assert_error(response, 400, "unknown_motion")
    assert "wave" in error["details"]["motions"]


@pytest.mark.parametrize(
    "form",
    [
        {"size": 4000},
        {"size": 32},
        {"fps": 0},
        {"fps": 61},
        {"frames": 0},
        {"frames": 201},  # stream_max_frames of these settings
        {"format": "gif"},
    ],
)
def test_out_of_range_parameters_are_422(
    render_client: TestClient, built_avatar: str, form: dict
) -> None:
    response = post_render(render_client, built_avatar, bvh_arm_raise(3), "m.bvh", **form)
    assert_error(response, 422, "invalid_request")


def test_neither_or_both_motion_inputs_are_422(
    render_client: TestClient, built_avatar: str
) -> None:
    assert_error(post_render(render_client, built_avatar, None, size=64), 422, "invalid_request")
    both = post_render(render_client, built_avatar, bvh_arm_raise(3), "m.bvh", motion_name="wave")
    assert_error(both, 422, "invalid_request")


def test_oversized_upload_is_413(render_client: TestClient, built_avatar: str) -> None:
    blob = b"HIERARCHY\n" + b" " * (1024 * 1024 + 10)
    assert_error(post_render(render_client, built_avatar, blob, "big.bvh"), 413, "upload_too_large")


def test_unknown_avatar_is_404(render_client: TestClient) -> None:
    response = post_render(render_client, new_id(), bvh_arm_raise(3), "m.bvh")
    assert_error(response, 404, "avatar_not_found")
    response = post_render(render_client, "not-an-id", bvh_arm_raise(3), "m.bvh")
    assert_error(response, 404, "avatar_not_found")


def test_unbuilt_avatar_is_409(render_client: TestClient, unbuilt_avatar: str) -> None:
    response = post_render(render_client, unbuilt_avatar, bvh_arm_raise(3), "m.bvh")
    error = assert_error(response, 409, "avatar_not_ready")
    assert error["details"]["state"] == "queued"


def test_render_route_is_documented(render_client: TestClient) -> None:
    schema = render_client.get("/openapi.json").json()
    assert "post" in schema["paths"]["/v1/avatars/{avatar_id}/render"]


def test_no_temporary_videos_are_left(render_client: TestClient, built_avatar: str) -> None:
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("avatars-render-*.mp4"))
    response = post_render(render_client, built_avatar, json_motion(), "m.json", size=64, fps=12)
    assert response.status_code == 200
    after = set(Path(tempfile.gettempdir()).glob("avatars-render-*.mp4"))
    assert after <= before
