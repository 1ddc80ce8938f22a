"""Pose sequences: motions given as frames (uploaded or imported) rather than as code.

A ``MotionSequence`` holds, per frame, the local rotation of each canonical joint
(models/animation/canonical.py; SMPL-style: relative to the parent, in world-aligned
T-pose axes, glTF y up, facing +z) and a root translation in metres. It plays like a
built-in ``Motion``: ``frame(t)`` gives a ``MotionFrame`` for any time, looping with the
sequence's duration, interpolating between neighbouring frames (slerp for rotations).

JSON form (axis-angle in radians, canonical joint names; joints not given stay at rest)::

    {"fps": 30, "frames": [{"rotations": {"left_elbow": [ax, ay, az], ...},
                            "root_translation": [x, y, z]}, ...]}

numpy + scipy only: the render path uses it and never imports torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from models.animation.canonical import CANONICAL_NAMES
from models.animation.motions import MotionFrame

NUM_JOINTS = len(CANONICAL_NAMES)
#: Most frames an imported sequence may have (20 minutes at 30 fps, 10 at 60 fps).
MAX_FRAMES = 36000
MAX_FPS = 1000.0
_INDEX = {n: i for i, n in enumerate(CANONICAL_NAMES)}


class MotionImportError(ValueError):
    """An uploaded or imported motion is malformed; the message says what is wrong."""


@dataclass
class MotionSequence:
    rotations: np.ndarray  # [N, 22, 3, 3] local rotations per canonical joint
    root_translation: np.ndarray  # [N, 3] metres, glTF axes
    fps: float
    name: str = "sequence"
    description: str = "An uploaded pose sequence."

    def __post_init__(self) -> None:
        self.rotations = np.asarray(self.rotations, np.float64)
        self.root_translation = np.asarray(self.root_translation, np.float64)
        n = self.rotations.shape[0] if self.rotations.ndim == 4 else -1
        if self.rotations.shape != (n, NUM_JOINTS, 3, 3) or n < 1:
            raise MotionImportError(
                f"rotations must have shape [N, {NUM_JOINTS}, 3, 3] with N >= 1, "
                f"got {list(self.rotations.shape)}"
            )
        if self.root_translation.shape != (n, 3):
            raise MotionImportError(
                f"root_translation must have shape [{n}, 3], "
                f"got {list(self.root_translation.shape)}"
            )
        if n > MAX_FRAMES:
            raise MotionImportError(f"The motion has {n} frames; at most {MAX_FRAMES} are allowed.")
        try:
            fps = float(self.fps)
        except (TypeError, ValueError):
            fps = float("nan")
        if isinstance(self.fps, bool) or not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            raise MotionImportError(f"fps must be a number in (0, {MAX_FPS:g}], got {self.fps!r}")
        self.fps = fps
        if not (np.isfinite(self.rotations).all() and np.isfinite(self.root_translation).all()):
            raise MotionImportError("The motion contains NaN or infinite values.")
        self._quats: np.ndarray | None = None

    # ---- playing -----------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.rotations.shape[0])

    @property
    def duration_s(self) -> float:
        """Length of one loop: every frame is shown for 1/fps."""
        return self.num_frames / self.fps

    def info(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "duration_s": self.duration_s,
            "frames": self.num_frames,
            "fps": self.fps,
        }

    def frames_at(self, fps: float) -> int:
        """How many frames one loop takes when played at ``fps`` (at least 1)."""
        return max(1, math.ceil(self.duration_s * fps - 1e-6))

    def _quaternions(self) -> np.ndarray:
        if self._quats is None:
            q = Rotation.from_matrix(self.rotations.reshape(-1, 3, 3)).as_quat()
            self._quats = q.reshape(self.num_frames, NUM_JOINTS, 4)
        return self._quats

    def _blend(self, i: int, w: float) -> tuple[np.ndarray, np.ndarray]:
        """Rotations and translation between frame i and i+1 (weight w of i+1)."""
        if w < 1e-9 or i + 1 >= self.num_frames:
            return self.rotations[i], self.root_translation[i]
        q = self._quaternions()
        q0, q1 = q[i], q[i + 1].copy()
        dot = np.sum(q0 * q1, axis=-1)
        q1[dot < 0] *= -1  # shortest path
        dot = np.clip(np.abs(dot), -1.0, 1.0)
        theta = np.arccos(dot)
        sin = np.sin(theta)
        small = sin < 1e-6
        a = np.where(small, 1 - w, np.sin((1 - w) * theta) / np.where(small, 1, sin))
        b = np.where(small, w, np.sin(w * theta) / np.where(small, 1, sin))
        qi = a[:, None] * q0 + b[:, None] * q1
        qi /= np.linalg.norm(qi, axis=-1, keepdims=True)
        rot = Rotation.from_quat(qi).as_matrix()
        trans = (1 - w) * self.root_translation[i] + w * self.root_translation[i + 1]
        return rot, trans

    def frame(self, t: float, interpolate: bool = True) -> MotionFrame:
        """The pose at time ``t`` seconds (looping). Frame k is exact at t = k / fps; between
        frames rotations are slerped (the last frame is held until the loop restarts)."""
        pos = (float(t) % self.duration_s) * self.fps
        if interpolate:
            i = min(math.floor(pos + 1e-9), self.num_frames - 1)
            w = max(0.0, min(1.0, pos - i))
        else:
            i, w = int(round(pos)) % self.num_frames, 0.0
        rot, trans = self._blend(i, w)
        return MotionFrame({n: rot[j] for j, n in enumerate(CANONICAL_NAMES)}, trans.copy())

    def resample(self, fps: float) -> MotionSequence:
        """The same motion sampled at ``fps`` (slerp between source frames)."""
        if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
            raise MotionImportError(f"fps must be in (0, {MAX_FPS:g}], got {fps!r}")
        if abs(fps - self.fps) < 1e-9:
            return self
        n = self.frames_at(fps)
        if n > MAX_FRAMES:
            raise MotionImportError(
                f"Resampled to {fps:g} fps the motion has {n} frames; "
                f"at most {MAX_FRAMES} are allowed."
            )
        rots = np.empty((n, NUM_JOINTS, 3, 3))
        trans = np.empty((n, 3))
        for k in range(n):
            pos = k * self.fps / fps
            i = min(math.floor(pos + 1e-9), self.num_frames - 1)
            rots[k], trans[k] = self._blend(i, max(0.0, min(1.0, pos - i)))
        return MotionSequence(rots, trans, fps, self.name, self.description)

    # ---- JSON ---------------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: bytes | str | dict, name: str = "sequence") -> MotionSequence:
        """Parse the JSON form (see the module docstring); raises ``MotionImportError``."""
        if isinstance(data, (bytes, bytearray, str)):
            try:
                data = json.loads(data)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise MotionImportError(f"The motion is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MotionImportError(
                'The motion JSON must be an object {"fps": ..., "frames": [...]}.'
            )
        fps = data.get("fps", 30)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)):
            raise MotionImportError("fps must be a number.")
        frames = data.get("frames")
        if not isinstance(frames, list) or not frames:
            raise MotionImportError('"frames" must be a non-empty list.')
        if len(frames) > MAX_FRAMES:
            raise MotionImportError(
                f"The motion has {len(frames)} frames; at most {MAX_FRAMES} are allowed."
            )
        n = len(frames)
        aa = np.zeros((n, NUM_JOINTS, 3))
        trans = np.zeros((n, 3))
        for k, fr in enumerate(frames):
            if not isinstance(fr, dict):
                raise MotionImportError(f"frames[{k}] must be an object.")
            unknown_keys = set(fr) - {"rotations", "root_translation"}
            if unknown_keys:
                raise MotionImportError(
                    f"frames[{k}] has unknown keys {sorted(unknown_keys)}; "
                    "expected 'rotations' and 'root_translation'."
                )
            rots = fr.get("rotations", {})
            if not isinstance(rots, dict):
                raise MotionImportError(
                    f"frames[{k}].rotations must be an object of joint -> [ax, ay, az]."
                )
            for joint, value in rots.items():
                j = _INDEX.get(joint)
                if j is None:
                    raise MotionImportError(
                        f"frames[{k}].rotations: unknown joint {joint!r}; "
                        f"known joints: {', '.join(CANONICAL_NAMES)}"
                    )
                aa[k, j] = _vec3(value, f"frames[{k}].rotations.{joint}")
            if "root_translation" in fr:
                trans[k] = _vec3(fr["root_translation"], f"frames[{k}].root_translation")
        if np.abs(trans).max(initial=0) > 1e4:
            raise MotionImportError("root_translation values must be metres (|x| <= 10000).")
        rot = Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(n, NUM_JOINTS, 3, 3)
        return cls(rot, trans, float(fps), name=name)


def _vec3(value, where: str) -> np.ndarray:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
    ):
        raise MotionImportError(f"{where} must be a list of 3 numbers.")
    arr = np.asarray(value, np.float64)
    if not np.isfinite(arr).all():
        raise MotionImportError(f"{where} contains a non-finite number.")
    return arr
