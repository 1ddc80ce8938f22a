"""Body-model-independent description of a rigged body (numpy only).

Everything downstream of fitting (texture, bundle, render) sees a body through this
dataclass, never through a body-model library.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# MediaPipe Pose's 33 landmark names, in its order.
MEDIAPIPE_33 = [
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
]


@dataclass(frozen=True)
class BodyTopology:
    """Mesh topology with vertices split along UV seams (one UV per vertex, as glTF needs).

    `source_vertex` maps each split vertex to the body model's own vertex, so shapes and
    poses computed on the model's vertices are gathered with `verts[source_vertex]`.
    """

    faces: np.ndarray  # int32 [F, 3] into split vertices, counter-clockwise seen from outside
    uvs: np.ndarray  # float32 [Vs, 2], (0,0) = top-left of the texture image
    source_vertex: np.ndarray  # int64 [Vs] -> model vertex
    joint_names: list[str]
    parents: list[int]  # [J], -1 for the root; parents come before children
    skin_indices: np.ndarray  # int64 [V, K] per model vertex
    skin_weights: np.ndarray  # float32 [V, K]
    # Landmark name -> ("joint", index) or ("vertex", model vertex index)
    landmarks: dict[str, tuple[str, int]]
