"""Person detection with MediaPipe Pose 0.10.14 (its models ship inside the package).

One Pose graph per process, guarded by a lock: MediaPipe graphs are not thread-safe and
building one costs ~100 ms.

Several people: the Pose solution follows one person. To find others, the columns that
person occupies are cut out and what is left on either side, put side by side, goes
through Pose once more (people standing beside each other are the common case; a person
hidden behind another is not found). The taller person is kept; the photo gets the
warning ``multiple_people``, or the error of that code when the caller is strict.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from models.detect.base import Detection, quality_warnings
from models.errors import PipelineError

os.environ.setdefault("GLOG_minloglevel", "2")

_lock = threading.Lock()
_pose = None

MIN_VISIBILITY = 0.5  # below this a landmark is treated as not seen
MIN_VISIBLE_LANDMARKS = 8
MIN_MASK_PIXELS = 500
OTHER_PERSON_MIN_HEIGHT = 0.3  # another person counts when at least this share of the first's height
MIN_SIDE_WIDTH = 0.12  # image width share left beside the person worth searching
# Another person counts only with a torso seen within this of upright: in the strips beside
# a person Pose can follow a phantom in background shapes (often upside down), which would
# otherwise replace a real person with spread limbs (a star jump, a side kick).
UPRIGHT_TILT_DEG = 60.0


def _get_pose():
    global _pose  # built lazily once per process, read-only afterwards, used under _lock
    if _pose is None:
        import mediapipe as mp

        # model_complexity=1 is the "full" model bundled in the wheel; 0 and 2 would be
        # downloaded at first use, which is impossible offline.
        _pose = mp.solutions.pose.Pose(
            static_image_mode=True,
            model_complexity=1,
            enable_segmentation=True,
            min_detection_confidence=0.5,
        )
    return _pose


def warm_up() -> None:
    """Build the Pose graph and run it once (on a blank image): its first pass costs ~1-2 s
    of set-up that a worker should pay before its first job, not during it."""
    with _lock:
        _get_pose().process(np.zeros((256, 256, 3), np.uint8))


def _run_pose(image: np.ndarray) -> Detection | None:
    """One Pose pass: the person it follows, or None."""
    H, W = image.shape[:2]
    with _lock:
        result = _get_pose().process(np.ascontiguousarray(image))
    if result.pose_landmarks is None or result.segmentation_mask is None:
        return None
    lm = result.pose_landmarks.landmark
    kp = np.array([[p.x * W, p.y * H, p.visibility] for p in lm], dtype=np.float32)
    mask = np.asarray(result.segmentation_mask, dtype=np.float32)
    if int((mask > 0.5).sum()) < MIN_MASK_PIXELS or int((kp[:, 2] > MIN_VISIBILITY).sum()) < MIN_VISIBLE_LANDMARKS:
        return None
    return Detection(keypoints=kp, mask=mask)


def _person_columns(det: Detection, margin: float = 0.08) -> tuple[int, int]:
    """Columns [x0, x1) the person covers (mask and confident keypoints), with a margin."""
    W = det.image_size[1]
    xs = np.flatnonzero((det.mask > 0.5).any(0))
    seen = det.keypoints[det.keypoints[:, 2] > MIN_VISIBILITY, 0]
    lo = min(xs.min() if xs.size else W, seen.min() if seen.size else W)
    hi = max(xs.max() + 1 if xs.size else 0, seen.max() if seen.size else 0)
    pad = margin * max(det.person_height_px(), 1.0) * 0.5
    return int(np.clip(lo - pad, 0, W)), int(np.clip(np.ceil(hi + pad), 0, W))


def _other_person(image: np.ndarray, first: Detection) -> Detection | None:
    """The largest other person beside `first` (in full-image coordinates), or None."""
    H, W = image.shape[:2]
    x0, x1 = _person_columns(first)
    parts = [(0, x0), (x1, W)]
    parts = [(a, b) for a, b in parts if b - a >= MIN_SIDE_WIDTH * W]
    if not parts:
        return None
    side = np.concatenate([image[:, a:b] for a, b in parts], 1)
    det = _run_pose(side)
    if det is None:
        return None
    # Back to the photo's columns: each part's offset in the side-by-side image.
    offsets = np.cumsum([0] + [b - a for a, b in parts])
    kp = det.keypoints.copy()
    part = np.clip(np.searchsorted(offsets, kp[:, 0], side="right") - 1, 0, len(parts) - 1)
    kp[:, 0] += np.array([parts[p][0] - offsets[p] for p in part], np.float32)
    mask = np.zeros((H, W), np.float32)
    for (a, b), o in zip(parts, offsets[:-1]):
        mask[:, a:b] = det.mask[:, o:o + (b - a)]
    other = Detection(keypoints=kp, mask=mask)
    if other.person_height_px() < OTHER_PERSON_MIN_HEIGHT * first.person_height_px():
        return None
    tilt = _torso_tilt_deg(other)
    if tilt is None or tilt > UPRIGHT_TILT_DEG:
        return None
    return other


def _alone(image: np.ndarray, keep: Detection, drop: Detection) -> Detection:
    """Pose again on the photo with `drop`'s columns filled in, so `keep` is seen whole."""
    x0, x1 = _person_columns(drop, margin=0.02)
    k0, k1 = _person_columns(keep, margin=0.02)
    img = image.copy()
    lo, hi = (x0, min(x1, k0)) if x0 < k0 else (max(x0, k1), x1)
    if hi > lo:
        img[:, lo:hi] = np.median(image.reshape(-1, image.shape[-1]), 0).astype(image.dtype)
    det = _run_pose(img)
    if det is None or abs(det.person_height_px() - keep.person_height_px()) > 0.2 * keep.person_height_px():
        return keep
    return det


def _torso_tilt_deg(det: Detection) -> float | None:
    """Degrees between the torso (hips to shoulders) and upright; None when not seen."""
    kp = det.keypoints
    idx = [11, 12, 23, 24]  # MediaPipe-33 shoulders and hips
    if kp[idx, 2].min() < MIN_VISIBILITY:
        return None
    down = kp[idx[2:], :2].mean(0) - kp[idx[:2], :2].mean(0)  # image y grows downwards
    return float(np.degrees(np.arctan2(abs(down[0]), down[1]))) if np.linalg.norm(down) > 1e-6 else None


def detect_person(image: np.ndarray, strict: bool = False, look_for_others: bool = True) -> Detection:
    """uint8 RGB [H, W, 3] -> Detection of the largest person.

    Raises PipelineError: ``no_person_detected``; ``multiple_people`` when `strict` and
    more than one person is found (without `strict` the largest is used, with a warning).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PipelineError("invalid_photo", "Expected an RGB image.")
    det = _run_pose(image)
    if det is None:
        raise PipelineError("no_person_detected", "No person was found in the photo.")
    warnings = []
    other = _other_person(image, det) if look_for_others else None
    if other is not None:
        if strict:
            raise PipelineError("multiple_people", "More than one person is in the photo; send a photo of one person.")
        warnings.append("multiple_people")
        if other.person_height_px() > det.person_height_px():
            det = _alone(image, other, det)
    det.warnings = warnings + quality_warnings(det, image)
    det.source = "mediapipe"
    return det
