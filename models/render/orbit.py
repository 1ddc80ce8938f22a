"""An orbit camera around the avatar, as the stream's query parameters describe it."""
from __future__ import annotations

import numpy as np

from models.fit.camera import Camera


def orbit_camera(center: np.ndarray, height_m: float, size: tuple[int, int], yaw_deg: float = 0.0,
                 elevation_deg: float = 5.0, distance: float | None = None,
                 fov_deg: float = 30.0, margin: float = 1.15) -> Camera:
    """A camera looking at `center`; distance (if None) frames a body `height_m` tall."""
    H, W = size
    f = 0.5 * H / np.tan(np.radians(fov_deg) / 2)
    if distance is None:
        distance = 0.5 * height_m * margin / np.tan(np.radians(fov_deg) / 2)
    yaw, el = np.radians(yaw_deg), np.radians(elevation_deg)
    # Camera position: in front of the person (+z) rotated by yaw around y, raised by elevation.
    eye = center + distance * np.array([np.sin(yaw) * np.cos(el), np.sin(el), np.cos(yaw) * np.cos(el)])
    fwd = center - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])  # rows: camera x (right), y (down), z (forward)
    t = -R @ eye
    K = np.array([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], np.float32)
    return Camera(K=K, R=R.astype(np.float32), t=t.astype(np.float32), width=W, height=H)
