"""Person detection with MediaPipe Pose 0.10.14 (its models ship inside the package).

One Pose graph per process, guarded by a lock: MediaPipe graphs are not thread-safe and
building one costs ~100 ms.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from models.detect.base import Detection
from models.errors import PipelineError

os.environ.setdefault("GLOG_minloglevel", "2")

_lock = threading.Lock()
_pose = None

MIN_VISIBILITY = 0.5  # below this a landmark is treated as not seen
MIN_MASK_PIXELS = 500


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


def detect_person(image: np.ndarray) -> Detection:
    """uint8 RGB [H, W, 3] -> Detection; raises PipelineError('no_person_detected')."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise PipelineError("invalid_photo", "Expected an RGB image.")
    H, W = image.shape[:2]
    with _lock:
        result = _get_pose().process(np.ascontiguousarray(image))
    if result.pose_landmarks is None or result.segmentation_mask is None:
        raise PipelineError("no_person_detected", "No person was found in the photo.")
    lm = result.pose_landmarks.landmark
    kp = np.array([[p.x * W, p.y * H, p.visibility] for p in lm], dtype=np.float32)
    mask = np.asarray(result.segmentation_mask, dtype=np.float32)
    if int((mask > 0.5).sum()) < MIN_MASK_PIXELS or int((kp[:, 2] > MIN_VISIBILITY).sum()) < 8:
        raise PipelineError("no_person_detected", "No person was found in the photo.")
    det = Detection(keypoints=kp, mask=mask)
    det.warnings.extend(_quality_warnings(det))
    return det


def _quality_warnings(det: Detection) -> list[str]:
    """Conditions that make a fit less trustworthy, reported in the avatar's quality report."""
    H, W = det.image_size
    out = []
    if det.person_height_px() < 256:
        out.append("person_too_small")
    m = det.mask > 0.5
    if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
        out.append("person_cut_off")
    return out
