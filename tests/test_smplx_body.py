"""SMPL-X through the real `smplx` package, on a small synthetic SMPLX_NEUTRAL.npz.

The real file cannot be shipped (non-commercial licence), so tests/smplx_synthetic.py
writes a coarse person with the same keys, dtypes and layout; it is loaded through the
same code path the service uses (`get_body("smplx")` -> `SmplxBody` -> `smplx.SMPLX`).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from smplx_synthetic import joint_positions, write_synthetic_smplx

from models.body import registry
from models.body.lbs import axis_angle_to_matrix, forward_kinematics
from models.body.registry import get_body
from models.body.smplx_body import JOINT_NAMES, SmplxBody
from models.body.template import MEDIAPIPE_33
from models.errors import ModelAssetError

SETTING = "AVATARS_SMPLX_MODEL_PATH"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return write_synthetic_smplx(tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz")


@pytest.fixture
def body(model_path, monkeypatch):
    monkeypatch.setenv("AVATARS_BODY_MODEL", "smplx")
    monkeypatch.setenv(SETTING, str(model_path))
    return get_body()


def _pose(body) -> np.ndarray:
    """Arms down from the T-pose, elbows and knees a little bent, a slight lean."""
    J = body.joint_names
    pose = np.zeros((len(J), 3), np.float32)
    pose[J.index("left_shoulder")] = [0, 0, -1.1]
    pose[J.index("right_shoulder")] = [0, 0, 1.1]
    pose[J.index("left_elbow")] = [0, -0.3, 0]
    pose[J.index("right_elbow")] = [0, 0.3, 0]
    pose[J.index("left_hip")] = [-0.1, 0, 0.05]
    pose[J.index("right_knee")] = [0.2, 0, 0]
    pose[J.index("spine2")] = [0.05, 0.1, 0]
    return pose


BETAS = np.array([0.8, -0.5, 0.4, 0.3, 0, 0, 0, 0, 0, 0], np.float32)


def test_loads_through_the_registry_with_a_valid_topology(body, model_path):
    from smplx.joint_names import JOINT_NAMES as SMPLX_JOINT_NAMES

    assert isinstance(body, SmplxBody) and body.body_model == "smplx"
    assert get_body("smplx") is body  # one instance per (name, path)
    assert body.joint_names == list(SMPLX_JOINT_NAMES[:55]) == JOINT_NAMES
    assert len(body.shape_labels) == 10
    top = body.topology
    V = len(body.template_vertices)
    assert top.faces.dtype == np.int32 and top.faces.min() >= 0 and top.faces.max() < len(top.uvs)
    assert len(top.uvs) > V  # split along the UV seams
    assert top.uvs.min() >= 0 and top.uvs.max() <= 1
    assert top.source_vertex.max() < V and len(np.unique(top.source_vertex)) == V
    assert np.allclose(top.skin_weights.sum(1), 1, atol=1e-5)
    assert top.skin_indices.max() < 55
    assert top.parents[0] == -1 and all(p < i for i, p in enumerate(top.parents))
    assert set(body.canonical_joints) == set(body.canonical_joints.values()) == set(JOINT_NAMES[:22])
    assert set(body.fit_joints) <= set(JOINT_NAMES)
    # Joint heads: the file's J_regressor applied to the rest vertices.
    assert np.abs(body.template_heads.numpy() - joint_positions()).max() < 1e-5
    # UVs flipped to image rows: (0,0) top-left, so vt's v-up becomes 1 - v.
    vt = np.load(model_path)["vt"]
    assert np.allclose(np.sort(top.uvs[:, 1]), np.sort(1 - vt[np.unique(np.load(model_path)["ft"])][:, 1]))
    # Faces wind counter-clockwise seen from outside: positive signed volume.
    v = body.template_vertices.numpy()[top.source_vertex][top.faces]
    assert float((np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]) * v.mean(1)).sum()) > 0
    # glTF axes: up is +y, the person faces +z, the left eye is on +x.
    heads = body.template_heads.numpy()
    assert heads[JOINT_NAMES.index("head"), 1] > heads[0, 1] > heads[JOINT_NAMES.index("left_ankle"), 1]
    assert heads[JOINT_NAMES.index("left_eye_smplhf"), 0] > 0 > heads[JOINT_NAMES.index("right_eye_smplhf"), 0]


def test_landmarks_sit_where_mediapipe_puts_them(body):
    lm = body.topology.landmarks
    assert set(lm) <= set(MEDIAPIPE_33)
    for name in ("nose", "left_ear", "right_ear", "left_heel", "right_foot_index", "left_wrist", "right_hip",
                 "left_eye", "left_shoulder", "right_ankle"):
        assert name in lm
    v = body.template_vertices.numpy()
    heads = body.template_heads.numpy()
    J = JOINT_NAMES
    nose, lear, rear = (v[lm[n][1]] for n in ("nose", "left_ear", "right_ear"))
    assert abs(nose[0]) < 0.02 and nose[2] > heads[J.index("left_eye_smplhf"), 2]
    assert lear[0] > 0.05 and rear[0] < -0.05
    for side in ("left", "right"):
        heel, toe = v[lm[f"{side}_heel"][1]], v[lm[f"{side}_foot_index"][1]]
        ankle = heads[J.index(f"{side}_ankle")]
        assert heel[1] < ankle[1] and toe[1] < ankle[1] and heel[2] < ankle[2] < toe[2]


def test_zero_pose_is_rest_and_posing_matches_the_smplx_package(body, model_path):
    import smplx

    from models.fit.fit_body import posed_vertices

    J = len(body.joint_names)
    with torch.no_grad():
        rest = body.rest_vertices(body.shape_coeffs(torch.as_tensor(BETAS)[None]))[0].numpy()
    assert np.abs(posed_vertices(body, BETAS, np.zeros((J, 3), np.float32)) - rest).max() < 1e-6
    # A pose here is an SMPL-X pose: the package's own LBS gives the same vertices
    # (the synthetic file's pose correctives are zero, which our skinning leaves out).
    pose = _pose(body)
    ours = posed_vertices(body, BETAS, pose)
    m = smplx.SMPLX(str(model_path), ext="npz", use_pca=False, num_betas=10)
    with torch.no_grad():
        ref, joints = smplx.lbs.lbs(torch.as_tensor(BETAS)[None], torch.as_tensor(pose).reshape(1, -1),
                                    m.v_template, m.shapedirs, m.posedirs, m.J_regressor, m.parents,
                                    m.lbs_weights)
        heads = body.rest_heads(torch.as_tensor(BETAS)[None])
        A = forward_kinematics(axis_angle_to_matrix(torch.as_tensor(pose)[None]), heads, body.parents)[0]
        posed_heads = (A[:, :3, :3] @ heads[0][..., None])[..., 0] + A[:, :3, 3]
    assert np.abs(ours - ref[0].numpy()).max() < 1e-5
    assert np.abs(posed_heads.numpy() - joints[0].numpy()).max() < 1e-5


def test_bundle_writes_reads_and_renders(body, tmp_path):
    from models.bake import bake, build_avatar_mesh
    from models.bundle.gltf import read_glb
    from models.render.player import AvatarPlayer

    tex = np.zeros((64, 64, 3), np.uint8)
    tex[..., 0] = np.arange(64)[:, None] * 4
    tex[..., 1] = 200
    mesh = build_avatar_mesh(body, BETAS, tex, extras={"note": "synthetic"})
    assert mesh.extras["body_model"] == "smplx"
    assert mesh.extras["canonical_joints"]["left_elbow"] == "left_elbow"
    assert list(mesh.extras["shape_params"]) == body.shape_labels
    out = tmp_path / "avatar.glb"
    bake(body, BETAS, tex, out)
    back = read_glb(out)
    assert back.joint_names == JOINT_NAMES and back.num_vertices == mesh.num_vertices
    assert np.allclose(back.positions, mesh.positions, atol=1e-6)
    assert np.allclose(back.rest_matrices[:, :3, 3], body.rest_joint_matrices(BETAS)[:, :3, 3], atol=1e-6)
    assert back.extras["canonical_joints"] == mesh.extras["canonical_joints"]
    player = AvatarPlayer(back, backend="cpu")
    frames = list(player.frames("turntable", 96, 4, 2))
    assert len(frames) == 2 and frames[0].shape == (96, 96, 3)
    person = (np.abs(frames[0].astype(int) - 255).sum(-1) > 30).mean()
    assert 0.02 < person < 0.8
    walk = list(player.frames("walk", 64, 10, 2))  # retargeted through canonical_joints
    assert (np.abs(walk[1].astype(int) - 255).sum(-1) > 30).any()


def test_older_files_with_ten_shape_and_ten_expression_directions_load(tmp_path):
    full = np.load(write_synthetic_smplx(tmp_path / "full.npz"))["shapedirs"]
    path = write_synthetic_smplx(tmp_path / "folder" / "SMPLX_NEUTRAL.npz",
                                 shapedirs=np.concatenate([full[:, :, :10], full[:, :, 300:310]], 2))
    body = SmplxBody(path.parent)  # a folder holding SMPLX_NEUTRAL.npz is accepted too
    assert body.blendshapes.shape[0] == 10
    assert np.allclose(body.blendshapes.permute(1, 2, 0).numpy(), full[:, :, :10], atol=1e-6)


def test_missing_file_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(SETTING, str(tmp_path / "nowhere" / "SMPLX_NEUTRAL.npz"))
    with pytest.raises(ModelAssetError) as err:
        get_body("smplx")
    msg = str(err.value)
    assert SETTING in msg and "smpl-x.is.tue.mpg.de" in msg and "nowhere" in msg
    assert err.value.code == "model_asset_missing"
    monkeypatch.delenv(SETTING)
    with pytest.raises(ModelAssetError, match=SETTING):
        get_body("smplx")
    with pytest.raises(ModelAssetError, match=SETTING):  # a folder without the file
        SmplxBody(tmp_path)


def _bad_npz(path):
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").rename(path)


MALFORMED = {
    "not an npz": (lambda p: p.write_text("definitely not a model"), "not an .npz (zip) archive"),
    "empty file": (lambda p: p.write_bytes(b""), "not an .npz (zip) archive"),
    "a single .npy": (_bad_npz, "single .npy array"),
    "missing J_regressor": (lambda p: write_synthetic_smplx(p, drop=("J_regressor",)), "lacks J_regressor"),
    "missing shapedirs and f": (lambda p: write_synthetic_smplx(p, drop=("shapedirs", "f")), "lacks f, shapedirs"),
    "no UVs": (lambda p: write_synthetic_smplx(p, drop=("vt", "ft")), "UVs are required"),
    "J_regressor shape": (lambda p: write_synthetic_smplx(p, J_regressor=np.zeros((54, 10))), "J_regressor must be"),
    "weights shape": (lambda p: write_synthetic_smplx(p, weights=np.full((586, 54), 1 / 54)), "weights must be"),
    "weights do not sum to 1": (lambda p: write_synthetic_smplx(p, weights=np.full((586, 55), 0.5)), "sum to 1"),
    "kintree_table shape": (lambda p: write_synthetic_smplx(p, kintree_table=np.zeros((2, 30), np.int64)), "parents"),
    "ft out of range": (lambda p: write_synthetic_smplx(p, ft=np.full((1072, 3), 99999, np.uint32)), "ft must"),
    "ft wrong shape": (lambda p: write_synthetic_smplx(p, ft=np.zeros((5, 3), np.uint32)), "must match f"),
    "vt not 2D": (lambda p: write_synthetic_smplx(p, vt=np.zeros((10, 3))), "vt must"),
    "v_template shape": (lambda p: write_synthetic_smplx(p, v_template=np.zeros((586, 2))), "v_template must be"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_is_one_clear_error(case, tmp_path, monkeypatch):
    make, expected = MALFORMED[case]
    path = tmp_path / "SMPLX_NEUTRAL.npz"
    make(path)
    monkeypatch.setenv(SETTING, str(path))
    with pytest.raises(ModelAssetError) as err:
        _ = get_body("smplx").topology  # loads and builds everything
    msg = str(err.value)
    assert expected in msg and SETTING in msg and "smpl-x.is.tue.mpg.de" in msg, msg


def test_body_model_setting(monkeypatch):
    monkeypatch.setenv("AVATARS_BODY_MODEL", "smpl-h")
    with pytest.raises(ModelAssetError) as err:
        get_body()
    assert "AVATARS_BODY_MODEL" in str(err.value) and "anny, smplx" in str(err.value)
    # The default (and "anny") is Anny's process-wide instance, built once.
    sentinel = object()
    from models.body import anny_body

    monkeypatch.setattr(registry, "_cache", {})
    monkeypatch.setattr(anny_body, "get_anny", lambda: sentinel)
    monkeypatch.delenv("AVATARS_BODY_MODEL")
    assert get_body() is sentinel and get_body("ANNY") is sentinel
    monkeypatch.setenv("AVATARS_BODY_MODEL", "")
    assert get_body() is sentinel


def test_fit_recovers_a_synthetic_detection(body):
    """Project the posed synthetic body's landmarks through a camera; the fit closes the gap."""
    from models.detect.base import Detection
    from models.fit.camera import Camera, clip_from_camera, default_intrinsics
    from models.fit.fit_body import fit_body, posed_vertices
    from models.raster import get_backend

    top = body.topology
    pose = np.zeros((55, 3), np.float32)
    truth = _pose(body)
    for n in body.fit_joints:  # the fit rotates only these
        pose[JOINT_NAMES.index(n)] = truth[JOINT_NAMES.index(n)]
    verts = posed_vertices(body, BETAS, pose)
    with torch.no_grad():
        heads = body.rest_heads(torch.as_tensor(BETAS)[None])
        A = forward_kinematics(axis_angle_to_matrix(torch.as_tensor(pose)[None]), heads, body.parents)[0]
        joints = ((A[:, :3, :3] @ heads[0][..., None])[..., 0] + A[:, :3, 3]).numpy()
    size = 256
    K = default_intrinsics(size, size)
    yaw = np.radians(10)
    R_body = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    R = np.diag([1.0, -1.0, -1.0]) @ R_body  # facing the camera, upright
    lo, hi = verts.min(0), verts.max(0)
    t = np.array([0.0, 0.0, K[1, 1] * (hi[1] - lo[1]) / (0.8 * size)]) - R @ ((lo + hi) / 2)
    cam = Camera(K=K, R=R.astype(np.float32), t=t.astype(np.float32), width=size, height=size)
    kp = np.zeros((33, 3), np.float32)
    for name, (kind, i) in top.landmarks.items():
        p = joints[i] if kind == "joint" else verts[i]
        uv, _ = cam.project(p[None])
        kp[MEDIAPIPE_33.index(name)] = [uv[0, 0], uv[0, 1], 1.0]
    split = verts[top.source_vertex]
    clip = np.concatenate([split, np.ones((len(split), 1), np.float32)], 1) @ clip_from_camera(cam).T
    rast = get_backend("cpu").rasterize(clip.astype(np.float32), top.faces, (size, size))[::-1]
    mask = (rast[..., 3] > 0).astype(np.float32)
    assert 0.05 < mask.mean() < 0.6
    det = Detection(keypoints=kp, mask=mask)

    before = fit_body(body, [det], iterations=(0, 0)).keypoint_error_pct[0]
    fit = fit_body(body, [det])
    after = fit.keypoint_error_pct[0]
    assert after < 0.3 * before and after < 2.0, (before, after)
    assert fit.shape.shape == (10,) and np.abs(fit.shape).max() <= 3.0
    assert fit.poses.shape == (1, 55, 3)
