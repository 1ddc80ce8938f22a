"""What a person detector returns, whatever the detector."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detection:
    """One person in one photo, in pixel units of the (EXIF-oriented) photo."""

    keypoints: np.ndarray  # float32 [33, 3]: x, y (pixels), confidence 0..1; MediaPipe-33 order
    mask: np.ndarray  # float32 [H, W]: person probability 0..1
    warnings: list[str] = field(default_factory=list)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.mask.shape[0], self.mask.shape[1]

    def person_height_px(self) -> float:
        """Height of the person's mask (rows containing person pixels)."""
        rows = np.flatnonzero((self.mask > 0.5).any(1))
        return float(rows[-1] - rows[0] + 1) if rows.size else 0.0
