"""Import pose sequences from files: SMPL-X / SMPL-H / SMPL (AMASS) ``.npz``, BVH, JSON.

Every importer returns a ``MotionSequence`` on the canonical joints (SMPL-X body 22,
local rotations in world-aligned T-pose axes, glTF y up, facing +z, metres) and raises
``MotionImportError`` (a ``ValueError``) with a clear message for any malformed input.

- AMASS ``.npz``: ``poses`` [N,165|156|72|66] (global orient + 21 body joints as
  axis-angle in the first 66 values), ``trans`` [N,3], ``mocap_framerate`` (or
  ``mocap_frame_rate``). AMASS is z-up: the global orientation and the translation are
  rotated by -90 degrees about x. Arrays are read without pickle, after their headers
  were checked (shape, dtype), so a hostile file cannot allocate unbounded memory.
- BVH: the hierarchy (offsets, channels in their declared order) and the motion section
  are parsed, Euler channels become rotation matrices, joints are mapped to canonical
  joints by name (CMU / Mixamo-style, ``mixamorig:`` prefixes, ``_l``/``_r`` suffixes;
  the spine joints between the hips and the neck by position in the chain), and the BVH
  rest pose is retargeted to the canonical T-pose through global rotations and rest bone
  directions (models/render/retarget.py in reverse). The rig's up and left axes come
  from its rest pose, so z-up rigs and rigs facing -z are turned into glTF axes; lengths
  in centimetres or millimetres are converted to metres.
- JSON: ``MotionSequence.from_json`` (models/animation/sequence.py).

Root translations are made relative to the first frame (vertical motion is kept).
``fps`` resamples the sequence (slerp) to that frame rate. numpy + scipy only.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from models.animation.canonical import (
    CANONICAL_CHILD,
    CANONICAL_NAMES,
    CANONICAL_PARENTS,
    t_pose_direction,
)
from models.animation.sequence import (
    MAX_FPS,
    MAX_FRAMES,
    NUM_JOINTS,
    MotionImportError,
    MotionSequence,
)
from models.render.rotations import rotation_between

__all__ = [
    "MAX_FRAMES",
    "MotionImportError",
    "MotionSequence",
    "bvh_joint_mapping",
    "load_amass_npz",
    "load_bvh",
    "load_json",
    "load_motion",
]

#: SMPL-family pose widths: SMPL-X (165), SMPL-H (156), SMPL (72), body only (66).
POSE_WIDTHS = (165, 156, 72, 66)
#: AMASS world (z up) -> glTF (y up): -90 degrees about x.
Z_UP_TO_Y_UP = Rotation.from_rotvec([-np.pi / 2, 0.0, 0.0]).as_matrix()
MAX_BVH_JOINTS = 1024


def _as_bytes(data: bytes | bytearray | memoryview | str | Path) -> bytes:
    if isinstance(data, (str, Path)):
        try:
            return Path(data).read_bytes()
        except OSError as exc:
            raise MotionImportError(f"Cannot read the motion file: {exc}") from None
    return bytes(data)


def _finish(seq: MotionSequence, fps: float | None, face_forward: bool) -> MotionSequence:
    if face_forward:
        seq = face_forward_sequence(seq)
    if fps is not None:
        seq = seq.resample(float(fps))
    return seq


def face_forward_sequence(seq: MotionSequence) -> MotionSequence:
    """Turn the whole motion about the vertical so that the first frame faces +z."""
    f = seq.rotations[0, 0] @ np.array([0.0, 0.0, 1.0])
    if math.hypot(f[0], f[2]) < 1e-6:
        return seq
    yaw = math.atan2(f[0], f[2])
    turn = Rotation.from_rotvec([0.0, -yaw, 0.0]).as_matrix()
    rot = seq.rotations.copy()
    rot[:, 0] = turn @ rot[:, 0]
    trans = seq.root_translation @ turn.T
    return MotionSequence(rot, trans, seq.fps, seq.name, seq.description)


# ================================================================================ AMASS npz
#: What numpy / zipfile / zlib raise on a corrupt member (pickle is never allowed).
_READ_ERRORS = (
    ValueError,
    SyntaxError,
    TypeError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
)


def _npz_header(zf: zipfile.ZipFile, member: str) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(member) as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise MotionImportError(
                    f"Array {member!r} uses an unsupported .npy version {version}."
                )
        except MotionImportError:
            raise
        except _READ_ERRORS as exc:  # a broken header: ValueError, SyntaxError, ...
            raise MotionImportError(f"Array {member!r} is not a valid .npy array: {exc}") from None
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _npz_array(zf: zipfile.ZipFile, member: str) -> np.ndarray:
    with zf.open(member) as f:
        try:
            return np.lib.format.read_array(f, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise MotionImportError(f"Array {member!r} could not be read: {exc}") from None


def load_amass_npz(
    data,
    fps: float | None = None,
    z_up: bool = True,
    face_forward: bool = False,
    name: str = "amass",
) -> MotionSequence:
    """An AMASS / SMPL-X ``.npz`` (bytes or a path) -> ``MotionSequence``.

    ``z_up``: the file's world is z up (AMASS) and is turned into glTF's y up.
    ``fps``: resample to this frame rate (default: keep the file's).
    """
    raw = _as_bytes(data)
    if not raw.startswith(b"PK"):
        raise MotionImportError("The motion is not an .npz file (no zip signature).")
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
        members = zf.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise MotionImportError(f"The motion is not a readable .npz file: {exc}") from None
    with zf:
        arrays = {m[:-4]: m for m in members if m.endswith(".npy")}
        missing = [k for k in ("poses", "trans") if k not in arrays]
        rate_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in arrays), None)
        if rate_key is None:
            missing.append("mocap_framerate (or mocap_frame_rate)")
        if missing:
            raise MotionImportError(
                f"The .npz lacks the key(s) {', '.join(missing)}; "
                f"found: {', '.join(sorted(arrays)) or 'none'}."
            )

        shapes = {k: _npz_header(zf, arrays[k]) for k in ("poses", "trans", rate_key)}
        for key, (_, dtype) in shapes.items():
            if dtype.kind not in "fiu":
                raise MotionImportError(f"{key!r} must be numeric, got dtype {dtype}.")
        p_shape, t_shape, r_shape = shapes["poses"][0], shapes["trans"][0], shapes[rate_key][0]
        if len(p_shape) != 2 or p_shape[1] not in POSE_WIDTHS:
            raise MotionImportError(
                f"'poses' must have shape [N, 165] (SMPL-X), [N, 156] (SMPL-H), [N, 72] (SMPL) "
                f"or [N, 66], got {list(p_shape)}."
            )
        n = p_shape[0]
        if n < 1:
            raise MotionImportError("'poses' has no frames.")
        if n > MAX_FRAMES:
            raise MotionImportError(f"The motion has {n} frames; at most {MAX_FRAMES} are allowed.")
        if t_shape != (n, 3):
            raise MotionImportError(
                f"'trans' must have shape [{n}, 3] like 'poses', got {list(t_shape)}."
            )
        if int(np.prod(r_shape)) != 1:
            raise MotionImportError(
                f"{rate_key!r} must be a single number, got shape {list(r_shape)}."
            )
        poses = _npz_array(zf, arrays["poses"]).astype(np.float64)
        trans = _npz_array(zf, arrays["trans"]).astype(np.float64)
        rate = float(_npz_array(zf, arrays[rate_key]).reshape(()))

    if not (math.isfinite(rate) and 0 < rate <= MAX_FPS):
        raise MotionImportError(
            f"{rate_key!r} must be a frame rate in (0, {MAX_FPS:g}], got {rate!r}."
        )
    if not (np.isfinite(poses).all() and np.isfinite(trans).all()):
        raise MotionImportError("'poses' or 'trans' contains NaN or infinite values.")
    aa = poses[:, :66].reshape(n, NUM_JOINTS, 3)
    rot = Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(n, NUM_JOINTS, 3, 3)
    if z_up:
        rot[:, 0] = Z_UP_TO_Y_UP @ rot[:, 0]
        trans = trans @ Z_UP_TO_Y_UP.T
    trans = trans - trans[0]
    seq = MotionSequence(
        rot, trans, rate, name=name, description="An imported SMPL / AMASS motion."
    )
    return _finish(seq, fps, face_forward)


# ================================================================================ BVH
@dataclass
class BvhJoint:
    name: str
    parent: int
    offset: np.ndarray = field(default_factory=lambda: np.zeros(3))
    channels: list[str] = field(default_factory=list)
    channel_start: int = 0
    children: list[int] = field(default_factory=list)
    end_site: np.ndarray | None = None


@dataclass
class Bvh:
    joints: list[BvhJoint]
    frame_time: float
    motion: np.ndarray  # [N, channels]


_CHANNELS = {"xposition", "yposition", "zposition", "xrotation", "yrotation", "zrotation"}


def parse_bvh(text: str) -> Bvh:
    """Parse a BVH file's text; raises ``MotionImportError`` naming the line of an error."""
    lines = text.splitlines()
    k = 0
    while k < len(lines) and not lines[k].strip():
        k += 1
    if k >= len(lines) or lines[k].strip().upper() != "HIERARCHY":
        raise MotionImportError("Not a BVH file: it must start with HIERARCHY.")
    k += 1
    joints: list[BvhJoint] = []
    stack: list[tuple[str, int]] = []  # ("joint", index) or ("end", index of the owning joint)
    pending: tuple[str, int] | None = None
    n_channels = 0
    seen_root = False

    def fail(msg: str) -> MotionImportError:
        return MotionImportError(f"Broken BVH (line {k + 1}): {msg}")

    def numbers(tokens: list[str], count: int, what: str) -> list[float]:
        if len(tokens) != count:
            raise fail(f"{what} needs {count} numbers")
        try:
            vals = [float(t) for t in tokens]
        except ValueError:
            raise fail(f"{what} has a value that is not a number") from None
        if not all(math.isfinite(v) for v in vals):
            raise fail(f"{what} has a non-finite value")
        return vals

    while k < len(lines):
        line = lines[k].strip()
        if not line:
            k += 1
            continue
        tokens = line.split()
        kw = tokens[0].upper()
        opens = False
        if kw in ("ROOT", "JOINT"):
            if pending is not None:
                raise fail(f"{kw} before the '{{' of the previous joint")
            if kw == "ROOT":
                if stack or seen_root:
                    raise fail("only one ROOT is supported, at the top level")
                seen_root = True
            elif not stack or stack[-1][0] != "joint":
                raise fail("JOINT outside a joint")
            rest = line[len(tokens[0]) :].strip()
            if rest.endswith("{"):
                rest, opens = rest[:-1].strip(), True
            if not rest:
                raise fail(f"{kw} without a name")
            if len(joints) >= MAX_BVH_JOINTS:
                raise fail(f"more than {MAX_BVH_JOINTS} joints")
            parent = stack[-1][1] if stack else -1
            joints.append(BvhJoint(rest, parent))
            if parent >= 0:
                joints[parent].children.append(len(joints) - 1)
            pending = ("joint", len(joints) - 1)
        elif kw == "END":
            if len(tokens) < 2 or tokens[1].upper().rstrip("{") != "SITE":
                raise fail("expected 'End Site'")
            if pending is not None or not stack or stack[-1][0] != "joint":
                raise fail("End Site outside a joint")
            opens = line.endswith("{")
            pending = ("end", stack[-1][1])
        elif kw == "{":
            if len(tokens) != 1:
                raise fail("unexpected text after '{'")
            opens = True
        elif kw == "}":
            if len(tokens) != 1:
                raise fail("unexpected text after '}'")
            if pending is not None or not stack:
                raise fail("unbalanced '}'")
            stack.pop()
        elif kw == "OFFSET":
            if pending is not None or not stack:
                raise fail("OFFSET outside a joint")
            vals = np.array(numbers(tokens[1:], 3, "OFFSET"))
            kind, j = stack[-1]
            if kind == "joint":
                joints[j].offset = vals
            elif joints[j].end_site is None:
                joints[j].end_site = vals
        elif kw == "CHANNELS":
            if pending is not None or not stack or stack[-1][0] != "joint":
                raise fail("CHANNELS outside a joint")
            try:
                count = int(tokens[1])
            except (IndexError, ValueError):
                raise fail("CHANNELS needs a count") from None
            names = [t.lower() for t in tokens[2:]]
            if count != len(names) or count > 6:
                raise fail(f"CHANNELS declares {count} channels but names {len(names)}")
            bad = [t for t in names if t not in _CHANNELS]
            if bad or len(set(names)) != len(names):
                raise fail(f"unknown or repeated channel(s) {tokens[2:]}")
            j = stack[-1][1]
            if joints[j].channels:
                raise fail("a joint has two CHANNELS lines")
            joints[j].channels = names
            joints[j].channel_start = n_channels
            n_channels += count
        elif kw == "MOTION":
            break
        else:
            raise fail(f"unexpected {tokens[0]!r} in the hierarchy")
        if opens:
            if pending is None:
                raise fail("'{' without a ROOT, JOINT or End Site")
            stack.append(pending)
            pending = None
        k += 1

    if k >= len(lines):
        raise MotionImportError("Broken BVH: no MOTION section.")
    if stack or pending is not None:
        raise fail("MOTION before every '{' was closed")
    if not joints:
        raise fail("the hierarchy has no joints")
    if n_channels == 0:
        raise fail("no joint has CHANNELS")
    k += 1
    header: dict[str, str] = {}
    while k < len(lines) and len(header) < 2:
        line = lines[k].strip()
        k += 1
        if not line:
            continue
        key, sep, value = line.partition(":")
        key = " ".join(key.split()).lower()
        if not sep or key not in ("frames", "frame time"):
            raise MotionImportError(f"Broken BVH (line {k}): expected 'Frames:' and 'Frame Time:'.")
        header[key] = value.strip()
    if len(header) < 2:
        raise MotionImportError("Broken BVH: the MOTION section needs 'Frames:' and 'Frame Time:'.")
    try:
        n_frames = int(header["frames"])
        frame_time = float(header["frame time"])
    except ValueError:
        raise MotionImportError(
            "Broken BVH: 'Frames:' must be an integer and 'Frame Time:' a number."
        ) from None
    if n_frames < 1:
        raise MotionImportError("The BVH has no frames.")
    if n_frames > MAX_FRAMES:
        raise MotionImportError(
            f"The motion has {n_frames} frames; at most {MAX_FRAMES} are allowed."
        )
    if not (math.isfinite(frame_time) and frame_time > 0 and 1.0 / frame_time <= MAX_FPS):
        raise MotionImportError(
            "'Frame Time:' must be a positive number of seconds "
            f"(at most {MAX_FPS:g} fps), got {frame_time!r}."
        )
    expected = n_frames * n_channels
    remaining = sum(len(line) + 1 for line in lines[k:])
    if expected > remaining // 2 + 1:  # every value takes a character and a separator
        raise MotionImportError(
            f"Broken BVH: {n_frames} frames x {n_channels} channels need {expected} values; "
            "the motion section is far too short."
        )
    flat = np.empty(expected, np.float64)
    filled = 0
    for line in lines[k:]:  # line by line: memory stays bounded by the values themselves
        parts = line.split()
        if not parts:
            continue
        if filled + len(parts) > expected:
            filled += len(parts)
            break
        try:
            flat[filled : filled + len(parts)] = np.array(parts, dtype=np.float64)
        except ValueError:
            raise MotionImportError(
                "Broken BVH: the motion section has a value that is not a number."
            ) from None
        filled += len(parts)
    if filled != expected:
        raise MotionImportError(
            f"Broken BVH: {n_frames} frames x {n_channels} channels need {expected} values, "
            f"found {'more' if filled > expected else filled}."
        )
    motion = flat.reshape(n_frames, n_channels)
    if not np.isfinite(motion).all():
        raise MotionImportError("The BVH motion contains NaN or infinite values.")
    return Bvh(joints, frame_time, motion)


# --- joint names --------------------------------------------------------------------------
_SIDED_STEMS = {
    "hip": ["upleg", "thigh", "upperleg", "hip"],
    "knee": ["leg", "shin", "lowerleg", "knee", "calf", "loleg"],
    "ankle": ["foot", "ankle"],
    "foot": ["toebase", "toe", "toes", "ball"],
    "collar": ["shoulder", "collar", "clavicle"],
    "shoulder": ["arm", "uparm", "upperarm", "shldr"],
    "elbow": ["forearm", "lowerarm", "elbow", "loarm"],
    "wrist": ["hand", "wrist"],
}
_CENTRE = {"pelvis": ["hips", "hip", "pelvis"], "neck": ["neck"], "head": ["head"]}


def _name_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for canon, stems in _CENTRE.items():
        for s in stems:
            table[s] = canon
    for side, short in (("left", "l"), ("right", "r")):
        for part, stems in _SIDED_STEMS.items():
            canon = f"{side}_{part}"
            for s in stems:
                for form in (side + s, short + s, s + side, s + short):
                    table.setdefault(form, canon)
    return table


NAME_TABLE = _name_table()
_PREFIX = re.compile(r"^(mixamorig\d*|bip\d*|character\d*|armature)[ _.\-]*", re.IGNORECASE)


def normalize_joint_name(name: str) -> str:
    """'mixamorig:LeftArm' -> 'leftarm', 'upperarm_l' -> 'upperarml',
    'Bip01 L Thigh' -> 'lthigh'."""
    n = name.strip()
    if ":" in n:
        n = n.rsplit(":", 1)[1]
    n = _PREFIX.sub("", n)
    return re.sub(r"[^a-z0-9]", "", n.lower())


def bvh_joint_mapping(joints: list[BvhJoint]) -> dict[str, int]:
    """Canonical joint -> BVH joint index (by name, spine joints by their place in the chain)."""
    mapping: dict[str, int] = {}
    for j, joint in enumerate(joints):
        canon = NAME_TABLE.get(normalize_joint_name(joint.name))
        if canon is not None and canon not in mapping:
            mapping[canon] = j
    if not mapping:
        names = ", ".join(j.name for j in joints[:12]) + (", ..." if len(joints) > 12 else "")
        raise MotionImportError(
            "No joint of the BVH skeleton maps to a body joint (expected names like Hips, Spine, "
            f"LeftUpLeg, LeftArm, LeftForeArm, Head; found: {names})."
        )
    if "pelvis" not in mapping:
        mapping["pelvis"] = 0  # the BVH root plays the pelvis

    def ancestors(j: int) -> list[int]:
        out = []
        while j >= 0:
            out.append(j)
            j = joints[j].parent
        return out

    pelvis = mapping["pelvis"]
    top = mapping.get("neck")
    if top is None:
        for side in ("left_collar", "right_collar", "left_shoulder", "right_shoulder"):
            if side in mapping:
                top = joints[mapping[side]].parent
                break
        end_inclusive = True
    else:
        end_inclusive = False
    if top is not None and top >= 0:
        path = ancestors(top)
        if pelvis in path:
            chain = path[: path.index(pelvis)][::-1]  # pelvis (excluded) ... top
            if not end_inclusive:
                chain = chain[:-1]
            chain = [j for j in chain if j not in mapping.values()]
            if len(chain) >= 3:
                picks = {"spine1": chain[0], "spine2": chain[len(chain) // 2], "spine3": chain[-1]}
            elif len(chain) == 2:
                picks = {"spine1": chain[0], "spine3": chain[1]}
            elif len(chain) == 1:
                picks = {"spine3": chain[0]}
            else:
                picks = {}
            for canon, j in picks.items():
                mapping.setdefault(canon, j)
    if len(mapping) < 2:
        raise MotionImportError(
            "Only the root of the BVH skeleton could be mapped; "
            "no limb or spine joint has a known name."
        )
    return mapping


# --- kinematics ---------------------------------------------------------------------------
def _axis_rotations(axis: str, deg: np.ndarray) -> np.ndarray:
    r = np.radians(deg)
    c, s = np.cos(r), np.sin(r)
    out = np.zeros((len(deg), 3, 3))
    i = "xyz".index(axis)
    a, b = [(1, 2), (2, 0), (0, 1)][i]
    out[:, i, i] = 1
    out[:, a, a] = c
    out[:, b, b] = c
    out[:, a, b] = -s
    out[:, b, a] = s
    return out


def _bvh_rest(bvh: Bvh) -> np.ndarray:
    """Rest positions [J,3] of the joints (all channels zero, offsets only)."""
    rest = np.empty((len(bvh.joints), 3))
    for j, joint in enumerate(bvh.joints):
        rest[j] = joint.offset if joint.parent < 0 else rest[joint.parent] + joint.offset
    return rest


def _bvh_kinematics(
    bvh: Bvh, needed: set[int]
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Global rotations {j: [N,3,3]} and positions {j: [N,3]} of the joints in ``needed``
    and their ancestors. Rotation channels compose in their declared order (R = R1 R2 R3);
    position channels replace the joint's offset on their axes."""
    keep: set[int] = set()
    for j in needed:
        while j >= 0 and j not in keep:
            keep.add(j)
            j = bvh.joints[j].parent
    n = bvh.motion.shape[0]
    pending_children = {j: 0 for j in keep}
    for j in keep:
        if bvh.joints[j].parent >= 0:
            pending_children[bvh.joints[j].parent] += 1
    G: dict[int, np.ndarray] = {}
    P: dict[int, np.ndarray] = {}
    for j in sorted(keep):  # parents come before their children in a BVH
        joint = bvh.joints[j]
        L = None
        t = np.broadcast_to(joint.offset, (n, 3)).copy()
        for c, ch in enumerate(joint.channels):
            values = bvh.motion[:, joint.channel_start + c]
            if ch.endswith("rotation"):
                R = _axis_rotations(ch[0], values)
                L = R if L is None else L @ R
            else:
                t[:, "xyz".index(ch[0])] = values
        p = joint.parent
        if p < 0:
            G[j] = L if L is not None else np.broadcast_to(np.eye(3), (n, 3, 3)).copy()
            P[j] = t
            continue
        G[j] = G[p] if L is None else G[p] @ L  # no rotation channel: share the parent's
        P[j] = P[p] + np.einsum("nij,nj->ni", G[p], t)
        pending_children[p] -= 1
        if pending_children[p] == 0 and p not in needed:  # free long chains as we go
            del G[p], P[p]
    return G, P


def _snap_axis(v: np.ndarray, exclude: int | None = None) -> tuple[np.ndarray, int]:
    a = np.abs(v).astype(np.float64)
    if exclude is not None:
        a[exclude] = -1
    i = int(np.argmax(a))
    out = np.zeros(3)
    out[i] = 1.0 if v[i] >= 0 else -1.0
    return out, i


def _rig_axes(mapping: dict[str, int], rest: np.ndarray) -> np.ndarray:
    """Rotation C taking the rig's axes to glTF's (up -> +y, the body's left -> +x)."""
    pelvis = rest[mapping["pelvis"]]
    up_v = None
    for c in ("head", "neck", "spine3", "spine2", "spine1"):
        if c in mapping and np.linalg.norm(rest[mapping[c]] - pelvis) > 1e-9:
            up_v = rest[mapping[c]] - pelvis
            break
    if up_v is None:
        for c in ("left_ankle", "right_ankle", "left_knee", "right_knee"):
            if c in mapping and np.linalg.norm(rest[mapping[c]] - pelvis) > 1e-9:
                up_v = pelvis - rest[mapping[c]]
                break
    up, iu = _snap_axis(up_v if up_v is not None else np.array([0.0, 1.0, 0.0]))
    left_v = None
    for part in ("hip", "shoulder", "collar", "elbow", "knee", "wrist", "ankle"):
        lj, rj = mapping.get(f"left_{part}"), mapping.get(f"right_{part}")
        if lj is not None and rj is not None:
            d = rest[lj] - rest[rj]
            d = d - np.dot(d, up) * up
            if np.linalg.norm(d) > 1e-9:
                left_v = d
                break
    if left_v is None:  # one side only: the BVH default (left = +x, or the axis nearest it)
        left_v = np.array([1.0, 0.0, 0.0]) if iu != 0 else np.array([0.0, 0.0, -1.0])
    left, _ = _snap_axis(left_v, exclude=iu)
    fwd = np.cross(left, up)
    return np.stack([left, up, fwd])


def _unit_scale(height: float) -> float:
    """Metres per BVH unit from the rest skeleton's height."""
    if 0.4 <= height <= 3.0:
        return 1.0  # metres
    if 40.0 <= height <= 300.0:
        return 0.01  # centimetres
    if 400.0 <= height <= 3000.0:
        return 0.001  # millimetres
    if height <= 1e-9:
        return 1.0
    return 1.7 / height  # unknown unit (e.g. inches or a scaled rig): a 1.7 m tall person


def load_bvh(
    data, fps: float | None = None, face_forward: bool = False, name: str = "bvh"
) -> MotionSequence:
    """A BVH file (bytes, its text as str, or a ``Path``) -> ``MotionSequence`` on the
    canonical joints."""
    if isinstance(data, str):
        text = data
    else:
        raw = _as_bytes(data)
        if b"\x00" in raw[:4096]:
            raise MotionImportError("Not a BVH file: it is binary.")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    bvh = parse_bvh(text)
    mapping = bvh_joint_mapping(bvh.joints)
    rest = _bvh_rest(bvh)
    G, P = _bvh_kinematics(bvh, set(mapping.values()))
    n = bvh.motion.shape[0]

    C = _rig_axes(mapping, rest)
    rest_c = rest @ C.T
    ends = [rest[j] + jt.end_site for j, jt in enumerate(bvh.joints) if jt.end_site is not None]
    all_points = np.concatenate([rest, np.array(ends).reshape(-1, 3)]) @ C.T
    scale = _unit_scale(float(np.ptp(all_points[:, 1])))

    def rest_direction(c: str) -> np.ndarray | None:
        b = mapping[c]
        child = CANONICAL_CHILD.get(c)
        if child is None:
            return None
        if child in mapping:
            target = rest_c[mapping[child]]
        elif len(bvh.joints[b].children) == 1:
            target = rest_c[bvh.joints[b].children[0]]
        elif not bvh.joints[b].children and bvh.joints[b].end_site is not None:
            target = rest_c[b] + C @ bvh.joints[b].end_site
        else:
            return None
        d = target - rest_c[b]
        return d if np.linalg.norm(d) > 1e-9 else None

    glob = np.empty((n, NUM_JOINTS, 3, 3))
    local = np.empty((n, NUM_JOINTS, 3, 3))
    for c_idx, (c, parent) in enumerate(zip(CANONICAL_NAMES, CANONICAL_PARENTS, strict=True)):
        if c in mapping:
            Gc = C @ G[mapping[c]] @ C.T  # the BVH joint's rotation from its rest, glTF axes
            d_t, d_rest = t_pose_direction(c), rest_direction(c)
            if d_t is not None and d_rest is not None:
                Gc = Gc @ rotation_between(d_t, d_rest)  # T-pose bone -> rest bone -> posed bone
            glob[:, c_idx] = Gc
        else:
            glob[:, c_idx] = glob[:, parent] if parent >= 0 else np.eye(3)
        if parent < 0:
            local[:, c_idx] = glob[:, c_idx]
        else:
            local[:, c_idx] = np.swapaxes(glob[:, parent], -1, -2) @ glob[:, c_idx]

    root = P[mapping["pelvis"]] @ C.T * scale
    trans = root - root[0]
    rate = 1.0 / bvh.frame_time
    if abs(rate - round(rate)) < 1e-4 * rate:
        rate = float(round(rate))  # 'Frame Time: 0.0333333' is 30 fps
    seq = MotionSequence(local, trans, rate, name=name, description="An imported BVH motion.")
    return _finish(seq, fps, face_forward)


# ================================================================================ any file
def load_json(
    data, fps: float | None = None, face_forward: bool = False, name: str = "json"
) -> MotionSequence:
    """A JSON pose sequence (bytes, its text as str, a parsed dict, or a ``Path``)."""
    raw = data if isinstance(data, (dict, str)) else _as_bytes(data)
    return _finish(MotionSequence.from_json(raw, name=name), fps, face_forward)


def sniff_format(data: bytes, filename: str | None = None) -> str:
    """'npz', 'bvh' or 'json' from the leading bytes (the filename only breaks a tie)."""
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    if head[:9].upper() == b"HIERARCHY":
        return "bvh"
    if head.startswith(b"{"):
        return "json"
    suffix = Path(filename or "").suffix.lower()
    if suffix in (".npz", ".bvh", ".json"):
        return suffix[1:]
    raise MotionImportError(
        "Unrecognised motion file: send an AMASS/SMPL-X .npz, a .bvh or a .json pose sequence."
    )


def load_motion(
    data, filename: str | None = None, fps: float | None = None, face_forward: bool = False
) -> MotionSequence:
    """Any supported motion file -> ``MotionSequence`` (format from its content)."""
    raw = _as_bytes(data)
    if not raw.strip():
        raise MotionImportError("The motion file is empty.")
    fmt = sniff_format(raw, filename)
    stem = Path(filename).stem if filename else fmt
    loader = {"npz": load_amass_npz, "bvh": load_bvh, "json": load_json}[fmt]
    return loader(raw, fps=fps, face_forward=face_forward, name=stem or fmt)
