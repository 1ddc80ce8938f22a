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


EXIF_IFD = 0x8769
FOCAL_35MM_TAG = 0xA405  # FocalLengthIn35mmFilm
FULL_FRAME_DIAGONAL_MM = 43.27  # 36 x 24 mm


def focal_px_from_exif(path, width: int, height: int) -> float | None:
    """Focal length in pixels of a photo processed at width x height, from its EXIF
    FocalLengthIn35mmFilm (defined on the diagonal: f_px = f35 / 43.27 mm * diagonal_px);
    None when the photo does not say (then the default FoV applies)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            f35 = exif.get_ifd(EXIF_IFD).get(FOCAL_35MM_TAG) or exif.get(FOCAL_35MM_TAG)
    except (OSError, ValueError, SyntaxError):
        return None
    try:
        f35 = float(f35)
    except (TypeError, ValueError):
        return None
    if not 8.0 <= f35 <= 800.0:  # missing (0) or implausible
        return None
    return f35 / FULL_FRAME_DIAGONAL_MM * float(np.hypot(width, height))
