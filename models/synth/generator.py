"""Synthetic people with ground truth: photos, masks, keypoints, body, camera, texture, views.

Each sample is an Anny body with a random phenotype (gender, adult age, muscle, weight,
height, proportions), a procedural texture painted in the body's UV atlas (skin tone,
face, hair of varied length, a top with a pattern or a print on the front only, bottoms,
shoes), a plausible pose (A-pose, standing, walking, arm gestures), a camera (frontal
+-30 degrees yaw, elevation, distance, focal length), a background (flat, gradient,
noise, cluttered shapes) and Lambert shading from a point light near the camera.

Front and back differ as real clothes do: prints, necklines, plackets, fly and buttons
are on the front only; back pockets, long hair over the back and a higher back neckline
are on the back only.

Ground truth per sample (``SynthSample``): the photo, the person mask, 2D keypoints in the
MediaPipe-33 and COCO-17 layouts with visibility, shape [6] and pose [J,3] (axis-angles
in world-aligned rest axes, as ``models.fit.fit_body.posed_vertices``), the camera
(``Camera.to_dict``), the full texture (same UV layout and size as the pipeline's texture,
so they compare texel to texel) and renders of the same body from the back and the sides,
in the same pose and in A-pose (Anny's zero pose), with their cameras.

Keypoints: MediaPipe-33 landmarks sit where ``AnnyBody.topology.landmarks`` puts them
(joint heads or surface vertices), plus eye corners and mouth corners picked on the face
here; COCO-17 is the subset of the same names. Visibility: a surface landmark (face, ears,
heels, toes) is visible when nothing is more than 3 cm in front of it in the depth
buffer; a joint (inside the body) is visible when the surface seen at its pixel belongs
to the limb around it (a wrist in front of the torso shows the forearm or hand, behind it
the torso).

Conventions: glTF world axes (y up, the person faces +z, metres). A camera's *azimuth*
is where it stands around the person: 0 in front, +90 on the person's left (it sees the
left side), -90 on the right, 180 behind. ``views["left"]`` is seen from azimuth
``photo azimuth + 90``.

Deterministic: every random choice comes from ``numpy.random.default_rng(seed)``, and the
written PNG files are the same bytes for the same seed. ``write_dataset`` names sample i
``DIR/{i:05d}`` and gives it the seed ``seed + i``.

The per-sample hot path is numpy + numba (the rasterizer, ``models.render.skinning``);
torch is only used once per sample to turn the phenotype into Anny's blendshape
coefficients (~1 ms).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from models.body.template import MEDIAPIPE_33
from models.fit.camera import Camera, clip_from_camera, default_intrinsics

TEXTURE_SIZE = 1024  # = models.pipeline.TEXTURE_SIZE (checked by tests)
NEAR, FAR = 0.05, 100.0  # clip_from_camera's defaults

SHAPE_LABELS = ["gender", "age", "muscle", "weight", "height", "proportions"]  # Anny's phenotypes
COCO_17 = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]
POSE_KINDS = ("apose", "standing", "walking", "gesture")
GESTURES = ("wave", "arms_up", "t_pose", "point", "hands_on_hips", "hand_to_head")
BACKGROUND_KINDS = ("flat", "gradient", "noise", "clutter")
TOP_KINDS = ("tshirt", "longsleeve", "tank", "jacket")
TOP_PATTERNS = ("solid", "stripes", "checks", "print")
BOTTOM_KINDS = ("trousers", "shorts", "skirt")
HAIR_LENGTHS = ("short", "medium", "long")
# (name, azimuth offset from the photo camera in degrees)
POSED_VIEWS = (("back", 180.0), ("left", 90.0), ("right", -90.0))
APOSE_VIEWS = (("apose_front", 0.0), ("apose_back", 180.0), ("apose_left", 90.0),
               ("apose_right", -90.0))

SKIN_TONES = np.array([(250, 222, 200), (241, 203, 172), (224, 180, 146), (198, 150, 110),
                       (168, 118, 82), (132, 88, 58), (96, 62, 42), (70, 46, 32)], np.float32)
HAIR_COLOURS = np.array([(22, 18, 16), (45, 30, 20), (80, 52, 30), (120, 85, 50),
                         (190, 150, 90), (150, 70, 35), (150, 150, 150), (60, 45, 40)], np.float32)
NEUTRALS = np.array([(240, 240, 238), (25, 25, 28), (120, 120, 125), (40, 50, 80),
                     (60, 85, 130), (185, 165, 125), (90, 70, 50), (150, 30, 40)], np.float32)

# Labels of the painted materials (index into the per-sample palette).
(SKIN, HAIR, TOP, TOP_ALT, TOP_ALT2, PRINT_A, PRINT_B, TRIM, BOTTOM, BOTTOM_DETAIL, BELT,
 SHOE, SOLE, SOCK, EYE_WHITE, IRIS, PUPIL, BROW, LIP, INNER, BUTTON) = range(21)
N_LABELS = 21
# Fabric noise amplitude per label (relative brightness jitter).
_NOISE_AMP = np.zeros(N_LABELS, np.float32)
_NOISE_AMP[[TOP, TOP_ALT, TOP_ALT2, BOTTOM, BOTTOM_DETAIL, INNER, SOCK]] = 0.035
_NOISE_AMP[[SKIN, LIP]] = 0.015
_NOISE_AMP[[HAIR, BROW]] = 0.08
_NOISE_AMP[[SHOE, SOLE, BELT, TRIM, PRINT_A, PRINT_B]] = 0.03

GRAIN_PER_STD = 1.5  # fabric grain: quantization levels per standard deviation

# Body parts (from each vertex's dominant bone) used for painting and keypoint visibility.
PARTS = ("head", "neck", "torso", "upperarm.L", "lowerarm.L", "hand.L", "upperarm.R",
         "lowerarm.R", "hand.R", "upperleg.L", "lowerleg.L", "foot.L", "upperleg.R",
         "lowerleg.R", "foot.R")
_P = {n: i for i, n in enumerate(PARTS)}
# Joint keypoints count as visible when the surface seen at their pixel belongs to one of
# these parts (a wrist in front of the torso shows the hand; behind it, the torso).
_KP_PARTS = {}
for _side, _s in (("left", "L"), ("right", "R")):
    _KP_PARTS[f"{_side}_shoulder"] = ("torso", "neck", f"upperarm.{_s}")
    _KP_PARTS[f"{_side}_elbow"] = (f"upperarm.{_s}", f"lowerarm.{_s}")
    _KP_PARTS[f"{_side}_wrist"] = (f"lowerarm.{_s}", f"hand.{_s}")
    for _f in ("pinky", "index", "thumb"):
        _KP_PARTS[f"{_side}_{_f}"] = (f"hand.{_s}",)
    _KP_PARTS[f"{_side}_hip"] = ("torso", f"upperleg.{_s}")
    _KP_PARTS[f"{_side}_knee"] = (f"upperleg.{_s}", f"lowerleg.{_s}")
    _KP_PARTS[f"{_side}_ankle"] = (f"lowerleg.{_s}", f"foot.{_s}")
SURFACE_TOL_M = 0.03  # surface keypoints (face, ears, feet) are visible within 3 cm of the depth


def _bone_part(name: str) -> str:
    side = name[-1] if name[-2:] in (".L", ".R") else ""
    base = name[:-2] if side else name
    if base in ("head", "eye", "neck02", "neck03"):
        return "head"
    if base == "neck01":
        return "neck"
    if base.startswith("upperarm"):
        return f"upperarm.{side}"
    if base.startswith("lowerarm"):
        return f"lowerarm.{side}"
    if base.startswith(("wrist", "finger", "metacarpal")):
        return f"hand.{side}"
    if base.startswith("upperleg"):
        return f"upperleg.{side}"
    if base.startswith("lowerleg"):
        return f"lowerleg.{side}"
    if base.startswith(("foot", "toe")):
        return f"foot.{side}"
    return "torso"  # root, pelvis, spine, clavicle, shoulder01


@dataclass
class SynthView:
    """One render of the sample's body: image, mask and the camera it was seen from."""

    image: np.ndarray  # uint8 [H,W,3]
    mask: np.ndarray  # bool [H,W]
    camera: Camera
    azimuth_deg: float
    elevation_deg: float
    posed: bool  # True: the photo's pose; False: A-pose (zero pose)


@dataclass
class SynthSample:
    seed: int
    image: np.ndarray  # uint8 [H,W,3] the front photo
    mask: np.ndarray  # bool [H,W]
    camera: Camera
    shape: np.ndarray  # float32 [6] Anny phenotype (gender, age, muscle, weight, height, proportions)
    pose: np.ndarray  # float32 [J,3]
    texture: np.ndarray  # uint8 [T,T,3] ground-truth texture in the body's UV layout
    keypoints_mp33: np.ndarray  # float32 [33,3]: x, y (pixels), visibility 0/1
    keypoints_coco17: np.ndarray  # float32 [17,3]: x, y, v (0 outside the image, 1 occluded, 2 visible)
    person_height_px: float
    views: dict[str, SynthView] = field(default_factory=dict)
    joint_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # pose kind, clothing, background, light, ...

    def gt_dict(self) -> dict:
        return {
            "seed": int(self.seed),
            "body_model": "anny",
            "shape": [float(x) for x in self.shape],
            "shape_labels": list(SHAPE_LABELS),
            "pose": self.pose.tolist(),
            "joint_names": list(self.joint_names),
            "texture_size": int(self.texture.shape[0]),
            **self.meta,
            "camera": self.camera.to_dict(),
        }

    def keypoints_dict(self) -> dict:
        return {
            "image_size": [int(self.image.shape[0]), int(self.image.shape[1])],
            "person_height_px": float(self.person_height_px),
            "mediapipe33": {"names": MEDIAPIPE_33, "keypoints": self.keypoints_mp33.tolist(),
                            "visibility": "1 = visible, 0 = occluded or outside the image"},
            "coco17": {"names": COCO_17, "keypoints": self.keypoints_coco17.tolist(),
                       "visibility": "2 = visible, 1 = occluded, 0 = outside the image"},
        }

    def cameras_dict(self) -> dict:
        setup = self.meta["camera_setup"]
        out = {"front": {"camera": self.camera.to_dict(), "azimuth_deg": setup["azimuth_deg"],
                         "elevation_deg": setup["elevation_deg"], "pose": "posed",
                         "image": "../photo.png", "mask": "../mask.png"}}
        for name, v in self.views.items():
            out[name] = {"camera": v.camera.to_dict(), "azimuth_deg": v.azimuth_deg,
                         "elevation_deg": v.elevation_deg, "pose": "posed" if v.posed else "apose",
                         "image": f"{name}.png", "mask": f"{name}_mask.png"}
        return out


def _lo_hi(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column min and max of [N,C] (numpy's axis-0 reduction of thin arrays is slow)."""
    c = np.ascontiguousarray(a.T)
    return c.min(1), c.max(1)


def _rownorm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", a, a))


class _Group:
    """A subset of the covered texels with their template positions (and a parameter)."""

    def __init__(self, gen: SynthGenerator, idx: np.ndarray, t: np.ndarray | None = None):
        self.idx = idx
        self.x, self.y, self.z = gen.tx[idx], gen.ty[idx], gen.tz[idx]
        self.t = None if t is None else t[idx]
        self.torso = gen.is_torso[idx]
        self.neck = gen.is_neck[idx]
        self.leg = gen.is_leg[idx]


# ---------------------------------------------------------------------------------------
# Generator: everything that does not change between samples is computed once here.
# ---------------------------------------------------------------------------------------
class SynthGenerator:
    def __init__(self, size: int = 512, texture_size: int = TEXTURE_SIZE):
        import torch  # noqa: F401  (Anny's phenotype -> blendshape coefficients)
        from scipy import ndimage, sparse

        from models.body.registry import get_body
        from models.raster import get_backend
        from models.texture.atlas import texel_attribute, texel_map

        self.size = int(size)
        self.texture_size = int(texture_size)
        body = get_body("anny")  # the UV layout the pipeline's Anny textures use
        self.body = body
        top = body.topology
        self.shape_labels = list(body.shape_labels)
        self.joint_names = list(body.joint_names)
        self.jidx = {n: i for i, n in enumerate(self.joint_names)}
        self.parents = np.asarray(top.parents, np.int64)
        assert np.all(self.parents < np.arange(len(self.parents))), "joints must be topologically ordered"
        self.faces = np.ascontiguousarray(top.faces, np.int32)
        self.uvs = np.ascontiguousarray(top.uvs, np.float32)
        self.src = np.asarray(top.source_vertex, np.int64)
        S = body.blendshapes.shape[0]
        self.tmpl_v = body.template_vertices.numpy().astype(np.float32)
        self.blend_v = np.ascontiguousarray(body.blendshapes.numpy().reshape(S, -1), np.float32)
        self.tmpl_h = body.template_heads.numpy().astype(np.float32)
        self.blend_h = np.ascontiguousarray(body.head_blendshapes.numpy().reshape(S, -1), np.float32)
        self.skin_j = np.ascontiguousarray(top.skin_indices, np.int32)
        self.skin_w = np.ascontiguousarray(top.skin_weights, np.float32)
        V = len(self.tmpl_v)
        # Vertex normals = sparse(vertex x face) @ face normals, on the model's vertices so
        # UV seams do not show in the shading.
        mf = self.src[self.faces]
        self.model_faces = mf
        F = len(mf)
        self._f2v = sparse.csr_matrix((np.ones(3 * F, np.float32), (mf.reshape(-1), np.repeat(np.arange(F), 3))),
                                      shape=(V, F))
        # Body part of every model vertex (dominant bone) and of every split vertex.
        dom = self.skin_j[np.arange(V), np.argmax(self.skin_w, 1)]
        bone_part = np.array([_P[_bone_part(n)] for n in self.joint_names], np.uint8)
        self.vpart = bone_part[dom]
        self.face_part = self.vpart[mf[:, 0]]  # by triangle (first corner)
        # Landmarks: the body's own, plus eye corners and mouth corners for MediaPipe-33.
        self.landmarks = dict(top.landmarks)
        self.landmarks.update(self._face_landmarks())
        self.heads0 = {n: self.tmpl_h[i] for i, n in enumerate(self.joint_names)}
        self.rest_dirs = self._rest_directions()

        # Texel geometry on the template body (painting is anatomical: regions follow the
        # template's joints whatever the phenotype).
        self.backend = get_backend("cpu")
        if hasattr(self.backend, "warmup"):
            self.backend.warmup()
        T = self.texture_size
        tm = texel_map(self.uvs, self.faces, T)
        cov = tm.covered.reshape(-1)
        self.cov_idx = np.flatnonzero(cov)
        pos = texel_attribute(tm, self.tmpl_v[self.src], self.faces).reshape(-1, 3)[self.cov_idx]
        r = tm.rast.reshape(-1, 4)[self.cov_idx]
        fid = r[:, 3].astype(np.int64) - 1
        bary = np.stack([r[:, 0], r[:, 1], 1 - r[:, 0] - r[:, 1]], 1)
        corner = self.faces[fid, np.argmax(bary, 1)]
        self.t_part = self.vpart[self.src[corner]]
        self.tx, self.ty, self.tz = (np.ascontiguousarray(pos[:, k]) for k in range(3))
        H0 = self.heads0
        # Position along the arm (0 shoulder .. 1 wrist) and the leg (0 hip .. 1 ankle).
        self.t_arm = np.full(len(pos), -1.0, np.float32)
        self.t_leg = np.full(len(pos), -1.0, np.float32)
        for s in ("L", "R"):
            arm = np.isin(self.t_part, [_P[f"upperarm.{s}"], _P[f"lowerarm.{s}"], _P[f"hand.{s}"]])
            a, b = H0[f"upperarm01.{s}"], H0[f"wrist.{s}"]
            self.t_arm[arm] = ((pos[arm] - a) @ (b - a)) / float((b - a) @ (b - a))
            leg = np.isin(self.t_part, [_P[f"upperleg.{s}"], _P[f"lowerleg.{s}"], _P[f"foot.{s}"]])
            a, b = H0[f"upperleg01.{s}"], H0[f"foot.{s}"]
            self.t_leg[leg] = ((pos[leg] - a) @ (b - a)) / float((b - a) @ (b - a))
        self.is_arm = self.t_arm >= -0.5
        self.is_leg = self.t_leg >= -0.5
        self.is_hand = np.isin(self.t_part, [_P["hand.L"], _P["hand.R"]])
        self.is_foot = np.isin(self.t_part, [_P["foot.L"], _P["foot.R"]])
        self.is_head = self.t_part == _P["head"]
        self.is_neck = self.t_part == _P["neck"]
        self.is_torso = self.t_part == _P["torso"]
        # Angle around the vertical axis of the head, for the hairline (+1 front, -1 back).
        hc = np.array([0.0, H0["eye.L"][1], H0["head"][2] + 0.01], np.float32)
        d = pos - hc
        self.head_cos = (d[:, 2] / (np.hypot(d[:, 0], d[:, 2]) + 1e-6)).astype(np.float32)
        # Texel groups the painter works on (each op touches only the texels it can change).
        hip_y = H0["upperleg01.L"][1]
        self.g_trunk = _Group(self, np.flatnonzero(~(self.is_arm | self.is_hand | self.is_head)
                                                   & (pos[:, 1] > hip_y - 0.25)))
        self.g_legs = _Group(self, np.flatnonzero(self.is_leg), self.t_leg)
        self.g_arms = _Group(self, np.flatnonzero(self.is_arm), self.t_arm)
        self.g_feet = _Group(self, np.flatnonzero(self.is_foot))
        self.g_head = _Group(self, np.flatnonzero(self.is_head | self.is_neck), self.head_cos)
        ey, ez = H0["eye.L"][1], H0["eye.L"][2]
        self.g_face = _Group(self, np.flatnonzero(self.is_head & (pos[:, 2] > ez - 0.03) & (pos[:, 1] > ey - 0.1)
                                                  & (pos[:, 1] < ey + 0.05)))
        # A fixed noise field over the texels; each sample rolls it by a random offset.
        # Slightly smoothed in the atlas: fabric grain, and PNGs that compress well.
        import cv2

        field = np.random.default_rng(12345).normal(0, 1, (T // 2, T // 2)).astype(np.float32)
        field = cv2.resize(cv2.GaussianBlur(field, (0, 0), 0.7), (T, T), interpolation=cv2.INTER_NEAREST)
        # Quantized to 9 grain levels so colouring is one table look-up per texel.
        self.grain = np.clip(np.round(field / field.std() * GRAIN_PER_STD), -4, 4).astype(np.int16) + 4
        # Gutters: uncovered texels within 4 texels of an island take its nearest texel, so
        # bilinear sampling at island borders never reads black.
        dist, (iy, ix) = ndimage.distance_transform_edt(~tm.covered, return_indices=True)
        gut = (dist > 0) & (dist <= 4)
        self.gut_dst = np.flatnonzero(gut.reshape(-1))
        self.gut_src = (iy * T + ix).reshape(-1)[self.gut_dst]
        # Per-image scratch: a noise tile for the sensor noise.
        self._sensor = np.random.default_rng(54321).normal(0, 1, (self.size, self.size, 3)).astype(np.float32)

    # ---- body ------------------------------------------------------------------------------
    def _face_landmarks(self) -> dict[str, tuple[str, int]]:
        """Eye corners and mouth corners (MediaPipe has them; the body interface does not)."""
        v = self.tmpl_v
        heads = self.tmpl_h
        out = {}
        for side, s, sign in (("left", "L", 1.0), ("right", "R", -1.0)):
            e = heads[self.jidx[f"eye.{s}"]]
            for name, dx in (("inner", -0.014), ("outer", 0.016)):
                out[f"{side}_eye_{name}"] = ("vertex", self._front_vertex(v, e[0] + sign * dx, e[1]))
            out[f"mouth_{side}"] = ("vertex", self._front_vertex(v, sign * 0.021, e[1] - 0.075))
        return out

    @staticmethod
    def _front_vertex(v: np.ndarray, x: float, y: float) -> int:
        """The most forward vertex near (x, y)."""
        for r in (0.004, 0.008, 0.016):
            near = (np.abs(v[:, 0] - x) < r) & (np.abs(v[:, 1] - y) < r) & (v[:, 2] > 0.05)
            if near.any():
                cand = np.flatnonzero(near)
                return int(cand[np.argmax(v[cand, 2])])
        raise RuntimeError("no face vertex near the landmark")

    def _rest_directions(self) -> dict[str, np.ndarray]:
        H = self.heads0
        out = {}
        for s in ("L", "R"):
            out[f"upperarm01.{s}"] = H[f"lowerarm01.{s}"] - H[f"upperarm01.{s}"]
            out[f"lowerarm01.{s}"] = H[f"wrist.{s}"] - H[f"lowerarm01.{s}"]
            out[f"upperleg01.{s}"] = H[f"lowerleg01.{s}"] - H[f"upperleg01.{s}"]
            out[f"lowerleg01.{s}"] = H[f"foot.{s}"] - H[f"lowerleg01.{s}"]
        return {k: v / np.linalg.norm(v) for k, v in out.items()}

    def rest(self, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rest vertices [V,3] and joint heads [J,3] for a phenotype (numpy blendshapes)."""
        import torch

        with torch.no_grad():
            c = self.body.shape_coeffs(torch.as_tensor(np.asarray(shape, np.float32))[None])[0].numpy()
        v = (self.tmpl_v.reshape(-1) + c @ self.blend_v).reshape(-1, 3)
        h = (self.tmpl_h.reshape(-1) + c @ self.blend_h).reshape(-1, 3)
        return v.astype(np.float32), h.astype(np.float32)

    def skinning_matrices(self, heads: np.ndarray, pose: np.ndarray) -> np.ndarray:
        from scipy.spatial.transform import Rotation

        from models.render.skinning import fk_into

        rots = Rotation.from_rotvec(np.asarray(pose, np.float64)).as_matrix()
        A = np.empty((len(self.parents), 3, 4))
        return fk_into(rots, heads.astype(np.float64), self.parents, None, A)

    def pose_body(self, rest_v: np.ndarray, heads: np.ndarray, pose: np.ndarray):
        """-> posed model vertices [V,3], posed joint heads [J,3], model vertex normals [V,3]."""
        from models.render.skinning import Skinner

        A = self.skinning_matrices(heads, pose)
        verts = Skinner(rest_v, self.skin_j, self.skin_w, len(self.parents))(A)
        joints = np.einsum("jab,jb->ja", A[:, :, :3], heads) + A[:, :, 3]
        tri = verts[self.model_faces]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n = self._f2v @ fn
        n /= (_rownorm(n) + 1e-12)[:, None]
        return verts, joints.astype(np.float32), n.astype(np.float32)

    def posed_split_vertices(self, shape: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Posed vertices in the topology's split layout (what the pipeline rasterizes)."""
        v, h = self.rest(shape)
        return self.pose_body(v, h, pose)[0][self.src]

    # ---- random choices --------------------------------------------------------------------
    def random_shape(self, rng: np.random.Generator) -> np.ndarray:
        shape = np.empty(6, np.float32)
        shape[0] = rng.uniform(0.0, 1.0)  # gender
        shape[1] = rng.uniform(0.40, 0.85)  # age: adults (~20 to ~70 years)
        shape[2] = np.clip(rng.normal(0.5, 0.18), 0.1, 0.9)  # muscle
        shape[3] = np.clip(rng.normal(0.5, 0.2), 0.1, 0.9)  # weight
        shape[4] = np.clip(rng.normal(0.5, 0.2), 0.1, 0.9)  # height
        shape[5] = np.clip(rng.normal(0.5, 0.15), 0.2, 0.8)  # proportions
        return shape

    def random_pose(self, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, dict]:
        """A plausible pose: A-pose, standing, walking or a gesture. -> (pose [J,3], info)."""
        from scipy.spatial.transform import Rotation as Rot

        kind = kind or str(rng.choice(POSE_KINDS, p=[0.2, 0.3, 0.25, 0.25]))
        J = len(self.joint_names)
        local = np.tile(np.eye(3), (J, 1, 1))
        info = {"kind": kind}
        deg = np.radians

        def rv(x=0.0, y=0.0, z=0.0):
            return Rot.from_rotvec(deg(np.array([x, y, z], float))).as_matrix()

        def unit(*v):
            v = np.asarray(v, float)
            return v / np.linalg.norm(v)

        def arm_dir(abduct_deg, forward_deg, side):
            """Direction of a limb hanging down (0) rotated outward and forward."""
            a, f = deg(abduct_deg), deg(forward_deg)
            return unit(side * np.sin(a) * np.cos(f), -np.cos(a) * np.cos(f), np.sin(f))

        # Spine, neck and head: small lean and turns.
        local[self.jidx["spine03"]] = rv(rng.uniform(-4, 4), rng.uniform(-6, 6), rng.uniform(-3, 3))
        local[self.jidx["spine01"]] = rv(rng.uniform(-3, 3), rng.uniform(-6, 6), rng.uniform(-2, 2))
        local[self.jidx["neck01"]] = rv(rng.uniform(-5, 8), rng.uniform(-8, 8), rng.uniform(-4, 4))
        local[self.jidx["head"]] = rv(rng.uniform(-6, 8), rng.uniform(-12, 12), rng.uniform(-6, 6))
        targets: dict[str, np.ndarray] = {}
        sides = (("L", 1.0), ("R", -1.0))
        if kind == "apose":
            for s, sign in sides:
                up = self.rest_dirs[f"upperarm01.{s}"]
                targets[f"upperarm01.{s}"] = rv(rng.uniform(-8, 8), 0, sign * rng.uniform(-10, 8)) @ up
                targets[f"lowerarm01.{s}"] = rv(rng.uniform(-10, 5), 0, sign * rng.uniform(-10, 5)) @ self.rest_dirs[f"lowerarm01.{s}"]
                leg = arm_dir(rng.uniform(4, 12), rng.uniform(-3, 3), sign)
                targets[f"upperleg01.{s}"] = leg
                targets[f"lowerleg01.{s}"] = leg
        elif kind == "standing":
            bent = rng.integers(2)
            for k, (s, sign) in enumerate(sides):
                up = arm_dir(rng.uniform(6, 25), rng.uniform(-8, 12), sign)
                targets[f"upperarm01.{s}"] = up
                targets[f"lowerarm01.{s}"] = rv(-rng.uniform(0, 35), 0, 0) @ up
                thigh = arm_dir(rng.uniform(1, 8), rng.uniform(-3, 8) if k == bent else rng.uniform(-3, 2), sign)
                targets[f"upperleg01.{s}"] = thigh
                targets[f"lowerleg01.{s}"] = rv(rng.uniform(3, 14) if k == bent else 0, 0, 0) @ thigh
        elif kind == "walking":
            stride = rng.uniform(12, 26)
            lead = int(rng.integers(2))
            for k, (s, sign) in enumerate(sides):
                fwd = stride if k == lead else -0.8 * stride
                thigh = arm_dir(rng.uniform(1, 5), fwd, sign)
                targets[f"upperleg01.{s}"] = thigh
                knee = rng.uniform(0, 8) if k == lead else rng.uniform(12, 35)
                targets[f"lowerleg01.{s}"] = rv(knee, 0, 0) @ thigh
                swing = -0.8 * fwd + rng.uniform(-4, 4)
                up = arm_dir(rng.uniform(6, 15), swing, sign)
                targets[f"upperarm01.{s}"] = up
                targets[f"lowerarm01.{s}"] = rv(-rng.uniform(10, 40), 0, 0) @ up
        else:  # gesture: one or both arms do something, legs stand
            g = str(rng.choice(GESTURES))
            info["gesture"] = g
            active = int(rng.integers(2))
            for k, (s, sign) in enumerate(sides):
                up = arm_dir(rng.uniform(8, 22), rng.uniform(-5, 10), sign)
                fore = rv(-rng.uniform(0, 30), 0, 0) @ up
                both = g in ("arms_up", "t_pose", "hands_on_hips")
                if k == active or both:
                    if g == "wave":
                        up = arm_dir(rng.uniform(100, 140), rng.uniform(0, 20), sign)
                        fore = unit(sign * rng.uniform(-0.1, 0.3), 1.0, rng.uniform(0, 0.3))
                    elif g == "arms_up":
                        up = arm_dir(rng.uniform(140, 170), rng.uniform(-5, 15), sign)
                        fore = rv(-rng.uniform(0, 15), 0, 0) @ up
                    elif g == "t_pose":
                        up = arm_dir(rng.uniform(80, 100), rng.uniform(-5, 15), sign)
                        fore = rv(0, 0, sign * rng.uniform(-10, 20)) @ up
                    elif g == "point":
                        up = arm_dir(rng.uniform(10, 30), rng.uniform(60, 90), sign)
                        fore = rv(-rng.uniform(0, 10), 0, 0) @ up
                    elif g == "hands_on_hips":
                        up = arm_dir(rng.uniform(30, 45), rng.uniform(-20, -5), sign)
                        fore = unit(-sign * rng.uniform(0.6, 0.9), -rng.uniform(0.3, 0.6), rng.uniform(-0.1, 0.2))
                    elif g == "hand_to_head":
                        up = arm_dir(rng.uniform(60, 90), rng.uniform(10, 40), sign)
                        fore = unit(-sign * rng.uniform(0.3, 0.6), 1.0, rng.uniform(-0.1, 0.3))
                targets[f"upperarm01.{s}"] = up
                targets[f"lowerarm01.{s}"] = fore
                thigh = arm_dir(rng.uniform(2, 10), rng.uniform(-3, 5), sign)
                targets[f"upperleg01.{s}"] = thigh
                targets[f"lowerleg01.{s}"] = rv(rng.uniform(0, 8), 0, 0) @ thigh
        # Turn target directions into world-aligned local rotations, parents first.
        G = np.empty((J, 3, 3))
        for j in range(J):
            name = self.joint_names[j]
            p = self.parents[j]
            Gp = np.eye(3) if p < 0 else G[p]
            if name in targets:
                from models.render.rotations import rotation_between

                Gt = rotation_between(self.rest_dirs[name], np.asarray(targets[name], float))
                local[j] = Gp.T @ Gt
            G[j] = Gp @ local[j]
        pose = Rot.from_matrix(local).as_rotvec().astype(np.float32)
        return pose, info

    # ---- texture -----------------------------------------------------------------------------
    def paint_texture(self, rng: np.random.Generator, shape: np.ndarray) -> tuple[np.ndarray, dict]:
        """-> (texture uint8 [T,T,3], clothing description)."""
        labels, pal, desc = self.paint_labels(rng, shape)
        return self.colour_texture(rng, labels, pal), desc

    def paint_labels(self, rng: np.random.Generator, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
        """-> (material label per covered texel [N] uint8 (order of ``cov_idx``), palette
        [N_LABELS,3], clothing description).

        Regions are chosen on the template body (so they follow the anatomy whatever the
        phenotype): each texel gets a material label (SKIN, TOP, PRINT_A, ...).
        """
        H0 = self.heads0
        female = shape[0] < 0.5
        lab = np.full(len(self.tx), SKIN, np.uint8)
        pal = np.zeros((N_LABELS, 3), np.float32)
        # Skin: a continuous range of tones.
        t = rng.uniform(0, len(SKIN_TONES) - 1)
        i = int(t)
        skin = SKIN_TONES[i] * (1 - (t - i)) + SKIN_TONES[min(i + 1, len(SKIN_TONES) - 1)] * (t - i)
        skin = np.clip(skin * rng.uniform(0.95, 1.05, 3), 0, 255)
        pal[SKIN] = skin
        pal[LIP] = skin * np.array([0.82, 0.6, 0.6])
        hair_c = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15)
        pal[HAIR] = hair_c
        pal[BROW] = hair_c * 0.8
        pal[EYE_WHITE] = (235, 232, 228)
        pal[IRIS] = [(70, 45, 25), (50, 90, 140), (80, 110, 60), (35, 25, 20)][rng.integers(4)]
        pal[PUPIL] = (15, 12, 12)

        def colour():
            if rng.random() < 0.35:
                return NEUTRALS[rng.integers(len(NEUTRALS))] * rng.uniform(0.9, 1.1)
            import colorsys

            r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.25, 0.9), rng.uniform(0.3, 0.95))
            return np.array([r, g, b]) * 255

        def contrast(c):
            for _ in range(10):
                d = colour()
                if np.abs(d - c).sum() > 150:
                    return d
            return 255 - c

        eye_y = H0["eye.L"][1]
        neck_y = H0["neck01"][1]
        sh_y = H0["upperarm01.L"][1]
        hip_y = H0["upperleg01.L"][1]
        torso_z = H0["spine03"][2]
        tr, lg, ar = self.g_trunk, self.g_legs, self.g_arms
        tr_front = tr.z > torso_z + 0.02
        tr_back = tr.z < torso_z - 0.02
        desc: dict = {"skin": skin.round().tolist()}

        # --- bottoms ------------------------------------------------------------------------
        bkind = str(rng.choice(BOTTOM_KINDS, p=[0.3, 0.3, 0.4] if female else [0.7, 0.3, 0.0]))
        pal[BOTTOM] = colour()
        pal[BOTTOM_DETAIL] = pal[BOTTOM] * rng.uniform(0.6, 0.8)
        pal[BELT] = [(30, 25, 20), (90, 60, 35), (20, 20, 20)][rng.integers(3)]
        waist_y = hip_y + rng.uniform(0.06, 0.13)
        leg_len = {"trousers": rng.uniform(0.9, 0.97), "shorts": rng.uniform(0.2, 0.42),
                   "skirt": rng.uniform(0.35, 0.7)}[bkind]
        b_tr = tr.y < waist_y
        b_lg = lg.t < leg_len
        desc["bottom"] = {"kind": bkind, "colour": pal[BOTTOM].round().tolist(), "length": round(float(leg_len), 3)}
        # --- top ----------------------------------------------------------------------------
        tkind = str(rng.choice(TOP_KINDS, p=[0.4, 0.25, 0.15, 0.2]))
        pattern = str(rng.choice(TOP_PATTERNS, p=[0.3, 0.25, 0.2, 0.25]))
        pal[TOP] = contrast(pal[BOTTOM])
        pal[TOP_ALT] = contrast(pal[TOP])
        pal[TOP_ALT2] = 0.5 * (pal[TOP] + pal[TOP_ALT]) * rng.uniform(0.7, 1.0)
        pal[TRIM] = pal[TOP] * rng.uniform(0.5, 0.8) if rng.random() < 0.5 else contrast(pal[TOP])
        pal[PRINT_A] = contrast(pal[TOP])
        pal[PRINT_B] = contrast(pal[PRINT_A])
        pal[INNER] = [(245, 245, 240), (30, 30, 30), (200, 60, 60), (120, 120, 120)][rng.integers(4)]
        pal[BUTTON] = pal[TOP] * 0.5
        hem_y = hip_y + rng.uniform(-0.06, 0.05)
        sleeve = {"tshirt": rng.uniform(0.2, 0.45), "longsleeve": rng.uniform(0.9, 0.98), "tank": -1.0,
                  "jacket": rng.uniform(0.92, 0.98)}[tkind]
        t_tr = (tr.y > hem_y) & (tr.y < neck_y + 0.01)
        if tkind == "tank":
            strap = rng.uniform(0.05, 0.09)
            t_tr &= ~((np.abs(tr.x) > strap) & (tr.y > sh_y - 0.1))
        # Neckline: lower on the front (round or V), close to the neck on the back.
        neck_kind = str(rng.choice(["round", "v", "crew"]))
        depth = {"round": rng.uniform(0.05, 0.1), "v": rng.uniform(0.08, 0.15), "crew": rng.uniform(0.02, 0.04)}[neck_kind]
        if neck_kind == "v":
            edge_y = neck_y - depth + np.abs(tr.x) * 1.6
        else:
            edge_y = neck_y - depth + (tr.x / 0.09) ** 2 * depth
        neckline = np.where(tr_front, tr.y > edge_y, tr.y > neck_y - 0.015)
        t_tr &= ~neckline
        t_ar = ar.t < sleeve
        desc["top"] = {"kind": tkind, "pattern": pattern, "colour": pal[TOP].round().tolist(),
                       "neckline": neck_kind, "sleeve": round(float(sleeve), 3)}
        tucked = bool(rng.random() < 0.35)
        if tucked:
            lab[tr.idx[t_tr]] = TOP
            lab[tr.idx[b_tr]] = BOTTOM
        else:
            lab[tr.idx[b_tr]] = BOTTOM
            lab[tr.idx[t_tr]] = TOP
        lab[lg.idx[b_lg]] = BOTTOM
        lab[ar.idx[t_ar]] = TOP
        desc["top"]["tucked"] = tucked
        # Pattern of the top (computed on the top's texels only).
        top_tr = lab[tr.idx] == TOP
        ti = np.concatenate([tr.idx[top_tr], ar.idx[t_ar]])
        tx = np.concatenate([tr.x[top_tr], ar.x[t_ar]])
        ty = np.concatenate([tr.y[top_tr], ar.y[t_ar]])
        tz = np.concatenate([tr.z[top_tr], ar.z[t_ar]])
        if pattern == "stripes":
            f = rng.uniform(25, 70)
            ph = rng.uniform(0, 2 * np.pi)
            thr = rng.uniform(-0.3, 0.5)
            lab[ti[np.sin(ty * f + ph) > thr]] = TOP_ALT
        elif pattern == "checks":
            sq = rng.uniform(0.03, 0.07)
            a = (np.floor((tx + 5) / sq) + np.floor((tz + 5) / sq)).astype(np.int32) % 2 == 1
            b = np.floor((ty + 5) / sq).astype(np.int32) % 2 == 1
            lab[ti[a | b]] = TOP_ALT
            lab[ti[a & b]] = TOP_ALT2
        elif pattern == "print":  # a print or logo on the chest, front only
            cy = sh_y - rng.uniform(0.08, 0.15)
            cx = rng.uniform(-0.04, 0.04) if rng.random() < 0.7 else rng.choice([-1, 1]) * 0.07
            r = rng.uniform(0.035, 0.08) if abs(cx) < 0.05 else rng.uniform(0.02, 0.035)
            nt = len(tr.idx[top_tr])  # trunk texels come first in ti
            near = (np.abs(tx[:nt] - cx) < 1.2 * r) & (np.abs(ty[:nt] - cy) < 1.2 * r) & (tz[:nt] > torso_z + 0.02)
            near &= tr.torso[top_tr]
            pi = ti[:nt][near]
            u, v = tx[:nt][near] - cx, ty[:nt][near] - cy
            kind = str(rng.choice(["circle", "ring", "star", "square", "text", "diamond"]))
            if kind == "circle":
                m = u * u + v * v < r * r
            elif kind == "ring":
                m = np.abs(np.sqrt(u * u + v * v) - 0.75 * r) < 0.22 * r
            elif kind == "star":
                ang = np.arctan2(v, u)
                m = np.sqrt(u * u + v * v) < r * (0.55 + 0.45 * np.cos(5 * ang) ** 2)
            elif kind == "square":
                m = (np.abs(u) < r) & (np.abs(v) < r * 0.8)
            elif kind == "diamond":
                m = np.abs(u) + np.abs(v) < r
            else:  # text-like: a row of letter blocks with gaps
                n_letters = int(rng.integers(3, 7))
                w = 2.2 * r / n_letters
                k = np.floor((u + 1.1 * r) / w)
                frac = (u + 1.1 * r) / w - k
                m = (np.abs(v) < 0.3 * r) & (k >= 0) & (k < n_letters) & (frac < 0.7)
                m &= ~((np.abs(v) < 0.08 * r) & (frac > 0.2) & (frac < 0.5) & (k % 2 == 0))
            lab[pi[m]] = PRINT_A
            if kind in ("circle", "square", "diamond"):
                lab[pi[m & (u * u + v * v < (0.45 * r) ** 2)]] = PRINT_B
            desc["top"]["print"] = kind
        # Collar / neckline trim, front only.
        top_now = t_tr & (lab[tr.idx] != BOTTOM)
        trim_w = rng.uniform(0.008, 0.015)
        lab[tr.idx[top_now & tr_front & (tr.y > edge_y - trim_w)]] = TRIM
        if tkind == "jacket":  # an open jacket: inner shirt in a front strip, buttons
            w = rng.uniform(0.03, 0.07)
            fr = top_now & tr_front & (tr.z > torso_z + 0.04)
            lab[tr.idx[fr & (np.abs(tr.x) < w)]] = INNER
            lab[tr.idx[fr & (np.abs(np.abs(tr.x) - w) < 0.006)]] = TRIM
            lab[ar.idx[np.abs(ar.t - sleeve + 0.03) < 0.02]] = TRIM  # cuffs
        elif rng.random() < 0.4 and tkind != "tank":  # a placket with buttons, front only
            pl = top_now & tr_front & (np.abs(tr.x) < 0.012) & (tr.y > neck_y - depth - 0.12)
            lab[tr.idx[pl]] = TRIM
            for by in np.arange(neck_y - depth - 0.02, neck_y - depth - 0.13, -0.04):
                lab[tr.idx[pl & ((tr.x ** 2 + (tr.y - by) ** 2) < 0.005 ** 2)]] = BUTTON
        if tkind == "tshirt":  # hem of the sleeve
            lab[ar.idx[np.abs(ar.t - sleeve + 0.01) < 0.01]] = TRIM
        # Bottoms details: belt (buckle on the front), fly (front), pockets (back only).
        cur = lab[tr.idx]
        if (bkind != "skirt" or rng.random() < 0.5) and rng.random() < 0.5 and (tucked or hem_y > waist_y - 0.02):
            belt = tr.torso & (np.abs(tr.y - (waist_y - 0.015)) < 0.013)
            lab[tr.idx[belt]] = BELT
            lab[tr.idx[belt & tr_front & (np.abs(tr.x) < 0.02) & (tr.z > torso_z + 0.04)]] = BUTTON
            desc["bottom"]["belt"] = True
        if bkind != "skirt":
            fly = tr.torso & tr_front & (np.abs(tr.x) < 0.004) & (tr.y < waist_y - 0.03) & (cur == BOTTOM)
            lab[tr.idx[fly]] = BOTTOM_DETAIL
            px0, pw, ph = rng.uniform(0.025, 0.045), rng.uniform(0.06, 0.08), rng.uniform(0.07, 0.1)
            pt = waist_y - rng.uniform(0.05, 0.08)
            ax = np.abs(tr.x)
            pocket = tr_back & (ax > px0) & (ax < px0 + pw) & (tr.y < pt) & (tr.y > pt - ph) & (cur == BOTTOM)
            inner = (ax > px0 + 0.006) & (ax < px0 + pw - 0.006) & (tr.y < pt - 0.006)
            lab[tr.idx[pocket]] = TRIM if rng.random() < 0.3 else BELT
            lab[tr.idx[pocket & inner]] = BOTTOM_DETAIL
            desc["bottom"]["back_pockets"] = bool((pocket & inner).any())  # unless the top hides them
        else:  # a skirt: pleats
            k = rng.integers(6, 14)
            for g, sel in ((tr, b_tr), (lg, b_lg)):
                ang = np.arctan2(g.x[sel] - np.sign(g.x[sel]) * 0.09, g.z[sel])
                ii = g.idx[sel][np.sin(ang * k) > 0.85]
                lab[ii[lab[ii] == BOTTOM]] = BOTTOM_DETAIL
        # --- shoes, socks -------------------------------------------------------------------
        pal[SHOE] = [(25, 25, 25), (240, 240, 240), (90, 60, 40), (40, 45, 80), (150, 30, 30)][rng.integers(5)]
        pal[SOLE] = [(230, 230, 225), (30, 30, 30), (150, 110, 70)][rng.integers(3)]
        pal[SOCK] = [(240, 240, 240), (30, 30, 30), (120, 120, 120)][rng.integers(3)]
        shoe_top = rng.uniform(0.94, 0.99)
        ground = H0["foot.L"][1] - 0.06
        sole_h = ground + rng.uniform(0.015, 0.025)
        shoe_lg = lg.t > shoe_top
        lab[lg.idx[shoe_lg]] = SHOE
        lab[self.g_feet.idx] = SHOE
        lab[lg.idx[shoe_lg & (lg.y < sole_h)]] = SOLE
        lab[self.g_feet.idx[self.g_feet.y < sole_h]] = SOLE
        if bkind != "trousers" and rng.random() < 0.6:
            lab[lg.idx[(lg.t > shoe_top - rng.uniform(0.05, 0.25)) & ~shoe_lg]] = SOCK
        desc["shoes"] = pal[SHOE].round().tolist()
        # --- hair, face ---------------------------------------------------------------------
        hlen = str(rng.choice(HAIR_LENGTHS, p=[0.5, 0.25, 0.25] if female else [0.8, 0.15, 0.05]))
        front_line = eye_y + rng.uniform(0.03, 0.06)
        back_cut = {"short": eye_y - rng.uniform(0.0, 0.05), "medium": neck_y - rng.uniform(0.0, 0.04),
                    "long": neck_y - 0.2}[hlen]
        hd = self.g_head
        line = back_cut + (front_line - back_cut) * np.clip((hd.t + 0.35) / 0.8, 0, 1)
        lab[hd.idx[hd.y > line]] = HAIR
        if hlen == "long":  # over the back of the torso, to the shoulder blades or lower
            end = sh_y - rng.uniform(0.05, 0.25)
            width = rng.uniform(0.08, 0.13)
            long_ = (tr.torso | tr.neck) & tr_back & (tr.y > end) & (np.abs(tr.x) < width * (1 - 0.3 * (sh_y - tr.y)))
            lab[tr.idx[long_]] = HAIR
            lab[hd.idx[hd.neck & (hd.z < H0["neck01"][2])]] = HAIR
        desc["hair"] = {"length": hlen, "colour": pal[HAIR].round().tolist()}
        fc = self.g_face
        fx, fy = fc.x, fc.y
        for s in ("L", "R"):
            e = H0[f"eye.{s}"]
            d2 = (fx - e[0]) ** 2 + (fy - e[1]) ** 2
            lab[fc.idx[(d2 < 0.012 ** 2) & (np.abs(fy - e[1]) < 0.0075)]] = EYE_WHITE
            lab[fc.idx[d2 < 0.0065 ** 2]] = IRIS
            lab[fc.idx[d2 < 0.003 ** 2]] = PUPIL
            brow = (np.abs(fy - e[1] - 0.022 - 0.1 * (fx - e[0]) ** 2 / 0.02) < 0.004) & (np.abs(fx - e[0]) < 0.02)
            lab[fc.idx[brow]] = BROW
        mouth = (np.abs(fy - (eye_y - 0.075)) < 0.006 * (1 - (fx / 0.024) ** 2)) & (np.abs(fx) < 0.022)
        lab[fc.idx[mouth]] = LIP

        return lab, pal, desc

    def colour_texture(self, rng: np.random.Generator, lab: np.ndarray, pal: np.ndarray) -> np.ndarray:
        """Labels + palette -> texture uint8 [T,T,3] with fabric grain; atlas gutters filled."""
        T = self.texture_size
        levels = (np.arange(9, dtype=np.float32) - 4) / GRAIN_PER_STD
        lut = np.zeros((N_LABELS + 1, 9, 3), np.float32)  # the last label: outside the atlas
        lut[:N_LABELS] = np.clip(pal, 0, 255)[:, None, :] * (1 + _NOISE_AMP[:, None, None] * levels[None, :, None])
        lut = np.clip(lut + 0.5, 0, 255).astype(np.uint8).reshape(-1, 3)
        full = np.full(T * T, N_LABELS, np.int16)
        full[self.cov_idx] = lab
        full[self.gut_dst] = full[self.gut_src]
        shift = (2 * int(rng.integers(T // 2)), 2 * int(rng.integers(T // 2)))  # keeps the 2x2 grain
        full *= 9
        full += np.roll(self.grain, shift, axis=(0, 1)).reshape(-1)
        return lut[full].reshape(T, T, 3)

    # ---- camera, light, background -------------------------------------------------------------
    @staticmethod
    def look_at(center: np.ndarray, target: np.ndarray, K: np.ndarray, size: int) -> Camera:
        fwd = target - center
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        R = np.stack([right, down, fwd]).astype(np.float32)
        return Camera(K=K.astype(np.float32), R=R, t=(-R @ center).astype(np.float32), width=size, height=size)

    @staticmethod
    def orbit_center(target, distance, azimuth_deg, elevation_deg) -> np.ndarray:
        a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
        return target + distance * np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])

    def frame_camera(self, verts: np.ndarray, K: np.ndarray, azimuth: float, elevation: float,
                     fill: float, offset=(0.0, 0.0)) -> tuple[Camera, np.ndarray, float]:
        """Camera at (azimuth, elevation) whose image holds the body at about `fill` of its
        height (less when it would leave the frame). -> (camera, target, distance)."""
        size = self.size
        lo, hi = _lo_hi(verts)
        target = (lo + hi) / 2
        height = float(hi[1] - lo[1])
        dist = K[1, 1] * height / (fill * size)
        for _ in range(3):
            cam = self.look_at(self.orbit_center(target, dist, azimuth, elevation), target, K, size)
            uv, _ = cam.project(verts)
            lo2, hi2 = _lo_hi(uv)
            span = float(max(hi2[0] - lo2[0], hi2[1] - lo2[1]))
            # re-centre the projected box and keep it inside the frame with a margin
            mid = (lo2 + hi2) / 2 + np.asarray(offset) * size
            shift = (mid - size / 2) / K[0, 0] * dist
            target = target + cam.R[0] * shift[0] + cam.R[1] * shift[1]
            scale = max(span / (fill * size), (hi2[1] - lo2[1]) / (fill * size), 1.0) if span > 0.96 * size else \
                (hi2[1] - lo2[1]) / (fill * size)
            dist *= max(0.8, min(1.25, scale))
        cam = self.look_at(self.orbit_center(target, dist, azimuth, elevation), target, K, size)
        return cam, target, dist

    def background(self, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, str]:
        import cv2

        s = self.size
        kind = kind or str(rng.choice(BACKGROUND_KINDS))
        c0, c1 = rng.uniform(30, 235, 3), rng.uniform(30, 235, 3)
        if kind == "flat":
            bg = np.empty((s, s, 3), np.float32)
            bg[:] = c0
        elif kind == "gradient" or kind == "clutter":
            a = rng.uniform(0, 2 * np.pi)
            g = np.linspace(-0.5, 0.5, s, dtype=np.float32)
            ramp = np.clip(np.cos(a) * g[None, :] + np.sin(a) * g[:, None] + 0.5, 0, 1)[..., None]
            bg = (c0 * (1 - ramp) + c1 * ramp).astype(np.float32)
        else:  # noise: smooth coloured blobs
            n = int(rng.integers(3, 12))
            small = rng.uniform(30, 235, (n, n, 3)).astype(np.float32)
            bg = cv2.resize(small, (s, s), interpolation=cv2.INTER_CUBIC)
        if kind == "clutter":
            img = np.ascontiguousarray(bg)
            for _ in range(int(rng.integers(6, 25))):
                col = tuple(float(c) for c in rng.uniform(0, 255, 3))
                k = rng.integers(4)
                p = rng.integers(0, s, 2)
                r = int(rng.integers(s // 30, s // 5))
                if k == 0:
                    q = p + rng.integers(-s // 3, s // 3, 2)
                    cv2.rectangle(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), col, -1, cv2.LINE_AA)
                elif k == 1:
                    cv2.circle(img, (int(p[0]), int(p[1])), r, col, -1, cv2.LINE_AA)
                elif k == 2:
                    pts = (p + rng.integers(-r, r + 1, (int(rng.integers(3, 7)), 2))).astype(np.int32)
                    cv2.fillPoly(img, [pts], col, cv2.LINE_AA)
                else:
                    q = rng.integers(0, s, 2)
                    cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), col,
                             int(rng.integers(2, max(3, s // 40))), cv2.LINE_AA)
            if rng.random() < 0.5:  # a floor
                fy = int(rng.uniform(0.6, 0.85) * s)
                img[fy:] = img[fy:] * 0.5 + rng.uniform(40, 200, 3).astype(np.float32) * 0.5
            bg = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.5)))
        return np.clip(bg + 0.5, 0, 255).astype(np.uint8), kind

    # ---- rendering -------------------------------------------------------------------------------
    def render(self, verts_s: np.ndarray, cam: Camera, texture: np.ndarray, normals_s: np.ndarray | None = None,
               light: dict | None = None, background: np.ndarray | None = None,
               antialias: bool = True, return_rast: bool = False):
        """Textured render of split vertices from `cam` -> (rgb uint8 [H,W,3], mask bool [H,W])
        (+ the raster, image rows top-down, with `return_rast`).

        With `normals_s` and `light` ({"offset": camera-frame offset of a point light from
        the camera centre, "ambient", "tint"}), Lambert shading; without, the texture as is
        (how the render path shows an avatar). `background` uint8 [H,W,3], black when None.
        Only the person's bounding box is shaded; silhouettes are antialiased.
        """
        be = self.backend
        H, W = cam.height, cam.width
        M = clip_from_camera(cam).astype(np.float32)
        clip = np.ascontiguousarray(verts_s @ M[:, :3].T + M[:, 3])
        rast = be.rasterize(clip, self.faces, (H, W))  # bottom-up rows
        cov = rast[..., 3] > 0
        if background is None:
            out = np.zeros((H, W, 3), np.uint8)
        else:
            out = np.ascontiguousarray(background[::-1])
        front = clip[:, 3] > 1e-6
        if front.any():  # the person's box from the projected vertices (bottom-up rows)
            ndc = clip[front, :2] / clip[front, 3:4]
            lo, hi = _lo_hi(ndc)
            x0, x1 = int(np.clip((lo[0] + 1) / 2 * W - 1, 0, W)), int(np.clip((hi[0] + 1) / 2 * W + 2, 0, W))
            y0, y1 = int(np.clip((lo[1] + 1) / 2 * H - 1, 0, H)), int(np.clip((hi[1] + 1) / 2 * H + 2, 0, H))
        if front.any() and x1 > x0 and y1 > y0:
            shaded = normals_s is not None and light is not None
            if shaded:
                cam_c = -cam.R.T @ cam.t
                lp = cam_c + cam.R.T @ np.asarray(light["offset"], np.float32)
                ld = lp[None] - verts_s
                ld /= _rownorm(ld)[:, None]
                amb = float(light["ambient"])
                sh = amb + (1 - amb) * np.clip(np.einsum("ij,ij->i", normals_s, ld), 0, 1)
                attr = np.concatenate([self.uvs, sh[:, None].astype(np.float32)], 1)
            else:
                attr = self.uvs
            r = np.ascontiguousarray(rast[y0:y1, x0:x1])
            c = cov[y0:y1, x0:x1]
            a = be.interpolate(attr, r, self.faces)
            col = be.texture(texture, a[..., :2], c)
            if shaded:
                col *= a[..., 2:3] * np.asarray(light.get("tint", (1, 1, 1)), np.float32)
            col += 0.5
            np.clip(col, 0, 255, out=col)
            blk = out[y0:y1, x0:x1]
            np.copyto(blk, col.astype(np.uint8), where=c[..., None])
            if antialias:
                out = be.antialias(out, rast, clip, self.faces)
        img = np.ascontiguousarray(out[::-1])
        if return_rast:
            return img, cov[::-1].copy(), rast[::-1]
        return img, cov[::-1].copy()

    # ---- keypoints ----------------------------------------------------------------------------
    def keypoints(self, verts: np.ndarray, joints: np.ndarray, cam: Camera, rast: np.ndarray):
        """MediaPipe-33 [33,3] (x, y, vis 0/1) and COCO-17 [17,3] (x, y, v 0/1/2) from the
        posed body, with visibility by a depth / body-part test against the raster."""
        pts = np.zeros((33, 3), np.float32)
        surface = np.zeros(33, bool)
        for i, name in enumerate(MEDIAPIPE_33):
            kind, idx = self.landmarks[name]
            pts[i] = joints[idx] if kind == "joint" else verts[idx]
            surface[i] = kind == "vertex" or name.endswith("_eye")
        uv, z = cam.project(pts)
        H, W = rast.shape[:2]
        ids = rast[..., 3].astype(np.int64)
        zw = rast[..., 2]
        depth = np.where(ids > 0, 2 * FAR * NEAR / ((FAR + NEAR) - (FAR - NEAR) * zw), np.inf)
        vis = np.zeros(33, np.float32)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H) & (z > 0)
        for i, name in enumerate(MEDIAPIPE_33):
            if not inside[i]:
                continue
            xi, yi = int(uv[i, 0]), int(uv[i, 1])
            y0, y1, x0, x1 = max(yi - 1, 0), min(yi + 2, H), max(xi - 1, 0), min(xi + 2, W)
            if surface[i]:
                ok = bool((depth[y0:y1, x0:x1] > z[i] - SURFACE_TOL_M).any())
            else:
                win = ids[y0:y1, x0:x1]
                parts = self.face_part[win[win > 0] - 1]
                allowed = [_P[p] for p in _KP_PARTS[name]]
                ok = bool(np.isin(parts, allowed).any())
            vis[i] = 1.0 if ok else 0.0
        mp = np.concatenate([uv, vis[:, None]], 1).astype(np.float32)
        coco = np.zeros((17, 3), np.float32)
        for k, name in enumerate(COCO_17):
            i = MEDIAPIPE_33.index(name)
            coco[k, :2] = uv[i]
            coco[k, 2] = 0 if not inside[i] else (2 if vis[i] else 1)
        return mp, coco

    # ---- one sample ---------------------------------------------------------------------------
    def sample(self, seed: int, views: bool = True, pose_kind: str | None = None,
               background_kind: str | None = None, shape: np.ndarray | None = None) -> SynthSample:
        """Sample `seed`. `shape`: this body shape instead of the seed's (everything else,
        pose, camera, clothes, stays the seed's: the shape is still drawn, then replaced)."""
        rng = np.random.default_rng(seed)
        size = self.size
        drawn = self.random_shape(rng)
        shape = drawn if shape is None else np.asarray(shape, np.float32)
        pose, pose_info = self.random_pose(rng, pose_kind)
        tex, clothing = self.paint_texture(rng, shape)
        bg, bg_kind = self.background(rng, background_kind)
        fov = float(rng.uniform(30, 60))
        K = default_intrinsics(size, size, fov)
        azimuth = float(rng.uniform(-30, 30))
        elevation = float(rng.uniform(-5, 15))
        fill = float(rng.uniform(0.65, 0.9))
        offset = rng.uniform(-0.06, 0.06, 2)
        light = {"offset": [float(rng.uniform(-0.8, 0.8)), float(-rng.uniform(0.1, 0.9)), 0.0],
                 "ambient": float(rng.uniform(0.3, 0.5)),
                 "tint": [float(t) for t in rng.uniform(0.92, 1.05, 3)]}
        noise_sigma = float(rng.uniform(0.5, 3.0))
        noise_shift = int(rng.integers(size))

        rest_v, heads = self.rest(shape)
        verts, joints, normals = self.pose_body(rest_v, heads, pose)
        vs, ns = verts[self.src], normals[self.src]
        cam, target, dist = self.frame_camera(verts, K, azimuth, elevation, fill, offset)
        img, mask, rast = self.render(vs, cam, tex, ns, light, bg, return_rast=True)
        img = self._noisy(img, noise_sigma, noise_shift)
        mp, coco = self.keypoints(verts, joints, cam, rast)
        rows = np.flatnonzero(mask.any(1))
        height_px = float(rows[-1] - rows[0] + 1) if rows.size else 0.0
        meta = {
            "pose_kind": pose_info,
            "camera_setup": {"azimuth_deg": azimuth, "elevation_deg": elevation, "fov_deg": fov,
                       "distance_m": float(dist), "target": [float(t) for t in target]},
            "light": light,
            "background": bg_kind,
            "clothing": clothing,
            "posed_height_m": float(verts[:, 1].max() - verts[:, 1].min()),  # vertical extent
        }
        sample = SynthSample(seed=int(seed), image=img, mask=mask, camera=cam, shape=shape, pose=pose,
                             texture=tex, keypoints_mp33=mp, keypoints_coco17=coco,
                             person_height_px=height_px, joint_names=self.joint_names, meta=meta)
        if views:
            for name, off in POSED_VIEWS:
                c = self.look_at(self.orbit_center(target, dist, azimuth + off, elevation), target, K, size)
                im, m = self.render(vs, c, tex, ns, light, antialias=False)
                sample.views[name] = SynthView(im, m, c, azimuth + off, elevation, True)
            zero = np.zeros_like(pose)
            av, _, an = self.pose_body(rest_v, heads, zero)
            avs, ans = av[self.src], an[self.src]
            _, target0, dist0 = self.frame_camera(av, K, 0.0, 0.0, 0.85)
            for name, az in APOSE_VIEWS:
                c = self.look_at(self.orbit_center(target0, dist0, az, 0.0), target0, K, size)
                im, m = self.render(avs, c, tex, ans, light, antialias=False)
                sample.views[name] = SynthView(im, m, c, az, 0.0, False)
        return sample

    def _noisy(self, img: np.ndarray, sigma: float, shift: int) -> np.ndarray:
        n = np.roll(self._sensor, shift, axis=1)
        return np.clip(img + n * sigma + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------
# Module API
# ---------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def get_generator(size: int = 512, texture_size: int = TEXTURE_SIZE) -> SynthGenerator:
    return SynthGenerator(size, texture_size)


def generate(seed: int, size: int = 512, views: bool = True) -> SynthSample:
    """One synthetic person with its ground truth, in memory (deterministic for `seed`)."""
    return get_generator(size).sample(seed, views=views)


def encode_png(arr: np.ndarray, level: int = 1) -> bytes:
    """A plain PNG (8-bit grey or RGB, 'Up' filter on every row, zlib `level`).

    Several times faster than PIL's adaptive filtering for these images, and the bytes
    depend only on the pixels (no timestamps), so samples are byte-for-byte deterministic.
    """
    import struct
    import zlib

    a = np.ascontiguousarray(arr, np.uint8)
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    rows = a.reshape(h, w * c)
    raw = np.empty((h, w * c + 1), np.uint8)
    raw[:, 0] = 2  # filter type Up
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    colour_type = {1: 0, 3: 2, 4: 6}[c]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + chunk(b"IEND", b""))


def _png(path: Path, arr: np.ndarray) -> None:
    Path(path).write_bytes(encode_png(arr))


def write_sample(sample: SynthSample, out_dir: Path) -> Path:
    """Write one sample to out_dir (photo.png, mask.png, keypoints.json, gt.json,
    texture.png, views/*.png, views/cameras.json)."""
    out_dir = Path(out_dir)
    (out_dir / "views").mkdir(parents=True, exist_ok=True)
    _png(out_dir / "photo.png", sample.image)
    _png(out_dir / "mask.png", sample.mask.astype(np.uint8) * 255)
    _png(out_dir / "texture.png", sample.texture)
    (out_dir / "keypoints.json").write_text(json.dumps(sample.keypoints_dict()))
    (out_dir / "gt.json").write_text(json.dumps(sample.gt_dict()))
    for name, v in sample.views.items():
        _png(out_dir / "views" / f"{name}.png", v.image)
        _png(out_dir / "views" / f"{name}_mask.png", v.mask.astype(np.uint8) * 255)
    (out_dir / "views" / "cameras.json").write_text(json.dumps(sample.cameras_dict()))
    return out_dir


def _generate_and_write(gen: SynthGenerator, out_dir: Path, indices, seed: int, progress=None) -> float:
    """Generate samples in this thread while a second thread encodes and writes the
    previous one (zlib and the raster kernels release the GIL). -> seconds."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    pending = None
    with ThreadPoolExecutor(1) as writer:
        for k, i in enumerate(indices):
            sample = gen.sample(seed + int(i))
            if pending is not None:
                pending.result()
            pending = writer.submit(write_sample, sample, Path(out_dir) / f"{int(i):05d}")
            if progress:
                progress(k + 1, len(indices))
        if pending is not None:
            pending.result()
    return time.perf_counter() - t0


def _worker_range(args) -> float:
    out, indices, seed, size = args
    return _generate_and_write(get_generator(size), Path(out), indices, seed)


def write_dataset(out_dir: Path, n: int, seed: int = 0, size: int = 512, workers: int = 1,
                  progress=None) -> dict:
    """Write n samples to out_dir/00000 ... with seeds seed, seed+1, ...; returns timings.

    ``samples_per_s`` counts generating and writing the samples, after the one-off set-up
    (loading the body, the atlas maps; ``setup_s``); ``samples_per_s_total`` includes it.
    ``workers`` > 1 splits the samples across processes (the bytes written are the same).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    workers = max(1, min(int(workers), n)) if n else 1
    if workers == 1:
        gen = get_generator(size)
        setup = time.perf_counter() - t0
        work = _generate_and_write(gen, out_dir, range(n), seed, progress)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        chunks = [c for c in np.array_split(np.arange(n), workers) if len(c)]
        ctx = mp.get_context("spawn")  # torch and numba do not like fork
        with ProcessPoolExecutor(len(chunks), mp_context=ctx, initializer=get_generator,
                                 initargs=(size,)) as pool:
            # set-up: every worker loads the body model before the timed work starts
            list(pool.map(_ready, range(len(chunks))))
            setup = time.perf_counter() - t0
            futures = [pool.submit(_worker_range, (str(out_dir), c.tolist(), seed, size)) for c in chunks]
            times = []
            for k, f in enumerate(futures):
                times.append(f.result())
                if progress:
                    progress(sum(len(c) for c in chunks[:k + 1]), n)
        work = max(times)
    rate = n / work if work > 0 else float("inf")
    total = time.perf_counter() - t0
    stats = {"samples": n, "seed": seed, "size": size, "workers": workers, "setup_s": round(setup, 3),
             "seconds": round(total, 3), "samples_per_s": round(rate, 3),
             "samples_per_s_total": round(n / total, 3) if total > 0 else None}
    (out_dir / "synth.json").write_text(json.dumps(stats, indent=1))
    return stats


def _ready(_: int) -> bool:
    time.sleep(0.2)  # so each worker takes one of these (each runs its initializer first)
    return True


SHEET_COLUMNS = ("photo + keypoints", "mask", "back", "left", "right", "A-pose front", "A-pose back", "texture")


def contact_sheet(samples: list[SynthSample], path: Path, cell: int = 128) -> Path:
    """One row per sample: the photo with its keypoints (visible red, occluded blue), the
    mask, the back / left / right views, A-pose front and back, the texture."""
    import cv2
    from PIL import Image

    def fit(im):
        c = np.zeros((cell, cell, 3), np.uint8)
        h, w = im.shape[:2]
        k = cell / max(h, w)
        small = cv2.resize(im, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        y, x = (cell - small.shape[0]) // 2, (cell - small.shape[1]) // 2
        c[y:y + small.shape[0], x:x + small.shape[1]] = small
        return c

    rows = []
    for s in samples:
        photo = s.image.copy()
        r = max(2, s.image.shape[0] // 128)
        for x, y, v in s.keypoints_mp33:
            cv2.circle(photo, (int(x), int(y)), r, (255, 40, 40) if v > 0 else (40, 80, 255), -1, cv2.LINE_AA)
        mask = np.repeat(s.mask[..., None].astype(np.uint8) * 255, 3, 2)
        cells = [photo, mask] + [s.views[n].image for n in ("back", "left", "right", "apose_front", "apose_back")
                                 if n in s.views] + [s.texture]
        rows.append(np.concatenate([fit(c) for c in cells], 1))
    head = np.full((18, rows[0].shape[1], 3), 255, np.uint8)
    for i, t in enumerate(SHEET_COLUMNS):
        cv2.putText(head, t, (i * cell + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([head] + rows, 0)).save(path, optimize=True)
    return path


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
