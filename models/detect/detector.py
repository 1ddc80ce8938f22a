"""One entry point for person detection, whatever provides the keypoints and the mask.

Keypoints come from, in this order: OpenPose JSON uploaded with the photo, the ONNX
keypoint model (``AVATARS_KEYPOINT_MODEL_PATH``), MediaPipe Pose. The person mask from:
a mask uploaded with the photo, the ONNX parsing model (``AVATARS_PARSING_MODEL_PATH``),
MediaPipe Pose. MediaPipe runs only when one of the two is still missing, so a photo sent
with both keypoints and a mask skips detection altogether.
"""
from __future__ import annotations

import numpy as np

from models.detect.base import Detection, quality_warnings
from models.errors import PipelineError

MIN_UPLOADED_KEYPOINTS = 6


def prepare_mask(mask: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """An uploaded mask (uint8/bool/float, gray or with alpha) -> float32 [H, W] in 0..1,
    resized to the photo. Raises PipelineError('invalid_mask')."""
    import cv2

    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 3] if m.shape[2] == 4 else m.max(2)
    if m.ndim != 2 or min(m.shape) < 2:
        raise PipelineError("invalid_mask", "The person mask must be a grayscale image.")
    H, W = image_size
    if abs(m.shape[1] / m.shape[0] - W / H) > 0.02 * W / H:
        raise PipelineError("invalid_mask", f"The person mask is {m.shape[1]}x{m.shape[0]}; its photo is "
                                            f"{W}x{H} (after EXIF orientation): the aspect ratios differ.")
    m = m.astype(np.float32)
    if m.max() > 1.0:
        m /= 255.0 if m.max() <= 255 else m.max()
    if m.shape != (H, W):
        m = cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR)
    if int((m > 0.5).sum()) < 100:
        raise PipelineError("invalid_mask", "The person mask is empty.")
    return np.clip(m, 0, 1)


def _uploaded_keypoints(data, scale: float, strict: bool) -> tuple[np.ndarray, list[str]]:
    from models.detect.keypoint_formats import parse_openpose

    people, heights = parse_openpose(data, scale)
    people = [(p, h) for p, h in zip(people, heights) if (p[:, 2] > 0.1).sum() >= MIN_UPLOADED_KEYPOINTS]
    if not people:
        raise PipelineError("no_person_detected", "The uploaded keypoints hold no person.")
    warnings = []
    if len(people) > 1:
        if strict:
            raise PipelineError("multiple_people", "The uploaded keypoints hold more than one person.")
        warnings.append("multiple_people")
    kp, _ = max(people, key=lambda ph: ph[1])
    return kp, warnings


def detect(image: np.ndarray, *, keypoints_json=None, mask: np.ndarray | None = None,
           keypoint_scale: float = 1.0, strict: bool = False) -> Detection:
    """The person in `image` (uint8 RGB, EXIF-oriented, as processed).

    `keypoints_json`: OpenPose JSON (bytes, str or dict) in the pixels of the photo as sent,
    `keypoint_scale` = processed size / sent size. `mask`: an uploaded person mask.
    `strict`: several people is the error ``multiple_people`` instead of a warning.
    """
    from models.detect import onnx_models

    H, W = image.shape[:2]
    warnings: list[str] = []
    sources: dict[str, str] = {}
    kp = m = None
    if keypoints_json is not None:
        kp, w = _uploaded_keypoints(keypoints_json, keypoint_scale, strict)
        warnings += w
        sources["keypoints"] = "upload"
    if mask is not None:
        m = prepare_mask(mask, (H, W))
        sources["mask"] = "upload"
    kp_model = onnx_models.keypoint_model() if kp is None else None
    parse_model = onnx_models.parsing_model() if m is None else None
    if (kp is None and kp_model is None) or (m is None and parse_model is None):
        from models.detect.mediapipe_detector import detect_person

        mp = detect_person(image, strict=strict)
        warnings += [w for w in mp.warnings if w == "multiple_people"]
        if kp is None and kp_model is None:
            kp = mp.keypoints
            sources["keypoints"] = "mediapipe"
        if m is None and parse_model is None:
            m = mp.mask
            sources["mask"] = "mediapipe"
    if m is None and parse_model is not None:
        from models.detect.onnx_models import person_box

        m = parse_model(image, person_box((H, W), keypoints=kp))
        if int((m > 0.5).sum()) < 100:
            raise PipelineError("no_person_detected", "No person was found in the photo.")
        sources["mask"] = "onnx"
    if kp is None and kp_model is not None:
        from models.detect.keypoint_formats import from_wholebody
        from models.detect.onnx_models import person_box

        kp = from_wholebody(kp_model(image, person_box((H, W), mask=m)))
        if int((kp[:, 2] > 0.3).sum()) < MIN_UPLOADED_KEYPOINTS:
            raise PipelineError("no_person_detected", "No person was found in the photo.")
        sources["keypoints"] = "onnx"
    det = Detection(keypoints=np.asarray(kp, np.float32), mask=np.asarray(m, np.float32), 
                    source=f"keypoints:{sources['keypoints']},mask:{sources['mask']}")
    det.warnings = sorted(set(warnings)) + quality_warnings(det, image)
    return det
