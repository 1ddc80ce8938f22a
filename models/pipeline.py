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


def fit_stage(avatar_dir: Path, progress: Progress | None = None) -> dict[str, float]:
    """Detect the person in every photo and fit the body to them."""
    from models.body.registry import get_body
    from models.detect.mediapipe_detector import detect_person
    from models.fit.fit_body import fit_body

    progress = progress or _noop
    avatar_dir = Path(avatar_dir)
    fit_dir = avatar_dir / "fit"
    photos = list_photos(avatar_dir)

    t0 = time.perf_counter()
    progress("detect", 0.0)
    detections = []
    for i, path in enumerate(photos):
        det = detect_person(_load(path))
        detections.append(det)
        atomic_write_png(fit_dir / f"mask_{i}.png", to_uint8(det.mask))
        progress("detect", (i + 1) / len(photos))
    t_detect = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress("fit", 0.0)
    body = get_body()
    fit = fit_body(body, detections, progress=lambda f: progress("fit", f))
    iou = [silhouette_iou(body, fit.shape, fit.poses[i], fit.cameras[i], d.mask)
           for i, d in enumerate(detections)]
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
        "iterations": fit.iterations,
    })
    progress("fit", 1.0)
    return {"detect": t_detect, "fit": time.perf_counter() - t0}


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
