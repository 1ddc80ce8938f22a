"""Quick synthetic person photos made by the project itself (tests must not need outside files).

An Anny body in a standing pose, a procedural texture painted from 3D regions of the rest
body (skin, hair, top, trousers, shoes, eyes and mouth so detectors see a face), Lambert
shading, on a flat or gradient background. Deterministic for a seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from models.fit.camera import Camera, clip_from_camera, default_intrinsics
from models.raster import get_backend
from models.texture.atlas import texel_attribute, texel_map, vertex_normals

TEX = 512
SKIN_TONES = [(233, 196, 168), (210, 160, 120), (170, 120, 85), (120, 80, 55), (245, 215, 190)]
HAIR = [(40, 28, 20), (90, 60, 30), (20, 20, 20), (160, 120, 60)]
CLOTH = [(200, 40, 40), (40, 90, 180), (40, 140, 70), (230, 230, 230), (30, 30, 35), (220, 170, 40)]


@dataclass
class SyntheticPerson:
    image: np.ndarray  # uint8 [H,W,3]
    mask: np.ndarray  # bool [H,W]
    camera: Camera
    shape: np.ndarray  # [6]
    pose: np.ndarray  # [J,3]
    texture: np.ndarray  # uint8 [TEX,TEX,3]


@lru_cache(maxsize=1)
def _atlas():
    from models.body.registry import get_body

    body = get_body("anny")  # painted and posed with Anny's joint names, whatever the setting
    top = body.topology
    tm = texel_map(top.uvs, top.faces, TEX)
    rest = body.template_vertices.numpy()[top.source_vertex]
    pos = texel_attribute(tm, rest, top.faces)
    heads = body.template_heads.numpy()
    return tm, pos, {n: heads[i] for i, n in enumerate(body.joint_names)}


def paint_texture(rng: np.random.Generator) -> np.ndarray:
    """A dressed person's texture: regions chosen from the neutral rest body in 3D."""
    tm, pos, J = _atlas()
    x, y, z = pos[..., 0], pos[..., 1], pos[..., 2]
    skin = np.array(SKIN_TONES[rng.integers(len(SKIN_TONES))], np.float32)
    hair = np.array(HAIR[rng.integers(len(HAIR))], np.float32)
    top_c, bottom_c = [np.array(CLOTH[i], np.float32) for i in rng.choice(len(CLOTH), 2, replace=False)]
    tex = np.empty(pos.shape, np.float32)
    tex[:] = skin
    neck_y = J["neck01"][1]
    hip_y = J["upperleg01.L"][1] + 0.02
    ankle_y = J["foot.L"][1] + 0.03
    elbow_x = abs(J["lowerarm01.L"][0]) + rng.uniform(-0.05, 0.1)
    knee_y = J["lowerleg01.L"][1]
    torso = (y < neck_y) & (y > hip_y - 0.05) & (np.abs(x) < elbow_x)
    tex[torso] = top_c
    if rng.random() < 0.5:  # stripes on the top
        stripes = torso & (np.sin(y * 60) > 0.3)
        tex[stripes] = 0.6 * top_c + 0.4 * 255
    legs = (y <= hip_y) & (y > (ankle_y if rng.random() < 0.7 else knee_y - 0.05))
    tex[legs] = bottom_c
    tex[y < ankle_y] = (30, 30, 30)
    head = J["head"]
    eye_l, eye_r = J["eye.L"], J["eye.R"]
    above = (y > eye_l[1] + 0.03) | ((y > neck_y + 0.05) & (z < head[2] - 0.02))
    tex[above & (y > neck_y)] = hair
    for e in (eye_l, eye_r):
        d = np.sqrt((x - e[0]) ** 2 + (y - e[1]) ** 2)
        tex[(d < 0.012) & (z > e[2] - 0.02)] = (25, 25, 25)
        brow = (np.abs(y - e[1] - 0.025) < 0.005) & (np.abs(x - e[0]) < 0.02) & (z > e[2] - 0.03)
        tex[brow] = hair * 0.8
    mouth = (np.abs(y - (eye_l[1] - 0.075)) < 0.006) & (np.abs(x) < 0.022) & (z > eye_l[2] - 0.02)
    tex[mouth] = (150, 60, 60)
    noise = rng.normal(0, 4, tex.shape).astype(np.float32)
    tex = np.clip(tex + noise * tm.covered[..., None], 0, 255)
    return tex.astype(np.uint8)


def _standing_pose(body, rng: np.random.Generator) -> np.ndarray:
    J = body.joint_names
    pose = np.zeros((len(J), 3), np.float32)
    for side, sign in (("L", 1), ("R", -1)):
        pose[J.index(f"upperarm01.{side}")] = [0, 0, -sign * np.radians(rng.uniform(-10, 15))]
        pose[J.index(f"lowerarm01.{side}")] = [0, sign * np.radians(rng.uniform(0, 20)), 0]
        pose[J.index(f"upperleg01.{side}")] = [np.radians(rng.uniform(-5, 5)), 0, sign * np.radians(rng.uniform(0, 4))]
    return pose


def person(seed: int, size: int = 512) -> SyntheticPerson:
    """Render one synthetic person facing the camera, deterministic for `seed`."""
    from models.body.registry import get_body
    from models.fit.fit_body import posed_vertices

    rng = np.random.default_rng(seed)
    body = get_body("anny")
    top = body.topology
    shape = np.clip(rng.normal(0.5, 0.15, 6), 0.05, 0.95).astype(np.float32)
    shape[1] = rng.uniform(0.45, 0.75)  # adults
    pose = _standing_pose(body, rng)
    tex = paint_texture(rng)
    verts = posed_vertices(body, shape, pose)[top.source_vertex]

    K = default_intrinsics(size, size)
    yaw = np.radians(rng.uniform(-15, 15))
    R_body = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    R = np.diag([1.0, -1.0, -1.0]) @ R_body  # facing the camera, upright
    lo, hi = verts.min(0), verts.max(0)
    height = hi[1] - lo[1]
    fill = rng.uniform(0.75, 0.9)
    z = K[1, 1] * height / (fill * size)
    center = (lo + hi) / 2
    t = np.array([0.0, 0.0, z]) - R @ center
    cam = Camera(K=K, R=R.astype(np.float32), t=t.astype(np.float32), width=size, height=size)

    backend = get_backend("cpu")
    clip = np.concatenate([verts, np.ones((len(verts), 1), np.float32)], 1) @ clip_from_camera(cam).T
    rgb, alpha = backend.render_textured(clip.astype(np.float32), top.faces, top.uvs, tex, (size, size),
                                         (0, 0, 0), flip_y=True)
    rast = backend.rasterize(clip.astype(np.float32), top.faces, (size, size))[::-1]
    nrm = backend.interpolate(vertex_normals(verts, top.faces), np.ascontiguousarray(rast), top.faces)
    light = R.T @ np.array([-0.3, -0.5, -0.8])  # towards a light beside the camera, above it
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.clip((nrm * light).sum(-1) / (np.linalg.norm(nrm, axis=-1) + 1e-8), 0, 1)
    a = alpha.astype(np.float32)[..., None] / 255.0
    bg = _background(rng, size)
    img = rgb.astype(np.float32) * shade[..., None] * a + bg * (1 - a)
    return SyntheticPerson(image=np.clip(img, 0, 255).astype(np.uint8), mask=alpha > 127, camera=cam,
                           shape=shape, pose=pose, texture=tex)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    c0 = rng.uniform(60, 230, 3)
    c1 = rng.uniform(60, 230, 3)
    g = np.linspace(0, 1, size)[:, None, None]
    return (c0 * (1 - g) + c1 * g) * np.ones((size, size, 3))


def person_photo(seed: int, size: int = 512) -> Image.Image:
    return Image.fromarray(person(seed, size).image)
