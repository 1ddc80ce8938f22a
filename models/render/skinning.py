"""Forward kinematics and linear blend skinning, straight from the bundle.

Same maths as models/body/lbs.py (torch, used by the fit): each joint rotates about its
rest head in world-aligned axes; skinning matrices A_j apply to rest vertices.

``forward_kinematics`` is the plain numpy reference. The player uses the numba kernels
below (``fk_into``, ``Skinner.clip_into``): they allocate nothing per frame, release the
GIL (several streams pose and render in parallel threads) and fuse skinning with the
camera's clip transform, so a posed frame goes from joint matrices to clip-space
vertices in one pass over the mesh. Like the raster kernels they are compiled once and
cached on disk by numba (``cache=True``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "fastmath": True}


def forward_kinematics(rots: np.ndarray, heads: np.ndarray, parents: np.ndarray,
                       root_translation: np.ndarray | None = None) -> np.ndarray:
    """rots [J,3,3], heads [J,3] -> skinning transforms [J,3,4] (float64)."""
    J = len(parents)
    out = np.empty((J, 3, 4))
    for j in range(J):
        R = rots[j]
        t = heads[j] - R @ heads[j]
        p = parents[j]
        if p < 0:
            out[j, :, :3] = R
            out[j, :, 3] = t if root_translation is None else t + root_translation
        else:
            P = out[p]
            out[j, :, :3] = P[:, :3] @ R
            out[j, :, 3] = P[:, :3] @ t + P[:, 3]
    return out


@njit(**_JIT)
def _fk(rots, heads, parents, root, out):  # pragma: no cover - numba
    """Joints in topological order (parents[j] < j): rots [J,3,3] f64 -> out [J,3,4]."""
    for j in range(parents.shape[0]):
        t = np.empty(3)
        for r in range(3):
            t[r] = heads[j, r] - (rots[j, r, 0] * heads[j, 0] + rots[j, r, 1] * heads[j, 1]
                                  + rots[j, r, 2] * heads[j, 2])
        p = parents[j]
        if p < 0:
            for r in range(3):
                for c in range(3):
                    out[j, r, c] = rots[j, r, c]
                out[j, r, 3] = t[r] + root[r]
        else:
            for r in range(3):
                for c in range(3):
                    out[j, r, c] = (out[p, r, 0] * rots[j, 0, c] + out[p, r, 1] * rots[j, 1, c]
                                    + out[p, r, 2] * rots[j, 2, c])
                out[j, r, 3] = (out[p, r, 0] * t[0] + out[p, r, 1] * t[1] + out[p, r, 2] * t[2]
                                + out[p, r, 3])


def fk_into(rots: np.ndarray, heads: np.ndarray, parents: np.ndarray,
            root_translation: np.ndarray | None, out: np.ndarray) -> np.ndarray:
    """``forward_kinematics`` into ``out`` float64[J,3,4] (numba; parents[j] < j)."""
    root = np.zeros(3) if root_translation is None else np.asarray(root_translation, np.float64)
    _fk(np.ascontiguousarray(rots, np.float64), heads, parents, root, out)
    return out


@njit(**_JIT)
def _skin(rest, joints, weights, A, out):  # pragma: no cover - numba
    """Posed vertices [V,3] = sum_k w_k A[j_k] [rest; 1]."""
    V, K = joints.shape
    for v in range(V):
        x, y, z = rest[v, 0], rest[v, 1], rest[v, 2]
        px = py = pz = 0.0
        for k in range(K):
            w = weights[v, k]
            j = joints[v, k]
            px += w * (A[j, 0] * x + A[j, 1] * y + A[j, 2] * z + A[j, 3])
            py += w * (A[j, 4] * x + A[j, 5] * y + A[j, 6] * z + A[j, 7])
            pz += w * (A[j, 8] * x + A[j, 9] * y + A[j, 10] * z + A[j, 11])
        out[v, 0] = px
        out[v, 1] = py
        out[v, 2] = pz


@njit(**_JIT)
def _skin_clip(rest, joints, weights, A, M, out):  # pragma: no cover - numba
    """Clip-space vertices [V,4] = M [posed; 1] with posed as in ``_skin``."""
    V, K = joints.shape
    for v in range(V):
        x, y, z = rest[v, 0], rest[v, 1], rest[v, 2]
        px = py = pz = 0.0
        for k in range(K):
            w = weights[v, k]
            j = joints[v, k]
            px += w * (A[j, 0] * x + A[j, 1] * y + A[j, 2] * z + A[j, 3])
            py += w * (A[j, 4] * x + A[j, 5] * y + A[j, 6] * z + A[j, 7])
            pz += w * (A[j, 8] * x + A[j, 9] * y + A[j, 10] * z + A[j, 11])
        for r in range(4):
            out[v, r] = M[r, 0] * px + M[r, 1] * py + M[r, 2] * pz + M[r, 3]


class Skinner:
    """Linear blend skinning of one mesh: rest positions plus K joint influences per vertex."""

    def __init__(self, rest: np.ndarray, joints: np.ndarray, weights: np.ndarray, n_joints: int):
        joints = np.asarray(joints)
        if joints.size and (joints.min() < 0 or joints.max() >= n_joints):
            raise ValueError("skin joint indices outside the skeleton")
        self.n_joints = int(n_joints)
        self.rest = np.ascontiguousarray(rest, dtype=np.float32)
        self.joints = np.ascontiguousarray(joints, dtype=np.int32)
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)

    def nbytes(self) -> int:
        return self.rest.nbytes + self.joints.nbytes + self.weights.nbytes

    def _matrices(self, A: np.ndarray) -> np.ndarray:
        A = np.ascontiguousarray(A, dtype=np.float32).reshape(-1, 12)
        if len(A) != self.n_joints:
            raise ValueError(f"expected {self.n_joints} joint matrices, got {len(A)}")
        return A

    def __call__(self, A: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """A [J,3,4] -> posed vertices [V,3] float32."""
        if out is None:
            out = np.empty((len(self.rest), 3), np.float32)
        _skin(self.rest, self.joints, self.weights, self._matrices(A), out)
        return out

    def clip_into(self, A: np.ndarray, M: np.ndarray, out: np.ndarray) -> np.ndarray:
        """A [J,3,4], clip matrix M [4,4] -> clip-space vertices written to out float32[V,4]."""
        _skin_clip(self.rest, self.joints, self.weights, self._matrices(A),
                   np.ascontiguousarray(M, dtype=np.float32), out)
        return out
