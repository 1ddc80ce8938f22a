"""Fill the unseen texels of a full-resolution texture with the diffusion model.

1. The observed texture (1024) is block-averaged to the model's atlas (64 by default).
2. The model samples the whole low-resolution texture, conditioned on it.
3. A shared linear colour adjustment per channel (alpha, beta), fitted by least squares on
   the observed low texels, maps the model's colours onto the photo's (the photo's
   lighting, white balance, camera), so no seam shows between the observed region and
   the inpainted one.
4. Observed texels keep their full resolution; only unseen ones are taken from the
   upsampled, colour-matched model texture.
5. The model colours the two sides of a UV seam (the spine, neck, shoulders, wrists,
   ankles) separately: a smooth correction of the unseen texels (models.inpaint.seams)
   makes the colours meet there. Pull-push fills the atlas gutters.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from models.inpaint.lowres import atlas_maps, downsample_partial
from models.inpaint.seams import blend_seams
from models.texture.fill import pull_push

MIN_MATCH_TEXELS = 16
ALPHA_RANGE = (0.5, 2.0)


@dataclass
class DiffusionFill:
    texture: np.ndarray  # float32 [T,T,3] 0..1, the final texture
    low: np.ndarray  # float32 [S,S,3] the model's texture after the colour adjustment
    steps: int
    sampler: str
    seconds: float  # sampling + composition (the model load is not counted)
    colour: dict = field(default_factory=dict)  # alpha [3], beta [3]
    seams: dict = field(default_factory=dict)  # models.inpaint.seams.blend_seams's info


def colour_match(pred: np.ndarray, obs: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (alpha, beta) minimizing |alpha * pred + beta - obs|^2 over `where`."""
    alpha, beta = np.ones(3, np.float32), np.zeros(3, np.float32)
    if int(where.sum()) < MIN_MATCH_TEXELS:
        return alpha, beta
    p, o = pred[where].astype(np.float64), obs[where].astype(np.float64)
    for c in range(3):
        var = p[:, c].var()
        if var < 1e-6:  # a flat prediction: shift only
            beta[c] = o[:, c].mean() - p[:, c].mean()
            continue
        a = float(np.clip(np.cov(p[:, c], o[:, c], bias=True)[0, 1] / var, *ALPHA_RANGE))
        alpha[c] = a
        beta[c] = o[:, c].mean() - a * p[:, c].mean()
    return alpha, beta


def diffusion_fill(rgb: np.ndarray, observed: np.ndarray, covered: np.ndarray, body, inpainter,
                   steps: int | None = None, sampler: str | None = None, seed: int = 0,
                   threads: int | None = 1) -> DiffusionFill:
    """rgb [T,T,3] 0..1 valid where `observed`; covered [T,T] -> the filled texture."""
    t0 = time.perf_counter()
    S = inpainter.cfg.atlas_size
    maps = atlas_maps(body, S, covered.shape[0])
    if maps.fingerprint != inpainter.cfg.uv_fingerprint:
        raise ValueError("the inpainting model was trained for another UV layout "
                         f"({inpainter.cfg.body_model}, {inpainter.cfg.uv_fingerprint}) than this body's "
                         f"({maps.fingerprint})")
    low_rgb, low_obs = downsample_partial(rgb, observed, covered, S)
    res = inpainter(low_rgb, low_obs, maps, steps=steps, sampler=sampler, seed=seed, threads=threads)
    alpha, beta = colour_match(res.texture, low_rgb, low_obs & maps.covered)
    low = np.clip(res.texture * alpha + beta, 0, 1).astype(np.float32)
    low = pull_push(low, maps.covered)
    T = covered.shape[0]
    up = cv2.resize(low, (T, T), interpolation=cv2.INTER_LINEAR)
    full = np.where(observed[..., None], rgb, up).astype(np.float32)
    blend = blend_seams(full, observed, covered, body.topology)
    full = pull_push(blend.texture, covered)
    return DiffusionFill(texture=full, low=low, steps=res.steps, sampler=res.sampler,
                         seconds=time.perf_counter() - t0,
                         colour={"alpha": [round(float(a), 4) for a in alpha],
                                 "beta": [round(float(b), 4) for b in beta]},
                         seams=blend.info)


@dataclass
class FillOutcome:
    texture: np.ndarray  # float32 [T,T,3] the final texture
    low: np.ndarray | None  # the model's colour-matched low-resolution texture (diffusion only)
    info: dict  # for quality.json: method, steps, sampler, model, ...


def fill_unseen(rgb: np.ndarray, weight: np.ndarray, covered: np.ndarray, body, texel_pos) -> FillOutcome:
    """Fill the unseen texels with the configured method (models.inpaint.registry).

    texel_pos: a callable -> [T,T,3] rest positions of the texels (only the classical fill
    needs them). With AVATARS_INPAINT_METHOD unset, a model trained for another UV layout
    (another body model) falls back to the classical fill; set to diffusion, it is an error.
    """
    from models.errors import ModelAssetError
    from models.inpaint.lowres import uv_fingerprint
    from models.inpaint.registry import (
        configured_method,
        get_inpainter,
        inpaint_method,
        sampling_overrides,
    )
    from models.texture.fill import classical_fill

    method = inpaint_method()
    reason = None
    if method == "diffusion":
        inpainter = get_inpainter()
        if inpainter.cfg.uv_fingerprint != uv_fingerprint(body.topology):
            msg = (f"the inpainting model was trained for the {inpainter.cfg.body_model} UV layout, "
                   f"not this body's ({getattr(body, 'body_model', '?')})")
            if configured_method() == "diffusion":
                raise ModelAssetError(f"{msg}; train one for it or set AVATARS_INPAINT_METHOD=classical.")
            method, reason = "classical", msg
        else:
            steps, sampler, threads = sampling_overrides()
            res = diffusion_fill(rgb, weight > 0, covered, body, inpainter, steps=steps, sampler=sampler,
                                 threads=threads)
            info = {"method": "diffusion", "model": getattr(inpainter, "source_name", "?"), "steps": res.steps,
                    "sampler": res.sampler, "atlas_size": int(inpainter.cfg.atlas_size),
                    "colour_match": res.colour, "seams": res.seams, "seconds": round(res.seconds, 3)}
            return FillOutcome(res.texture, res.low, info)
    t0 = time.perf_counter()
    tex = classical_fill(rgb, weight, texel_pos(), covered)
    info = {"method": "classical", "steps": None, "seconds": round(time.perf_counter() - t0, 3)}
    if reason:
        info["fallback_reason"] = reason
    return FillOutcome(tex, None, info)
