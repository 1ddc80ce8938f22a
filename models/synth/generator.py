"""Synthetic people with ground truth: clothed, lit, posed, photographed.

Each sample is an Anny body with a random phenotype, dressed in clothes and hair that are
geometry (``garments``: garments stand off the body, skirts, dresses and coats bridge the
legs, hoods, collars, ponytails, caps), with procedural fabrics, skin and hair
(``materials``), painted with real front/back differences (``outfit``), in a pose
(standing, walking, gestures, arms raised, sitting, kneeling, crouching, jumping,
kicking), lit by a key light, an ambient light and ambient occlusion with a soft key
shadow, on a studio, indoor-like, outdoor-like or abstract background (``scene``), and
photographed with mild blur, sensor noise and JPEG.

Ground truth per sample (``dataset.SynthSample``): the photo, the clothed person's mask,
per-pixel part labels, 2D keypoints (MediaPipe-33 and COCO-17 with visibility), shape [6]
and pose [J,3] (axis-angles in world-aligned rest axes, as
``models.fit.fit_body.posed_vertices``), the camera, the full texture on the body's UV
atlas (the pipeline's layout: texel to texel comparable; what the outermost layer shows at
each body texel), the posed clothed mesh with a part label per face, and renders of the
clothed person from the back and the sides (same pose) and in A-pose, with their cameras
and part labels.

``clothed=False`` gives the older skin-tight people (the same painted clothes, no geometry)
for comparison.

Conventions: glTF world axes (y up, the person faces +z, metres). A camera's *azimuth*
is where it stands around the person: 0 in front, +90 on the person's left (it sees the
left side), -90 on the right, 180 behind. ``views["left"]`` is seen from azimuth
``photo azimuth + 90``.

Deterministic: every random choice comes from ``numpy.random.default_rng(seed)``, and the
written files are the same bytes for the same seed. ``write_dataset`` names sample i
``DIR/{i:05d}`` and gives it the seed ``seed + i``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from models.fit.camera import Camera, default_intrinsics
from models.synth import garments as G
from models.synth import materials as M
from models.synth import outfit as O
from models.synth import poses
from models.synth import scene as S
from models.synth.body import (  # noqa: F401  (re-exported: the generator's public names)
    COCO_17,
    FAR,
    NEAR,
    PARTS,
    SHAPE_LABELS,
    TEXTURE_SIZE,
    SynthBody,
    _lo_hi,
    _rownorm,
)
from models.synth.dataset import (  # noqa: F401
    SHEET_COLUMNS,
    SynthSample,
    SynthView,
    colour_labels,
    contact_sheet,
    default_workers,
    encode_png,
    write_dataset,
    write_sample,
)
from models.synth.outfit import (  # noqa: F401  (material and part labels)
    BOTTOM,
    BOTTOM_DETAIL,
    HAIR,
    N_LABELS,
    PARSE_LABELS,
    PRINT_A,
    PRINT_B,
    SKIN,
    TOP,
    TRIM,
)
from models.synth.scene import BACKGROUND_KINDS  # noqa: F401

POSE_KINDS = poses.POSE_KINDS
GESTURES = poses.GESTURES
# (name, azimuth offset from the photo camera in degrees)
POSED_VIEWS = (("back", 180.0), ("left", 90.0), ("right", -90.0))
APOSE_VIEWS = (("apose_front", 0.0), ("apose_back", 180.0), ("apose_left", 90.0),
               ("apose_right", -90.0))


class SynthGenerator(SynthBody):
    """Everything that does not change between samples is computed once (``SynthBody``);
    ``sample(seed)`` makes one person."""

    def __init__(self, size: int = 512, texture_size: int = TEXTURE_SIZE, clothed: bool = True):
        super().__init__(size, texture_size)
        self.clothed = bool(clothed)
        # A noise tile for the sensor noise (rolled per photo).
        self._sensor = np.random.default_rng(54321).normal(0, 1, (self.size, self.size, 3)).astype(np.float32)

    look_at = staticmethod(S.look_at)
    orbit_center = staticmethod(S.orbit_center)

    def frame_camera(self, verts, K, azimuth, elevation, fill, offset=(0.0, 0.0)):
        return S.frame_camera(verts, K, self.size, azimuth, elevation, fill, offset)

    def background(self, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, str]:
        return S.background(rng, self.size, kind)

    def paint_labels(self, rng: np.random.Generator, shape: np.ndarray):
        """-> (material label per covered texel, palette, clothing description)."""
        lab, pal, desc, _ = O.paint_outfit(self, rng, shape)
        return lab, pal, desc

    def render(self, verts_s: np.ndarray, cam: Camera, texture: np.ndarray, background: np.ndarray | None = None,
               antialias: bool = True, return_rast: bool = False):
        """The naked body (split vertices, the body's UVs) textured, unshaded, as the
        render path shows an avatar -> (rgb uint8 [H,W,3], mask bool [H,W]) (+ the raster,
        rows top-down, with `return_rast`)."""
        r = S.render(self.backend, verts_s, self.faces, self.uvs, cam, texture, background=background,
                     antialias=antialias, return_rast=return_rast)
        return (r["image"], r["mask"], r["rast"]) if return_rast else (r["image"], r["mask"])

    def texture_from_labels(self, rng, lab: np.ndarray, pal: np.ndarray, outfit: O.Outfit) -> np.ndarray:
        """Body atlas texture uint8 [T,T,3] (gutters filled, black outside the islands)."""
        T = self.texture_size
        full = np.full(T * T, N_LABELS, np.int16)
        full[self.cov_idx] = lab
        full[self.gut_dst] = full[self.gut_src]
        outside = (full == N_LABELS).reshape(T, T)
        return M.colour(full.reshape(T, T), pal, outfit, rng, outside=outside)

    def random_pose(self, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, dict]:
        """A plausible pose of one of ``POSE_KINDS`` (models.synth.poses). -> (pose [J,3], info)."""
        return poses.random_pose(self, rng, kind)

    # ---- one sample ---------------------------------------------------------------------------
    def pose_clothed(self, clothed: G.ClothedRest, heads: np.ndarray, pose: np.ndarray):
        """-> posed model vertices of the clothed surface [Vm,3], joints [J,3], normals [Vm,3]."""
        from scipy import sparse

        from models.render.skinning import Skinner

        A = self.skinning_matrices(heads, pose)
        verts = Skinner(clothed.verts, clothed.skin_j, clothed.skin_w, len(self.parents))(A)
        joints = np.einsum("jab,jb->ja", A[:, :, :3], heads) + A[:, :, 3]
        mf = clothed.model_faces
        if len(mf) == len(self.model_faces):
            f2v = self._f2v
        else:
            F = len(mf)
            f2v = sparse.csr_matrix((np.ones(3 * F, np.float32), (mf.reshape(-1), np.repeat(np.arange(F), 3))),
                                    shape=(len(verts), F))
        normals = G.rest_normals(self, verts, mf, f2v)
        return verts, joints.astype(np.float32), normals

    def sample(self, seed: int, views: bool = True, pose_kind: str | None = None,
               background_kind: str | None = None, shape: np.ndarray | None = None,
               clothed: bool | None = None) -> SynthSample:
        """Sample `seed`. `shape`: this body shape instead of the seed's (everything else,
        pose, camera, clothes, stays the seed's: the shape is still drawn, then replaced).
        `clothed`: the generator's setting when None."""
        rng = np.random.default_rng(seed)
        size = self.size
        clothed = self.clothed if clothed is None else bool(clothed)
        drawn = self.random_shape(rng)
        shape = drawn if shape is None else np.asarray(shape, np.float32)
        pose, pose_info = self.random_pose(rng, pose_kind)
        lab, pal, clothing, outfit = O.paint_outfit(self, rng, shape)
        tex = self.texture_from_labels(rng, lab, pal, outfit)
        rest_v, heads = self.rest(shape)
        if clothed:
            cl = G.build_clothed(self, rng, outfit, lab, rest_v, heads)
        else:  # skin-tight: the painted clothes on the body itself
            no = O.Outfit(top=outfit.top, materials=outfit.materials)
            cl = G.build_clothed(self, rng, no, lab, rest_v, heads)
            cl.verts = np.ascontiguousarray(rest_v, np.float32)
            cl.offsets = np.zeros(len(rest_v), np.float32)
        rtex = np.concatenate([tex, M.colour(cl.extra_labels, pal, outfit, rng)], 0)
        parse_atlas = G.parse_atlas(self, cl, lab, outfit)
        bg, bg_kind = self.background(rng, background_kind)
        fov = float(rng.uniform(30, 60))
        K = default_intrinsics(size, size, fov)
        azimuth = float(rng.uniform(-30, 30))
        elevation = float(rng.uniform(-5, 15))
        fill = float(rng.uniform(0.65, 0.9))
        offset = rng.uniform(-0.06, 0.06, 2)
        # Towards the key light, in the camera's frame (x right, y down, z forward): from
        # beside the camera, above it.
        kd = np.array([rng.uniform(-0.8, 0.8), -rng.uniform(0.2, 0.9), -1.0])
        light = {"key_dir": [float(x) for x in kd / np.linalg.norm(kd)],
                 "key": float(rng.uniform(0.55, 0.85)), "ambient": float(rng.uniform(0.35, 0.6)),
                 "tint": [float(t) for t in rng.uniform(0.92, 1.05, 3)]}

        verts, joints, normals = self.pose_clothed(cl, heads, pose)
        ao = S.ambient_occlusion(self.backend, verts, normals, cl.model_faces)
        cam, target, dist = self.frame_camera(verts, K, azimuth, elevation, fill, offset)
        shadow = S.key_shadow(self.backend, verts, normals, cl.model_faces, cam, light)
        ri = cl.render_index
        vr = np.ascontiguousarray(verts[ri])
        shading = S.shade(verts, normals, ao, cam, light, shadow)[ri]
        r = S.render(self.backend, vr, cl.faces, cl.uvs, cam, rtex, shading, light["tint"], background=bg,
                     labels=parse_atlas, return_rast=True)
        img, effects = S.photo_effects(r["image"], rng, self._sensor)
        mask = r["mask"]
        body_v = verts[: len(rest_v)]
        mp, coco = self.keypoints(body_v, joints, cam, r["rast"], n_body_faces=len(self.faces))
        rows = np.flatnonzero(mask.any(1))
        height_px = float(rows[-1] - rows[0] + 1) if rows.size else 0.0
        meta = {
            "pose_kind": pose_info,
            "camera_setup": {"azimuth_deg": azimuth, "elevation_deg": elevation, "fov_deg": fov,
                             "distance_m": float(dist), "target": [float(t) for t in target]},
            "light": light,
            "background": bg_kind,
            "clothing": clothing,
            "clothed": clothed,
            "photo_effects": effects,
            "parse_labels": list(PARSE_LABELS),
            "posed_height_m": float(verts[:, 1].max() - verts[:, 1].min()),  # vertical extent
        }
        mesh = {"verts": verts.astype(np.float32), "faces": cl.model_faces.astype(np.int32),
                "face_parse": cl.face_parse, "face_garment": cl.face_garment}
        sample = SynthSample(seed=int(seed), image=img, mask=mask, camera=cam, shape=shape, pose=pose,
                             texture=tex, keypoints_mp33=mp, keypoints_coco17=coco,
                             person_height_px=height_px, joint_names=self.joint_names, meta=meta,
                             labels=r["labels"], mesh=mesh)
        sample.render_state = (cl, rtex, parse_atlas, heads, light)
        if views:
            for name, off in POSED_VIEWS:
                c = self.look_at(self.orbit_center(target, dist, azimuth + off, elevation), target, K, size)
                sh = S.shade(verts, normals, ao, c, light)[ri]
                v = S.render(self.backend, vr, cl.faces, cl.uvs, c, rtex, sh, light["tint"], antialias=False,
                             labels=parse_atlas)
                sample.views[name] = SynthView(v["image"], v["mask"], c, azimuth + off, elevation, True, v["labels"])
            zero = np.zeros_like(pose)
            av, _, an = self.pose_clothed(cl, heads, zero)
            aao = S.ambient_occlusion(self.backend, av, an, cl.model_faces)
            avr = np.ascontiguousarray(av[ri])
            _, target0, dist0 = self.frame_camera(av, K, 0.0, 0.0, 0.85)
            for name, az in APOSE_VIEWS:
                c = self.look_at(self.orbit_center(target0, dist0, az, 0.0), target0, K, size)
                sh = S.shade(av, an, aao, c, light)[ri]
                v = S.render(self.backend, avr, cl.faces, cl.uvs, c, rtex, sh, light["tint"], antialias=False,
                             labels=parse_atlas)
                sample.views[name] = SynthView(v["image"], v["mask"], c, az, 0.0, False, v["labels"])
        return sample

    def render_clothed(self, sample: SynthSample, pose: np.ndarray, cam: Camera, shaded: bool = True) -> dict:
        """The sample's clothed person in another pose and camera -> render dict (image,
        mask, labels), e.g. the ground truth of a walking frame."""
        cl, rtex, parse_atlas, heads, light = sample.render_state
        verts, _, normals = self.pose_clothed(cl, heads, pose)
        sh = None
        if shaded:
            ao = S.ambient_occlusion(self.backend, verts, normals, cl.model_faces)
            sh = S.shade(verts, normals, ao, cam, light)[cl.render_index]
        return S.render(self.backend, np.ascontiguousarray(verts[cl.render_index]), cl.faces, cl.uvs, cam, rtex,
                        sh, light["tint"], antialias=False, labels=parse_atlas)


# ---------------------------------------------------------------------------------------
# Module API
# ---------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def get_generator(size: int = 512, texture_size: int = TEXTURE_SIZE, clothed: bool = True) -> SynthGenerator:
    return SynthGenerator(size, texture_size, clothed)


def generate(seed: int, size: int = 512, views: bool = True, clothed: bool = True) -> SynthSample:
    """One synthetic person with its ground truth, in memory (deterministic for `seed`)."""
    return get_generator(size, clothed=clothed).sample(seed, views=views)
