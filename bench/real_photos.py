"""Figures that judge the back of an avatar made from a real photo (no ground truth there).

Used by ``bench/quality.py --photos DIR``. A real photo shows the front; what it does not
show (texels that are covered by the UV layout but not observed) is "the back" here. Three
figures per photo and per fill method, all in the 1024 texture atlas:

``back_colour_de_median`` / ``back_colour_de_worst`` / ``back_colour_de_by_part``
    Per body part, the CIEDE2000 colour difference between the method's unseen texels and
    the photo's observed texels of the same part. Body part of a texel: the part of its
    triangle, whose dominant bone is the joint with the largest skinning weight summed over
    the triangle's three vertices (Anny's ``skin_indices``/``skin_weights``). Parts (joints):
    ``torso`` (root, pelvis, spine, clavicles, shoulders), ``upper_arm_l/r`` (upperarm01-02),
    ``lower_arm_l/r`` (lowerarm01-02), ``thigh_l/r`` (upperleg01-02), ``shin_l/r``
    (lowerleg01-02), ``head_back``: head texels (the head joint) whose rest-pose position
    (fitted shape) is behind the head joint (z < head z; y up, the person faces +z). Neck,
    hands, feet and eyeballs are not judged. ``_l`` is the person's left (Anny's ``.L``).
    Observed: ``texture/observed_mask.png`` > 127 (sampled or gap-filled); unseen: covered
    and not observed. The colour of a side is the per-channel median in CIELAB (sRGB ->
    linear -> XYZ -> Lab, D65) of its texels; the observed side is read from
    ``texture/observed.png`` (the same for every method), the unseen side from the method's
    texture. The reference for ``head_back`` is the observed head texels outside the face
    (outside ``face_region`` below: the hair, the top and the sides of the head) -- a back
    of the head matching the face would be a face on the back of the head. A part with
    fewer than ``MIN_TEXELS`` (200 at 1024, scaled with the atlas area) texels on either
    side is skipped (null). ``back_colour_de_median`` is the median over the judged parts,
    ``back_colour_de_worst`` their maximum. Note: an open jacket over a shirt has a front
    that differs from its back; the figure is a plausibility check, not a ground truth.

``back_head_skin_share``
    Share of the unseen ``head_back`` texels whose CIEDE2000 to the skin colour is below
    ``SKIN_DE`` (10). Skin colour (``skin_lab``, ``skin_source``): the median Lab of the
    photo's face under the eyes (``photo_skin_lab``: the pixels of the person mask between
    the eyes' x, from 0.2 eye distances under the eyes down to the nose, from fit.json's
    keypoints), because the texture's face is only as good as the fit: with a hand on
    the head (icon_028009) the fitted face texels hold hair and the crown the hand.
    Without face keypoints: the median Lab of the observed face texels
    (``texture_skin_lab``: head texels in front of the head joint, on the head's main UV
    island, from 0.2 to 0.75 inter-ocular distances under the eyes (Anny's
    'eye.L'/'eye.R' joints; the mouth is ~1.2 under them), within 0.9 of the eyes'
    midpoint in x: the cheeks under the eyes and the nose; lower down, lips, moustaches
    and beards darken the median). Null without a skin colour (fewer than
    ``MIN_PHOTO_FACE_PIXELS`` pixels and ``MIN_FACE_TEXELS`` texels) or with fewer than
    ``MIN_TEXELS`` unseen back-of-the-head texels. A bald head scores high by right.

``back_detail_ratio``
    High-frequency energy of the unseen texels over that of the observed texels, on the
    torso and limbs only (the parts above without ``head_back``): energy = mean over the
    texels and RGB channels (0..255) of (texture - its Gaussian blur)^2, sigma
    ``DETAIL_SIGMA`` (2 texels at 1024, scaled with the atlas). The blur is normalised over
    the covered texels (no black from outside the UV islands) and the observed and unseen
    regions are each eroded by ``DETAIL_ERODE`` texels (3 at 1024) so that island borders
    and the seen/unseen boundary do not count. ~1: the back is as detailed as the front;
    << 1: a smeared back; >> 1: noise. Null when either region has < ``MIN_TEXELS`` texels.

Also here: the uploads a client would send with a photo (``NAME_keypoints.json``, OpenPose;
with it, ``NAME_mask.png`` as the person mask, both as the gateway stores them), the sheet
views of an avatar (front, side, back, a frame of the ``walk`` motion from the baked
bundle), the summary over photos and the target rows.
"""
from __future__ import annotations

import io
import json
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PARTS = ("torso", "upper_arm_l", "upper_arm_r", "lower_arm_l", "lower_arm_r",
         "thigh_l", "thigh_r", "shin_l", "shin_r", "head_back")
REFERENCE_SIZE = 1024  # texel counts and widths below are for a 1024 atlas
MIN_TEXELS = 200
MIN_FACE_TEXELS = 100
MIN_PHOTO_FACE_PIXELS = 12
SKIN_DE = 10.0
DETAIL_SIGMA = 2.0
DETAIL_ERODE = 3
FACE_BAND_IOD = (0.2, 0.75)  # skin reference: this many inter-ocular distances under the eyes
FACE_HALF_WIDTH_IOD = 0.9
WALK_T = 0.275  # seconds into 'walk': a quarter period (1.1 s), the legs furthest apart
WALK_YAW_DEG = 35.0  # 3/4 front view
SHEET_LABELS = ("photo", "fit", "front", "side", "back", "walk")
SUMMARY_FIGURES = ("back_colour_de_median", "back_head_skin_share", "back_detail_ratio")  # real_methods


# ---- colour -------------------------------------------------------------------------------
_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65 = np.array([0.95047, 1.0, 1.08883])


def srgb_to_lab(rgb) -> np.ndarray:
    """sRGB (uint8 0..255, or float 0..1 when not an integer array) [..., 3] -> CIELAB
    [..., 3] (D65 white, the sRGB transfer curve, the IEC 61966-2-1 matrix)."""
    a = np.asarray(rgb)
    c = a.astype(np.float64) / 255.0 if np.issubdtype(a.dtype, np.integer) else a.astype(np.float64)
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _SRGB_TO_XYZ.T / _D65
    d = 6.0 / 29.0
    f = np.where(xyz > d ** 3, np.cbrt(xyz), xyz / (3 * d * d) + 4.0 / 29.0)
    L = 116.0 * f[..., 1] - 16.0
    return np.stack([L, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1, lab2, kL: float = 1.0, kC: float = 1.0, kH: float = 1.0) -> np.ndarray:
    """CIEDE2000 colour difference of Lab colours [..., 3] (broadcast), after Sharma, Wu and
    Dalal (2005), "The CIEDE2000 color-difference formula: implementation notes,
    supplementary test data, and mathematical observations" (hue angles in degrees)."""
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, np.float64), -1, 0)
    c_bar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    c7 = c_bar ** 7
    g = 0.5 * (1 - np.sqrt(c7 / (c7 + 25.0 ** 7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0  # atan2(0, 0) = 0, as the notes ask
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    cc = c1p * c2p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(cc == 0, 0.0, dh)
    dL, dC = L2 - L1, c2p - c1p
    dH = 2 * np.sqrt(cc) * np.sin(np.radians(dh / 2))
    L_bar, cp_bar = (L1 + L2) / 2, (c1p + c2p) / 2
    hs = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) <= 180, hs / 2, np.where(hs < 360, (hs + 360) / 2, (hs - 360) / 2))
    h_bar = np.where(cc == 0, hs, h_bar)
    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    cp7 = cp_bar ** 7
    rc = 2 * np.sqrt(cp7 / (cp7 + 25.0 ** 7))
    sl = 1 + 0.015 * (L_bar - 50) ** 2 / np.sqrt(20 + (L_bar - 50) ** 2)
    sc = 1 + 0.045 * cp_bar
    sh = 1 + 0.015 * cp_bar * t
    rt = -np.sin(np.radians(2 * d_theta)) * rc
    tl, tc, th = dL / (kL * sl), dC / (kC * sc), dH / (kH * sh)
    return np.sqrt(tl * tl + tc * tc + th * th + rt * tc * th)


# ---- body regions in the atlas --------------------------------------------------------------
def _joint_part(name: str) -> str | None:
    """Body part of an Anny joint (None: not judged)."""
    side = name.rsplit(".", 1)[1].lower() if name.endswith((".L", ".R")) else ""
    base = name.split(".")[0]
    if base in ("upperarm01", "upperarm02"):
        return f"upper_arm_{side}"
    if base in ("lowerarm01", "lowerarm02"):
        return f"lower_arm_{side}"
    if base in ("upperleg01", "upperleg02"):
        return f"thigh_{side}"
    if base in ("lowerleg01", "lowerleg02"):
        return f"shin_{side}"
    if base in ("root", "pelvis", "clavicle", "shoulder01") or base.startswith("spine"):
        return "torso"
    if base == "head":
        return "head"
    return None  # neck, hands, feet, eyeballs


@dataclass
class BodyRegions:
    """Boolean [T, T] texel masks of the judged parts (``PARTS``), of the observed face
    texels' candidates (``face``: the skin reference) and of the head outside the face
    region (``head_ref``: the reference of ``head_back``)."""

    parts: dict[str, np.ndarray]
    face: np.ndarray
    head_ref: np.ndarray
    size: int

    @property
    def limbs_and_torso(self) -> np.ndarray:
        return np.logical_or.reduce([self.parts[p] for p in PARTS if p != "head_back"])


_FACE_PARTS: dict[int, tuple] = {}


def _face_parts(topology) -> tuple[np.ndarray, tuple[str, ...]]:
    """Part index per face [F] (into the returned names; -1: not judged): the part of the
    joint with the largest skinning weight summed over the face's three vertices. Cached
    per topology."""
    hit = _FACE_PARTS.get(id(topology))
    if hit is not None and hit[0] is topology:
        return hit[1], hit[2]
    names = topology.joint_names
    labels = sorted({p for p in map(_joint_part, names) if p})
    jpart = np.array([labels.index(p) if p else -1 for p in map(_joint_part, names)])
    si = np.asarray(topology.skin_indices)
    sw = np.asarray(topology.skin_weights, np.float64)
    V, J = si.shape[0], len(names)
    dense = np.zeros((V, J))
    np.add.at(dense, (np.repeat(np.arange(V), si.shape[1]), si.reshape(-1)), sw.reshape(-1))
    mf = np.asarray(topology.source_vertex)[np.asarray(topology.faces)]
    dom = (dense[mf[:, 0]] + dense[mf[:, 1]] + dense[mf[:, 2]]).argmax(1)
    _FACE_PARTS[id(topology)] = (topology, jpart[dom], tuple(labels))
    return jpart[dom], tuple(labels)


def body_regions(body, shape: np.ndarray, tm) -> BodyRegions:
    """The regions of ``BodyRegions`` for a fitted shape on the texel map ``tm``."""
    import cv2

    from models.pipeline import _rest_split_vertices
    from models.texture.atlas import texel_attribute

    top = body.topology
    face_part, labels = _face_parts(top)
    tri = tm.rast[..., 3].astype(np.int64) - 1
    cov = tm.covered
    part = np.full(tri.shape, -1, np.int64)
    part[cov] = face_part[tri[cov]]
    pos = texel_attribute(tm, _rest_split_vertices(body, shape), top.faces)
    heads = body.rest_joint_matrices(np.asarray(shape, np.float32))[:, :3, 3]
    jidx = {n: i for i, n in enumerate(top.joint_names)}
    head = heads[jidx["head"]]
    eyes = heads[[jidx["eye.L"], jidx["eye.R"]]]
    eye_c, iod = eyes.mean(0), float(np.linalg.norm(eyes[0] - eyes[1]))
    x, y, z = pos[..., 0], pos[..., 1], pos[..., 2]
    is_head = cov & (part == labels.index("head"))
    front = z > head[2]
    parts = {p: cov & (part == labels.index(p)) for p in PARTS if p != "head_back"}
    parts["head_back"] = is_head & ~front
    below = eye_c[1] - y
    face = (is_head & front & (below >= FACE_BAND_IOD[0] * iod) & (below <= FACE_BAND_IOD[1] * iod)
            & (np.abs(x - eye_c[0]) <= FACE_HALF_WIDTH_IOD * iod))
    # Only the head's own UV island (the one with most head texels): not the inside of the
    # mouth and of the nose, skinned to the head too but on islands of their own.
    _, island = cv2.connectedComponents(cov.astype(np.uint8), connectivity=8)
    if is_head.any():
        face &= island == np.bincount(island[is_head]).argmax()
    # The face region (skin for nearly everyone): the front of the head from the chin to
    # the middle of the forehead, as wide as the face.
    face_region = is_head & front & (y <= eye_c[1] + 1.0 * iod) & (np.abs(x - eye_c[0]) <= 1.3 * iod)
    return BodyRegions(parts=parts, face=face, head_ref=is_head & ~face_region, size=tm.size)


# ---- figures ----------------------------------------------------------------------------------
def _min_texels(size: int, n: int = MIN_TEXELS) -> int:
    return max(1, round(n * (size / REFERENCE_SIZE) ** 2))


def _median_lab(tex: np.ndarray, where: np.ndarray) -> np.ndarray:
    return np.median(srgb_to_lab(tex[where]), axis=0)


def back_colour_de(tex: np.ndarray, observed_tex: np.ndarray, observed: np.ndarray, covered: np.ndarray,
                   regions: BodyRegions) -> dict:
    """``back_colour_de_by_part`` / ``_median`` / ``_worst`` (see the module docstring).
    tex: the method's texture, observed_tex: texture/observed.png (uint8 [T,T,3])."""
    n = _min_texels(regions.size)
    unseen = covered & ~observed
    by_part: dict[str, float | None] = {}
    for p in PARTS:
        back = regions.parts[p] & unseen
        ref = (regions.head_ref if p == "head_back" else regions.parts[p]) & observed
        if back.sum() < n or ref.sum() < n:
            by_part[p] = None
            continue
        by_part[p] = float(ciede2000(_median_lab(tex, back), _median_lab(observed_tex, ref)))
    vals = [v for v in by_part.values() if v is not None]
    return {"back_colour_de_median": float(np.median(vals)) if vals else None,
            "back_colour_de_worst": float(max(vals)) if vals else None,
            "back_colour_de_by_part": by_part}


def photo_skin_lab(img: np.ndarray, keypoints, mask: np.ndarray | None = None) -> np.ndarray | None:
    """Median Lab of the photo's face under the eyes: the pixels (inside ``mask``) between
    the two eyes' x, from 0.2 eye distances under the eyes down to the nose (MediaPipe-33
    keypoints of fit.json: nose 0, eyes 2 and 5, confidence >= 0.3). None when the
    keypoints are missing or fewer than ``MIN_PHOTO_FACE_PIXELS`` pixels are left."""
    kp = np.asarray(keypoints, np.float64)
    if kp.shape[0] < 6 or min(kp[0, 2], kp[2, 2], kp[5, 2]) < 0.3:
        return None
    nose, le, re = kp[0, :2], kp[2, :2], kp[5, :2]
    d = float(np.linalg.norm(le - re))
    if d < 3:
        return None
    H, W = img.shape[:2]
    eye_y = (le[1] + re[1]) / 2
    y0, y1 = eye_y + 0.2 * d, max(nose[1], eye_y + 0.6 * d)
    x0, x1 = min(le[0], re[0]), max(le[0], re[0])
    ys, xs = np.mgrid[0:H, 0:W]
    box = (ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1)
    if mask is not None:
        box &= mask.astype(bool)
    if box.sum() < MIN_PHOTO_FACE_PIXELS:
        return None
    return np.median(srgb_to_lab(img[box]), axis=0)


def texture_skin_lab(observed_tex: np.ndarray, observed: np.ndarray, regions: BodyRegions) -> np.ndarray | None:
    """Median Lab of the observed face texels (``regions.face``); None when fewer than
    ``MIN_FACE_TEXELS``."""
    face = regions.face & observed
    if face.sum() < _min_texels(regions.size, MIN_FACE_TEXELS):
        return None
    return _median_lab(observed_tex, face)


def back_head_skin_share(tex: np.ndarray, skin_lab, observed: np.ndarray, covered: np.ndarray,
                         regions: BodyRegions, threshold: float = SKIN_DE) -> float | None:
    """Share of unseen back-of-the-head texels within ``threshold`` CIEDE2000 of the skin
    colour ``skin_lab`` (None: unknown -> None)."""
    back = regions.parts["head_back"] & covered & ~observed
    if skin_lab is None or back.sum() < _min_texels(regions.size):
        return None
    return float((ciede2000(srgb_to_lab(tex[back]), np.asarray(skin_lab)) < threshold).mean())


def back_detail_ratio(tex: np.ndarray, observed: np.ndarray, covered: np.ndarray, region: np.ndarray,
                      sigma: float | None = None, erode: int | None = None) -> float | None:
    """High-frequency energy over the unseen texels / over the observed texels of
    ``region`` (both eroded), the blur normalised over the covered texels."""
    import cv2

    size = covered.shape[0]
    sigma = DETAIL_SIGMA * size / REFERENCE_SIZE if sigma is None else sigma
    erode = max(1, round(DETAIL_ERODE * size / REFERENCE_SIZE)) if erode is None else erode
    cov = covered.astype(np.float32)
    x = tex.astype(np.float32) * cov[..., None]
    blur = cv2.GaussianBlur(x, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(cov, (0, 0), sigma), 1e-6)[..., None]
    hf = ((x - blur) ** 2).mean(-1)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))

    def inner(m: np.ndarray) -> np.ndarray:
        return cv2.erode(m.astype(np.uint8), k, borderValue=0).astype(bool) & region

    seen_in, unseen_in = inner(covered & observed), inner(covered & ~observed)
    n = _min_texels(size)
    if seen_in.sum() < n or unseen_in.sum() < n:
        return None
    return float(hf[unseen_in].mean() / max(float(hf[seen_in].mean()), 1e-6))


def texture_figures(tex: np.ndarray, observed_tex: np.ndarray, observed: np.ndarray, covered: np.ndarray,
                    regions: BodyRegions, skin_lab=None) -> dict:
    """The figures of one method's texture (uint8 [T,T,3])."""
    out = back_colour_de(tex, observed_tex, observed, covered, regions)
    out["back_head_skin_share"] = back_head_skin_share(tex, skin_lab, observed, covered, regions)
    out["back_detail_ratio"] = back_detail_ratio(tex, observed, covered, regions.limbs_and_torso)
    return out


def method_figures(ctx, avatar_dir: Path, shape: np.ndarray, texs: dict, seen: np.ndarray,
                   photo_skin: np.ndarray | None = None) -> dict:
    """``photos[NAME]`` entries: ``methods`` (figures per method of ``ctx.fills``), the
    pipeline's figures at the top level, and the skin colour used (``skin_lab``,
    ``skin_source``: ``photo_skin`` when given, else the texture's face band)."""
    from PIL import Image

    with Image.open(Path(avatar_dir) / "texture" / "observed.png") as im:
        observed_tex = np.asarray(im.convert("RGB")).copy()
    regions = body_regions(ctx.body, shape, ctx.tm)
    skin, source = photo_skin, "photo"
    if skin is None:
        skin, source = texture_skin_lab(observed_tex, seen, regions), "texture"
    methods = {name: texture_figures(v[0], observed_tex, seen, ctx.tm.covered, regions, skin)
               for name, v in texs.items()}
    return {**methods.get("pipeline", {}), "methods": methods,
            "skin_lab": None if skin is None else [round(float(c), 2) for c in skin],
            "skin_source": None if skin is None else source}


# ---- running a photo --------------------------------------------------------------------------
def uploads_for(photo: Path) -> dict[str, bytes]:
    """What a client would upload with ``photo`` (files for ``originals/``, index 0): its
    OpenPose keypoints ``NAME_keypoints.json`` when present, and then its person mask
    ``NAME_mask.png`` too (the gateway stores a mask as a gray PNG: the image's alpha
    channel when it has one, else its gray levels). A mask without keypoints is not sent:
    those photos keep testing the detector (their mask is the ground truth of fit_iou)."""
    from PIL import Image

    kp = photo.with_name(f"{photo.stem}_keypoints.json")
    if not kp.is_file():
        return {}
    out = {"keypoints_0.json": kp.read_bytes()}
    mask = photo.with_name(f"{photo.stem}_mask.png")
    if mask.is_file():
        with Image.open(mask) as im:
            alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
            gray = im.convert("RGBA").getchannel("A") if alpha else im.convert("L")
            buf = io.BytesIO()
            gray.save(buf, format="PNG")
        out["mask_0.png"] = buf.getvalue()
    return out


def run_photo(photo: Path, work: Path) -> tuple[Path, dict, list[str]]:
    """fit_stage + inpaint_stage on a photo file with its uploads, in a fresh avatar
    directory -> (directory, stage seconds, names of the uploads sent)."""
    from models.pipeline import fit_stage, inpaint_stage

    d = Path(tempfile.mkdtemp(prefix="q_", dir=work))
    (d / "originals").mkdir()
    shutil.copyfile(photo, d / "originals" / f"photo_0{photo.suffix.lower()}")
    extras = uploads_for(photo)
    for name, data in extras.items():
        (d / "originals" / name).write_bytes(data)
    timings = fit_stage(d)
    timings.update(inpaint_stage(d))
    return d, timings, sorted(n.split("_")[0] for n in extras)


def turned_camera(cam, verts: np.ndarray, deg: float):
    """The camera moved ``deg`` degrees around the vertical axis through the body's centre
    (looking at that centre; same intrinsics and image size)."""
    from models.fit.camera import Camera

    c = ((verts.min(0) + verts.max(0)) / 2).astype(np.float64)
    center = -cam.R.T.astype(np.float64) @ cam.t.astype(np.float64)
    a = np.radians(deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    eye = c + rot @ (center - c)
    fwd = (c - eye) / np.linalg.norm(c - eye)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd])
    return Camera(K=cam.K, R=R.astype(np.float32), t=(-R @ eye).astype(np.float32), width=cam.width, height=cam.height)


def walk_frame(glb: Path, size: int = 384, t: float = WALK_T, yaw_deg: float = WALK_YAW_DEG) -> np.ndarray:
    """A frame of the built-in ``walk`` motion, rendered the way the render endpoint does
    (the baked bundle in an AvatarPlayer), from a 3/4 front view; RGB uint8."""
    from models.animation.motions import get_motion
    from models.render.player import AvatarPlayer, View

    player = AvatarPlayer.from_glb(glb, backend="cpu")
    A = player.motion_matrices(get_motion("walk"), t)
    img, _ = player.render_matrices(A, size, View(yaw_deg=yaw_deg, background=(0, 0, 0)), player.new_state(), bgr=False)
    return img.copy()


def avatar_views(ctx, avatar_dir: Path, cam, verts_split: np.ndarray, tex: np.ndarray) -> list[np.ndarray]:
    """Sheet cells after the photo and the fit: front (fitted camera), side (turned 90
    degrees), back (180), and the walk frame."""
    out = [ctx.gen.render(verts_split, turned_camera(cam, verts_split, deg), tex)[0] for deg in (0, 90, 180)]
    out.append(walk_frame(Path(avatar_dir) / "avatar.glb"))
    return out


# ---- summary and targets ----------------------------------------------------------------------
def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None and np.isfinite(x)]
    return float(statistics.median(xs)) if xs else None


def summarize_photos(photos: dict[str, dict]) -> dict:
    """Top-level ``real_*`` figures over the photos' rows."""
    if not photos:
        return {}
    ok = {k: r for k, r in photos.items() if "error" not in r}
    seen = [m for r in ok.values() for m in r.get("methods", {})]
    names = list(dict.fromkeys(seen))  # every method the photos were scored with, in order
    return {
        "real_fit_success_rate": len(ok) / len(photos),
        "real_fit_errors": {k: r["error"] for k, r in photos.items() if "error" in r},
        "real_back_colour_de_median": _median(r.get("back_colour_de_median") for r in ok.values()),
        "real_back_head_skin_share_max": max((r["back_head_skin_share"] for r in ok.values()
                                              if r.get("back_head_skin_share") is not None), default=None),
        "real_methods": {m: {f: _median(r["methods"][m].get(f) for r in ok.values() if m in r.get("methods", {}))
                             for f in SUMMARY_FIGURES}
                         for m in names},
    }


def target_rows(result: dict) -> list[dict]:
    """Rows for ``targets`` (same keys): the real photos' back figures."""
    def row(name, value, bar, ok):
        return {"name": name, "value": value, "bar": bar, "ok": None if value is None else bool(ok)}

    de = result.get("real_back_colour_de_median")
    shares = [r.get("back_head_skin_share") for r in (result.get("photos") or {}).values()
              if isinstance(r, dict) and r.get("back_head_skin_share") is not None]
    share = max(shares) if shares else None
    ratio = (result.get("real_methods") or {}).get("pipeline", {}).get("back_detail_ratio")
    prev = (result.get("real_methods") or {}).get("diffusion_tight64", {}).get("back_colour_de_median")
    return [
        row("real_back_colour_de_median", de, "<= 12", de is not None and de <= 12),
        row("real_back_colour_de_median vs the model before retraining", de, f"< diffusion_tight64 ({prev})",
            de is not None and prev is not None and de < prev),
        row("photos.*.back_head_skin_share max", share, "<= 0.05", share is not None and share <= 0.05),
        row("real pipeline back_detail_ratio median", ratio, "in [0.5, 1.5] (info)",
            ratio is not None and 0.5 <= ratio <= 1.5),
    ]


def summary_lines(result: dict) -> list[str]:
    """The printed summary of the real photos' figures."""
    if "real_fit_success_rate" not in result:
        return []
    lines = [f"real photos: fit success {result['real_fit_success_rate']:.2f}"
             + (f", errors {json.dumps(result['real_fit_errors'])}" if result["real_fit_errors"] else ""),
             (f"  real_back_colour_de_median {result['real_back_colour_de_median']}, "
              f"back_head_skin_share max {result.get('real_back_head_skin_share_max')}")]
    for m, f in result.get("real_methods", {}).items():
        lines.append(f"  {m:16s} " + ", ".join(f"{k} {v}" for k, v in f.items()))
    return lines
