"""Retarget canonical-joint motions onto a bundle's skeleton.

A motion gives each canonical joint a rotation relative to its parent in T-pose world
axes. The bundle's rest pose may differ (Anny rests in an A-pose), so each canonical
joint gets a rest offset Q (T-pose bone direction -> the bundle's rest bone direction),
and the target's global rotation is G' = G Q^-1: the bone ends up where the motion puts
the T-pose bone. Bundle joints between mapped ones keep their rest pose.
"""
from __future__ import annotations

import numpy as np

from models.animation.canonical import CANONICAL_CHILD, CANONICAL_NAMES, CANONICAL_PARENTS, t_pose_direction
from models.render.rotations import rotation_between


class Retargeter:
    def __init__(self, joint_names: list[str], heads: np.ndarray, mapping: dict[str, str]):
        index = {n: i for i, n in enumerate(joint_names)}
        self.target = {c: index[b] for c, b in mapping.items() if b in index}
        missing = [c for c in ("pelvis",) if c not in self.target]
        if missing:
            raise ValueError(f"The skeleton does not map the canonical joints {missing}")
        self.n_joints = len(joint_names)
        self.offsets = {}
        for c in CANONICAL_NAMES:
            d_t = t_pose_direction(c)
            child = CANONICAL_CHILD.get(c)
            if d_t is None or child is None or c not in self.target or child not in self.target:
                self.offsets[c] = np.eye(3)
                continue
            d_rest = heads[self.target[child]] - heads[self.target[c]]
            self.offsets[c] = rotation_between(d_t, d_rest)

    def local_rotations(self, canonical: dict[str, np.ndarray]) -> np.ndarray:
        """{canonical name: [3,3] local rotation} -> [J,3,3] rotations for the bundle skeleton."""
        glob: dict[str, np.ndarray] = {}
        target_glob: dict[str, np.ndarray] = {}
        out = np.tile(np.eye(3), (self.n_joints, 1, 1))
        for c, p in zip(CANONICAL_NAMES, CANONICAL_PARENTS):
            R = canonical.get(c, np.eye(3))
            G = R if p < 0 else glob[CANONICAL_NAMES[p]] @ R
            glob[c] = G
            Gt = G @ self.offsets[c].T
            target_glob[c] = Gt
            if c not in self.target:
                continue
            parent_t = np.eye(3) if p < 0 else target_glob[CANONICAL_NAMES[p]]
            out[self.target[c]] = parent_t.T @ Gt
        return out
