"""The Anny body model (NAVER, Apache-2.0 code, CC0 assets) behind our body interface.

Anny works in z-up axes with the person facing -y. We convert everything to glTF axes
(y up, the person faces +z, meters) at this boundary, so the rest of the code has one
convention.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from functools import cached_property

import numpy as np
import torch

from models.body.lbs import LinearShapeSpace
from models.body.template import BodyTopology
from models.errors import ModelAssetError
from models.fit.fit_body import FIT_JOINTS

log = logging.getLogger(__name__)

# p_gltf = ANNY_TO_GLTF @ p_anny: (x, y, z) -> (x, z, -y); a proper rotation.
ANNY_TO_GLTF = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], dtype=np.float32)

PHENOTYPE_LABELS = ["gender", "age", "muscle", "weight", "height", "proportions"]
BODY_MODEL_ID = "anny"

# Canonical (SMPL-X body) joint -> Anny bone, written into every bundle so the render path
# retargets motions without knowing the body model.
CANONICAL_TO_ANNY = {
    "pelvis": "root", "left_hip": "upperleg01.L", "right_hip": "upperleg01.R",
    "spine1": "spine05", "left_knee": "lowerleg01.L", "right_knee": "lowerleg01.R",
    "spine2": "spine03", "left_ankle": "foot.L", "right_ankle": "foot.R", "spine3": "spine01",
    "left_foot": "toe2-1.L", "right_foot": "toe2-1.R", "neck": "neck01",
    "left_collar": "clavicle.L", "right_collar": "clavicle.R", "head": "head",
    "left_shoulder": "upperarm01.L", "right_shoulder": "upperarm01.R",
    "left_elbow": "lowerarm01.L", "right_elbow": "lowerarm01.R", "left_wrist": "wrist.L",
    "right_wrist": "wrist.R",
}

_lock = threading.Lock()
_instance: AnnyBody | None = None


def get_anny() -> AnnyBody:
    """Load Anny once per process (building its asset cache the first time, ~60-90 s)."""
    global _instance  # a lazily built, read-only singleton guarded by a lock
    with _lock:
        if _instance is None:
            _instance = AnnyBody()
        return _instance


def prepare() -> None:
    """Build Anny's first-run asset cache now, so no request pays for it."""
    get_anny()


class AnnyBody(LinearShapeSpace):
    """Anny in float32, glTF axes, with shape given as 6 phenotype values in [0, 1]."""

    body_model = BODY_MODEL_ID
    shape_labels = PHENOTYPE_LABELS
    canonical_joints = CANONICAL_TO_ANNY
    fit_joints = FIT_JOINTS

    def __init__(self) -> None:
        try:
            import anny
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise ModelAssetError("The 'anny' package is not installed: pip install anny") from exc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                model = anny.Anny()
            except Exception as exc:
                cache = os.environ.get("ANNY_CACHE_DIR", "~/.cache/anny")
                raise ModelAssetError(
                    f"Could not build the Anny body model (cache {cache}): {exc}. "
                    "Run `avatars models prepare`; ANNY_CACHE_DIR sets where its cache lives."
                ) from exc
        model.requires_grad_(False)
        self._model = model
        if list(model.phenotype_labels) != PHENOTYPE_LABELS:
            raise ModelAssetError(f"Unexpected Anny phenotype labels {model.phenotype_labels}")
        C = torch.from_numpy(ANNY_TO_GLTF).double()
        self._C = C.float()
        # Linear blendshapes in glTF axes, float32: rest = template + coeffs @ blendshapes.
        self.template_vertices = (model.template_vertices @ C.T).float()  # [V,3]
        self.blendshapes = (model.blendshapes @ C.T).float()  # [S,V,3]
        self.template_heads = (model.template_bone_heads @ C.T).float()  # [J,3]
        self.head_blendshapes = (model.bone_heads_blendshapes @ C.T).float()  # [S,J,3]
        self.joint_names = list(model.bone_labels)
        self.parents = [int(p) for p in model.bone_parents]

    # ---- shape -------------------------------------------------------------------------
    def shape_coeffs(self, shape: torch.Tensor) -> torch.Tensor:
        """[B,6] phenotype values in [0,1] -> [B,S] blendshape coefficients (differentiable)."""
        m = self._model
        B = shape.shape[0]
        zeros = torch.zeros(B, 0, dtype=torch.float64)
        return m._get_phenotype_blendshape_coefficients(
            shape.double(), zeros, torch.zeros(B, len(m.facial_action_labels), dtype=torch.float64)
        ).float()

    def rest_joint_matrices(self, shape: np.ndarray) -> np.ndarray:
        """Global rest transforms [J,4,4] (bone orientation + head) for one shape, glTF axes."""
        m = self._model
        with torch.no_grad():
            coeffs = self.shape_coeffs(torch.as_tensor(shape, dtype=torch.float32)[None]).double()
            rest = m.get_rest_model(coeffs)["rest_bone_poses"][0]  # [J,4,4] anny axes
        C4 = torch.eye(4, dtype=torch.float64)
        C4[:3, :3] = self._C.double()
        return (C4 @ rest).float().numpy()

    # ---- topology ------------------------------------------------------------------------
    @cached_property
    def topology(self) -> BodyTopology:
        m = self._model
        faces = m.faces.numpy().astype(np.int64)
        tfaces = m.face_texture_coordinate_indices.numpy().astype(np.int64)
        uv_all = m.texture_coordinates.numpy().astype(np.float32)
        pairs = np.stack([faces.reshape(-1), tfaces.reshape(-1)], 1)
        uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
        split_faces = inverse.reshape(-1, 3).astype(np.int32)
        uvs = uv_all[uniq[:, 1]].copy()
        uvs[:, 1] = 1.0 - uvs[:, 1]  # OBJ-style v-up -> image rows (glTF)
        split_faces = self._outward_winding(split_faces, uniq[:, 0])
        return BodyTopology(
            faces=split_faces,
            uvs=uvs,
            source_vertex=uniq[:, 0],
            joint_names=self.joint_names,
            parents=self.parents,
            skin_indices=m.vertex_bone_indices.numpy().astype(np.int64),
            skin_weights=m.vertex_bone_weights.numpy().astype(np.float32),
            landmarks=self._landmarks(),
        )

    def _outward_winding(self, faces: np.ndarray, source: np.ndarray) -> np.ndarray:
        """Make faces counter-clockwise seen from outside (glTF's front faces)."""
        v = self.template_vertices.numpy()[source]
        tri = v[faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        # Signed volume: positive when normals point outward on a closed-ish surface.
        if float((n * tri.mean(1)).sum()) < 0:
            faces = faces[:, [0, 2, 1]]
        return faces

    def _landmarks(self) -> dict[str, tuple[str, int]]:
        """Where each MediaPipe landmark sits on this body: a joint head or a vertex."""
        J = {n: i for i, n in enumerate(self.joint_names)}
        v = self.template_vertices.numpy()
        out: dict[str, tuple[str, int]] = {}
        for side, s in (("left", "L"), ("right", "R")):
            out[f"{side}_shoulder"] = ("joint", J[f"upperarm01.{s}"])
            out[f"{side}_elbow"] = ("joint", J[f"lowerarm01.{s}"])
            out[f"{side}_wrist"] = ("joint", J[f"wrist.{s}"])
            out[f"{side}_hip"] = ("joint", J[f"upperleg01.{s}"])
            out[f"{side}_knee"] = ("joint", J[f"lowerleg01.{s}"])
            out[f"{side}_ankle"] = ("joint", J[f"foot.{s}"])
            out[f"{side}_eye"] = ("joint", J[f"eye.{s}"])
            out[f"{side}_pinky"] = ("joint", J[f"finger5-1.{s}"])
            out[f"{side}_index"] = ("joint", J[f"finger2-1.{s}"])
            out[f"{side}_thumb"] = ("joint", J[f"finger1-2.{s}"])
        heads = self.template_heads.numpy()
        eye_y = heads[J["eye.L"], 1]
        head_x = 0.0
        # Nose tip: the most forward vertex near the midline around eye height.
        near = (np.abs(v[:, 0] - head_x) < 0.01) & (np.abs(v[:, 1] - (eye_y - 0.04)) < 0.04)
        out["nose"] = ("vertex", int(np.flatnonzero(near)[np.argmax(v[near, 2])]))
        for side, sign in (("left", 1.0), ("right", -1.0)):
            band = (np.abs(v[:, 1] - (eye_y - 0.02)) < 0.02) & (np.abs(v[:, 2] - heads[J["head"], 2]) < 0.06)
            cand = np.flatnonzero(band & (np.sign(v[:, 0]) == sign))
            out[f"{side}_ear"] = ("vertex", int(cand[np.argmax(np.abs(v[cand, 0]))]))
            foot = J[f"foot.{'L' if side == 'left' else 'R'}"]
            fx = heads[foot, 0]
            low = (v[:, 1] < heads[foot, 1] + 0.03) & (np.abs(v[:, 0] - fx) < 0.06)
            cand = np.flatnonzero(low)
            out[f"{side}_heel"] = ("vertex", int(cand[np.argmin(v[cand, 2])]))
            out[f"{side}_foot_index"] = ("vertex", int(cand[np.argmax(v[cand, 2])]))
        return out
