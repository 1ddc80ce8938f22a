"""Pinhole camera in OpenCV convention (x right, y down, z forward), numpy only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_FOV_DEG = 45.0  # vertical-or-horizontal FoV of the longer image side when EXIF is silent


@dataclass
class Camera:
    """World (glTF axes) -> camera: p_cam = R @ p + t; pixels = K @ p_cam / z."""

    K: np.ndarray  # float32 [3, 3]
    R: np.ndarray  # float32 [3, 3]
    t: np.ndarray  # float32 [3]
    width: int
    height: int

    def project(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[N,3] world points -> ([N,2] pixels, [N] depth)."""
        pc = p @ self.R.T + self.t
        z = pc[:, 2]
        uv = pc[:, :2] / z[:, None] * np.array([self.K[0, 0], self.K[1, 1]]) + self.K[:2, 2]
        return uv.astype(np.float32), z.astype(np.float32)

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "R": self.R.tolist(), "t": self.t.tolist(),
                "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: dict) -> "Camera":
        return cls(np.array(d["K"], np.float32), np.array(d["R"], np.float32),
                   np.array(d["t"], np.float32), int(d["width"]), int(d["height"]))


def default_intrinsics(width: int, height: int, fov_deg: float = DEFAULT_FOV_DEG,
                       focal_px: float | None = None) -> np.ndarray:
    """K for a photo; the longer side spans `fov_deg` unless a focal length is known."""
    if focal_px is None:
        focal_px = 0.5 * max(width, height) / np.tan(np.radians(fov_deg) / 2)
    return np.array([[focal_px, 0, width / 2], [0, focal_px, height / 2], [0, 0, 1]], np.float32)


def clip_from_camera(cam: Camera, near: float = 0.05, far: float = 100.0) -> np.ndarray:
    """4x4 matrix mapping world points to OpenGL clip space for the same view as `cam`.

    Rasterizers follow OpenGL (y up, row 0 at the bottom); images have row 0 at the top,
    so callers flip the rasterized rows once.
    """
    fx, fy, cx, cy = cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]
    W, H = cam.width, cam.height
    # OpenCV camera -> OpenGL camera: flip y and z.
    P = np.array([
        [2 * fx / W, 0, 1 - 2 * cx / W, 0],
        [0, 2 * fy / H, 2 * cy / H - 1, 0],
        [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, -1, 0],
    ], dtype=np.float64)
    flip = np.diag([1.0, -1.0, -1.0, 1.0])
    Rt = np.eye(4)
    Rt[:3, :3] = cam.R
    Rt[:3, 3] = cam.t
    return (P @ flip @ Rt).astype(np.float32)
