"""The synthetic people's body: Anny with its parts, landmarks, atlas geometry and posing.

``SynthBody`` holds everything that does not change between samples: the body model's
arrays (template, blendshapes, skin weights), the body part of every vertex and texel,
the landmarks MediaPipe-33 needs, the texel groups the garment painter works on, and
the model-vertex adjacency the clothed surface is smoothed with. Its methods turn a
phenotype into rest vertices, pose them (numba skinning), and find keypoints with their
visibility in a render.

Conventions: glTF world axes (y up, the person faces +z, metres); poses are axis-angles
in world-aligned rest axes (as ``models.fit.fit_body.posed_vertices``).
"""
from __future__ import annotations

import numpy as np

from models.body.template import MEDIAPIPE_33
from models.fit.camera import Camera

TEXTURE_SIZE = 1024  # = models.pipeline.TEXTURE_SIZE (checked by tests)
NEAR, FAR = 0.05, 100.0  # clip_from_camera's defaults
SHAPE_LABELS = ["gender", "age", "muscle", "weight", "height", "proportions"]  # Anny's phenotypes

COCO_17 = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]
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


def _lo_hi(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column min and max of [N,C] (numpy's axis-0 reduction of thin arrays is slow)."""
    c = np.ascontiguousarray(a.T)
    return c.min(1), c.max(1)


def _rownorm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", a, a))


class _Group:
    """A subset of the covered texels with their template positions (and a parameter)."""

    def __init__(self, gen: SynthBody, idx: np.ndarray, t: np.ndarray | None = None):
        self.idx = idx
        self.x, self.y, self.z = gen.tx[idx], gen.ty[idx], gen.tz[idx]
        self.t = None if t is None else t[idx]
        self.torso = gen.is_torso[idx]
        self.neck = gen.is_neck[idx]
        self.leg = gen.is_leg[idx]


class SynthBody:
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
        self.t_arm, self.t_leg = self._limb_params(pos, self.t_part)
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
        # Gutters: uncovered texels within 4 texels of an island take its nearest texel, so
        # bilinear sampling at island borders never reads black.
        dist, (iy, ix) = ndimage.distance_transform_edt(~tm.covered, return_indices=True)
        gut = (dist > 0) & (dist <= 4)
        self.gut_dst = np.flatnonzero(gut.reshape(-1))
        self.gut_src = (iy * T + ix).reshape(-1)[self.gut_dst]
        # The same anatomy per model vertex (the clothed surface is built on vertices).
        self.v_t_arm, self.v_t_leg = self._limb_params(self.tmpl_v, self.vpart)
        # Drapes (skirts, coats) copy the label of the trunk or leg texel nearest to them.
        from scipy.spatial import cKDTree

        sel = np.flatnonzero(self.is_torso | self.is_leg)[::3]  # every third texel: ~1.5 mm apart
        self.drape_tree = cKDTree(pos[sel])
        self.drape_tree_texels = self.cov_idx[sel]
        self.texel_pos = pos  # [N,3] template position of every covered texel (order of cov_idx)
        # Model-vertex adjacency (row-normalised) for smoothing the clothed surface's offsets.
        e = np.concatenate([mf[:, [0, 1]], mf[:, [1, 2]], mf[:, [2, 0]]])
        adj = sparse.csr_matrix((np.ones(len(e) * 2, np.float32),
                                 (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(V, V))
        adj.data[:] = 1.0
        deg = np.asarray(adj.sum(1)).ravel()
        self.vertex_mean = sparse.diags(1.0 / np.maximum(deg, 1)) @ adj  # neighbour mean operator
        # The texel under each model vertex (its first split copy's UV), for label look-ups.
        first = np.full(V, -1, np.int64)
        first[self.src[::-1]] = np.arange(len(self.src))[::-1]
        uv = self.uvs[first]
        self.vertex_texel = (np.clip((uv[:, 1] * T).astype(np.int64), 0, T - 1) * T
                             + np.clip((uv[:, 0] * T).astype(np.int64), 0, T - 1))
        self.vertex_first_split = first

    def _limb_params(self, pos: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position of points along their arm (0 shoulder .. 1 wrist) and leg (0 hip .. 1
        ankle) on the template, -1 off the limbs. -> (t_arm, t_leg) float32 [N]."""
        H0 = self.heads0
        out = []
        for limb, first, last, parts in (("arm", "upperarm01", "wrist", ("upperarm", "lowerarm", "hand")),
                                          ("leg", "upperleg01", "foot", ("upperleg", "lowerleg", "foot"))):
            t = np.full(len(pos), -1.0, np.float32)
            for s in ("L", "R"):
                sel = np.isin(part, [_P[f"{p}.{s}"] for p in parts])
                a, b = H0[f"{first}.{s}"], H0[f"{last}.{s}"]
                t[sel] = ((pos[sel] - a) @ (b - a)) / float((b - a) @ (b - a))
            out.append(t)
        return out[0], out[1]

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

    # ---- keypoints ----------------------------------------------------------------------------
    def keypoints(self, verts: np.ndarray, joints: np.ndarray, cam: Camera, rast: np.ndarray,
                  n_body_faces: int | None = None):
        """MediaPipe-33 [33,3] (x, y, vis 0/1) and COCO-17 [17,3] (x, y, v 0/1/2) from the
        posed body, with visibility by a depth / body-part test against the raster (whose
        triangles after the body's first `n_body_faces`, a skirt or a coat, hide joints)."""
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
                tri = win[win > 0] - 1
                parts = self.face_part[tri[tri < len(self.face_part)]]
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

