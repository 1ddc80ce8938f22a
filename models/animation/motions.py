"""Built-in motions, written once on the canonical joints (models/animation/canonical.py).

A motion maps time (seconds) to local joint rotations (T-pose world axes, SMPL-style) and
a root offset. Motions loop with their duration. numpy only: the render path uses them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from models.render.rotations import rot_x, rot_y, rot_z


@dataclass
class MotionFrame:
    rotations: dict[str, np.ndarray]  # canonical joint -> [3,3]
    root_translation: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class Motion:
    name: str
    description: str
    duration_s: float
    frame_at: Callable[[float], MotionFrame]

    def frame(self, t: float) -> MotionFrame:
        return self.frame_at(t % self.duration_s)

    def info(self) -> dict:
        return {"name": self.name, "description": self.description, "duration_s": self.duration_s}


def _relaxed(extra: dict[str, np.ndarray] | None = None, arm_down_deg: float = 70.0) -> dict:
    """A natural standing pose: arms hanging at the sides (the T-pose lowered)."""
    pose = {
        "left_shoulder": rot_z(-arm_down_deg),
        "right_shoulder": rot_z(arm_down_deg),
        "left_elbow": rot_y(10.0),
        "right_elbow": rot_y(-10.0),
    }
    pose.update(extra or {})
    return pose


def _turntable(t: float) -> MotionFrame:
    rot = _relaxed({"pelvis": rot_y(360.0 * t / 4.0)})
    return MotionFrame(rot)


def _idle(t: float) -> MotionFrame:
    s = np.sin(2 * np.pi * t / 3.0)
    return MotionFrame(_relaxed({
        "spine2": rot_z(1.5 * s), "head": rot_y(6 * s) @ rot_x(2 * s),
        "pelvis": rot_z(1.0 * s),
    }, arm_down_deg=72 + 2 * s))


def _walk(t: float) -> MotionFrame:
    ph = 2 * np.pi * t / 1.1
    s, c = np.sin(ph), np.cos(ph)
    knee_l = max(0.0, -s) * 45 + 5
    knee_r = max(0.0, s) * 45 + 5
    rot = _relaxed({
        "left_hip": rot_x(-25 * s), "right_hip": rot_x(25 * s),
        "left_knee": rot_x(knee_l), "right_knee": rot_x(knee_r),
        "left_shoulder": rot_z(-72) @ rot_x(20 * s), "right_shoulder": rot_z(72) @ rot_x(-20 * s),
        "spine2": rot_y(4 * s), "pelvis": rot_y(-4 * s),
    })
    return MotionFrame(rot, np.array([0.0, 0.015 * abs(c), 0.0]))


def _wave(t: float) -> MotionFrame:
    s = np.sin(2 * np.pi * t / 1.0)
    return MotionFrame(_relaxed({
        "right_shoulder": rot_z(-40), "right_elbow": rot_x(-20) @ rot_z(-70 - 25 * s),
        "head": rot_z(3 * s),
    }))


def _arms_raise(t: float) -> MotionFrame:
    a = 0.5 - 0.5 * np.cos(2 * np.pi * t / 3.0)  # 0 -> 1 -> 0
    down = 70 - 230 * a  # from arms down to arms above the head
    return MotionFrame(_relaxed({"left_shoulder": rot_z(-down), "right_shoulder": rot_z(down)}))


def _jumping_jacks(t: float) -> MotionFrame:
    a = 0.5 - 0.5 * np.cos(2 * np.pi * t / 1.0)
    arm = 70 - 220 * a
    legs = 12 * a
    rot = _relaxed({
        "left_shoulder": rot_z(-arm), "right_shoulder": rot_z(arm),
        "left_hip": rot_z(legs), "right_hip": rot_z(-legs),
    })
    return MotionFrame(rot, np.array([0.0, 0.08 * np.sin(np.pi * a), 0.0]))


def _dance(t: float) -> MotionFrame:
    ph = 2 * np.pi * t / 2.0
    s, s2 = np.sin(ph), np.sin(2 * ph)
    rot = _relaxed({
        "pelvis": rot_y(15 * s) @ rot_z(5 * s2),
        "spine2": rot_z(-6 * s2), "head": rot_z(8 * s2),
        "left_shoulder": rot_z(-30 - 30 * s), "right_shoulder": rot_z(30 - 30 * s),
        "left_elbow": rot_y(60 + 20 * s2), "right_elbow": rot_y(-60 - 20 * s2),
        "left_knee": rot_x(10 + 10 * s2), "right_knee": rot_x(10 - 10 * s2),
    })
    return MotionFrame(rot, np.array([0.0, -0.02 * abs(s2), 0.0]))


MOTIONS: dict[str, Motion] = {m.name: m for m in [
    Motion("turntable", "Standing still, turning around once every 4 s.", 4.0, _turntable),
    Motion("idle", "Standing, breathing and glancing around.", 3.0, _idle),
    Motion("walk", "Walking in place.", 1.1, _walk),
    Motion("wave", "Waving with the right hand.", 1.0, _wave),
    Motion("arms_raise", "Raising both arms above the head and lowering them.", 3.0, _arms_raise),
    Motion("jumping_jacks", "Jumping jacks.", 1.0, _jumping_jacks),
    Motion("dance", "A simple swaying dance.", 2.0, _dance),
]}
MOTION_NAMES = set(MOTIONS)


def list_motions() -> list[dict]:
    return [m.info() for m in MOTIONS.values()]


def get_motion(name: str) -> Motion:
    try:
        return MOTIONS[name]
    except KeyError:
        raise KeyError(f"Unknown motion {name!r}; known: {', '.join(sorted(MOTIONS))}") from None
