"""Quality benchmark: the real pipeline on synthetic people with ground truth (and real photos).

    python bench/quality.py --synthetic N [--set clothed|tight] [--photos DIR] [--json OUT] [--sheet OUT.png]

Synthetic sample i is ``models.synth.generator`` with seed ``SEED_OFFSET + i``
(SEED_OFFSET = 1_000_000): training and tests use seeds below it, so the benchmark people
are never seen in training. ``--set clothed`` (the default) gives people whose clothes and
hair are geometry (skirts, coats, hoods, hair volume; lit, with ambient occlusion, on
cluttered or studio backgrounds, blurred, noisy, JPEG); ``--set tight`` the older
skin-tight people with painted clothes, for comparison. Each photo (512x512) goes through
the real stages, ``fit_stage`` then ``inpaint_stage``, in a temporary avatar directory, and
is scored against its ground truth:

- ``fit_iou_median`` (= ``fit_iou_clothed_median`` on the clothed set): silhouette IoU of
  the fitted body (shape, pose, camera from fit.json) against the ground-truth person mask
  (the clothed person's); ``fit_iou_clothed_by_pose``: its median per pose kind
  (``samples_by_pose`` says how many); ``failures`` and ``failure_codes`` (seed -> code);
  ``gt_body_iou_median`` / ``_by_pose``: the true body (shape, pose, camera) against the
  same mask, the ceiling of any fit of the body alone (clothes and hair stand off it);
- ``kp_err_pct_median``: mean 2D distance between the fitted body's MediaPipe-33 landmarks
  (projected with the fitted camera) and the ground-truth projected landmarks, over the
  landmarks visible in the ground truth, in % of the person's height in pixels;
- ``shape_err_median``: mean absolute error of the 6 Anny phenotype values;
- ``same_view_psnr`` / ``same_view_ssim``: the avatar (fitted shape and pose, fitted camera,
  its texture, unshaded as the render path shows it) against the photo over the whole
  ground-truth (clothed) person mask: a person pixel the avatar does not cover (a coat's
  hem, hair volume) is black in the render and counts;
- ``back_view_psnr`` / ``back_view_ssim`` and ``side_view_*`` (mean of the left and right
  views): the avatar's texture rendered on the ground-truth body and pose from the
  ground-truth back / side camera (fit errors do not count here), against the clothed
  person's ground-truth render from that camera, over the pixels where the body lands
  on the clothed person (the texture's own figure); ``*_view_psnr_whole``: over the whole
  clothed mask (the pixels the body leaves black count: the geometry's share). The texture
  is rendered unshaded: the photo's lighting is baked into it, as the product shows it;
  the ground-truth render is lit from near its camera;
- ``unseen_texel_psnr``: the texture against the ground-truth texture, texel to texel, over
  the atlas texels the photo did not show;
- timings (medians, seconds): ``detect``, ``fit``, ``inpaint`` (the fill of unseen texels),
  ``texture`` (unprojection), ``bake``.

PSNR and SSIM values are means over the samples. PSNR is over the mask's pixels (RGB in
0..1). SSIM (Wang et al. 2004: Gaussian window sigma 1.5, 11x11, K1 0.01, K2 0.03, per
channel) is computed over the mask's bounding box with both images set to black outside
the mask (numpy + scipy, no extra dependency).

Methods, all from the same run and the same observed texture (texture/observed.png):
``pipeline`` (the product with its default, AVATARS_INPAINT_METHOD: diffusion when the
model is present), ``diffusion`` (the texture-space diffusion model, models/inpaint),
``diffusion_tight64`` (the model shipped before retraining on clothed people,
models/weights/inpaint_tight64),
``classical`` (mirror, nearest surface, pull-push), ``baseline_mean`` (every unseen texel =
the mean observed colour), ``baseline_mirror`` (left/right mirror, then the mean). Fit
figures are shared; ``inpaint_seconds_median`` is each method's own (the diffusion
model's one-off load is not counted), ``inpaint_steps`` the sampling steps used.

Same-view figures beside ``same_view_psnr`` (which mixes fit and texture errors: a
ground-truth person pixel the fitted body does not cover is black in the render):
``same_view_psnr_on_avatar`` counts only the ground-truth mask's pixels the fitted avatar
covers; ``same_view_psnr_gt_fit`` unprojects the photo through the ground-truth body,
pose and camera (the texture path alone, as if the fit were perfect; classical fill) and
renders it the same way.

Per-stage fit times (``fit_stage_seconds_median``: setup, camera, pose, silhouette stages
of the optimisation and the IoU check; fit.json's ``stage_seconds``) beside
``fit_seconds_median``.

Several photos of one person (``--multi-photo N``, default ``min(5, synthetic // 10)``): N
people, each with a fixed body shape in 3 photos (its own pose, camera and clothes each;
seeds from ``seed_offset + 500000``), go through ``fit_stage`` once with the 3 photos
together (one shared shape) and once per photo. ``methods.pipeline.shape_err_joint`` is
the median over the people of the joint fit's shape error, ``shape_err_single_median``
the median over the people of the median of their three single-photo fits' errors;
details under ``multi_photo``.

With ``--photos DIR``: every image there (png/jpg/jpeg/webp; not ``*_mask.png``; other files
such as ``*_clothes.json`` are ignored) goes through the same stages; ``fit_iou`` is
measured against ``NAME_mask.png`` when it exists (else null) and ``fit_iou_detector``
against the detector's mask; ``same_view_*`` use the given mask (else the detector's).

The contact sheet has one row per sample: input, fitted body over the input, front render,
back render, ground-truth back (real photos: the fitted avatar turned around, no ground
truth).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEED_OFFSET = 1_000_000
METHODS = ("pipeline", "diffusion", "diffusion_tight64", "classical", "baseline_mean", "baseline_mirror")
PREVIOUS_MODEL = "inpaint_tight64"  # the model before retraining on clothed people (method diffusion_tight64)
SIDE_VIEWS = ("left", "right")
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


# ---- metrics -------------------------------------------------------------------------------
def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    m = mask.astype(bool)
    if not m.any():
        return float("nan")
    d = (a[m].astype(np.float64) - b[m].astype(np.float64)) / 255.0
    mse = float((d * d).mean())
    return float(10 * np.log10(1.0 / max(mse, 1e-10)))


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, sigma: float = 1.5) -> float:
    """SSIM over the mask's bounding box, both images black outside the mask."""
    from scipy.ndimage import gaussian_filter

    m = mask.astype(bool)
    ys, xs = np.nonzero(m)
    if ys.size == 0:
        return float("nan")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    mm = m[y0:y1, x0:x1, None]
    x = a[y0:y1, x0:x1].astype(np.float64) / 255.0 * mm
    y = b[y0:y1, x0:x1].astype(np.float64) / 255.0 * mm
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def f(img):  # 11x11 Gaussian window, per channel
        return gaussian_filter(img, sigma=(sigma, sigma, 0), truncate=3.5, mode="reflect")

    mx, my = f(x), f(y)
    vx = f(x * x) - mx * mx
    vy = f(y * y) - my * my
    cxy = f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def texel_psnr(tex: np.ndarray, gt: np.ndarray, where: np.ndarray) -> float:
    return masked_psnr(tex, gt, where)


# ---- helpers -----------------------------------------------------------------------------
class Context:
    """Things loaded once: the body, the generator (renderer, landmarks), the atlas map."""

    def __init__(self, size: int, clothed: bool = True):
        from models.body.registry import get_body
        from models.pipeline import TEXTURE_SIZE
        from models.synth.generator import get_generator
        from models.texture.atlas import texel_map

        self.size = size
        self.clothed = clothed
        self.body = get_body("anny")
        self.gen = get_generator(size, TEXTURE_SIZE, clothed)
        top = self.body.topology
        self.tm = texel_map(top.uvs, top.faces, TEXTURE_SIZE)

    def fitted_body(self, fit: dict, i: int = 0):
        """-> (posed model vertices, posed joints, split vertices) of a fit.json photo."""
        g = self.gen
        shape = np.asarray(fit["shape"], np.float32)
        pose = np.asarray(fit["poses"][i], np.float32)
        rest_v, heads = g.rest(shape)
        v, j, _ = g.pose_body(rest_v, heads, pose)
        return v, j, v[g.src]

    def landmarks_2d(self, verts, joints, cam) -> np.ndarray:
        from models.body.template import MEDIAPIPE_33

        pts = np.stack([joints[idx] if kind == "joint" else verts[idx]
                        for kind, idx in (self.gen.landmarks[n] for n in MEDIAPIPE_33)])
        return cam.project(pts)[0]

    def fills(self, avatar_dir: Path, shape: np.ndarray) -> tuple[dict, np.ndarray]:
        """The pipeline's texture and the two baselines' from the same observed texture."""
        from models.pipeline import _rest_split_vertices
        from models.texture.atlas import texel_attribute
        from models.texture.fill import mirror_fill

        tex_dir = avatar_dir / "texture"
        out = {"pipeline": (_load_rgb(tex_dir / "inpainted.png"), float("nan"))}
        obs = _load_rgb(tex_dir / "observed.png").astype(np.float32) / 255.0
        seen = _load_gray(tex_dir / "observed_mask.png") > 127
        out.update(self.model_fills(obs, seen, shape))
        t0 = time.perf_counter()
        mean = obs[seen].mean(0) if seen.any() else np.full(3, 0.5, np.float32)
        tex = np.where(seen[..., None], obs, mean)
        out["baseline_mean"] = (_u8(tex), time.perf_counter() - t0)
        # Mirror on a 256 atlas as the pipeline's fill does (a 1024 one takes ~10 s), the
        # observed texels at full resolution, the rest the mean observed colour.
        t0 = time.perf_counter()
        top = self.body.topology
        pos = texel_attribute(self.tm, _rest_split_vertices(self.body, shape), top.faces)
        f = self.tm.size // 256
        cov = self.tm.covered.astype(np.float32)
        low_rgb, low_seen = _block_mean(obs, seen.astype(np.float32), f)
        low_pos, low_cov = _block_mean(pos, cov, f)
        low_w = (low_seen >= 0.5 * f * f).astype(np.float32)
        rgb, w = mirror_fill(low_rgb.astype(np.float32), low_w, low_pos.astype(np.float32), low_cov > 0)
        mirrored = (w > 0) & (low_w == 0)
        up_rgb = np.repeat(np.repeat(rgb, f, 0), f, 1)
        up_m = np.repeat(np.repeat(mirrored, f, 0), f, 1)
        tex = np.where(seen[..., None], obs, np.where(up_m[..., None], up_rgb, mean))
        out["baseline_mirror"] = (_u8(tex), time.perf_counter() - t0)
        return out, seen


    def model_fills(self, obs: np.ndarray, seen: np.ndarray, shape: np.ndarray) -> dict:
        """The diffusion model's and the classical fill's textures (uint8, seconds, steps)."""
        from models.inpaint.apply import diffusion_fill
        from models.inpaint.registry import get_inpainter, model_source, shipped_source
        from models.pipeline import _rest_split_vertices
        from models.texture.atlas import texel_attribute
        from models.texture.fill import classical_fill

        out = {}
        t0 = time.perf_counter()
        pos = texel_attribute(self.tm, _rest_split_vertices(self.body, shape), self.body.topology.faces)
        tex = classical_fill(obs, seen.astype(np.float32), pos, self.tm.covered)
        out["classical"] = (_u8(tex), time.perf_counter() - t0, None)
        if model_source() is not None:
            inpainter = get_inpainter()  # loaded once (not timed)
            res = diffusion_fill(obs, seen, self.tm.covered, self.body, inpainter)
            out["diffusion"] = (_u8(res.texture), res.seconds, res.steps)
        previous = shipped_source(PREVIOUS_MODEL)
        if previous is not None:  # the model before retraining, in the same run
            res = diffusion_fill(obs, seen, self.tm.covered, self.body, get_inpainter(previous))
            out["diffusion_tight64"] = (_u8(res.texture), res.seconds, res.steps)
        return out

    def gt_fit_same_view(self, s) -> np.ndarray:
        """The photo unprojected through the ground-truth body, pose and camera (classical
        fill), rendered from the photo's camera: the texture path without fit errors."""
        from models.pipeline import _rest_split_vertices
        from models.texture.atlas import texel_attribute
        from models.texture.fill import classical_fill
        from models.texture.unproject import limb_parts, unproject_photo

        top = self.body.topology
        vs = self.gen.posed_split_vertices(s.shape, s.pose)
        part = unproject_photo(s.image, s.mask.astype(np.float32), vs, top.faces, s.camera, self.tm,
                               face_part=limb_parts(top))
        pos = texel_attribute(self.tm, _rest_split_vertices(self.body, s.shape), top.faces)
        tex = classical_fill(part.rgb, part.weight, pos, self.tm.covered)
        return self.gen.render(vs, s.camera, _u8(tex))[0]


def _block_mean(a: np.ndarray, w: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted mean of a [T,T,C] over f x f blocks -> (mean, summed weight)."""
    T = w.shape[0] // f * f
    ws = w[:T, :T].reshape(T // f, f, T // f, f).sum((1, 3))
    s = (a[:T, :T] * w[:T, :T, None]).reshape(T // f, f, T // f, f, -1).sum((1, 3))
    return s / np.maximum(ws, 1e-8)[..., None], ws


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def _load_gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L")).copy()


def run_pipeline(photo: np.ndarray | Path, work: Path) -> tuple[Path, dict]:
    """fit_stage + inpaint_stage on one photo in a fresh avatar directory."""
    from PIL import Image

    from models.pipeline import fit_stage, inpaint_stage

    d = Path(tempfile.mkdtemp(prefix="q_", dir=work))
    (d / "originals").mkdir()
    if isinstance(photo, Path):
        shutil.copyfile(photo, d / "originals" / f"photo_0{photo.suffix.lower()}")
    else:
        Image.fromarray(photo).save(d / "originals" / "photo_0.png")
    timings = fit_stage(d)
    timings.update(inpaint_stage(d))
    return d, timings


def _camera(d: dict):
    from models.fit.camera import Camera

    return Camera.from_dict(d)


def _turned_camera(cam, verts: np.ndarray, gen):
    """The camera moved 180 degrees around the body's vertical axis (a back view)."""
    c = (verts.min(0) + verts.max(0)) / 2
    center = -cam.R.T @ cam.t
    off = center - c
    back = c + np.array([-off[0], off[1], -off[2]])
    return gen.look_at(back.astype(np.float64), c.astype(np.float64), cam.K, cam.width)


# ---- one synthetic sample -----------------------------------------------------------------
def score_sample(ctx: Context, seed: int, work: Path) -> dict:
    from models.errors import PipelineError

    gen = ctx.gen
    s = gen.sample(seed)
    row = {"seed": seed, "pose": s.meta["pose_kind"], "pose_kind": s.meta["pose_kind"]["kind"],
           "background": s.meta["background"], "clothed": bool(s.meta.get("clothed", False))}
    try:
        d, timings = run_pipeline(s.image, work)
    except PipelineError as exc:
        row["error"] = exc.code
        row["error_message"] = exc.message if hasattr(exc, "message") else str(exc)
        return row
    fit = json.loads((d / "fit" / "fit.json").read_text())
    cam = _camera(fit["cameras"][0])
    verts, joints, vs = ctx.fitted_body(fit)
    # fit: the avatar's silhouette against the (clothed) person mask
    rast = gen.render(vs, cam, np.zeros((4, 4, 3), np.uint8), antialias=False)[1]
    row["fit_iou"] = iou(rast, s.mask)
    gt_vs = gen.posed_split_vertices(s.shape, s.pose)
    # the ceiling of a body-only fit: the true body (shape, pose, camera) against the mask
    row["gt_body_iou"] = iou(gen.render(gt_vs, s.camera, np.zeros((4, 4, 3), np.uint8), antialias=False)[1], s.mask)
    kp = ctx.landmarks_2d(verts, joints, cam)
    vis = s.keypoints_mp33[:, 2] > 0
    err = np.linalg.norm(kp[vis] - s.keypoints_mp33[vis, :2], axis=1)
    row["kp_err_pct"] = float(100 * err.mean() / max(s.person_height_px, 1.0))
    det = np.asarray(fit["keypoints"][0], np.float32)
    ok = vis & (det[:, 2] > 0.5)
    row["detector_kp_err_pct"] = float(100 * np.linalg.norm(det[ok, :2] - s.keypoints_mp33[ok, :2], axis=1).mean()
                                       / max(s.person_height_px, 1.0)) if ok.any() else float("nan")
    row["shape_err"] = float(np.abs(np.asarray(fit["shape"]) - s.shape).mean())
    row["timings"] = timings
    row["fit_stage_seconds"] = fit.get("stage_seconds", {})
    # textures
    texs, seen = ctx.fills(d, np.asarray(fit["shape"], np.float32))
    unseen = ctx.tm.covered & ~seen
    back = s.views["back"]
    row["methods"] = {}
    images = {}
    quality = json.loads((d / "quality.json").read_text())
    row["same_view_psnr_gt_fit"] = masked_psnr(ctx.gt_fit_same_view(s), s.image, s.mask)
    # Novel views: the texture on the true body and pose, from the true back and side
    # cameras, against the clothed person's renders; scored where the body lands on the
    # clothed person (``*_view_psnr``) and over the whole clothed mask (``*_whole``).
    for name, (tex, sec, *steps) in texs.items():
        front, sil = gen.render(vs, cam, tex)
        m = {
            "same_view_psnr": masked_psnr(front, s.image, s.mask),
            "same_view_psnr_on_avatar": masked_psnr(front, s.image, s.mask & sil),
            "same_view_ssim": masked_ssim(front, s.image, s.mask),
            "unseen_texel_psnr": texel_psnr(tex, s.texture, unseen),
            "inpaint_seconds": timings["inpaint"] if name == "pipeline" else sec,
            "inpaint_steps": quality["inpaint"].get("steps") if name == "pipeline" else (steps[0] if steps else None),
        }
        for key, view_names in (("back", ("back",)), ("side", SIDE_VIEWS)):
            psnr, ssim, whole = [], [], []
            for vn in view_names:
                v = s.views[vn]
                img, bsil = gen.render(gt_vs, v.camera, tex, antialias=False)
                where = v.mask & bsil
                psnr.append(masked_psnr(img, v.image, where))
                ssim.append(masked_ssim(img, v.image, where))
                whole.append(masked_psnr(img, v.image, v.mask))
                if vn == "back":
                    bimg = img
            m[f"{key}_view_psnr"] = float(np.mean(psnr))
            m[f"{key}_view_ssim"] = float(np.mean(ssim))
            m[f"{key}_view_psnr_whole"] = float(np.mean(whole))
        row["methods"][name] = m
        images[name] = (front, bimg)
    row["_sheet"] = [s.image, _overlay(s.image, rast), images["pipeline"][0], images["pipeline"][1], back.image]
    shutil.rmtree(d, ignore_errors=True)
    return row


def _overlay(img: np.ndarray, sil: np.ndarray) -> np.ndarray:
    """The fitted silhouette tinted over the photo, with its outline."""
    import cv2

    out = img.astype(np.float32)
    tint = np.array([40, 220, 255], np.float32)
    out[sil] = 0.55 * out[sil] + 0.45 * tint
    edge = cv2.morphologyEx(sil.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edge] = (255, 40, 40)
    return out.astype(np.uint8)


# ---- real photos -----------------------------------------------------------------------------
def score_photo(ctx: Context, path: Path, work: Path) -> dict:
    """One real photo (with ``NAME_keypoints.json`` and then ``NAME_mask.png`` uploaded
    beside it when present): fit figures, and the back figures of bench/real_photos.py per
    method (``methods``; the pipeline's also at the top level)."""
    from bench import real_photos
    from models.errors import PipelineError
    from models.ioutil import load_photo

    row: dict = {}
    try:
        d, timings, uploads = real_photos.run_photo(path, work)
    except PipelineError as exc:
        return {"error": exc.code}
    fit = json.loads((d / "fit" / "fit.json").read_text())
    img = load_photo(d / "originals" / f"photo_0{path.suffix.lower()}")
    H, W = img.shape[:2]
    cam = _camera(fit["cameras"][0])
    _, _, vs = ctx.fitted_body(fit)
    tex = _load_rgb(d / "texture" / "inpainted.png")
    front, sil = ctx.gen.render(vs, cam, tex)
    det_mask = _load_gray(d / "fit" / "mask_0.png") > 127
    mask_path = path.with_name(f"{path.stem}_mask.png")
    if mask_path.exists():
        from PIL import Image

        with Image.open(mask_path) as im:
            gt = np.asarray(im.convert("L").resize((W, H), Image.NEAREST)) > 127
        row["fit_iou"] = iou(sil, gt)
        mask = gt
    else:
        row["fit_iou"] = None
        mask = det_mask
    row["uploads"] = uploads
    row["detection_source"] = fit.get("detection_sources", [None])[0]
    row["fit_iou_detector"] = iou(sil, det_mask)
    row["kp_err_pct_detector"] = float(fit["keypoint_error_pct"][0])
    row["same_view_psnr"] = masked_psnr(front, img, mask)
    row["same_view_ssim"] = masked_ssim(front, img, mask)
    row.update({f"{k}_seconds": float(v) for k, v in timings.items()})
    row["fit_stage_seconds"] = fit.get("stage_seconds", {})
    shape = np.asarray(fit["shape"], np.float32)
    texs, seen = ctx.fills(d, shape)
    skin = real_photos.photo_skin_lab(img, fit["keypoints"][0], mask)
    row.update(real_photos.method_figures(ctx, d, shape, texs, seen, skin))
    row["_sheet"] = [img, _overlay(img, sil), *real_photos.avatar_views(ctx, d, cam, vs, tex)]
    row["_sheet_labels"] = real_photos.SHEET_LABELS
    row["warnings"] = fit.get("warnings", [])
    shutil.rmtree(d, ignore_errors=True)
    return row


# ---- several photos of one person ------------------------------------------------------------
MULTI_PHOTO_SEED_OFFSET = 500_000  # added to --seed-offset: people apart from the single-photo samples
MULTI_PHOTO_VIEWS = 3


def _fit_only(images: list[np.ndarray], work: Path) -> dict:
    """fit_stage on these photos in a fresh avatar directory -> fit.json."""
    from PIL import Image

    from models.pipeline import fit_stage

    d = Path(tempfile.mkdtemp(prefix="m_", dir=work))
    (d / "originals").mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(d / "originals" / f"photo_{i}.png")
    try:
        fit_stage(d)
        return json.loads((d / "fit" / "fit.json").read_text())
    finally:
        shutil.rmtree(d, ignore_errors=True)


def score_multi_photo(ctx: Context, k: int, seed_offset: int, work: Path) -> dict:
    """One person (a fixed shape) in three photos (own pose, camera, clothes each): the
    shape error of the joint fit and of each photo fitted alone."""
    from models.errors import PipelineError

    base = seed_offset + MULTI_PHOTO_SEED_OFFSET + 10 * k
    shape = ctx.gen.random_shape(np.random.default_rng(base))
    samples = [ctx.gen.sample(base + j, views=False, shape=shape) for j in range(MULTI_PHOTO_VIEWS)]
    row: dict = {"seeds": [base + j for j in range(MULTI_PHOTO_VIEWS)],
                 "poses": [s.meta["pose_kind"]["kind"] for s in samples]}
    try:
        t0 = time.perf_counter()
        joint = _fit_only([s.image for s in samples], work)
        row["joint_seconds"] = time.perf_counter() - t0
        singles = [_fit_only([s.image], work) for s in samples]
    except PipelineError as exc:
        row["error"] = exc.code
        return row
    row["shape_err_joint"] = float(np.abs(np.asarray(joint["shape"]) - shape).mean())
    row["shape_err_single"] = [float(np.abs(np.asarray(f["shape"]) - shape).mean()) for f in singles]
    row["shape_err_single_median"] = float(np.median(row["shape_err_single"]))
    return row


def summarize_multi_photo(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]
    return {
        "people": len(rows),
        "photos_per_person": MULTI_PHOTO_VIEWS,
        "failures": len(rows) - len(ok),
        "shape_err_joint": _median(r["shape_err_joint"] for r in ok),
        "shape_err_single_median": _median(r["shape_err_single_median"] for r in ok),
        "joint_better": sum(r["shape_err_joint"] < r["shape_err_single_median"] for r in ok),
        "per_person": rows,
    }


def list_photos(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in PHOTO_SUFFIXES and not p.stem.endswith("_mask"))


# ---- summary --------------------------------------------------------------------------------
def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(statistics.median(xs)) if xs else None


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def summarize(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]
    kinds = sorted({r.get("pose_kind") for r in rows if r.get("pose_kind")})
    shared = {
        "fit_iou_median": _median(r["fit_iou"] for r in ok),
        "fit_iou_clothed_median": _median(r["fit_iou"] for r in ok if r.get("clothed")),
        "fit_iou_clothed_by_pose": {k: _median(r["fit_iou"] for r in ok if r.get("clothed") and r["pose_kind"] == k)
                                    for k in kinds},
        "samples_by_pose": {k: sum(r.get("pose_kind") == k for r in rows) for k in kinds},
        "gt_body_iou_median": _median(r["gt_body_iou"] for r in ok),
        "gt_body_iou_by_pose": {k: _median(r["gt_body_iou"] for r in ok if r["pose_kind"] == k) for k in kinds},
        "failure_codes": {str(r["seed"]): r["error"] for r in rows if "error" in r},
        "kp_err_pct_median": _median(r["kp_err_pct"] for r in ok),
        "detector_kp_err_pct_median": _median(r["detector_kp_err_pct"] for r in ok),
        "shape_err_median": _median(r["shape_err"] for r in ok),
        "detect_seconds_median": _median(r["timings"]["detect"] for r in ok),
        "fit_seconds_median": _median(r["timings"]["fit"] for r in ok),
        "fit_stage_seconds_median": {k: _median(r.get("fit_stage_seconds", {}).get(k) for r in ok)
                                     for k in sorted({k for r in ok for k in r.get("fit_stage_seconds", {})})},
        "texture_seconds_median": _median(r["timings"]["texture"] for r in ok),
        "bake_seconds_median": _median(r["timings"]["bake"] for r in ok),
        "failures": len(rows) - len(ok),
    }
    methods = {}
    for name in METHODS:
        m = [r["methods"][name] for r in ok if name in r["methods"]]
        if not m:  # e.g. diffusion without a model
            continue
        methods[name] = {
            **shared,
            "same_view_psnr": _mean(x["same_view_psnr"] for x in m),
            "same_view_ssim": _mean(x["same_view_ssim"] for x in m),
            "back_view_psnr": _mean(x["back_view_psnr"] for x in m),
            "back_view_ssim": _mean(x["back_view_ssim"] for x in m),
            "back_view_psnr_whole": _mean(x["back_view_psnr_whole"] for x in m),
            "side_view_psnr": _mean(x["side_view_psnr"] for x in m),
            "side_view_ssim": _mean(x["side_view_ssim"] for x in m),
            "side_view_psnr_whole": _mean(x["side_view_psnr_whole"] for x in m),
            "unseen_texel_psnr": _mean(x["unseen_texel_psnr"] for x in m),
            "same_view_psnr_on_avatar": _mean(x["same_view_psnr_on_avatar"] for x in m),
            "same_view_psnr_gt_fit": _mean(r["same_view_psnr_gt_fit"] for r in ok),
            "inpaint_seconds_median": _median(x["inpaint_seconds"] for x in m),
            "inpaint_steps": _median(x["inpaint_steps"] for x in m),
        }
    return methods


def contact_sheet(rows: list[dict], path: Path, cell: int = 192, max_rows: int = 12) -> None:
    """One row per sample, at most ``max_rows`` per section; rows with ``_sheet_labels``
    (real photos) come in their own section, under their own labels."""
    import cv2
    from PIL import Image

    sections: dict[tuple, list] = {}
    for r in [r for r in rows if "_sheet" in r]:
        sections.setdefault(tuple(r.get("_sheet_labels", ("input", "fit", "front", "back", "gt back"))), []).append(r)
    width = cell * max((len(k) for k in sections), default=0)
    parts = []
    for labels, sec in sections.items():
        head = np.full((22, width, 3), 255, np.uint8)
        for i, t in enumerate(labels):
            cv2.putText(head, t, (i * cell + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        parts.append(head)
        for r in sec[:max_rows]:
            line = np.full((cell, width, 3), 40, np.uint8)
            for j, im in enumerate(r["_sheet"]):
                if im is not None:
                    h, w = im.shape[:2]
                    k = cell / max(h, w)
                    small = cv2.resize(im, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
                    y, x = (cell - small.shape[0]) // 2, j * cell + (cell - small.shape[1]) // 2
                    line[y:y + small.shape[0], x:x + small.shape[1]] = small
            parts.append(line)
    if not parts:
        return
    sheet = np.concatenate(parts, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path, optimize=True)


def targets(result: dict) -> list[dict]:
    """The issues' bars against this run's figures: name, value, bar, ok (None when the
    run lacks the figure, e.g. no diffusion model or no multi-photo people)."""
    m = result.get("methods", {})
    pipe, diff, classic = m.get("pipeline", {}), m.get("diffusion", {}), m.get("classical", {})
    ryota = result.get("photos", {}).get("pifu_ryota.png", {})

    def row(name, value, bar, ok):
        return {"name": name, "value": value, "bar": bar, "ok": None if value is None else bool(ok)}

    def get(d, key):
        return d.get(key) if isinstance(d, dict) else None

    by_pose = get(pipe, "fit_iou_clothed_by_pose") or {}
    worst = min((v for v in by_pose.values() if v is not None), default=None)
    n = result.get("samples") or 0
    out = [
        row("pipeline fit_iou_clothed_by_pose (worst pose kind)", worst, ">= 0.88 for every kind",
            worst is not None and worst >= 0.88),
        row("pipeline failures", get(pipe, "failures"), f"<= {max(1, n // 50)} in {n}",
            (get(pipe, "failures") if get(pipe, "failures") is not None else 1e9) <= max(1, n // 50)),
        row("pipeline kp_err_pct_median", get(pipe, "kp_err_pct_median"), "<= 2",
            (get(pipe, "kp_err_pct_median") or 1e9) <= 2),
        row("pipeline fit_seconds_median", get(pipe, "fit_seconds_median"), "<= 8",
            (get(pipe, "fit_seconds_median") or 1e9) <= 8),
        row("pipeline detect_seconds_median", get(pipe, "detect_seconds_median"), "<= 0.3",
            (get(pipe, "detect_seconds_median") or 1e9) <= 0.3),
        row("photos pifu_ryota.png fit_iou", get(ryota, "fit_iou"), ">= 0.85", (get(ryota, "fit_iou") or 0) >= 0.85),
    ]
    joint, single = get(pipe, "shape_err_joint"), get(pipe, "shape_err_single_median")
    out.append(row("pipeline shape_err_joint", joint, f"< shape_err_single_median ({single})",
                   joint is not None and single is not None and joint < single))
    dpsnr, cpsnr = get(diff, "back_view_psnr"), get(classic, "back_view_psnr")
    out.append(row("diffusion back_view_psnr", dpsnr, f">= classical + 1.5 ({cpsnr})",
                   dpsnr is not None and cpsnr is not None and dpsnr >= cpsnr + 1.5))
    dssim, cssim = get(diff, "back_view_ssim"), get(classic, "back_view_ssim")
    out.append(row("diffusion back_view_ssim", dssim, f"> classical ({cssim})",
                   dssim is not None and cssim is not None and dssim > cssim))
    out.append(row("diffusion inpaint_seconds_median", get(diff, "inpaint_seconds_median"),
                   f"<= 10 ({get(diff, 'inpaint_steps')} steps)", (get(diff, "inpaint_seconds_median") or 1e9) <= 10))
    from bench import real_photos

    out += real_photos.target_rows(result)  # the real photos' backs
    return out


def _clean(x):
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items() if not k.startswith("_")}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    if isinstance(x, float):
        return round(x, 5) if np.isfinite(x) else None
    return x


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--synthetic", type=int, default=0, help="number of synthetic people")
    ap.add_argument("--photos", type=Path, help="folder of real photos (NAME_mask.png beside NAME.png)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--sheet", type=Path, help="write a contact sheet PNG here")
    ap.add_argument("--size", type=int, default=512, help="synthetic photo size (default 512)")
    ap.add_argument("--seed-offset", type=int, default=SEED_OFFSET)
    ap.add_argument("--set", dest="people", choices=("clothed", "tight"), default="clothed",
                    help="synthetic people: clothed (clothes and hair as geometry, the default) or the "
                         "older skin-tight ones (painted clothes) for comparison")
    ap.add_argument("--multi-photo", type=int, default=None,
                    help="people fitted from 3 photos each, jointly and photo by photo "
                         "(default: synthetic // 10, at most 5)")
    args = ap.parse_args(argv)
    if args.synthetic <= 0 and not args.photos:
        ap.error("nothing to do: give --synthetic N and/or --photos DIR")
    os.environ["AVATARS_BODY_MODEL"] = "anny"  # the ground truth is in Anny's UV layout and phenotypes

    t0 = time.perf_counter()
    ctx = Context(args.size, clothed=args.people == "clothed")
    rows, photos = [], {}
    with tempfile.TemporaryDirectory(prefix="quality_") as tmp:
        work = Path(tmp)
        for i in range(args.synthetic):
            seed = args.seed_offset + i
            r = score_sample(ctx, seed, work)
            rows.append(r)
            if "error" in r:
                print(f"sample {i} seed {seed}: {r['error']}", flush=True)
            else:
                p = r["methods"]["pipeline"]
                print(f"sample {i} seed {seed}: iou {r['fit_iou']:.3f} kp {r['kp_err_pct']:.2f}% "
                      f"front {p['same_view_psnr']:.2f} dB back {p['back_view_psnr']:.2f} dB "
                      f"(mean {r['methods']['baseline_mean']['back_view_psnr']:.2f}, "
                      f"mirror {r['methods']['baseline_mirror']['back_view_psnr']:.2f}, "
                      f"classical {r['methods']['classical']['back_view_psnr']:.2f}"
                      + (f", diffusion {r['methods']['diffusion']['back_view_psnr']:.2f}"
                         if "diffusion" in r["methods"] else "") + ")", flush=True)
                print(f"  detect {r['timings']['detect']:.2f} s, fit {r['timings']['fit']:.2f} s ("
                      + ", ".join(f"{k} {v:.2f}" for k, v in r["fit_stage_seconds"].items()) + ")", flush=True)
        multi = []
        n_multi = min(5, args.synthetic // 10) if args.multi_photo is None else args.multi_photo
        for k in range(n_multi):
            r = score_multi_photo(ctx, k, args.seed_offset, work)
            multi.append(r)
            print(f"several photos, person {k}: " + (r["error"] if "error" in r else
                  f"shape error joint {r['shape_err_joint']:.3f}, single "
                  f"{', '.join(f'{e:.3f}' for e in r['shape_err_single'])}"), flush=True)
        photo_rows = []
        if args.photos:
            for path in list_photos(args.photos):
                r = score_photo(ctx, path, work)
                photos[path.name] = r
                photo_rows.append(r)
                print(f"photo {path.name}: {json.dumps(_clean(r))}", flush=True)

    methods = summarize(rows) if rows else {}
    multi_summary = summarize_multi_photo(multi) if multi else None
    if multi_summary and "pipeline" in methods:  # the product's figures; details under multi_photo
        methods["pipeline"]["shape_err_joint"] = multi_summary["shape_err_joint"]
        methods["pipeline"]["shape_err_single_median"] = multi_summary["shape_err_single_median"]
    result = {
        "methods": methods,
        "multi_photo": multi_summary,
        "samples": len(rows),
        "photos": _clean(photos),
        "seed_offset": args.seed_offset,
        "people": args.people,
        "size": args.size,
        "per_sample": _clean(rows),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    from bench import real_photos

    result.update(real_photos.summarize_photos(result["photos"]))  # real_* figures (with --photos)
    result = _clean(result)
    result["targets"] = targets(result)
    print(json.dumps({"methods": result["methods"], "samples": result["samples"]}, indent=1))
    for line in real_photos.summary_lines(result):
        print(line)
    print("targets:")
    for t in result["targets"]:
        mark = {True: "ok", False: "MISSED", None: "n/a"}[t["ok"]]
        print(f"  {mark:6s} {t['name']}: {t['value']}  (bar {t['bar']})")
    whole = result["methods"].get("diffusion", {}).get("same_view_psnr")
    if whole is not None:
        print(f"  info   diffusion same_view_psnr over the whole true person mask (fit misses count): {whole}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.sheet:
        contact_sheet(rows + photo_rows, args.sheet, max_rows=max(12, len(photo_rows)))
    return result


if __name__ == "__main__":
    main()
