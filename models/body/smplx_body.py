"""SMPL-X (through the `smplx` package) behind our body interface.

Used only when the operator provides the model file SMPLX_NEUTRAL.npz: its licence is
non-commercial (https://smpl-x.is.tue.mpg.de, registration required), so it is never the
default and never shipped. The file is read by `smplx.SMPLX`, whose buffers (template,
shape directions, joint regressor, skinning weights, kinematic tree, faces) we take over;
the UV layout (`vt`/`ft`) comes from the raw npz.

SMPL-X already uses glTF axes (y up, the person faces +z, metres, the person's left on
+x), so no axis conversion is needed. Its rest pose is a T-pose. Shape is the first 10
betas; expressions are neutral and the pose-corrective blendshapes (`posedirs`) are not
applied: our skinning (models/body/lbs.py, models/render/skinning.py) is plain LBS, whose
rotation convention (about each rest joint head, world-aligned rest axes) is exactly
SMPL-X's local axis-angle pose, so a pose array here is an SMPL-X pose.
"""
from __future__ import annotations

import logging
import zipfile
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from models.body.lbs import LinearShapeSpace
from models.body.template import BodyTopology
from models.errors import ModelAssetError

log = logging.getLogger(__name__)

BODY_MODEL_ID = "smplx"
PATH_SETTING = "AVATARS_SMPLX_MODEL_PATH"
DEFAULT_FILE_NAME = "SMPLX_NEUTRAL.npz"
SOURCE_HINT = (
    f"Set {PATH_SETTING} to the SMPL-X model file {DEFAULT_FILE_NAME} (or the folder holding it), "
    "downloaded from https://smpl-x.is.tue.mpg.de after registering; its licence is "
    "non-commercial, so it is never shipped with this service."
)
NUM_BETAS = 10
BETA_LIMIT = 3.0  # the fit keeps betas within +-3 standard deviations
SKIN_INFLUENCES = 8  # top-K skinning weights kept per vertex (the bundle keeps 4)

BODY_JOINTS = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
]
# The 55 SMPL-X joints in the smplx package's order (smplx.joint_names.JOINT_NAMES[:55]).
JOINT_NAMES = BODY_JOINTS + ["jaw", "left_eye_smplhf", "right_eye_smplhf"] + [
    f"{side}_{finger}{i}" for side in ("left", "right")
    for finger in ("index", "middle", "pinky", "ring", "thumb") for i in (1, 2, 3)
]
NUM_JOINTS = len(JOINT_NAMES)
SHAPE_LABELS = [f"beta{i}" for i in range(NUM_BETAS)]
# Canonical joints (models/animation/canonical.py) are SMPL-X's 22 body joints.
CANONICAL_TO_SMPLX = {n: n for n in BODY_JOINTS}
# The SMPL-X equivalents of Anny's fit joints (models/fit/fit_body.py FIT_JOINTS).
SMPLX_FIT_JOINTS = [
    "spine2", "spine3", "neck", "head",
    "left_shoulder", "left_elbow", "right_shoulder", "right_elbow",
    "left_hip", "left_knee", "right_hip", "right_knee",
]
# Keys smplx.SMPLX reads from the npz (with use_pca=False, no face contour).
REQUIRED_KEYS = (
    "f", "v_template", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights",
    "hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr",
    "lmk_faces_idx", "lmk_bary_coords",
)


def asset_error(problem: str) -> ModelAssetError:
    """The one error a missing or unusable SMPL-X file gives: what is wrong, then the fix."""
    return ModelAssetError(f"SMPL-X body model: {problem}. {SOURCE_HINT}")


def resolve_path(path: str | Path) -> Path:
    """The model file for a configured path (a file, or a folder holding SMPLX_NEUTRAL.npz)."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / DEFAULT_FILE_NAME
    if not p.is_file():
        raise asset_error(f"{p} does not exist")
    return p


def _read_uvs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check the file is an npz with the keys smplx needs; return its (vt, ft)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise asset_error(f"{path} cannot be read ({exc})") from exc
    if not zipfile.is_zipfile(path):
        what = "a single .npy array" if magic == b"\x93NUMPY" else "not an .npz (zip) archive"
        raise asset_error(f"{path} is {what}; the model file is an .npz archive")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise asset_error(f"{path} is not a readable .npz archive ({exc})") from exc
    with npz:
        keys = set(npz.files)
        missing = [k for k in REQUIRED_KEYS if k not in keys]
        if missing:
            raise asset_error(f"{path} is not an SMPL-X model file: it lacks {', '.join(missing)}")
        if "vt" not in keys or "ft" not in keys:
            raise asset_error(
                f"{path} has no UV layout (vt/ft); UVs are required to texture the avatar, "
                "use the npz release that includes them"
            )
        try:
            vt = np.asarray(npz["vt"], np.float64)
            ft = np.asarray(npz["ft"])
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise asset_error(f"{path}: could not read vt/ft ({exc})") from exc
    if vt.ndim != 2 or vt.shape[1] != 2 or not len(vt) or not np.isfinite(vt).all():
        raise asset_error(f"{path}: vt must be finite [T,2] texture coordinates, got shape {list(vt.shape)}")
    if ft.ndim != 2 or ft.shape[1] != 3 or ft.dtype.kind not in "iu":
        raise asset_error(f"{path}: ft must be integer [F,3] texture faces, got {ft.dtype} {list(ft.shape)}")
    return vt, ft.astype(np.int64)


class SmplxBody(LinearShapeSpace):
    """SMPL-X in float32, glTF axes, with shape given as 10 betas."""

    body_model = BODY_MODEL_ID
    shape_labels = SHAPE_LABELS
    canonical_joints = CANONICAL_TO_SMPLX
    fit_joints = SMPLX_FIT_JOINTS

    def __init__(self, path: str | Path) -> None:
        try:
            import smplx
        except ImportError as exc:  # pragma: no cover - dependency missing
            raise ModelAssetError("The 'smplx' package is not installed: pip install smplx") from exc
        self.path = resolve_path(path)
        vt, ft = _read_uvs(self.path)
        try:
            model = smplx.SMPLX(
                str(self.path), gender="neutral", ext="npz", use_pca=False, num_betas=NUM_BETAS,
                num_expression_coeffs=10, batch_size=1, dtype=torch.float32,
                create_betas=False, create_global_orient=False, create_body_pose=False,
                create_left_hand_pose=False, create_right_hand_pose=False, create_expression=False,
                create_jaw_pose=False, create_leye_pose=False, create_reye_pose=False,
                create_transl=False,
            )
        except Exception as exc:  # smplx raises assorted errors on malformed files
            raise asset_error(
                f"{self.path} could not be loaded by the smplx package ({type(exc).__name__}: {exc})"
            ) from exc
        with torch.no_grad():
            self._take_buffers(model, vt, ft)
        log.info("Loaded SMPL-X from %s: %d vertices, %d faces", self.path, len(self.template_vertices),
                 len(self._faces))

    def _take_buffers(self, model, vt: np.ndarray, ft: np.ndarray) -> None:
        """Copy and check what we need from the smplx module (then it can be dropped)."""
        def bad(what: str) -> ModelAssetError:
            return asset_error(f"{self.path} is malformed: {what}")

        v = model.v_template.detach().float()
        if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 4:
            raise bad(f"v_template must be [V,3], got {list(v.shape)}")
        V = v.shape[0]
        dirs = model.shapedirs.detach().float()
        if dirs.ndim != 3 or dirs.shape[:2] != (V, 3) or dirs.shape[2] < NUM_BETAS:
            raise bad(f"shapedirs must be [V,3,>={NUM_BETAS}] with V={V}, got {list(dirs.shape)}")
        jreg = model.J_regressor.detach().float()
        if tuple(jreg.shape) != (NUM_JOINTS, V):
            raise bad(f"J_regressor must be [{NUM_JOINTS},{V}], got {list(jreg.shape)}")
        weights = model.lbs_weights.detach().float()
        if tuple(weights.shape) != (V, NUM_JOINTS):
            raise bad(f"weights must be [{V},{NUM_JOINTS}], got {list(weights.shape)}")
        if not torch.isfinite(weights).all() or weights.min() < -1e-6 or \
                (weights.sum(1) - 1).abs().max() > 1e-3:
            raise bad("weights must be finite, >= 0, and sum to 1 for every vertex")
        parents = [int(p) for p in model.parents.tolist()]
        if len(parents) != NUM_JOINTS or any(not -1 <= p < j for j, p in enumerate(parents)) or parents[0] != -1:
            raise bad(f"kintree_table must give {NUM_JOINTS} parents, each before its child")
        faces = model.faces_tensor.detach().cpu().numpy().astype(np.int64)
        if faces.ndim != 2 or faces.shape[1] != 3 or not len(faces) or faces.min() < 0 or faces.max() >= V:
            raise bad(f"f must be [F,3] indices into {V} vertices")
        if ft.shape != faces.shape:
            raise bad(f"ft {list(ft.shape)} must match f {list(faces.shape)}")
        if ft.min() < 0 or ft.max() >= len(vt):
            raise bad(f"ft must index the {len(vt)} entries of vt")
        if vt.min() < -1e-3 or vt.max() > 1 + 1e-3:
            raise bad("vt must lie in [0, 1]")
        for name, t in (("v_template", v), ("shapedirs", dirs), ("J_regressor", jreg)):
            if not torch.isfinite(t).all():
                raise bad(f"{name} contains NaN or inf")

        self.template_vertices = v.contiguous()  # [V,3]
        self.blendshapes = dirs[:, :, :NUM_BETAS].permute(2, 0, 1).contiguous()  # [S,V,3]
        self.J_regressor = jreg
        self.template_heads = jreg @ v  # [J,3]
        self.head_blendshapes = torch.einsum("jv,svc->sjc", jreg, self.blendshapes)  # [S,J,3]
        self.lbs_weights = weights
        self.joint_names = list(JOINT_NAMES)
        self.parents = parents
        self._faces = faces
        self._vt = np.clip(vt, 0.0, 1.0).astype(np.float32)
        self._ft = ft

    # ---- shape -------------------------------------------------------------------------
    def shape_coeffs(self, shape: torch.Tensor) -> torch.Tensor:
        """[B,10] betas -> [B,10] blendshape coefficients (the identity)."""
        return shape.float()

    @staticmethod
    def shape_from_free(free: torch.Tensor) -> torch.Tensor:
        """The fit's unconstrained shape parameters -> betas within +-BETA_LIMIT (0 -> mean)."""
        return BETA_LIMIT * torch.tanh(free / BETA_LIMIT)

    def rest_joint_matrices(self, shape: np.ndarray) -> np.ndarray:
        """Global rest transforms [J,4,4]: identity rotations at the shaped joint heads."""
        with torch.no_grad():
            heads = self.rest_heads(self.shape_coeffs(torch.as_tensor(shape, dtype=torch.float32)[None]))[0]
        out = np.tile(np.eye(4, dtype=np.float32), (NUM_JOINTS, 1, 1))
        out[:, :3, 3] = heads.numpy()
        return out

    # ---- topology ------------------------------------------------------------------------
    @cached_property
    def topology(self) -> BodyTopology:
        pairs = np.stack([self._faces.reshape(-1), self._ft.reshape(-1)], 1)
        uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
        split_faces = inverse.reshape(-1, 3).astype(np.int32)
        uvs = self._vt[uniq[:, 1]].copy()
        uvs[:, 1] = 1.0 - uvs[:, 1]  # OBJ-style v-up -> image rows (glTF)
        split_faces = _outward_winding(self.template_vertices.numpy()[uniq[:, 0]], split_faces)
        w = self.lbs_weights.numpy()
        K = min(SKIN_INFLUENCES, w.shape[1])
        idx = np.argsort(-w, axis=1, kind="stable")[:, :K]
        sw = np.clip(np.take_along_axis(w, idx, axis=1), 0.0, None)
        sw /= sw.sum(1, keepdims=True)
        return BodyTopology(
            faces=split_faces,
            uvs=uvs,
            source_vertex=uniq[:, 0].astype(np.int64),
            joint_names=self.joint_names,
            parents=self.parents,
            skin_indices=idx.astype(np.int64),
            skin_weights=sw.astype(np.float32),
            landmarks=self._landmarks(),
        )

    def _landmarks(self) -> dict[str, tuple[str, int]]:
        """Where each MediaPipe landmark sits on this body: a joint head or a vertex."""
        J = {n: i for i, n in enumerate(self.joint_names)}
        out: dict[str, tuple[str, int]] = {}
        for side in ("left", "right"):
            out[f"{side}_shoulder"] = ("joint", J[f"{side}_shoulder"])
            out[f"{side}_elbow"] = ("joint", J[f"{side}_elbow"])
            out[f"{side}_wrist"] = ("joint", J[f"{side}_wrist"])
            out[f"{side}_hip"] = ("joint", J[f"{side}_hip"])
            out[f"{side}_knee"] = ("joint", J[f"{side}_knee"])
            out[f"{side}_ankle"] = ("joint", J[f"{side}_ankle"])
            out[f"{side}_eye"] = ("joint", J[f"{side}_eye_smplhf"])
            out[f"{side}_pinky"] = ("joint", J[f"{side}_pinky1"])
            out[f"{side}_index"] = ("joint", J[f"{side}_index1"])
            out[f"{side}_thumb"] = ("joint", J[f"{side}_thumb2"])
        v = self.template_vertices.numpy()
        heads = self.template_heads.numpy()
        head = heads[J["head"]]
        eye_y = float((heads[J["left_eye_smplhf"], 1] + heads[J["right_eye_smplhf"], 1]) / 2)
        near_head = np.linalg.norm(v - head, axis=1) < 0.25

        def pick(mask_at, score) -> int:
            # Widen the tolerances until some vertex qualifies (dense and coarse meshes alike).
            for scale in (1.0, 2.0, 4.0):
                cand = np.flatnonzero(mask_at(scale))
                if cand.size:
                    return int(cand[np.argmax(score[cand])])
            raise asset_error(f"{self.path} is malformed: no vertex found for a face or foot landmark")

        # Nose tip: the most forward vertex near the midline a little below the eyes.
        out["nose"] = ("vertex", pick(
            lambda s: near_head & (np.abs(v[:, 0] - head[0]) < 0.015 * s)
            & (np.abs(v[:, 1] - (eye_y - 0.035)) < 0.035 * s), v[:, 2] - 0.1 * np.abs(v[:, 0] - head[0])))
        for side, sign in (("left", 1.0), ("right", -1.0)):
            # Ear: the outermost vertex at about eye height, level with the head joint front-to-back.
            out[f"{side}_ear"] = ("vertex", pick(
                lambda s, sign=sign: near_head & (np.sign(v[:, 0] - head[0]) == sign)
                & (np.abs(v[:, 1] - (eye_y - 0.02)) < 0.025 * s) & (np.abs(v[:, 2] - head[2]) < 0.05 * s),
                sign * (v[:, 0] - head[0]) - 0.1 * np.abs(v[:, 1] - (eye_y - 0.02))))
            ankle = heads[J[f"{side}_ankle"]]
            # Foot vertices: below the ankle, within a few cm of it sideways.
            def foot(s, ankle=ankle):
                return (v[:, 1] < ankle[1]) & (np.abs(v[:, 0] - ankle[0]) < 0.07 * s) \
                    & (np.abs(v[:, 2] - ankle[2]) < 0.3)
            centred = 0.1 * np.abs(v[:, 0] - ankle[0])
            out[f"{side}_heel"] = ("vertex", pick(foot, -v[:, 2] - centred))
            out[f"{side}_foot_index"] = ("vertex", pick(foot, v[:, 2] - centred))
        return out


def _outward_winding(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Make faces counter-clockwise seen from outside (glTF's front faces)."""
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    # Signed volume: positive when normals point outward on a closed-ish surface.
    if float((n * tri.mean(1)).sum()) < 0:
        faces = faces[:, [0, 2, 1]]
    return np.ascontiguousarray(faces)
