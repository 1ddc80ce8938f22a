"""Pose, render and encode frames of a stored avatar. Never imports torch.

An AvatarPlayer is built once per bundle (the gateway caches it) and renders any number
of frames: motion -> retarget -> FK -> skinning -> rasterize + texture -> JPEG.

What makes it fast (figures: ``bench/render.py``):

* everything that does not change per frame is computed once: the sparse skin is kept as
  per-vertex (joint, weight) lists for a numba kernel that fuses skinning with the clip
  transform; clip matrices are cached per (size, camera); retarget offsets are fixed;
  the texture is also kept in BGR order so frames come out ready for cv2 / JPEG;
* the joint matrices of a built-in motion at a given time are cached per player (a few
  KB each), so looping streams skip retargeting and forward kinematics altogether;
* a ``RenderState`` per stream holds the rasterizer's buffers and the clip-space vertex
  array, reused every frame (no per-frame allocation of mesh- or image-sized arrays);
* the skinning, raster and JPEG (cv2) work releases the GIL, so streams rendered in
  parallel threads use all cores;
* back faces are culled when the mesh is closed and wound outward (checked at load:
  the picture is the same, the rasterizer does less work).
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from models.animation.motions import Motion, MotionFrame, get_motion
from models.bundle.gltf import read_glb
from models.fit.camera import clip_from_camera
from models.raster import get_backend
from models.render.orbit import orbit_camera
from models.render.retarget import Retargeter
from models.render.skinning import Skinner, fk_into, forward_kinematics

cv2.setNumThreads(1)  # frames are rendered in parallel threads; one thread each is fastest

MIN_SIZE, MAX_SIZE = 64, 2048
MIN_FPS, MAX_FPS = 1, 60
#: Joint matrices of built-in motions kept per player (104 joints: 5 KB each).
POSE_CACHE_SIZE = 512
_CAMERA_CACHE_SIZE = 64


@dataclass
class View:
    """Where the camera is, relative to the avatar (the stream's query parameters)."""

    yaw_deg: float = 0.0
    elevation_deg: float = 5.0
    distance: float | None = None  # None: frame the whole body
    fov_deg: float = 30.0
    background: tuple[int, int, int] = (255, 255, 255)

    def camera_key(self, size: int) -> tuple:
        d = None if self.distance is None else float(self.distance)
        return (int(size), float(self.yaw_deg), float(self.elevation_deg), d, float(self.fov_deg))


class RenderCancelled(Exception):
    """``render_mp4`` was asked to stop (its client went away)."""


class RenderState:
    """Scratch of one stream, reused for every frame: rasterizer buffers, clip-space
    vertices, joint matrices. Not thread-safe: one per stream (or per thread)."""

    def __init__(self, n_vertices: int, n_joints: int, backend) -> None:
        self.buffers = backend.Buffers() if hasattr(backend, "Buffers") else None
        self.clip = np.empty((n_vertices, 4), np.float32)
        self.A = np.empty((n_joints, 3, 4), np.float64)


def _outward_closed(positions: np.ndarray, faces: np.ndarray) -> bool:
    """True when back-face culling cannot change the picture of the rest mesh: welded by
    position (bundles split vertices along UV seams), every edge is shared by exactly two
    triangles that traverse it in opposite directions (closed, consistently wound) and
    the enclosed volume is positive (front faces are counter-clockwise seen from outside,
    OpenGL's convention)."""
    if len(faces) == 0:
        return False
    v = np.ascontiguousarray(np.round(positions.astype(np.float64), 6))
    rows = v.view(np.dtype((np.void, v.dtype.itemsize * 3))).reshape(-1)
    _, weld = np.unique(rows, return_inverse=True)
    f = weld.reshape(-1)[faces.astype(np.int64)]
    n = int(f.max()) + 1
    a = f.reshape(-1)
    b = np.roll(f, -1, axis=1).reshape(-1)
    if np.any(a == b):
        return False  # a degenerate triangle
    directed = np.sort(a * n + b)
    if np.any(directed[1:] == directed[:-1]):
        return False  # an edge traversed twice the same way: inconsistent winding
    if not np.array_equal(directed, np.sort(b * n + a)):
        return False  # an open (or non-manifold) edge
    p = positions.astype(np.float64)
    fi = faces.astype(np.int64)
    volume = np.einsum("ij,ij->i", p[fi[:, 0]], np.cross(p[fi[:, 1]], p[fi[:, 2]])).sum() / 6.0
    return bool(volume > 0)


class AvatarPlayer:
    def __init__(self, mesh, backend: str = "auto", cull_backfaces: bool | None = None):
        self.mesh = mesh
        self.backend = get_backend(backend)
        self.faces = np.ascontiguousarray(mesh.faces, dtype=np.int32)
        self.uvs = np.ascontiguousarray(mesh.uvs, dtype=np.float32)
        self.texture = np.ascontiguousarray(np.asarray(mesh.texture)[..., :3], dtype=np.uint8)
        self._tex_bgr = np.ascontiguousarray(self.texture[..., ::-1])  # cv2's channel order
        self.parents = np.ascontiguousarray(mesh.parents, dtype=np.int64)
        self._topological = bool(np.all(self.parents < np.arange(len(self.parents))))
        self.heads = np.ascontiguousarray(mesh.rest_matrices[:, :3, 3], dtype=np.float64)
        self.skin = Skinner(mesh.positions, mesh.joints, mesh.weights, mesh.num_joints)
        mapping = mesh.extras.get("canonical_joints") or {}
        self.retarget = Retargeter(mesh.joint_names, self.heads, mapping)
        lo, hi = mesh.positions.min(0), mesh.positions.max(0)
        self.center = ((lo + hi) / 2).astype(np.float64)
        self.height = float(hi[1] - lo[1])
        if cull_backfaces is None:
            cull_backfaces = _outward_closed(mesh.positions, self.faces)
        self.cull_backfaces = bool(cull_backfaces)
        self._lock = threading.Lock()
        self._poses: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cameras: OrderedDict[tuple, np.ndarray] = OrderedDict()
        #: Frames rendered by this player (all streams; approximate under concurrency).
        self.frames_rendered = 0

    @classmethod
    def from_glb(cls, path: str | os.PathLike | bytes, backend: str = "auto") -> "AvatarPlayer":
        return cls(read_glb(path), backend=backend)

    @property
    def n_vertices(self) -> int:
        return len(self.skin.rest)

    def memory_bytes(self) -> int:
        """Bytes of the arrays this player keeps (mesh, texture, skin, caches), each
        buffer counted once."""
        m = self.mesh
        arrays = [getattr(m, k) for k in vars(m) if isinstance(getattr(m, k), np.ndarray)]
        arrays += [self.faces, self.uvs, self.texture, self._tex_bgr, self.parents, self.heads,
                   self.skin.rest, self.skin.joints, self.skin.weights]
        with self._lock:
            arrays += list(self._poses.values()) + list(self._cameras.values())
        seen: dict[int, int] = {}
        for a in arrays:
            base = a
            while isinstance(base.base, np.ndarray):
                base = base.base
            seen[id(base)] = base.nbytes
        return int(sum(seen.values()))

    def new_state(self) -> RenderState:
        return RenderState(self.n_vertices, len(self.parents), self.backend)

    # ---- posing --------------------------------------------------------------------------
    def pose_matrices(self, frame: MotionFrame, out: np.ndarray | None = None) -> np.ndarray:
        """Skinning matrices [J,3,4] (float64) of a pose on the canonical joints."""
        rots = self.retarget.local_rotations(frame.rotations)
        if not self._topological:
            A = forward_kinematics(rots, self.heads, self.parents, frame.root_translation)
            if out is not None:
                out[...] = A
                return out
            return A
        if out is None:
            out = np.empty((len(self.parents), 3, 4))
        return fk_into(rots, self.heads, self.parents, frame.root_translation, out)

    def motion_matrices(self, motion: Motion, t: float) -> np.ndarray:
        """``pose_matrices`` of a built-in motion at time t as float32, cached per player
        (the array is shared: do not modify it). Writable on purpose: numba compiles a
        separate kernel for read-only arrays."""
        key = (motion.name, round(t % motion.duration_s, 6))
        with self._lock:
            hit = self._poses.get(key)
            if hit is not None:
                self._poses.move_to_end(key)
                return hit
        A = self.pose_matrices(motion.frame(t)).astype(np.float32)  # shared: do not modify
        with self._lock:
            self._poses[key] = A
            while len(self._poses) > POSE_CACHE_SIZE:
                self._poses.popitem(last=False)
        return A

    def pose_vertices(self, frame: MotionFrame) -> np.ndarray:
        return self.skin(self.pose_matrices(frame))

    # ---- rendering -----------------------------------------------------------------------
    def clip_matrix(self, size: int, view: View = View()) -> np.ndarray:
        """World -> clip matrix [4,4] of the view at size x size, cached per camera."""
        key = view.camera_key(size)
        with self._lock:
            M = self._cameras.get(key)
            if M is not None:
                return M
        cam = orbit_camera(self.center, self.height, (size, size), view.yaw_deg,
                           view.elevation_deg, view.distance, view.fov_deg)
        M = np.ascontiguousarray(clip_from_camera(cam), dtype=np.float32)  # shared
        with self._lock:
            self._cameras[key] = M
            while len(self._cameras) > _CAMERA_CACHE_SIZE:
                self._cameras.popitem(last=False)
        return M

    def _raster(self, clip: np.ndarray, size: int, background, bgr: bool, buffers=None):
        tex = self._tex_bgr if bgr else self.texture
        bg = tuple(background)[::-1] if bgr else tuple(background)
        kwargs = {"flip_y": True, "cull_backfaces": self.cull_backfaces}
        if buffers is not None:
            kwargs["buffers"] = buffers
        out = self.backend.render_textured(clip, self.faces, self.uvs, tex, (size, size), bg,
                                           **kwargs)
        self.frames_rendered += 1
        return out

    def render(self, verts: np.ndarray, size: int, view: View = View(), buffers=None) -> tuple[np.ndarray, np.ndarray]:
        """Posed vertices -> (rgb uint8 [size,size,3] top row first, alpha uint8 [size,size])."""
        M = self.clip_matrix(size, view).astype(np.float64)
        clip = (verts @ M[:, :3].T + M[:, 3]).astype(np.float32)
        if buffers is not None and self.backend.name != "cpu":
            buffers = None
        return self._raster(clip, size, view.background, False, buffers)

    def render_matrices(self, A: np.ndarray, size: int, view: View, state: RenderState,
                        bgr: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Joint matrices -> (image uint8 [size,size,3] (BGR unless bgr=False), alpha).

        With the CPU backend the arrays live in ``state`` and are overwritten by its next
        frame: copy them (or encode them) before rendering again.
        """
        clip = self.skin.clip_into(A, self.clip_matrix(size, view), state.clip)
        return self._raster(clip, size, view.background, bgr, state.buffers)

    def _motion_bgr(self, motion: str, size: int, fps: int, frames: int | None,
                    view: View) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        m = get_motion(motion)
        state = self.new_state()
        i = 0
        while frames is None or i < frames:
            yield self.render_matrices(self.motion_matrices(m, i / fps), size, view, state)
            i += 1

    def frames(self, motion: str, size: int, fps: int, frames: int | None,
               view: View = View()) -> Iterator[np.ndarray]:
        """RGB frames of a motion; frames=None loops forever (the caller stops)."""
        for bgr, _ in self._motion_bgr(motion, size, fps, frames, view):
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # a fresh array: buffers are reused

    def bgr_frames(self, motion: str, size: int, fps: int, frames: int | None,
                   view: View = View()) -> Iterator[np.ndarray]:
        """BGR frames of a motion, only valid until the next one is requested."""
        for bgr, _ in self._motion_bgr(motion, size, fps, frames, view):
            yield bgr

    def frames_from(self, motion, size: int, fps: float, frames: int | None,
                    view: View = View(), bgr: bool = False) -> Iterator[np.ndarray]:
        """Frames of anything that plays: a built-in motion's name (its joint matrices are
        cached), a ``Motion``, or a ``MotionSequence`` (models/animation/sequence.py) --
        any object with ``frame(t) -> MotionFrame``. Frame i shows the motion at
        t = i / fps; frames=None loops forever (the caller stops). RGB frames are fresh
        arrays; bgr=True gives BGR frames that are only valid until the next one (for
        encoders)."""
        builtin = isinstance(motion, str)
        m = get_motion(motion) if builtin else motion
        state = self.new_state()
        i = 0
        while frames is None or i < frames:
            t = i / fps
            A = self.motion_matrices(m, t) if builtin else self.pose_matrices(m.frame(t), out=state.A)
            img, _ = self.render_matrices(A, size, view, state, bgr=bgr)
            yield img if bgr else img.copy()  # the state's buffers are reused next frame
            i += 1

    def jpeg_frames(self, motion: str, size: int, fps: int, frames: int | None,
                    quality: int = 85, view: View = View()) -> Iterator[bytes]:
        for bgr, _ in self._motion_bgr(motion, size, fps, frames, view):
            yield encode_jpeg(bgr, quality)

    def pose_jpeg(self, frame: MotionFrame, size: int, view: View, state: RenderState,
                  quality: int = 85) -> bytes:
        """One JPEG of an arbitrary pose (the live WebSocket)."""
        A = self.pose_matrices(frame, out=state.A)
        bgr, _ = self.render_matrices(A, size, view, state)
        return encode_jpeg(bgr, quality)

    def frame_png(self, motion: str, t: float, size: int, view: View = View(),
                  transparent: bool = False) -> bytes:
        """One frame of a motion at time t as PNG; transparent: RGBA with the rendered
        coverage (antialiased silhouette) as alpha and a transparent background."""
        A = self.motion_matrices(get_motion(motion), t)
        state = self.new_state()
        if not transparent:
            bgr, _ = self.render_matrices(A, size, view, state)
            return encode_png(bgr)
        black = View(view.yaw_deg, view.elevation_deg, view.distance, view.fov_deg, (0, 0, 0))
        bgr, alpha = self.render_matrices(A, size, black, state)
        return encode_png(unpremultiply(bgr, alpha))


def warmup() -> None:
    """Load (or compile, the first time) every kernel the render path uses, on a tiny
    mesh with the player's dtypes, so the first frame of the first stream is fast. The
    gateway calls it once at start-up, in the background."""
    backend = get_backend("auto")
    if hasattr(backend, "warmup"):
        backend.warmup()
    rest = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    skin = Skinner(rest, np.zeros((3, 4), np.int32), np.full((3, 4), 0.25, np.float32), 1)
    A = fk_into(np.eye(3)[None], np.zeros((1, 3)), np.array([-1], np.int64), None,
                np.empty((1, 3, 4)))
    skin.clip_into(A, np.eye(4, dtype=np.float32), np.empty((3, 4), np.float32))
    skin(A)
    encode_jpeg(np.zeros((16, 16, 3), np.uint8))


def encode_jpeg(bgr: np.ndarray, quality: int = 85) -> bytes:
    """JPEG of a BGR uint8 image (cv2 releases the GIL while encoding)."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 only fails on invalid input
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def encode_png(img: np.ndarray) -> bytes:
    """PNG of a BGR or BGRA uint8 image."""
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def unpremultiply(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Colour rendered over black + coverage -> straight-alpha 4-channel image.

    Antialiased edge pixels hold colour * coverage (blended with the black background);
    dividing by the coverage gives the surface colour a compositor expects.
    """
    out = np.empty(color.shape[:2] + (4,), np.uint8)
    out[..., :3] = color
    out[..., 3] = alpha
    edge = (alpha > 0) & (alpha < 255)
    if edge.any():
        a = alpha[edge].astype(np.float32)[:, None]
        out[..., :3][edge] = np.clip(color[edge] * (255.0 / a) + 0.5, 0, 255).astype(np.uint8)
    return out


def render_mp4(glb_path, out_path, motion: str = "turntable", size: int = 512, fps: int = 30,
               frames: int = 120, view: View = View(), player: AvatarPlayer | None = None,
               should_stop: Callable[[], bool] | None = None) -> None:
    """Write an H.264 MP4 (PyAV) atomically. An odd size is rounded up (yuv420p needs even
    dimensions). ``should_stop`` is polled between frames; when it returns True the
    partial file is removed and ``RenderCancelled`` is raised."""
    import av

    player = player or AvatarPlayer.from_glb(glb_path)
    size = int(size) + int(size) % 2
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.partial.mp4")
    try:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "20"}
            for bgr in player.bgr_frames(motion, size, fps, frames, view):
                if should_stop is not None and should_stop():
                    raise RenderCancelled("MP4 rendering cancelled")
                for packet in stream.encode(av.VideoFrame.from_ndarray(bgr, format="bgr24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            tmp.unlink()
