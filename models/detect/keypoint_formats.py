"""Keypoint layouts other tools write, mapped onto MediaPipe-33 (the fit's layout).

- OpenPose JSON (``{"people": [{"pose_keypoints_2d": [x, y, c, ...], "face_keypoints_2d":
  ..., "hand_left_keypoints_2d": ..., "hand_right_keypoints_2d": ...}]}``) with the
  BODY_25 or COCO-18 body, the 70-point face (iBUG-68 + pupils) and 21-point hands;
- COCO-WholeBody 133 (17 body, 6 feet, 68 face, 2 x 21 hands), what whole-body ONNX
  models (RTMPose, ViTPose, DWPose) output, and its first 17 points, COCO-17.

Landmarks a layout lacks get confidence 0 (the fit ignores them). Hand points: MediaPipe's
``*_index`` and ``*_pinky`` are the first knuckles (hand points 5 and 17), ``*_thumb``
the thumb's second joint (hand point 2).
"""
from __future__ import annotations

import json

import numpy as np

from models.body.template import MEDIAPIPE_33
from models.errors import PipelineError

_MP = {n: i for i, n in enumerate(MEDIAPIPE_33)}

BODY_25 = ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
           "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
           "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe",
           "left_heel", "right_big_toe", "right_small_toe", "right_heel"]
COCO_18 = ["nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
           "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
           "right_eye", "left_eye", "right_ear", "left_ear"]
COCO_17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
           "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
           "right_knee", "left_ankle", "right_ankle"]
WHOLEBODY_FEET = ["left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel"]
# Body/feet names that are MediaPipe landmarks under another name.
_BODY_ALIAS = {"left_big_toe": "left_foot_index", "right_big_toe": "right_foot_index"}
# iBUG-68 face points (0-based) for MediaPipe's face landmarks; the eyes are their corners' mean.
_FACE = {"right_eye_outer": [36], "right_eye_inner": [39], "left_eye_inner": [42], "left_eye_outer": [45],
         "mouth_right": [48], "mouth_left": [54], "right_eye": [36, 39], "left_eye": [42, 45]}
_HAND = {"index": 5, "pinky": 17, "thumb": 2}  # 21-point hand: first knuckles, thumb's second joint


def _put(out: np.ndarray, name: str, xyc) -> None:
    name = _BODY_ALIAS.get(name, name)
    if name in _MP:
        out[_MP[name]] = xyc


def _face(out: np.ndarray, face: np.ndarray, overwrite: bool = False) -> None:
    """68 (or 70) face points [N, 3] -> MediaPipe's face landmarks."""
    if len(face) < 68:
        return
    for name, idx in _FACE.items():
        pts = face[idx]
        if (pts[:, 2] > 0).all():
            i = _MP[name]
            if overwrite or out[i, 2] == 0:
                out[i] = [pts[:, 0].mean(), pts[:, 1].mean(), pts[:, 2].min()]


def _hand(out: np.ndarray, hand: np.ndarray, side: str) -> None:
    if len(hand) < 21:
        return
    for finger, k in _HAND.items():
        if hand[k, 2] > 0:
            out[_MP[f"{side}_{finger}"]] = hand[k]


def from_wholebody(points: np.ndarray) -> np.ndarray:
    """[133, 3] COCO-WholeBody (or [17, 3] COCO) -> [33, 3] MediaPipe-33."""
    pts = np.asarray(points, np.float32)
    out = np.zeros((33, 3), np.float32)
    for i, name in enumerate(COCO_17[:min(17, len(pts))]):
        _put(out, name, pts[i])
    if len(pts) >= 23:
        for i, name in enumerate(WHOLEBODY_FEET):
            _put(out, name, pts[17 + i])
    if len(pts) >= 133:
        _face(out, pts[23:91], overwrite=True)
        _hand(out, pts[91:112], "left")
        _hand(out, pts[112:133], "right")
    return out


def _triples(values, what: str) -> np.ndarray:
    a = np.asarray(values if values is not None else [], dtype=np.float64)
    if a.ndim != 1 or a.size % 3 or not np.isfinite(a).all():
        raise PipelineError("invalid_keypoints", f"{what} must be a flat list of x, y, confidence triples.")
    a = a.reshape(-1, 3).astype(np.float32)
    a[:, 2] = np.clip(a[:, 2], 0.0, 1.0)
    a[(a[:, 0] == 0) & (a[:, 1] == 0), 2] = 0.0  # OpenPose writes 0, 0, 0 for missing points
    return a


def parse_openpose(data: bytes | str | dict, scale: float = 1.0) -> tuple[list[np.ndarray], list[float]]:
    """OpenPose JSON -> (MediaPipe-33 keypoints [33, 3] per person, each person's height).

    OpenPose writes pixel indices of the photo it saw (give it the EXIF-oriented photo);
    they become continuous coordinates (pixel i spans [i, i + 1)) multiplied by `scale`
    (the photo is processed smaller than it was sent).
    Raises PipelineError('invalid_keypoints') for anything that is not OpenPose's format.
    """
    if not isinstance(data, dict):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PipelineError("invalid_keypoints", f"The keypoints file is not JSON: {exc}") from exc
    people = data.get("people") if isinstance(data, dict) else None
    if not isinstance(people, list):
        raise PipelineError("invalid_keypoints", "OpenPose keypoints need a 'people' list.")
    out, heights = [], []
    for person in people:
        if not isinstance(person, dict):
            raise PipelineError("invalid_keypoints", "Each entry of 'people' must be an object.")
        body = _triples(person.get("pose_keypoints_2d"), "pose_keypoints_2d")
        if len(body) == 25:
            names = BODY_25
        elif len(body) == 18:
            names = COCO_18
        elif len(body) == 0:
            continue
        else:
            raise PipelineError("invalid_keypoints",
                                f"pose_keypoints_2d has {len(body)} points; expected BODY_25 (25) or COCO (18).")
        kp = np.zeros((33, 3), np.float32)
        for name, p in zip(names, body):
            _put(kp, name, p)
        face = _triples(person.get("face_keypoints_2d"), "face_keypoints_2d")
        _face(kp, face)
        _hand(kp, _triples(person.get("hand_left_keypoints_2d"), "hand_left_keypoints_2d"), "left")
        _hand(kp, _triples(person.get("hand_right_keypoints_2d"), "hand_right_keypoints_2d"), "right")
        kp[:, :2] = (kp[:, :2] + 0.5) * scale  # pixel indices -> continuous, processed size
        seen = np.concatenate([body[body[:, 2] > 0.1, 1], face[face[:, 2] > 0.1, 1]]) * scale
        out.append(kp)
        heights.append(float(seen.max() - seen.min()) if seen.size else 0.0)
    return out, heights
