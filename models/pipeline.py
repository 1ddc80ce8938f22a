"""The pipeline stages the workers run, each reading and writing one avatar directory.

    avatar_dir/originals/photo_<i>.<ext>     uploaded photos (written by the gateway)
    avatar_dir/fit/mask_<i>.png              person mask per photo        } fit stage
    avatar_dir/fit/fit.json                  shape, poses, cameras, errors }
    avatar_dir/texture/observed.png          texels sampled from the photos  } inpaint stage
    avatar_dir/texture/observed_mask.png     which texels were observed (sampled or gap-filled)
    avatar_dir/texture/sampled_mask.png, gap_filled_mask.png, unseen_mask.png   the three masks
    avatar_dir/texture/inpainted_low.png     the diffusion model's texture (64x64, colour-matched)
    avatar_dir/texture/inpainted.png         the final texture (the bundle's) }
    avatar_dir/avatar.glb, quality.json      the bundle and its quality report

Every file is written atomically, and a stage only reads what the previous one finished,
so re-running a stage after a crash is safe.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from models.errors import PipelineError
from models.ioutil import atomic_write_json, atomic_write_png, load_photo, read_json, to_uint8

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
TEXTURE_SIZE = 1024
PIPELINE_VERSION = 1


def _noop(stage: str, fraction: float) -> None:
    pass


def list_photos(avatar_dir: Path) -> list[Path]:
    photos = sorted(p for p in (Path(avatar_dir) / "originals").glob("photo_*")
                    if p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise PipelineError("invalid_photo", "The avatar has no photos.")
    return photos


def _load(path: Path) -> np.ndarray:
    try:
        return load_photo(path)
    except (OSError, ValueError) as exc:
        raise PipelineError("invalid_photo", f"Could not decode {path.name}: {exc}") from exc


FIT_OPTIONS = "options.json"  # originals/options.json: {"strict": true} -> several people is an error
MIN_FIT_HEIGHT_PX = 128  # a person smaller than this cannot be fitted (256 px: a warning)
UNTRUSTED_KEYPOINT_ERROR_PCT = 12.0  # a fit this far from the keypoints...
UNTRUSTED_SILHOUETTE_IOU = 0.5  # ...or this far from the mask is an error, not an avatar
FAILED_LIMB_ERROR_PCT = 8.0  # a failed fit names the body parts this far from their keypoints
UNSUPPORTED_TORSO_TILT_DEG = 60.0  # a failed fit of a torso this far from upright: pose_unsupported
TILTED_KEYPOINT_ERROR_PCT = 4.0  # the keypoint error such a torso's fit may have at most
FIT_ADVICE = ("Send a photo of the person standing upright, facing the camera, with the whole body "
              "visible (sitting, kneeling, crouching, jumping and kicking people are fitted, lying or "
              "upside-down people are not).")


def fit_stage(avatar_dir: Path, progress: Progress | None = None) -> dict[str, float]:
    """Detect the person in every photo and fit the body to them.

    Per photo ``originals/photo_<i>``, optional uploads beside it: ``keypoints_<i>.json``
    (OpenPose JSON, in the pixels of the photo as sent, EXIF-oriented) and ``mask_<i>.png``
    (person mask); with both, detection is skipped for that photo. The focal length comes
    from the photo's EXIF when present. Errors: ``no_person_detected``, ``multiple_people``
    (only when options.json asks for ``strict``), ``person_too_small``, ``pose_unsupported``
    (a failed fit of a photo whose torso is far from upright), ``fit_failed`` (any other
    fit too far from the keypoints or the mask; the message names the body parts).
    """
    from models.body.registry import get_body
    from models.fit.fit_body import fit_body

    progress = progress or _noop
    avatar_dir = Path(avatar_dir)
    fit_dir = avatar_dir / "fit"
    photos = list_photos(avatar_dir)
    strict = bool(_fit_options(avatar_dir).get("strict", False))

    t0 = time.perf_counter()
    progress("detect", 0.0)
    detections, intrinsics = [], []
    for i, path in enumerate(photos):
        img = _load(path)
        det = _detect_photo(avatar_dir, path, img, strict)
        detections.append(det)
        intrinsics.append(_photo_intrinsics(path, img.shape[1], img.shape[0]))
        atomic_write_png(fit_dir / f"mask_{i}.png", to_uint8(det.mask))
        progress("detect", (i + 1) / len(photos))
    t_detect = time.perf_counter() - t0
    too_small = [p.name for p, d in zip(photos, detections) if d.person_height_px() < MIN_FIT_HEIGHT_PX]
    if too_small:
        raise PipelineError("person_too_small", f"The person is under {MIN_FIT_HEIGHT_PX} pixels tall in "
                            f"{', '.join(too_small)}; send a photo where they fill more of the frame.",
                            details={"photos": too_small})

    t0 = time.perf_counter()
    progress("fit", 0.0)
    body = get_body()
    fit = fit_body(body, detections, progress=lambda f: progress("fit", f), intrinsics=intrinsics)
    t_iou = time.perf_counter()
    iou = [silhouette_iou(body, fit.shape, fit.poses[i], fit.cameras[i], d.mask)
           for i, d in enumerate(detections)]
    stage_seconds = {**fit.stage_seconds, "silhouette_iou": time.perf_counter() - t_iou}
    untrusted = [p.name for p, d, e, u in zip(photos, detections, fit.keypoint_error_pct, iou)
                 if not e <= _keypoint_error_limit(d) or u < UNTRUSTED_SILHOUETTE_IOU]
    if untrusted:
        raise _fit_error(body, fit, detections, photos, untrusted, iou)
    warnings = sorted({w for d in detections for w in d.warnings} | set(fit.warnings))
    atomic_write_json(fit_dir / "fit.json", {
        "body_model": body.body_model,
        "shape": fit.shape.tolist(),
        "poses": fit.poses.tolist(),
        "cameras": [c.to_dict() for c in fit.cameras],
        "photos": [p.name for p in photos],
        "keypoints": [d.keypoints.tolist() for d in detections],
        "keypoint_error_pct": fit.keypoint_error_pct,
        "silhouette_iou": iou,
        "warnings": warnings,
        "photo_warnings": [d.warnings for d in detections],
        "detection_sources": [d.source for d in detections],
        "focal_from_exif": [k is not None for k in intrinsics],
        "iterations": fit.iterations,
        "stage_seconds": stage_seconds,
    })
    progress("fit", 1.0)
    return {"detect": t_detect, "fit": time.perf_counter() - t0}


def _keypoint_error_limit(det) -> float:
    """The keypoint error (% of the person's height) above which a fit is not an avatar:
    stricter for a torso far from upright (the fit starts upright; it may still get such a
    person right, but not roughly)."""
    from models.fit.fit_body import torso_tilt_deg

    tilt = torso_tilt_deg(det)
    if tilt is not None and tilt > UNSUPPORTED_TORSO_TILT_DEG:
        return TILTED_KEYPOINT_ERROR_PCT
    return UNTRUSTED_KEYPOINT_ERROR_PCT


def _fit_error(body, fit, detections, photos: list[Path], untrusted: list[str], iou: list[float]) -> PipelineError:
    """The error for photos the body could not be fitted to: ``pose_unsupported`` when a
    photo's torso is far from upright (lying, upside down, a cartwheel: the fit assumes an
    upright body), else ``fit_failed``; the message names the body parts whose keypoints
    the fitted body missed and says what photo to send instead."""
    from models.fit.fit_body import limb_errors, torso_tilt_deg

    errors = limb_errors(body, fit, detections)
    problems, reasons = [], []
    unsupported = False
    for i, (path, det) in enumerate(zip(photos, detections)):
        if path.name not in untrusted:
            continue
        tilt = torso_tilt_deg(det)
        missed = {k: v for k, v in errors[i].items() if v is not None and v > FAILED_LIMB_ERROR_PCT}
        unseen = [k for k, v in errors[i].items() if v is None]
        problems.append({"photo": path.name, "limb_error_pct": errors[i], "limbs": sorted(missed, key=missed.get,
                         reverse=True), "unseen": unseen, "torso_tilt_deg": None if tilt is None else round(tilt, 1)})
        if tilt is not None and tilt > UNSUPPORTED_TORSO_TILT_DEG:
            unsupported = True
            reasons.append(f"in {path.name} the body is lying, bent over or upside down (the torso is "
                           f"{tilt:.0f} degrees from upright)")
        elif missed:
            parts = [f"{k.replace('_', ' ')} ({v:.0f} %)" for k, v in sorted(missed.items(), key=lambda kv: -kv[1])]
            reasons.append(f"in {path.name} the fitted body misses the {_and(parts)} (distance to the "
                           "keypoints in % of the person's height)")
        else:
            reasons.append(f"in {path.name} the body does not match the person's outline "
                           f"(overlap {iou[i]:.2f})")
        if unseen:
            reasons[-1] += f"; not seen: {_and([u.replace('_', ' ') for u in unseen])}"
    code = "pose_unsupported" if unsupported else "fit_failed"
    return PipelineError(code, f"The body could not be fitted to {', '.join(untrusted)}: {'; '.join(reasons)}. "
                         f"{FIT_ADVICE}", details={"photos": untrusted, "keypoint_error_pct": fit.keypoint_error_pct,
                                                    "silhouette_iou": iou, "problems": problems})


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _fit_options(avatar_dir: Path) -> dict:
    path = avatar_dir / "originals" / FIT_OPTIONS
    try:
        opts = read_json(path)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise PipelineError("invalid_options", f"Could not read {FIT_OPTIONS}: {exc}") from exc
    return opts if isinstance(opts, dict) else {}


def _detect_photo(avatar_dir: Path, photo: Path, img: np.ndarray, strict: bool):
    """Detection for one photo, using the keypoints and mask uploaded beside it if any."""
    from models.detect.detector import detect

    index = photo.stem.split("_", 1)[1]
    kp_path = avatar_dir / "originals" / f"keypoints_{index}.json"
    mask_path = avatar_dir / "originals" / f"mask_{index}.png"
    keypoints = kp_path.read_bytes() if kp_path.is_file() else None
    mask = _load_uploaded_mask(mask_path) if mask_path.is_file() else None
    scale = 1.0
    if keypoints is not None:
        scale = img.shape[1] / _oriented_size(photo)[0]
    return detect(img, keypoints_json=keypoints, mask=mask, keypoint_scale=scale, strict=strict)


def _load_uploaded_mask(path: Path) -> np.ndarray:
    """A person mask as uploaded: its alpha channel when it has one, else its gray levels."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                return np.asarray(im.convert("RGBA"))[..., 3].copy()
            return np.asarray(im.convert("L")).copy()
    except (OSError, ValueError) as exc:
        raise PipelineError("invalid_mask", f"Could not decode {path.name}: {exc}") from exc


def _oriented_size(path: Path) -> tuple[int, int]:
    """(width, height) of a photo as sent, after its EXIF orientation."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # the four that swap the axes


def _photo_intrinsics(path: Path, width: int, height: int):
    """K from the photo's EXIF focal length, or None (the fit's default field of view)."""
    from models.fit.camera import default_intrinsics, focal_px_from_exif

    f = focal_px_from_exif(path, width, height)
    return None if f is None else default_intrinsics(width, height, focal_px=f)


def silhouette_iou(body, shape, pose, cam, mask: np.ndarray) -> float:
    """IoU between the fitted body's silhouette and the person mask."""
    from models.fit.camera import clip_from_camera
    from models.fit.fit_body import posed_vertices
    from models.raster import get_backend

    v = posed_vertices(body, shape, pose)
    clip = np.concatenate([v, np.ones((len(v), 1), np.float32)], 1) @ clip_from_camera(cam).T
    faces = body.topology.faces
    src = body.topology.source_vertex
    rast = get_backend("cpu").rasterize(clip[src].astype(np.float32), faces, mask.shape)[::-1]
    a = rast[..., 3] > 0
    b = mask > 0.5
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def inpaint_stage(avatar_dir: Path, progress: Progress | None = None) -> dict[str, float]:
    """Sample the photos into the UV texture, fill what they do not show, bake the bundle."""
    from models.bake import bake
    from models.body.registry import get_body
    from models.fit.camera import Camera
    from models.fit.fit_body import posed_vertices
    from models.inpaint.apply import fill_unseen
    from models.texture.atlas import texel_attribute, texel_map
    from models.texture.unproject import limb_parts, merge, unproject_photo

    progress = progress or _noop
    avatar_dir = Path(avatar_dir)
    fit_path = avatar_dir / "fit" / "fit.json"
    if not fit_path.exists():
        raise PipelineError("fit_missing", "The fit stage has not finished for this avatar.")
    fit = read_json(fit_path)
    body = get_body(fit.get("body_model"))  # the body the fit was made with
    top = body.topology
    shape = np.asarray(fit["shape"], np.float32)
    photos = [avatar_dir / "originals" / name for name in fit["photos"]]

    t0 = time.perf_counter()
    progress("texture", 0.0)
    tm = texel_map(top.uvs, top.faces, TEXTURE_SIZE)
    face_part = limb_parts(top)  # per-limb labels for the self-occlusion edges
    partials = []
    for i, path in enumerate(photos):
        img = _load(path)
        mask = np.asarray(_load_mask(avatar_dir / "fit" / f"mask_{i}.png"), np.float32) / 255.0
        cam = Camera.from_dict(fit["cameras"][i])
        verts = posed_vertices(body, shape, np.asarray(fit["poses"][i], np.float32))[top.source_vertex]
        partials.append(unproject_photo(img, mask, verts, top.faces, cam, tm, face_part=face_part))
        progress("texture", (i + 1) / len(photos))
    observed = merge(partials)
    tex_dir = avatar_dir / "texture"
    atomic_write_png(tex_dir / "observed.png", to_uint8(observed.rgb))
    atomic_write_png(tex_dir / "observed_mask.png", to_uint8(observed.weight > 0))  # sampled or gap-filled
    atomic_write_png(tex_dir / "sampled_mask.png", to_uint8(observed.sampled))
    atomic_write_png(tex_dir / "gap_filled_mask.png", to_uint8(observed.gap_filled))
    atomic_write_png(tex_dir / "unseen_mask.png", to_uint8(observed.unseen(tm.covered)))
    t_texture = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress("inpaint", 0.0)
    filled = fill_unseen(observed.rgb, observed.weight, tm.covered, body,
                         lambda: texel_attribute(tm, _rest_split_vertices(body, shape), top.faces))
    if filled.low is not None:
        atomic_write_png(tex_dir / "inpainted_low.png", to_uint8(filled.low))  # the model's texture
    else:
        (tex_dir / "inpainted_low.png").unlink(missing_ok=True)  # from an earlier diffusion run
    final = to_uint8(filled.texture)
    atomic_write_png(tex_dir / "inpainted.png", final)  # the texture in the bundle
    progress("inpaint", 1.0)
    t_inpaint = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress("bake", 0.0)
    quality = {
        "pipeline_version": PIPELINE_VERSION,
        "fit": {
            "keypoint_error_pct": fit["keypoint_error_pct"],
            "silhouette_iou": fit["silhouette_iou"],
        },
        "texture": {
            "size": TEXTURE_SIZE,
            "observed_fraction": float((observed.weight > 0)[tm.covered].mean()),
        },
        "inpaint": filled.info,
        "warnings": fit["warnings"],
    }
    bake(body, shape, final, avatar_dir / "avatar.glb", extras={"quality": quality})
    atomic_write_json(avatar_dir / "quality.json", quality)
    progress("bake", 1.0)
    return {"texture": t_texture, "inpaint": t_inpaint, "bake": time.perf_counter() - t0}


def _load_mask(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def _rest_split_vertices(body, shape: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        v = body.rest_vertices(body.shape_coeffs(torch.as_tensor(shape)[None]))[0].numpy()
    return v[body.topology.source_vertex]


def create_avatar(photos: list[Path], out_dir: Path, progress: Progress | None = None) -> Path:
    """Offline: photos -> avatar directory with avatar.glb; returns the .glb path."""
    out_dir = Path(out_dir)
    originals = out_dir / "originals"
    originals.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(photos):
        p = Path(p)
        if not p.is_file():
            raise PipelineError("invalid_photo", f"No such photo: {p}")
        suffix = p.suffix.lower() if p.suffix.lower() in PHOTO_SUFFIXES else ".png"
        shutil.copyfile(p, originals / f"photo_{i}{suffix}")
    timings = fit_stage(out_dir, progress)
    timings.update(inpaint_stage(out_dir, progress))
    atomic_write_json(out_dir / "timings.json", timings)
    return out_dir / "avatar.glb"


def prepare_models() -> None:
    """One-off preparation of bundled model assets (Anny's cache, compiled kernels)."""
    from models.body.anny_body import prepare
    from models.body.registry import get_body

    prepare()
    get_body()  # the configured body model (AVATARS_BODY_MODEL): a bad setting fails here
    from models.raster import get_backend

    backend = get_backend("cpu")
    if hasattr(backend, "warmup"):
        backend.warmup()
