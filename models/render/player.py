"""Pose, render and encode frames of a stored avatar. Never imports torch.

An AvatarPlayer is built once per bundle (the gateway caches it) and renders any number
of frames: motion -> retarget -> FK -> skinning -> rasterize + texture -> JPEG.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from models.animation.motions import MotionFrame, get_motion
from models.bundle.gltf import read_glb
from models.fit.camera import clip_from_camera
from models.raster import get_backend
from models.render.orbit import orbit_camera
from models.render.retarget import Retargeter
from models.render.skinning import Skinner, forward_kinematics

cv2.setNumThreads(1)  # frames are rendered in parallel threads; one thread each is fastest

MIN_SIZE, MAX_SIZE = 64, 2048
MIN_FPS, MAX_FPS = 1, 60


@dataclass
class View:
    """Where the camera is, relative to the avatar (the stream's query parameters)."""

    yaw_deg: float = 0.0
    elevation_deg: float = 5.0
    distance: float | None = None  # None: frame the whole body
    fov_deg: float = 30.0
    background: tuple[int, int, int] = (255, 255, 255)


class AvatarPlayer:
    def __init__(self, mesh, backend: str = "auto"):
        self.mesh = mesh
        self.backend = get_backend(backend)
        self.faces = np.ascontiguousarray(mesh.faces.astype(np.int32))
        self.uvs = np.ascontiguousarray(mesh.uvs.astype(np.float32))
        self.texture = np.ascontiguousarray(mesh.texture)
        self.parents = np.asarray(mesh.parents)
        self.heads = mesh.rest_matrices[:, :3, 3].astype(np.float64)
        self.skin = Skinner(mesh.positions, mesh.joints.astype(np.int64), mesh.weights, mesh.num_joints)
        mapping = mesh.extras.get("canonical_joints") or {}
        self.retarget = Retargeter(mesh.joint_names, self.heads, mapping)
        lo, hi = mesh.positions.min(0), mesh.positions.max(0)
        self.center = ((lo + hi) / 2).astype(np.float64)
        self.height = float(hi[1] - lo[1])

    @classmethod
    def from_glb(cls, path: str | os.PathLike | bytes, backend: str = "auto") -> "AvatarPlayer":
        return cls(read_glb(path), backend=backend)

    def memory_bytes(self) -> int:
        m = self.mesh
        arrays = [m.positions, m.uvs, m.faces, m.joints, m.weights, m.texture, self.faces, self.uvs,
                  self.skin.W.data, self.skin.W.indices, self.skin.W.indptr, self.skin.rest]
        return int(sum(a.nbytes for a in arrays))

    # ---- posing --------------------------------------------------------------------------
    def pose_vertices(self, frame: MotionFrame) -> np.ndarray:
        rots = self.retarget.local_rotations(frame.rotations)
        A = forward_kinematics(rots, self.heads, self.parents, frame.root_translation)
        return self.skin(A)

    # ---- rendering -----------------------------------------------------------------------
    def render(self, verts: np.ndarray, size: int, view: View = View(), buffers=None) -> tuple[np.ndarray, np.ndarray]:
        """Posed vertices -> (rgb uint8 [size,size,3] top row first, alpha uint8 [size,size])."""
        cam = orbit_camera(self.center, self.height, (size, size), view.yaw_deg, view.elevation_deg,
                           view.distance, view.fov_deg)
        M = clip_from_camera(cam)
        clip = verts @ M[:, :3].T + M[:, 3]
        kwargs = {"flip_y": True}
        if buffers is not None and self.backend.name == "cpu":
            kwargs["buffers"] = buffers
        return self.backend.render_textured(clip.astype(np.float32), self.faces, self.uvs, self.texture,
                                            (size, size), view.background, **kwargs)

    def frames(self, motion: str, size: int, fps: int, frames: int | None,
               view: View = View()) -> Iterator[np.ndarray]:
        """RGB frames of a motion; frames=None loops forever (the caller stops)."""
        m = get_motion(motion)
        buffers = self.backend.Buffers() if hasattr(self.backend, "Buffers") else None
        i = 0
        while frames is None or i < frames:
            verts = self.pose_vertices(m.frame(i / fps))
            rgb, _ = self.render(verts, size, view, buffers)
            yield rgb.copy()  # the buffers are reused for the next frame
            i += 1

    def jpeg_frames(self, motion: str, size: int, fps: int, frames: int | None,
                    quality: int = 85, view: View = View()) -> Iterator[bytes]:
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        for rgb in self.frames(motion, size, fps, frames, view):
            ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], params)
            if not ok:  # pragma: no cover - cv2 only fails on invalid input
                raise RuntimeError("JPEG encoding failed")
            yield buf.tobytes()


def render_mp4(glb_path, out_path, motion: str = "turntable", size: int = 512, fps: int = 30,
               frames: int = 120, view: View = View(), player: AvatarPlayer | None = None) -> None:
    """Write an H.264 MP4 (PyAV) atomically."""
    import av

    from models.ioutil import atomic_write_bytes

    player = player or AvatarPlayer.from_glb(glb_path)
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.partial.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "20"}
        for rgb in player.frames(motion, size, fps, frames, view):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    atomic_write_bytes(out_path, tmp.read_bytes())
    tmp.unlink()
