"""In-memory form of the avatar bundle: a rigged, textured, skinned mesh.

numpy only (no torch, no heavy deps): the render path imports this module.

Conventions (the same as glTF 2.0, so the .glb writer/reader is a plain copy):
  * meters, right-handed, +y up, the person faces +z;
  * uv (0, 0) is the top-left corner of the texture image, v grows downward;
  * faces are counter-clockwise when seen from the front (outside);
  * ``rest_matrices[j]`` is the global (model-space) rest transform of joint j;
    its inverse is glTF's inverse bind matrix;
  * joints are ordered so that a parent always comes before its children.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "MAX_INFLUENCES",
    "REQUIRED_EXTRAS",
    "AvatarMesh",
    "BundleError",
    "affine_inverse",
    "compute_vertex_normals",
    "limit_influences",
    "normalize_vectors",
]

#: Value of ``extras["format_version"]`` written by this code. Readers refuse bundles whose
#: format_version is greater (written by newer code with a layout they do not know).
BUNDLE_FORMAT_VERSION = 1

#: Skin influences per vertex (one glTF JOINTS_0/WEIGHTS_0 pair).
MAX_INFLUENCES = 4

#: Keys that ``AvatarMesh.extras`` must carry, with the accepted types.
REQUIRED_EXTRAS: dict[str, tuple[type, ...]] = {
    "body_model": (str,),
    "shape_params": (dict, list),
    "format_version": (int,),
}

# |sum(weights) - 1| allowed per vertex. The writer renormalises exactly anyway.
_WEIGHT_SUM_TOL = 1e-3


class BundleError(ValueError):
    """An avatar bundle (or the AvatarMesh about to be written) is invalid."""


def _as(name: str, value: Any, dtype: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """Coerce ``value`` to a C-contiguous array of ``dtype`` and check its shape.

    ``None`` entries in ``shape`` match any size. Integer targets are range-checked before
    the cast so that e.g. int64 -> uint16 can never wrap around silently.
    """
    arr = np.asarray(value)
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = "[" + ",".join("*" if s is None else str(s) for s in shape) + "]"
        raise BundleError(f"{name}: expected shape {want}, got {list(arr.shape)}")
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        if arr.dtype.kind == "f":
            if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
                raise BundleError(f"{name}: expected integers, got non-integral floats")
        elif arr.dtype.kind not in "iub":
            raise BundleError(f"{name}: expected an integer array, got dtype {arr.dtype}")
        if arr.size:
            info = np.iinfo(dt)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise BundleError(
                    f"{name}: values [{lo}, {hi}] do not fit {dt.name} [{info.min}, {info.max}]"
                )
    elif dt.kind == "f" and arr.dtype.kind not in "fiub":
        raise BundleError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dt)


@dataclass(eq=False)
class AvatarMesh:
    """A rigged avatar: rest mesh + skeleton + linear-blend-skinning weights + texture.

    The constructor coerces dtypes and checks shapes (raising :class:`BundleError`); the
    full semantic check is :meth:`validate`, which :func:`models.bundle.gltf.write_glb`
    runs before writing.
    """

    positions: np.ndarray  # float32[V,3] rest-pose vertices, meters, +y up, facing +z
    normals: np.ndarray | None  # float32[V,3] unit vertex normals, or None (computed on write)
    uvs: np.ndarray  # float32[V,2], (0,0) = top-left of the texture, v grows downward
    faces: np.ndarray  # uint32[F,3] vertex indices, counter-clockwise front faces
    joint_names: list[str]  # J names, unique
    parents: np.ndarray  # int32[J], -1 for a root; parents[j] < j
    rest_matrices: np.ndarray  # float32[J,4,4] global rest transform of each joint (affine)
    joints: np.ndarray  # uint16[V,4] joint indices; unused slots are 0
    weights: np.ndarray  # float32[V,4] >= 0, each row sums to 1; unused slots are 0
    texture: np.ndarray  # uint8[H,W,3] RGB base-colour texture
    extras: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable metadata

    def __post_init__(self) -> None:
        self.positions = _as("positions", self.positions, np.float32, (None, 3))
        v = self.positions.shape[0]
        if self.normals is not None:
            self.normals = _as("normals", self.normals, np.float32, (v, 3))
        self.uvs = _as("uvs", self.uvs, np.float32, (v, 2))
        self.faces = _as("faces", self.faces, np.uint32, (None, 3))
        self.joint_names = [str(n) for n in self.joint_names]
        j = len(self.joint_names)
        self.parents = _as("parents", self.parents, np.int32, (j,))
        self.rest_matrices = _as("rest_matrices", self.rest_matrices, np.float32, (j, 4, 4))
        self.joints = _as("joints", self.joints, np.uint16, (v, MAX_INFLUENCES))
        self.weights = _as("weights", self.weights, np.float32, (v, MAX_INFLUENCES))
        self.texture = _as("texture", self.texture, np.uint8, (None, None, 3))
        if not isinstance(self.extras, dict):
            raise BundleError(f"extras: expected a dict, got {type(self.extras).__name__}")

    def __repr__(self) -> str:
        h, w, _ = self.texture.shape
        return (
            f"AvatarMesh(V={self.num_vertices}, F={self.num_faces}, J={self.num_joints},"
            f" normals={'yes' if self.normals is not None else 'None'}, texture={w}x{h},"
            f" extras keys={sorted(self.extras)})"
        )

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return int(self.positions.shape[0])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def inverse_bind_matrices(self) -> np.ndarray:
        """float64[J,4,4] inverses of ``rest_matrices`` (last row exactly 0,0,0,1)."""
        return affine_inverse(self.rest_matrices.astype(np.float64))

    # ------------------------------------------------------------- validation
    def validate(self, *, require_extras: bool = True) -> None:
        """Check every invariant documented on the fields; raise BundleError on the first
        violation. ``require_extras=False`` skips the REQUIRED_EXTRAS keys check (used when
        reading third-party files)."""
        v, f, j = self.num_vertices, self.num_faces, self.num_joints
        if v == 0 or f == 0:
            raise BundleError(f"empty mesh: {v} vertices, {f} faces")
        if v > np.iinfo(np.uint32).max - 1:
            raise BundleError(f"too many vertices for uint32 indices: {v}")
        for name in ("positions", "normals", "uvs", "weights", "rest_matrices"):
            arr = getattr(self, name)
            if arr is not None and not np.all(np.isfinite(arr)):
                raise BundleError(f"{name}: contains NaN or inf")
        if int(self.faces.max()) >= v:
            raise BundleError(f"faces: index {int(self.faces.max())} >= vertex count {v}")

        # skeleton
        if j == 0:
            raise BundleError("skeleton has no joints")
        if j > np.iinfo(np.uint16).max + 1:
            raise BundleError(f"too many joints for uint16 indices: {j}")
        if len(set(self.joint_names)) != j:
            dup = sorted({n for n in self.joint_names if self.joint_names.count(n) > 1})
            raise BundleError(f"joint_names are not unique: {dup[:5]}")
        idx = np.arange(j)
        bad = np.nonzero((self.parents < -1) | (self.parents >= idx))[0]
        if bad.size:
            k = int(bad[0])
            raise BundleError(
                f"parents: joint {k} ({self.joint_names[k]!r}) has parent {int(self.parents[k])};"
                " a parent must be -1 or come before its child"
            )
        last = self.rest_matrices[:, 3, :]
        if not np.allclose(last, [0, 0, 0, 1], atol=1e-6):
            raise BundleError("rest_matrices: last row must be [0, 0, 0, 1] (affine transforms)")
        det = np.linalg.det(self.rest_matrices[:, :3, :3].astype(np.float64))
        if np.any(np.abs(det) < 1e-12):
            k = int(np.argmin(np.abs(det)))
            raise BundleError(f"rest_matrices: joint {k} ({self.joint_names[k]!r}) is singular")

        # skin
        if int(self.joints.max()) >= j:
            raise BundleError(f"joints: index {int(self.joints.max())} >= joint count {j}")
        if np.any(self.weights < 0):
            raise BundleError("weights: negative values")
        sums = self.weights.sum(axis=1, dtype=np.float64)
        bad = np.nonzero(np.abs(sums - 1.0) > _WEIGHT_SUM_TOL)[0]
        if bad.size:
            raise BundleError(
                f"weights: {bad.size} vertices do not sum to 1 (vertex {int(bad[0])}:"
                f" {float(sums[bad[0]]):.6f}); use limit_influences()"
            )
        used = self.weights > 0
        jj = np.where(used, self.joints.astype(np.int64), -1 - np.arange(MAX_INFLUENCES))
        js = np.sort(jj, axis=1)
        if np.any(js[:, 1:] == js[:, :-1]):
            raise BundleError(
                "joints: a vertex uses the same joint twice with non-zero weight;"
                " use limit_influences() to merge"
            )

        # texture
        h, w, _ = self.texture.shape
        if h == 0 or w == 0:
            raise BundleError("texture is empty")

        # extras
        try:
            json.dumps(self.extras, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"extras are not JSON-serialisable: {exc}") from None
        if require_extras:
            for key, types in REQUIRED_EXTRAS.items():
                if key not in self.extras:
                    raise BundleError(f"extras: missing required key {key!r}")
                val = self.extras[key]
                if not isinstance(val, types) or isinstance(val, bool):
                    names = "/".join(t.__name__ for t in types)
                    raise BundleError(
                        f"extras[{key!r}]: expected {names}, got {type(val).__name__}"
                    )


# ---------------------------------------------------------------------- helpers
def affine_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse of affine 4x4 matrices ``m[...,4,4]`` (float64), last row exactly [0,0,0,1]."""
    m = np.asarray(m, dtype=np.float64)
    rinv = np.linalg.inv(m[..., :3, :3])
    out = np.zeros(m.shape, dtype=np.float64)
    out[..., :3, :3] = rinv
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", rinv, m[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def compute_vertex_normals(positions: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals float32[V,3] (CCW faces -> outward normals).

    Vertices not used by any (non-degenerate) face get (0, 1, 0) so that every normal is
    unit length, as glTF requires.
    """
    p = np.asarray(positions, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])  # |fn| = 2 * area
    n = np.zeros_like(p)
    flat = f.reshape(-1)
    for c in range(3):
        n[:, c] = np.bincount(flat, weights=np.repeat(fn[:, c], 3), minlength=len(p))
    return normalize_vectors(n)


def normalize_vectors(n: np.ndarray) -> np.ndarray:
    """Normalise rows of ``n[V,3]`` to unit length (float32); zero rows become (0, 1, 0)."""
    n = np.asarray(n, dtype=np.float64)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    ok = length[:, 0] > 1e-20
    out = np.empty_like(n)
    out[ok] = n[ok] / length[ok]
    out[~ok] = (0.0, 1.0, 0.0)
    return out.astype(np.float32)


def limit_influences(
    indices: np.ndarray, weights: np.ndarray, k: int = MAX_INFLUENCES
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce per-vertex skin influences to the ``k`` (<= 4) largest and renormalise.

    ``indices`` int[V,K] joint indices and ``weights`` float[V,K] (K may be anything >= 1,
    e.g. a dense [V,J] weight matrix with ``indices = np.broadcast_to(np.arange(J), (V, J))``).
    Repeated joint indices within a vertex are merged (weights summed) first.

    Returns ``(joints uint16[V,4], weights float32[V,4])`` sorted by decreasing weight; each
    weight row sums to 1 (the float32 rounding residue is put on the largest weight); unused
    slots have weight 0 and joint 0. Raises BundleError for negative / non-finite weights,
    for a vertex whose weights are all 0, or for joint indices outside uint16.
    """
    if not 1 <= k <= MAX_INFLUENCES:
        raise ValueError(f"k must be in 1..{MAX_INFLUENCES}, got {k}")
    idx = np.asarray(indices)
    w = np.asarray(weights, dtype=np.float64)
    if idx.ndim != 2 or w.shape != idx.shape:
        raise BundleError(f"indices {idx.shape} and weights {w.shape} must both be [V,K]")
    if idx.dtype.kind not in "iu":
        raise BundleError(f"indices: expected integers, got dtype {idx.dtype}")
    n_v, n_k = idx.shape
    if n_v == 0:
        return np.zeros((0, 4), np.uint16), np.zeros((0, 4), np.float32)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise BundleError("weights must be finite and >= 0")
    w = np.where(w > 0, w, 0.0)
    idx = np.where(w > 0, idx.astype(np.int64), 0)
    if idx.min() < 0 or idx.max() > np.iinfo(np.uint16).max:
        raise BundleError("joint indices must be within 0..65535")

    # merge duplicate joints: sort by index, fold each run of equal indices into its first slot
    order = np.argsort(idx, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    w = np.take_along_axis(w, order, axis=1)
    for c in range(n_k - 1, 0, -1):
        dup = (idx[:, c] == idx[:, c - 1]) & (w[:, c] > 0)
        w[dup, c - 1] += w[dup, c]
        w[dup, c] = 0.0

    # keep the k largest (ties: lower joint index first, deterministic)
    order = np.argsort(-w, axis=1, kind="stable")[:, :k]
    idx = np.take_along_axis(idx, order, axis=1)
    w = np.take_along_axis(w, order, axis=1)
    pad = MAX_INFLUENCES - idx.shape[1]
    if pad:
        idx = np.pad(idx, ((0, 0), (0, pad)))
        w = np.pad(w, ((0, 0), (0, pad)))

    total = w.sum(axis=1)
    empty = np.nonzero(total <= 0)[0]
    if empty.size:
        raise BundleError(f"{empty.size} vertices have no skin weight (first: {int(empty[0])})")
    w /= total[:, None]
    idx[w <= 0] = 0
    w32 = w.astype(np.float32)
    # put the float32 residue on the largest weight (slot 0) so sums are 1 in float32 too
    w32[:, 0] += (1.0 - w32.sum(axis=1, dtype=np.float64)).astype(np.float32)
    return idx.astype(np.uint16), w32
