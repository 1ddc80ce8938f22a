"""Pose sequences: AMASS npz, BVH and JSON imports onto the canonical joints, playback,
resampling, and a clear ``MotionImportError`` for every malformed input.

All files are built here (small AMASS-like npz files, Mixamo / CMU-like BVH rigs).
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from models.animation.canonical import CANONICAL_NAMES, CANONICAL_PARENTS
from models.animation.importers import (
    MAX_FRAMES,
    MotionImportError,
    bvh_joint_mapping,
    load_amass_npz,
    load_bvh,
    load_json,
    load_motion,
    normalize_joint_name,
    parse_bvh,
)
from models.animation.motions import MotionFrame
from models.animation.sequence import MotionSequence
from models.render.rotations import rot_x, rot_y, rot_z


# ============================================================================ helpers
def global_rotations(frame: MotionFrame) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, parent in zip(CANONICAL_NAMES, CANONICAL_PARENTS, strict=True):
        R = frame.rotations[name]
        out[name] = R if parent < 0 else out[CANONICAL_NAMES[parent]] @ R
    return out


def direction(frame: MotionFrame, joint: str, rest_dir) -> np.ndarray:
    return global_rotations(frame)[joint] @ np.asarray(rest_dir, float)


ROT3 = "Zrotation Xrotation Yrotation"
ROOT6 = "Xposition Yposition Zposition Zrotation Xrotation Yrotation"


def mixamo_rig(prefix: str = "", arm_down_deg: float = 0.0, scale: float = 1.0):
    """A Mixamo-like rig in centimetres (y up, facing +z, ~170 units tall):
    (name, parent index, offset, channels). arm_down_deg: rest arms lowered (A-pose)."""
    a = np.radians(arm_down_deg)

    def arm(sx: float, length: float) -> tuple[float, float, float]:
        return (sx * length * np.cos(a), -length * np.sin(a), 0.0)

    joints = [
        ("Hips", -1, (0, 100, 0), ROOT6),
        ("Spine", 0, (0, 10, 0), ROT3),
        ("Spine1", 1, (0, 10, 0), ROT3),
        ("Spine2", 2, (0, 10, 0), ROT3),
        ("Neck", 3, (0, 15, 0), ROT3),
        ("Head", 4, (0, 10, 0), ROT3),
        ("LeftShoulder", 3, (5, 10, 0), ROT3),
        ("LeftArm", 6, (10, 0, 0), ROT3),
        ("LeftForeArm", 7, arm(1, 25), ROT3),
        ("LeftHand", 8, arm(1, 25), ROT3),
        ("RightShoulder", 3, (-5, 10, 0), ROT3),
        ("RightArm", 10, (-10, 0, 0), ROT3),
        ("RightForeArm", 11, arm(-1, 25), ROT3),
        ("RightHand", 12, arm(-1, 25), ROT3),
        ("LeftUpLeg", 0, (10, -5, 0), ROT3),
        ("LeftLeg", 14, (0, -45, 0), ROT3),
        ("LeftFoot", 15, (0, -45, 0), ROT3),
        ("LeftToeBase", 16, (0, -5, 12), ROT3),
        ("RightUpLeg", 0, (-10, -5, 0), ROT3),
        ("RightLeg", 18, (0, -45, 0), ROT3),
        ("RightFoot", 19, (0, -45, 0), ROT3),
        ("RightToeBase", 20, (0, -5, 12), ROT3),
    ]
    return [(prefix + n, p, tuple(scale * np.asarray(o, float)), c) for n, p, o, c in joints]


def channel_index(joints, name: str, channel: str) -> int:
    k = 0
    for n, _, _, chans in joints:
        names = chans.split()
        if n == name:
            return k + names.index(channel)
        k += len(names)
    raise KeyError(name)


def n_channels(joints) -> int:
    return sum(len(c.split()) for *_, c in joints)


def bvh_text(joints, frames, frame_time: float = 1 / 30) -> str:
    children = {i: [j for j, jt in enumerate(joints) if jt[1] == i] for i in range(len(joints))}
    out = ["HIERARCHY"]

    def emit(i: int, depth: int) -> None:
        name, parent, off, chans = joints[i]
        ind = "\t" * depth
        out.append(f"{ind}{'ROOT' if parent < 0 else 'JOINT'} {name}")
        out.append(ind + "{")
        out.append(f"{ind}\tOFFSET {off[0]:.6f} {off[1]:.6f} {off[2]:.6f}")
        out.append(f"{ind}\tCHANNELS {len(chans.split())} {chans}")
        for c in children[i]:
            emit(c, depth + 1)
        if not children[i]:
            out.extend(
                [ind + "\tEnd Site", ind + "\t{", ind + "\t\tOFFSET 0.0 5.0 0.0", ind + "\t}"]
            )
        out.append(ind + "}")

    emit(0, 0)
    out += ["MOTION", f"Frames: {len(frames)}", f"Frame Time: {frame_time:.8f}"]
    out += [" ".join(f"{v:.6f}" for v in f) for f in frames]
    return "\n".join(out) + "\n"


def arm_raise_frames(
    joints,
    n: int = 10,
    arm: str = "LeftArm",
    channel: str = "Zrotation",
    start: float = 0.0,
    end: float = 90.0,
    root_y: float = 100.0,
    lift: float = 0.0,
) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        f = np.zeros(n_channels(joints))
        f[channel_index(joints, joints[0][0], "Yposition")] = root_y + lift * i / (n - 1)
        f[channel_index(joints, arm, channel)] = start + (end - start) * i / (n - 1)
        frames.append(f)
    return frames


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def amass(
    n: int = 12, width: int = 165, rate: float = 120.0, key: str = "mocap_framerate", **overrides
) -> dict:
    poses = np.zeros((n, width))
    poses[:, :3] = [np.pi / 2, 0, 0]  # standing upright in AMASS's z-up world
    trans = np.zeros((n, 3))
    trans[:, 2] = 0.9 + 0.01 * np.arange(n)  # rising (z up)
    trans[:, 0] = 2.0  # somewhere in the room
    arrays = {"poses": poses, "trans": trans, key: np.array(rate)}
    arrays.update(overrides)
    return arrays


# ============================================================================ BVH
def test_bvh_left_arm_raise_maps_to_left_shoulder_lifting_the_arm() -> None:
    joints = mixamo_rig()
    seq = load_bvh(bvh_text(joints, arm_raise_frames(joints)).encode())
    assert isinstance(seq, MotionSequence)
    assert seq.num_frames == 10 and seq.fps == pytest.approx(30.0)
    for i in range(10):
        frame = seq.frame(i / 30)
        up = 90.0 * i / 9
        d = direction(frame, "left_shoulder", (1, 0, 0))
        expected = [np.cos(np.radians(up)), np.sin(np.radians(up)), 0]
        np.testing.assert_allclose(d, expected, atol=1e-6)
        # the rotation sits on the canonical shoulder, not on the collar or the spine
        np.testing.assert_allclose(frame.rotations["left_shoulder"], rot_z(up), atol=1e-6)
        np.testing.assert_allclose(frame.rotations["left_collar"], np.eye(3), atol=1e-6)
        np.testing.assert_allclose(frame.rotations["spine3"], np.eye(3), atol=1e-6)
        # the right arm stays in the T-pose, the forearm follows the upper arm
        np.testing.assert_allclose(
            direction(frame, "right_shoulder", (-1, 0, 0)), [-1, 0, 0], atol=1e-6
        )
        np.testing.assert_allclose(direction(frame, "left_elbow", (1, 0, 0)), expected, atol=1e-6)
    final = seq.frame(9 / 30)
    assert direction(final, "left_shoulder", (1, 0, 0))[1] > 0.99  # the arm points up


def test_bvh_mixamorig_prefix_gives_the_same_motion() -> None:
    plain = mixamo_rig()
    prefixed = mixamo_rig("mixamorig:")
    a = load_bvh(bvh_text(plain, arm_raise_frames(plain)).encode())
    b = load_bvh(bvh_text(prefixed, arm_raise_frames(prefixed, arm="mixamorig:LeftArm")).encode())
    np.testing.assert_allclose(a.rotations, b.rotations, atol=1e-9)
    np.testing.assert_allclose(a.root_translation, b.root_translation, atol=1e-9)


def test_bvh_name_table_and_spine_chain() -> None:
    assert normalize_joint_name("mixamorig:LeftArm") == "leftarm"
    assert normalize_joint_name("mixamorig_LeftForeArm") == "leftforearm"
    assert normalize_joint_name("Bip01 L Thigh") == "lthigh"
    joints = mixamo_rig("mixamorig:")
    bvh = parse_bvh(bvh_text(joints, arm_raise_frames(joints, arm="mixamorig:LeftArm")))
    names = [j.name for j in bvh.joints]
    mapping = {c: names[j] for c, j in bvh_joint_mapping(bvh.joints).items()}
    assert mapping["pelvis"] == "mixamorig:Hips"
    assert mapping["spine1"] == "mixamorig:Spine"
    assert mapping["spine2"] == "mixamorig:Spine1"
    assert mapping["spine3"] == "mixamorig:Spine2"
    assert mapping["left_collar"] == "mixamorig:LeftShoulder"
    assert mapping["left_shoulder"] == "mixamorig:LeftArm"
    assert mapping["left_elbow"] == "mixamorig:LeftForeArm"
    assert mapping["left_wrist"] == "mixamorig:LeftHand"
    assert mapping["left_hip"] == "mixamorig:LeftUpLeg"
    assert mapping["left_knee"] == "mixamorig:LeftLeg"
    assert mapping["left_ankle"] == "mixamorig:LeftFoot"
    assert mapping["left_foot"] == "mixamorig:LeftToeBase"
    assert mapping["right_elbow"] == "mixamorig:RightForeArm"
    assert mapping["neck"] == "mixamorig:Neck" and mapping["head"] == "mixamorig:Head"


def test_bvh_cmu_style_spine_chain() -> None:
    """CMU: Hips - LowerBack - Spine - Spine1 - Neck - Neck1 - Head; the spine joints are
    assigned by their place in the chain, not by name."""
    joints = [
        ("Hips", -1, (0, 0, 0), ROOT6),
        ("LowerBack", 0, (0, 2, 0), ROT3),
        ("Spine", 1, (0, 2, 0), ROT3),
        ("Spine1", 2, (0, 2, 0), ROT3),
        ("Neck", 3, (0, 2, 0), ROT3),
        ("Neck1", 4, (0, 1, 0), ROT3),
        ("Head", 5, (0, 1, 0), ROT3),
        ("LeftShoulder", 3, (1, 1, 0), ROT3),
        ("LeftArm", 7, (2, 0, 0), ROT3),
        ("LeftForeArm", 8, (4, 0, 0), ROT3),
        ("LeftHand", 9, (4, 0, 0), ROT3),
        ("LHipJoint", 0, (0, 0, 0), ROT3),
        ("LeftUpLeg", 11, (1.5, -1, 0), ROT3),
        ("LeftLeg", 12, (0, -7, 0), ROT3),
        ("LeftFoot", 13, (0, -7, 0), ROT3),
    ]
    bvh = parse_bvh(bvh_text(joints, [np.zeros(n_channels(joints))]))
    names = [j.name for j in bvh.joints]
    mapping = {c: names[j] for c, j in bvh_joint_mapping(bvh.joints).items()}
    assert (mapping["spine1"], mapping["spine2"], mapping["spine3"]) == (
        "LowerBack",
        "Spine",
        "Spine1",
    )
    assert mapping["neck"] == "Neck" and mapping["head"] == "Head"
    assert "LHipJoint" not in mapping.values()


def test_bvh_a_pose_rest_is_retargeted_to_the_t_pose() -> None:
    """Arms resting 45 degrees down: raising LeftArm by 45 degrees makes it horizontal,
    which is the canonical T-pose (identity); at rest the arm points 45 degrees down."""
    joints = mixamo_rig(arm_down_deg=45)
    seq = load_bvh(bvh_text(joints, arm_raise_frames(joints, n=2, start=0, end=45)))
    down = np.array([np.cos(np.radians(45)), -np.sin(np.radians(45)), 0])
    np.testing.assert_allclose(
        direction(seq.frame(0.0), "left_shoulder", (1, 0, 0)), down, atol=1e-6
    )
    np.testing.assert_allclose(seq.frame(1 / 30).rotations["left_shoulder"], np.eye(3), atol=1e-6)
    right_down = np.array([-np.cos(np.radians(45)), -np.sin(np.radians(45)), 0])
    np.testing.assert_allclose(
        direction(seq.frame(0.0), "right_shoulder", (-1, 0, 0)), right_down, atol=1e-6
    )


def test_bvh_z_up_rig_in_metres_matches_the_y_up_rig() -> None:
    """A z-up rig facing -y (Blender's convention), in metres, plays the same motion."""
    to_zup = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], float)  # glTF (x, y, z) -> (x, -z, y)
    y_up = mixamo_rig()
    z_up = [(n, p, tuple(to_zup @ np.asarray(o) / 100.0), c) for n, p, o, c in y_up]
    frames_y = arm_raise_frames(y_up, lift=10.0)
    frames_z = []
    for f in frames_y:
        g = np.zeros_like(f)
        g[channel_index(z_up, "Hips", "Zposition")] = (
            f[channel_index(y_up, "Hips", "Yposition")] / 100
        )
        # a rotation about glTF +z (forward) is a rotation about -y in this rig
        g[channel_index(z_up, "LeftArm", "Yrotation")] = -f[
            channel_index(y_up, "LeftArm", "Zrotation")
        ]
        frames_z.append(g)
    a = load_bvh(bvh_text(y_up, frames_y))
    b = load_bvh(bvh_text(z_up, frames_z))
    np.testing.assert_allclose(a.rotations, b.rotations, atol=1e-6)
    np.testing.assert_allclose(a.root_translation, b.root_translation, atol=1e-6)


def test_bvh_centimetres_become_metres_and_translation_is_relative() -> None:
    joints = mixamo_rig()  # ~170 units tall
    frames = arm_raise_frames(joints, lift=20.0)
    for i, f in enumerate(frames):
        f[channel_index(joints, "Hips", "Xposition")] = 300.0  # far from the origin
        f[channel_index(joints, "Hips", "Zposition")] = 50.0 + 10.0 * i  # walking forward
    seq = load_bvh(bvh_text(joints, frames))
    np.testing.assert_allclose(seq.root_translation[0], [0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(seq.root_translation[-1], [0, 0.20, 0.90], atol=1e-6)


def test_bvh_euler_order_follows_the_channel_declaration() -> None:
    for order in (
        "Zrotation Xrotation Yrotation",
        "Xrotation Yrotation Zrotation",
        "Yrotation Zrotation Xrotation",
    ):
        joints = [(n, p, o, ROOT6 if p < 0 else order) for n, p, o, _ in mixamo_rig()]
        f = np.zeros(n_channels(joints))
        angles = {"Xrotation": 20.0, "Yrotation": -35.0, "Zrotation": 50.0}
        for ch, v in angles.items():
            f[channel_index(joints, "LeftForeArm", ch)] = v
        seq = load_bvh(bvh_text(joints, [f]))
        axis = {"Xrotation": rot_x, "Yrotation": rot_y, "Zrotation": rot_z}
        expected = np.eye(3)
        for ch in order.split():
            expected = expected @ axis[ch](angles[ch])
        np.testing.assert_allclose(
            seq.rotations[0, CANONICAL_NAMES.index("left_elbow")], expected, atol=1e-9
        )


def test_bvh_frame_time_and_resampling() -> None:
    joints = mixamo_rig()
    text = bvh_text(joints, arm_raise_frames(joints), frame_time=1 / 30)
    full = load_bvh(text)
    seq = load_bvh(text, fps=10)
    assert seq.fps == 10 and seq.num_frames == 4  # 10 frames at 30 fps last 1/3 s
    for k in range(4):
        np.testing.assert_allclose(seq.rotations[k], full.rotations[3 * k], atol=1e-9)
    up = load_bvh(text, fps=60)
    assert up.num_frames == 20
    mid = up.rotations[1, CANONICAL_NAMES.index("left_shoulder")]  # halfway between frames 0, 1
    np.testing.assert_allclose(mid, rot_z(5.0), atol=1e-6)


# ============================================================================ AMASS npz
def test_amass_z_up_is_converted_to_y_up() -> None:
    seq = load_amass_npz(npz_bytes(**amass()))
    assert seq.num_frames == 12 and seq.fps == 120
    # upright in z-up AMASS -> upright (identity) in glTF's y-up
    np.testing.assert_allclose(seq.rotations[:, 0], np.tile(np.eye(3), (12, 1, 1)), atol=1e-9)
    # translation relative to the first frame; AMASS's rising z is our y
    np.testing.assert_allclose(seq.root_translation[0], 0, atol=1e-12)
    np.testing.assert_allclose(seq.root_translation[:, 1], 0.01 * np.arange(12), atol=1e-12)
    np.testing.assert_allclose(seq.root_translation[:, [0, 2]], 0, atol=1e-12)


def test_amass_heading_and_body_joints() -> None:
    arrays = amass(n=2)
    yaw = 0.7
    heading = Rotation.from_rotvec([0, 0, yaw]) * Rotation.from_rotvec([np.pi / 2, 0, 0])
    arrays["poses"][:, :3] = heading.as_rotvec()
    arrays["poses"][:, 18 * 3 : 18 * 3 + 3] = [0, 0.5, 0]  # left_elbow
    arrays["trans"][1] = arrays["trans"][0] + [0, 1.0, 0]  # one metre along AMASS +y
    seq = load_amass_npz(npz_bytes(**arrays))
    np.testing.assert_allclose(seq.rotations[0, 0], rot_y(np.degrees(yaw)), atol=1e-9)
    np.testing.assert_allclose(
        seq.rotations[0, CANONICAL_NAMES.index("left_elbow")],
        Rotation.from_rotvec([0, 0.5, 0]).as_matrix(),
        atol=1e-9,
    )
    np.testing.assert_allclose(seq.root_translation[1], [0, 0, -1.0], atol=1e-9)  # +y -> -z
    facing = load_amass_npz(npz_bytes(**arrays), face_forward=True)
    np.testing.assert_allclose(facing.rotations[0, 0], np.eye(3), atol=1e-9)


@pytest.mark.parametrize("width", [165, 156, 72, 66])
def test_amass_pose_widths_and_frame_rate_keys(width: int) -> None:
    for key in ("mocap_framerate", "mocap_frame_rate"):
        seq = load_amass_npz(npz_bytes(**amass(width=width, key=key)))
        assert seq.rotations.shape == (12, 22, 3, 3)


def test_amass_resampling() -> None:
    arrays = amass(n=12, rate=120)
    arrays["poses"][:, 16 * 3 + 2] = np.radians(np.arange(12) * 5.0)  # left_shoulder about z
    full = load_amass_npz(npz_bytes(**arrays))
    seq = load_amass_npz(npz_bytes(**arrays), fps=30)
    assert seq.fps == 30 and seq.num_frames == 3
    for k in range(3):
        np.testing.assert_allclose(seq.rotations[k], full.rotations[4 * k], atol=1e-9)
        np.testing.assert_allclose(
            seq.root_translation[k], full.root_translation[4 * k], atol=1e-12
        )
    # playing at a time between source frames slerps
    between = full.frame(0.5 / 120).rotations["left_shoulder"]
    np.testing.assert_allclose(between, rot_z(2.5), atol=1e-9)


def test_load_motion_recognises_the_format_from_the_content() -> None:
    joints = mixamo_rig()
    bvh = bvh_text(joints, arm_raise_frames(joints)).encode()
    npz = npz_bytes(**amass())
    js = json.dumps({"fps": 10, "frames": [{"rotations": {"head": [0, 0.2, 0]}}]}).encode()
    assert load_motion(bvh, "walk.txt").num_frames == 10
    assert load_motion(npz, "motion.bin").num_frames == 12
    assert load_motion(js, None).num_frames == 1


# ============================================================================ JSON / sequence
def test_json_sequence_plays_and_loops() -> None:
    data = {
        "fps": 2,
        "frames": [
            {"rotations": {"left_elbow": [0, 0, 0]}, "root_translation": [0, 0, 0]},
            {"rotations": {"left_elbow": [0, 0, np.pi / 2]}, "root_translation": [0, 0.2, 0]},
        ],
    }
    seq = load_json(json.dumps(data))
    assert seq.duration_s == 1.0 and seq.frames_at(30) == 30
    np.testing.assert_allclose(seq.frame(0.5).rotations["left_elbow"], rot_z(90), atol=1e-9)
    np.testing.assert_allclose(seq.frame(0.25).rotations["left_elbow"], rot_z(45), atol=1e-9)
    np.testing.assert_allclose(seq.frame(0.25).root_translation, [0, 0.1, 0], atol=1e-12)
    np.testing.assert_allclose(
        seq.frame(1.25).rotations["left_elbow"], rot_z(45), atol=1e-9
    )  # loops
    np.testing.assert_allclose(seq.frame(0.9).rotations["left_elbow"], rot_z(90), atol=1e-9)  # held
    np.testing.assert_allclose(
        seq.frame(0.3, interpolate=False).rotations["left_elbow"], rot_z(90), atol=1e-9
    )  # nearest
    assert set(seq.frame(0).rotations) == set(CANONICAL_NAMES)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "must be an object"),
        (b'{"fps": 30}', "non-empty list"),
        (b'{"fps": 30, "frames": []}', "non-empty list"),
        (b'{"fps": -1, "frames": [{}]}', "fps"),
        (b'{"fps": "fast", "frames": [{}]}', "fps"),
        (b'{"fps": 30, "frames": [{"rotations": {"left_tentacle": [0, 0, 0]}}]}', "left_tentacle"),
        (b'{"fps": 30, "frames": [{"rotations": {"head": [0, 0]}}]}', "3 numbers"),
        (b'{"fps": 30, "frames": [{"rotations": {"head": [0, "a", 0]}}]}', "3 numbers"),
        (b'{"fps": 30, "frames": [{"rotations": {"head": [0, NaN, 0]}}]}', "non-finite"),
        (b'{"fps": 30, "frames": [{"root_translation": [0, 1e999, 0]}]}', "non-finite"),
        (b'{"fps": 30, "frames": [{"rotation": {}}]}', "unknown keys"),
        (b'{"fps": 30, "frames": [5]}', "must be an object"),
    ],
)
def test_malformed_json_raises(payload: bytes, message: str) -> None:
    with pytest.raises(MotionImportError, match=message):
        load_json(payload)
    with pytest.raises(ValueError):  # MotionImportError is a ValueError
        load_motion(payload, "m.json")


def test_unknown_joint_error_lists_the_known_joints() -> None:
    with pytest.raises(MotionImportError) as err:
        MotionSequence.from_json({"frames": [{"rotations": {"LeftArm": [0, 0, 1]}}]})
    assert "LeftArm" in str(err.value) and "left_shoulder" in str(err.value)


def test_json_too_many_frames() -> None:
    with pytest.raises(MotionImportError, match="at most"):
        load_json(json.dumps({"fps": 30, "frames": [{}] * (MAX_FRAMES + 1)}))


# ============================================================================ malformed npz
def _object_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(
        buf,
        poses=np.array([{"evil": 1}], dtype=object),
        trans=np.zeros((1, 3)),
        mocap_framerate=np.array(30.0),
    )
    return buf.getvalue()


def _huge_header_npz() -> bytes:
    """poses claims 10^9 frames in its header but holds almost no data."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**9, 165)}
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    npy.write(b"\x00" * 64)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("poses.npy", npy.getvalue())
        zf.writestr("trans.npy", _npy(np.zeros((1, 3))))
        zf.writestr("mocap_framerate.npy", _npy(np.array(30.0)))
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _nan(key: str) -> bytes:
    arrays = amass()
    arrays[key] = arrays[key].copy()
    arrays[key].flat[5] = np.nan
    return npz_bytes(**arrays)


def _without(key: str) -> bytes:
    arrays = amass()
    del arrays[key]
    return npz_bytes(**arrays)


@pytest.mark.parametrize(
    "blob, message",
    [
        (b"hello, this is not a zip", "not an .npz"),
        (b"PK\x03\x04 truncated", "not a readable .npz"),
        (npz_bytes(**amass())[:200], "npz"),
        (_npy(np.zeros((3, 165))), "not an .npz"),
        (_without("poses"), "poses"),
        (_without("trans"), "trans"),
        (_without("mocap_framerate"), "mocap_framerate"),
        (npz_bytes(**amass(poses=np.zeros((12, 10)))), "shape"),
        (npz_bytes(**amass(poses=np.zeros((12, 165, 1)))), "shape"),
        (npz_bytes(**amass(poses=np.zeros((0, 165)), trans=np.zeros((0, 3)))), "no frames"),
        (npz_bytes(**amass(trans=np.zeros((12, 2)))), "trans"),
        (npz_bytes(**amass(trans=np.zeros((11, 3)))), "trans"),
        (npz_bytes(**amass(mocap_framerate=np.array([30.0, 60.0]))), "single number"),
        (npz_bytes(**amass(rate=0.0)), "frame rate"),
        (npz_bytes(**amass(rate=float("nan"))), "frame rate"),
        (npz_bytes(**amass(poses=np.array(["a"] * 12))), "numeric"),
        (_nan("poses"), "NaN"),
        (_nan("trans"), "NaN"),
        (_object_npz(), "numeric"),
        (_huge_header_npz(), "at most"),
    ],
)
def test_malformed_npz_raises(blob: bytes, message: str) -> None:
    with pytest.raises(MotionImportError, match=message):
        load_amass_npz(blob)


def test_npz_with_too_many_frames() -> None:
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        poses=np.zeros((MAX_FRAMES + 1, 66)),
        trans=np.zeros((MAX_FRAMES + 1, 3)),
        mocap_framerate=np.array(30.0),
    )
    with pytest.raises(MotionImportError, match="at most"):
        load_amass_npz(buf.getvalue())


# ============================================================================ malformed BVH
def _good_bvh() -> str:
    joints = mixamo_rig()
    return bvh_text(joints, arm_raise_frames(joints, n=3))


def _broken(old: str, new: str, count: int = 1) -> str:
    text = _good_bvh()
    assert old in text
    return text.replace(old, new, count)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("   \n\n", "empty"),
        ("HIERARCHY\n", "no MOTION"),
        ("ROOT Hips\n{\n}\n", "Unrecognised|HIERARCHY"),
        ("HIERARCHY\nROOT Hips\n{\n\tOFFSET 0 0 0\n", "no MOTION"),
        (_broken("HIERARCHY", "HIERARCHI"), "Unrecognised|HIERARCHY"),
        (_broken("\t}\n", "\n"), "closed|MOTION"),
        (_broken("MOTION", "}\nMOTION"), "unbalanced"),
        (_broken("OFFSET 0.000000 100.000000 0.000000", "OFFSET 0 abc 0"), "not a number"),
        (_broken("OFFSET 0.000000 100.000000 0.000000", "OFFSET 0 100"), "3 numbers"),
        (_broken("CHANNELS 6", "CHANNELS 5"), "declares"),
        (_broken("Zrotation Xrotation Yrotation", "Zrotation Wrotation Yrotation"), "channel"),
        (_broken("JOINT Spine\n", "JOINT\n"), "without a name"),
        (_broken("Frames: 3", "Frames: three"), "integer"),
        (_broken("Frames: 3", "Frames: 0"), "no frames"),
        (_broken("Frames: 3", f"Frames: {MAX_FRAMES + 1}"), "at most"),
        (_broken("Frame Time: 0.03333333", "Frame Time: 0"), "Frame Time"),
        (_broken("Frame Time: 0.03333333", "Frame Time: -1"), "Frame Time"),
        (_broken("Frame Time: 0.03333333", "Frame Time: nan"), "Frame Time"),
        (_broken("Frames: 3\n", ""), "Frames"),
        (_broken("Frames: 3", "Frames: 4"), "values"),
        (_good_bvh() + "1.0\n", "values"),
        (_broken("\n0.000000 100.000000", "\n0.000000 1x00"), "not a number"),
        (_broken("\n0.000000 100.000000", "\nnan 100"), "NaN"),
        (_broken("\tOFFSET 0.000000 10.000000", "\tBANANA 0 10", 1), "unexpected"),
    ],
)
def test_malformed_bvh_raises(text: str, message: str) -> None:
    with pytest.raises(MotionImportError, match=message):
        load_motion(text.encode(), "m.bvh")


def test_bvh_binary_garbage_raises() -> None:
    with pytest.raises(MotionImportError):
        load_motion(b"\x00\x01\x02garbage" * 10, "m.bvh")
    with pytest.raises(MotionImportError, match="binary"):
        load_bvh(b"HIERARCHY\x00\x00")


def test_bvh_without_mappable_joints_raises() -> None:
    joints = [
        ("Bone", -1, (0, 0, 0), ROOT6),
        ("Bone.001", 0, (0, 1, 0), ROT3),
        ("Bone.002", 1, (0, 1, 0), ROT3),
    ]
    with pytest.raises(MotionImportError, match="No joint of the BVH skeleton"):
        load_bvh(bvh_text(joints, [np.zeros(n_channels(joints))]))
    only_root = [("Hips", -1, (0, 0, 0), ROOT6), ("Bone", 0, (0, 1, 0), ROT3)]
    with pytest.raises(MotionImportError, match="Only the root"):
        load_bvh(bvh_text(only_root, [np.zeros(n_channels(only_root))]))


def test_sequence_validates_arrays() -> None:
    with pytest.raises(MotionImportError, match="shape"):
        MotionSequence(np.zeros((2, 21, 3, 3)), np.zeros((2, 3)), 30)
    with pytest.raises(MotionImportError, match="root_translation"):
        MotionSequence(np.tile(np.eye(3), (2, 22, 1, 1)), np.zeros((3, 3)), 30)
    with pytest.raises(MotionImportError, match="fps"):
        MotionSequence(np.tile(np.eye(3), (2, 22, 1, 1)), np.zeros((2, 3)), 0)
    bad = np.tile(np.eye(3), (2, 22, 1, 1))
    bad[1, 3, 0, 0] = np.nan
    with pytest.raises(MotionImportError, match="NaN"):
        MotionSequence(bad, np.zeros((2, 3)), 30)
