"""Small rotation helpers in numpy (the render path must not import torch)."""
from __future__ import annotations

import numpy as np


def axis_angle(aa) -> np.ndarray:
    """[3] axis-angle (radians) -> [3,3] rotation."""
    aa = np.asarray(aa, np.float64)
    theta = float(np.linalg.norm(aa))
    if theta < 1e-12:
        return np.eye(3)
    k = aa / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)


def rot_x(deg: float) -> np.ndarray:
    return axis_angle([np.radians(deg), 0, 0])


def rot_y(deg: float) -> np.ndarray:
    return axis_angle([0, np.radians(deg), 0])


def rot_z(deg: float) -> np.ndarray:
    return axis_angle([0, 0, np.radians(deg)])


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation taking unit direction a onto unit direction b."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    s = float(np.linalg.norm(v))
    if s < 1e-9:
        if c > 0:
            return np.eye(3)
        # Opposite: rotate 180 degrees about any axis orthogonal to a.
        ortho = np.array([1.0, 0, 0]) if abs(a[0]) < 0.9 else np.array([0, 1.0, 0])
        axis = np.cross(a, ortho)
        return axis_angle(axis / np.linalg.norm(axis) * np.pi)
    return axis_angle(v / s * np.arctan2(s, c))
