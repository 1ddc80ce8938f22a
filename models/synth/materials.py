"""Procedural fabrics, skin and hair: material labels + palette -> texture colours.

Every material is a fixed pattern field over the atlas (unit standard deviation), made
once per texture size: jersey (fine grain), knit (ribs), denim (a diagonal twill with
heathered threads), twill (a fine diagonal), fleece (soft mottling), wool (a coarser
grain), leather (slow variation with a fine grain), hair (strands), skin (a faint grain).
A texel's colour is its label's palette colour times ``1 + amplitude * field``, the field
rolled by a random offset per sample so no two people share the same threads. The
fields live in atlas space: a knit's ribs follow each UV island (as sewn panels do).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from models.synth import outfit as O

MATERIALS = ("jersey", "knit", "denim", "twill", "fleece", "wool", "leather", "hair", "skin")
AMPLITUDE = {"jersey": 0.035, "knit": 0.08, "denim": 0.13, "twill": 0.06, "fleece": 0.07, "wool": 0.07,
             "leather": 0.08, "hair": 0.14, "skin": 0.015}


@lru_cache(maxsize=2)
def material_fields(rows: int, cols: int) -> np.ndarray:
    """float32 [len(MATERIALS), rows, cols]: each material's pattern, unit std."""
    import cv2

    rng = np.random.default_rng(12345)
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]

    def noise(sigma_r: float, sigma_c: float | None = None) -> np.ndarray:
        n = rng.normal(0, 1, (rows, cols)).astype(np.float32)
        if sigma_r > 0:
            n = cv2.GaussianBlur(n, (0, 0), sigmaX=sigma_c if sigma_c is not None else sigma_r, sigmaY=sigma_r)
        return n / (n.std() + 1e-8)

    out = np.empty((len(MATERIALS), rows, cols), np.float32)
    fine = noise(0.7)
    out[0] = fine
    out[1] = 0.75 * np.cos(2 * np.pi * c / 3.3) + 0.35 * noise(0.6) + 0.0 * r
    out[2] = 0.6 * np.cos(2 * np.pi * (r + c) / 4.0) + 0.6 * noise(0.0) + 0.4 * noise(6.0)
    out[3] = 0.7 * np.cos(2 * np.pi * (c - r) / 3.0) + 0.4 * noise(0.6)
    out[4] = 0.8 * noise(2.5) + 0.3 * fine
    out[5] = 0.7 * noise(1.3) + 0.4 * noise(5.0)
    out[6] = 0.8 * noise(10.0) + 0.3 * fine
    out[7] = noise(5.0, 0.6)  # strands: long along the atlas rows' direction
    out[8] = noise(1.2)
    for k in range(len(MATERIALS)):
        out[k] /= out[k].std() + 1e-8
    return out


def label_materials(outfit: O.Outfit) -> np.ndarray:
    """Material index per label (int [N_LABELS])."""
    m = {n: i for i, n in enumerate(MATERIALS)}
    out = np.full(O.N_LABELS, m["jersey"], np.int64)
    top = m.get(outfit.materials.get("top", "jersey"), 0)
    out[[O.TOP, O.TOP_ALT, O.TOP_ALT2, O.TRIM]] = top
    out[[O.BOTTOM, O.BOTTOM_DETAIL]] = m.get(outfit.materials.get("bottom", "jersey"), 0)
    out[[O.COAT, O.COAT_TRIM]] = m.get(outfit.materials.get("coat", "wool"), 0)
    out[[O.HAIR, O.BEARD, O.BROW]] = m["hair"]
    out[[O.SKIN, O.LIP]] = m["skin"]
    out[[O.SHOE, O.BELT, O.HAT]] = m["leather"] if outfit.shoes in ("boots", "heels") else m["jersey"]
    out[[O.SOCK]] = m["knit"]
    return out


def colour(labels: np.ndarray, pal: np.ndarray, outfit: O.Outfit, rng: np.random.Generator,
           outside: np.ndarray | None = None) -> np.ndarray:
    """Material labels [R, C] (int) -> uint8 [R, C, 3]. `outside`: bool [R, C] left black."""
    R, C = labels.shape
    fields = material_fields(R, C)
    mat = label_materials(outfit)
    amp = np.array([AMPLITUDE[n] for n in MATERIALS], np.float32)
    lab = np.clip(labels, 0, O.N_LABELS - 1)
    mod = np.zeros((R, C), np.float32)
    shift = (2 * int(rng.integers(R // 2)), 2 * int(rng.integers(C // 2)))
    lm = mat[lab]
    for k in np.flatnonzero(np.bincount(lm.ravel(), minlength=len(MATERIALS))):
        sel = lm == k
        mod[sel] = np.roll(fields[k], shift, axis=(0, 1))[sel] * amp[k]
    out = np.clip(pal, 0, 255).astype(np.float32)[lab]
    out *= (1.0 + mod)[..., None]
    out += 0.5
    np.clip(out, 0, 255, out=out)
    img = out.astype(np.uint8)
    if outside is not None:
        img[outside] = 0
    return img
