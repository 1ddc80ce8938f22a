"""What a person detector returns, whatever the detector, and the checks every photo gets."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_PERSON_HEIGHT_PX = 256  # smaller people give a coarse fit and a blurry texture
BLUR_WARNING = 0.7  # blur_score above this: about a 1 % of body height Gaussian blur or worse
BLUR_HEIGHT_PX = 256  # the person is rescaled to this height before the blur is measured


@dataclass
class Detection:
    """One person in one photo, in pixel units of the (EXIF-oriented) photo."""

    keypoints: np.ndarray  # float32 [33, 3]: x, y (pixels), confidence 0..1; MediaPipe-33 order
    mask: np.ndarray  # float32 [H, W]: person probability 0..1
    warnings: list[str] = field(default_factory=list)
    source: str = "mediapipe"  # where keypoints and mask came from, e.g. "upload+mediapipe"

    @property
    def image_size(self) -> tuple[int, int]:
        return self.mask.shape[0], self.mask.shape[1]

    def person_height_px(self) -> float:
        """Height of the person's mask (rows containing person pixels)."""
        rows = np.flatnonzero((self.mask > 0.5).any(1))
        return float(rows[-1] - rows[0] + 1) if rows.size else 0.0


def quality_warnings(det: Detection, image: np.ndarray | None = None) -> list[str]:
    """Conditions that make a fit less trustworthy, reported in the avatar's quality report:
    ``person_too_small`` (under 256 px tall), ``person_cut_off`` (the mask touches the
    frame), ``photo_blurry`` (see `blur_score`)."""
    out = []
    if det.person_height_px() < MIN_PERSON_HEIGHT_PX:
        out.append("person_too_small")
    m = det.mask > 0.5
    if m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any():
        out.append("person_cut_off")
    if image is not None and blur_score(image, m) > BLUR_WARNING:
        out.append("photo_blurry")
    return out


def blur_score(image: np.ndarray, mask: np.ndarray) -> float:
    """How blurred the person is, 0 (sharp) .. 1 (flat), independent of their size in pixels.

    The re-blur measure of Crete et al. (2007): blur the person's box (rescaled to a person
    256 px tall) once more with a 9-pixel box filter and see how much of the neighbouring-
    pixel variation survives; a sharp photo loses most of it, a blurred one little. Sharp
    photos score about 0.3-0.4; a Gaussian blur of 1 % of the body height about 0.75.
    """
    import cv2

    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = image[y0:y1, x0:x1]
    gray = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    s = BLUR_HEIGHT_PX / max(y1 - y0, 1)
    gray = cv2.resize(gray, (max(1, round(gray.shape[1] * s)), max(1, round(gray.shape[0] * s))),
                      interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR).astype(np.float32)
    if min(gray.shape) < 10:
        return 0.0
    box = np.ones(9, np.float32) / 9
    scores = []
    for axis in (0, 1):
        k = box[:, None] if axis == 0 else box[None]
        blurred = cv2.filter2D(gray, -1, k, borderType=cv2.BORDER_REFLECT)
        d = np.abs(np.diff(gray, axis=axis))
        db = np.abs(np.diff(blurred, axis=axis))
        total = float(d.sum())
        kept = float(np.maximum(d - db, 0).sum())
        scores.append((total - kept) / total if total > 0 else 1.0)
    return float(max(scores))
