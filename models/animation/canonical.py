"""The canonical joint set motions are written against: SMPL-X's 22 body joints.

Rotations in a motion are SMPL-style: per joint, relative to its parent, in world-aligned
axes of a T-pose (y up, facing +z, arms along +-x). Retargeting (models/render/retarget.py)
maps them onto any skeleton whose bundle names its canonical joints.
"""
from __future__ import annotations

import numpy as np

# name, parent, unit direction of the bone leaving this joint in the T-pose (None: no bone)
CANONICAL_JOINTS: list[tuple[str, int, tuple[float, float, float] | None]] = [
    ("pelvis", -1, (0, 1, 0)),
    ("left_hip", 0, (0, -1, 0)),
    ("right_hip", 0, (0, -1, 0)),
    ("spine1", 0, (0, 1, 0)),
    ("left_knee", 1, (0, -1, 0)),
    ("right_knee", 2, (0, -1, 0)),
    ("spine2", 3, (0, 1, 0)),
    ("left_ankle", 4, (0, 0, 1)),
    ("right_ankle", 5, (0, 0, 1)),
    ("spine3", 6, (0, 1, 0)),
    ("left_foot", 7, None),
    ("right_foot", 8, None),
    ("neck", 9, (0, 1, 0)),
    ("left_collar", 9, (1, 0, 0)),
    ("right_collar", 9, (-1, 0, 0)),
    ("head", 12, None),
    ("left_shoulder", 13, (1, 0, 0)),
    ("right_shoulder", 14, (-1, 0, 0)),
    ("left_elbow", 16, (1, 0, 0)),
    ("right_elbow", 17, (-1, 0, 0)),
    ("left_wrist", 18, None),
    ("right_wrist", 19, None),
]
CANONICAL_NAMES = [n for n, _, _ in CANONICAL_JOINTS]
CANONICAL_PARENTS = [p for _, p, _ in CANONICAL_JOINTS]
# Which canonical joint's head the bone of each joint points at (for measuring rest offsets).
CANONICAL_CHILD = {
    "left_hip": "left_knee", "right_hip": "right_knee", "left_knee": "left_ankle",
    "right_knee": "right_ankle", "left_shoulder": "left_elbow", "right_shoulder": "right_elbow",
    "left_elbow": "left_wrist", "right_elbow": "right_wrist", "spine1": "spine2",
    "spine2": "spine3", "spine3": "neck", "neck": "head", "left_collar": "left_shoulder",
    "right_collar": "right_shoulder",
}


def t_pose_direction(name: str) -> np.ndarray | None:
    d = CANONICAL_JOINTS[CANONICAL_NAMES.index(name)][2]
    return None if d is None else np.asarray(d, np.float64)
