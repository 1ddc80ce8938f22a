"""Forward kinematics and linear blend skinning in numpy, straight from the bundle.

Same maths as models/body/lbs.py (torch, used by the fit): each joint rotates about its
rest head in world-aligned axes; skinning matrices A_j apply to rest vertices.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


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


class Skinner:
    """Precomputed sparse weight matrix so posing a mesh is one sparse product."""

    def __init__(self, rest: np.ndarray, joints: np.ndarray, weights: np.ndarray, n_joints: int):
        V, K = joints.shape
        rows = np.repeat(np.arange(V), K)
        self.W = sp.csr_matrix((weights.reshape(-1).astype(np.float32), (rows, joints.reshape(-1))),
                               shape=(V, n_joints))
        self.rest = rest.astype(np.float32)

    def __call__(self, A: np.ndarray) -> np.ndarray:
        """A [J,3,4] -> posed vertices [V,3] float32."""
        M = self.W @ A.reshape(len(A), 12).astype(np.float32)  # [V,12]
        M = M.reshape(-1, 3, 4)
        r = self.rest
        return (M[:, :, 0] * r[:, 0:1] + M[:, :, 1] * r[:, 1:2] + M[:, :, 2] * r[:, 2:3]
                + M[:, :, 3]).astype(np.float32)
