"""Cameras, backgrounds, lights and the renderer of the synthetic photos.

- Cameras: ``look_at``, ``orbit_center`` and ``frame_camera`` (the person fills a chosen
  share of the frame, kept inside it).
- Backgrounds: plain studio backdrops (a flat or seamless gradient wall with vignette and a
  floor shadow), indoor-like rooms (a wall, a floor in perspective, doors, windows,
  frames, furniture), outdoor-like scenes (sky, horizon, ground, trees, buildings), and
  the older abstract kinds (flat, gradient, noise, clutter).
- Light: a key light (a direction in the camera's frame), an ambient term, and ambient
  occlusion per vertex: the posed mesh is rasterized orthographically from 14 directions
  and a vertex is lit by the share of them it sees (weighted by its normal); the key light
  casts a soft shadow the same way. Shading is per vertex, interpolated per pixel.
- ``render``: any mesh (render-layout vertices, faces, UVs) from a camera, textured, shaded
  or not, on a background, antialiased at the silhouette; optionally its part labels per
  pixel (nearest look-up of a label atlas at each pixel's UV).
- ``photo_effects``: mild blur, sensor noise and JPEG, as a phone photo has.
"""
from __future__ import annotations

import numpy as np

from models.fit.camera import Camera, clip_from_camera

BACKGROUND_KINDS = ("studio", "indoor", "outdoor", "flat", "gradient", "noise", "clutter")
BACKGROUND_P = (0.25, 0.25, 0.2, 0.05, 0.08, 0.07, 0.1)
AO_RES = 96
_AO_DIRS = None


def _lo_hi(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column min and max of [N,C] (numpy's axis-0 reduction of thin arrays is slow)."""
    c = np.ascontiguousarray(a.T)
    return c.min(1), c.max(1)


def look_at(center: np.ndarray, target: np.ndarray, K: np.ndarray, size: int) -> Camera:
    fwd = np.asarray(target, np.float64) - center
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack([right, down, fwd]).astype(np.float32)
    return Camera(K=K.astype(np.float32), R=R, t=(-R @ center).astype(np.float32), width=size, height=size)


def orbit_center(target, distance, azimuth_deg, elevation_deg) -> np.ndarray:
    a, e = np.radians(azimuth_deg), np.radians(elevation_deg)
    return target + distance * np.array([np.cos(e) * np.sin(a), np.sin(e), np.cos(e) * np.cos(a)])


def frame_camera(verts: np.ndarray, K: np.ndarray, size: int, azimuth: float, elevation: float,
                 fill: float, offset=(0.0, 0.0)) -> tuple[Camera, np.ndarray, float]:
    """Camera at (azimuth, elevation) whose image holds the body at about `fill` of its
    height (less when it would leave the frame). -> (camera, target, distance)."""
    lo, hi = _lo_hi(verts)
    target = (lo + hi) / 2
    height = float(hi[1] - lo[1])
    dist = K[1, 1] * height / (fill * size)
    for _ in range(3):
        cam = look_at(orbit_center(target, dist, azimuth, elevation), target, K, size)
        uv, _ = cam.project(verts)
        lo2, hi2 = _lo_hi(uv)
        span = float(max(hi2[0] - lo2[0], hi2[1] - lo2[1]))
        # re-centre the projected box and keep it inside the frame with a margin
        mid = (lo2 + hi2) / 2 + np.asarray(offset) * size
        shift = (mid - size / 2) / K[0, 0] * dist
        target = target + cam.R[0] * shift[0] + cam.R[1] * shift[1]
        scale = max(span / (fill * size), (hi2[1] - lo2[1]) / (fill * size), 1.0) if span > 0.96 * size else \
            (hi2[1] - lo2[1]) / (fill * size)
        dist *= max(0.8, min(1.25, scale))
    cam = look_at(orbit_center(target, dist, azimuth, elevation), target, K, size)
    return cam, target, dist


# ---- backgrounds ---------------------------------------------------------------------------
def background(rng: np.random.Generator, size: int, kind: str | None = None) -> tuple[np.ndarray, str]:
    """-> (uint8 [size, size, 3], kind)."""
    import cv2

    kind = kind or str(rng.choice(BACKGROUND_KINDS, p=BACKGROUND_P))
    if kind == "studio":
        bg = _studio(rng, size)
    elif kind == "indoor":
        bg = _indoor(rng, size)
    elif kind == "outdoor":
        bg = _outdoor(rng, size)
    else:
        bg = _old_background(rng, size, kind)
    if kind in ("indoor", "outdoor"):  # out of focus behind the person
        bg = cv2.GaussianBlur(bg, (0, 0), float(rng.uniform(0.6, 3.0)))
    return np.clip(bg + 0.5, 0, 255).astype(np.uint8), kind


def _studio(rng, s: int) -> np.ndarray:
    c = rng.uniform(150, 245) * rng.uniform(0.9, 1.05, 3) if rng.random() < 0.7 else rng.uniform(40, 200, 3)
    g = np.linspace(-1, 1, s, dtype=np.float32)
    r2 = g[None, :] ** 2 + (g[:, None] * 0.8) ** 2
    vign = 1 - rng.uniform(0.1, 0.35) * r2
    ramp = 1 - rng.uniform(0.0, 0.25) * (g[:, None] + 1) / 2
    return (c[None, None, :] * (vign * ramp)[..., None]).astype(np.float32)


def _indoor(rng, s: int) -> np.ndarray:
    import cv2

    wall = rng.uniform(90, 235, 3) * rng.uniform(0.9, 1.05)
    floor_c = rng.choice([np.array([140, 100, 65]), np.array([190, 160, 120]), np.array([110, 110, 115]),
                          rng.uniform(60, 200, 3)])
    img = np.empty((s, s, 3), np.float32)
    horizon = int(rng.uniform(0.55, 0.8) * s)
    g = np.linspace(0, 1, s, dtype=np.float32)
    img[:] = wall * (0.85 + 0.25 * g[None, :, None] * rng.uniform(-1, 1))
    img[horizon:] = floor_c * (0.75 + 0.35 * (g[horizon:, None, None] - g[horizon]) / max(1 - g[horizon], 1e-3))
    # floor boards or tiles: lines converging to a vanishing point
    vx = rng.uniform(0.2, 0.8) * s
    for k in range(-12, 13):
        x = vx + k * s * 0.12
        cv2.line(img, (int(vx + k * 6), horizon), (int(x + k * s * 0.2), s), tuple(float(c) for c in floor_c * 0.8), 1,
                 cv2.LINE_AA)
    cv2.line(img, (0, horizon), (s, horizon), tuple(float(c) for c in wall * 0.6), max(1, s // 100), cv2.LINE_AA)
    for _ in range(int(rng.integers(2, 7))):  # doors, windows, frames, furniture
        kind = rng.integers(4)
        w, h = int(rng.uniform(0.08, 0.35) * s), int(rng.uniform(0.1, 0.45) * s)
        x = int(rng.uniform(-0.1, 1.0) * s)
        col = rng.uniform(20, 250, 3)
        if kind == 0:  # window: bright pane with bars
            y = int(rng.uniform(0.05, 0.3) * s)
            cv2.rectangle(img, (x, y), (x + w, y + h), tuple(float(c) for c in rng.uniform(200, 255, 3)), -1)
            cv2.rectangle(img, (x, y), (x + w, y + h), tuple(float(c) for c in col * 0.5), max(2, s // 80))
            cv2.line(img, (x + w // 2, y), (x + w // 2, y + h), tuple(float(c) for c in col * 0.5), max(1, s // 120))
        elif kind == 1:  # door
            cv2.rectangle(img, (x, horizon - int(0.5 * s)), (x + w // 2 + s // 10, horizon), tuple(float(c) for c in col), -1)
        elif kind == 2:  # a picture frame
            y = int(rng.uniform(0.1, 0.4) * s)
            cv2.rectangle(img, (x, y), (x + w // 2, y + h // 2), tuple(float(c) for c in col), -1)
            cv2.rectangle(img, (x, y), (x + w // 2, y + h // 2), (30.0, 25.0, 20.0), max(2, s // 100))
        else:  # furniture standing on the floor
            top = horizon - int(rng.uniform(0.05, 0.3) * s)
            cv2.rectangle(img, (x, top), (x + w, horizon + int(0.05 * s)), tuple(float(c) for c in col), -1)
            cv2.rectangle(img, (x, top), (x + w, top + max(2, s // 60)), tuple(float(c) for c in col * 0.7), -1)
    return img


def _outdoor(rng, s: int) -> np.ndarray:
    import cv2

    g = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
    sky0, sky1 = np.array([110, 160, 225]) * rng.uniform(0.8, 1.1), np.array([215, 230, 245]) * rng.uniform(0.85, 1.0)
    img = (sky0 * (1 - g) + sky1 * g) * np.ones((1, s, 1), np.float32)
    horizon = int(rng.uniform(0.45, 0.75) * s)
    ground = rng.choice([np.array([90, 130, 60]), np.array([150, 145, 135]), np.array([180, 160, 120]),
                         np.array([85, 85, 90])]) * rng.uniform(0.8, 1.15)
    img[horizon:] = ground
    n = rng.normal(0, 1, (s // 8, s // 8)).astype(np.float32)
    n = cv2.resize(n, (s, s))[horizon:, :, None]
    img[horizon:] *= 1 + 0.08 * n
    for _ in range(int(rng.integers(1, 6))):  # buildings
        w, h = int(rng.uniform(0.1, 0.4) * s), int(rng.uniform(0.1, 0.45) * s)
        x = int(rng.uniform(-0.1, 1.0) * s)
        col = rng.uniform(80, 220, 3)
        cv2.rectangle(img, (x, horizon - h), (x + w, horizon), tuple(float(c) for c in col), -1)
        for wy in range(horizon - h + s // 40, horizon - s // 30, max(4, s // 20)):
            for wx in range(x + s // 60, x + w - s // 60, max(4, s // 25)):
                cv2.rectangle(img, (wx, wy), (wx + s // 80 + 1, wy + s // 60 + 1), tuple(float(c) for c in col * 0.55), -1)
    for _ in range(int(rng.integers(0, 7))):  # trees: trunks and leafy blobs
        x = int(rng.uniform(0, 1) * s)
        h = int(rng.uniform(0.15, 0.4) * s)
        leaf = np.array([40, 90, 35]) * rng.uniform(0.7, 1.4)
        cv2.line(img, (x, horizon + s // 30), (x, horizon - h // 2), (70.0, 50.0, 35.0), max(2, s // 90))
        for _ in range(5):
            c = (x + int(rng.normal(0, h * 0.15)), horizon - h // 2 - int(rng.uniform(0, h * 0.5)))
            cv2.circle(img, c, int(h * rng.uniform(0.12, 0.25)), tuple(float(v) for v in leaf * rng.uniform(0.8, 1.2)), -1,
                       cv2.LINE_AA)
    return img


def _old_background(rng: np.random.Generator, s: int, kind: str) -> np.ndarray:
    import cv2

    c0, c1 = rng.uniform(30, 235, 3), rng.uniform(30, 235, 3)
    if kind == "flat":
        bg = np.empty((s, s, 3), np.float32)
        bg[:] = c0
    elif kind == "gradient" or kind == "clutter":
        a = rng.uniform(0, 2 * np.pi)
        g = np.linspace(-0.5, 0.5, s, dtype=np.float32)
        ramp = np.clip(np.cos(a) * g[None, :] + np.sin(a) * g[:, None] + 0.5, 0, 1)[..., None]
        bg = (c0 * (1 - ramp) + c1 * ramp).astype(np.float32)
    else:  # noise: smooth coloured blobs
        n = int(rng.integers(3, 12))
        small = rng.uniform(30, 235, (n, n, 3)).astype(np.float32)
        bg = cv2.resize(small, (s, s), interpolation=cv2.INTER_CUBIC)
    if kind == "clutter":
        img = np.ascontiguousarray(bg)
        for _ in range(int(rng.integers(6, 25))):
            col = tuple(float(c) for c in rng.uniform(0, 255, 3))
            k = rng.integers(4)
            p = rng.integers(0, s, 2)
            r = int(rng.integers(s // 30, s // 5))
            if k == 0:
                q = p + rng.integers(-s // 3, s // 3, 2)
                cv2.rectangle(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), col, -1, cv2.LINE_AA)
            elif k == 1:
                cv2.circle(img, (int(p[0]), int(p[1])), r, col, -1, cv2.LINE_AA)
            elif k == 2:
                pts = (p + rng.integers(-r, r + 1, (int(rng.integers(3, 7)), 2))).astype(np.int32)
                cv2.fillPoly(img, [pts], col, cv2.LINE_AA)
            else:
                q = rng.integers(0, s, 2)
                cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), col,
                         int(rng.integers(2, max(3, s // 40))), cv2.LINE_AA)
        if rng.random() < 0.5:  # a floor
            fy = int(rng.uniform(0.6, 0.85) * s)
            img[fy:] = img[fy:] * 0.5 + rng.uniform(40, 200, 3).astype(np.float32) * 0.5
        bg = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 2.5)))
    return bg



# ---- light ---------------------------------------------------------------------------------
def _ao_directions() -> tuple[np.ndarray, np.ndarray]:
    """14 directions (the 6 axes and 8 diagonals) and their sky weights (less from below)."""
    global _AO_DIRS
    if _AO_DIRS is None:
        d = [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]
        d += [(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]
        d = np.asarray(d, np.float64)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        w = np.clip(0.6 + 0.6 * d[:, 1], 0.15, 1.0)
        _AO_DIRS = (d, w)
    return _AO_DIRS


def visibility(backend, verts: np.ndarray, normals: np.ndarray, faces: np.ndarray,
               dirs: np.ndarray, res: int = AO_RES) -> np.ndarray:
    """float32 [len(dirs), V]: 1 where a vertex sees out along a direction (orthographic
    depth maps; each vertex is tested a little off its surface to avoid self-shadowing)."""
    lo, hi = _lo_hi(verts)
    c = (lo + hi) / 2
    r = float(np.linalg.norm(hi - lo)) / 2 * 1.02
    p = (verts - c) / r
    p_test = p + normals * (0.02 / r)
    out = np.empty((len(dirs), len(verts)), np.float32)
    px_size = 2.0 / res
    for k, d in enumerate(dirs):
        a = np.cross(d, [0.0, 1.0, 0.0] if abs(d[1]) < 0.9 else [1.0, 0.0, 0.0])
        a /= np.linalg.norm(a)
        b = np.cross(d, a)
        B = np.stack([a, b, -d]).astype(np.float32)  # x, y, depth (towards the light = smaller)
        q = p @ B.T
        clip = np.empty((len(p), 4), np.float32)
        clip[:, :3] = q
        clip[:, 3] = 1.0
        rast = backend.rasterize(clip, faces, (res, res))
        qt = p_test @ B.T
        ix = np.clip(((qt[:, 0] + 1) / 2 * res).astype(np.int64), 0, res - 1)
        iy = np.clip(((qt[:, 1] + 1) / 2 * res).astype(np.int64), 0, res - 1)
        zb = rast[..., 2]
        hit = rast[..., 3] > 0
        z = np.where(hit[iy, ix], zb[iy, ix], np.inf)
        out[k] = (qt[:, 2] <= z + 1.5 * px_size).astype(np.float32)
    return out


def ambient_occlusion(backend, verts: np.ndarray, normals: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """float32 [V] in 0..1: the share of the (weighted) sky a vertex sees."""
    d, w = _ao_directions()
    vis = visibility(backend, verts, normals, faces, d)
    cosw = np.clip(normals @ d.T.astype(np.float32), 0, 1) * w[None, :].astype(np.float32)  # [V, D]
    num = np.einsum("vd,dv->v", cosw, vis)
    den = cosw.sum(1)
    return np.where(den > 1e-6, num / np.maximum(den, 1e-6), 1.0).astype(np.float32)


def shade(verts: np.ndarray, normals: np.ndarray, ao: np.ndarray, cam: Camera, light: dict,
          shadow: np.ndarray | None = None) -> np.ndarray:
    """Per-vertex shading [V] (multiplies the albedo): ambient x AO + key light (Lambert,
    its direction given in the camera's frame) x shadow, plus a little of the AO on it."""
    key = cam.R.T @ np.asarray(light["key_dir"], np.float32)  # camera frame -> world
    key /= np.linalg.norm(key)
    lam = np.clip(normals @ key.astype(np.float32), 0, 1)
    if shadow is not None:
        lam = lam * (0.25 + 0.75 * shadow)
    amb = float(light["ambient"])
    s = amb * (0.3 + 0.7 * ao) + float(light["key"]) * lam * (0.6 + 0.4 * ao)
    return s.astype(np.float32)


def key_shadow(backend, verts, normals, faces, cam: Camera, light: dict) -> np.ndarray:
    key = cam.R.T @ np.asarray(light["key_dir"], np.float32)
    key = key / np.linalg.norm(key)
    return visibility(backend, verts, normals, faces, key[None].astype(np.float64), res=160)[0]


# ---- render --------------------------------------------------------------------------------
def render(backend, verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray, cam: Camera, texture: np.ndarray,
           shading: np.ndarray | None = None, tint=(1.0, 1.0, 1.0), background: np.ndarray | None = None,
           antialias: bool = True, labels: np.ndarray | None = None, return_rast: bool = False):
    """Textured render of a mesh (render-layout vertices) from `cam` -> dict with "image"
    uint8 [H,W,3], "mask" bool [H,W] (+ "labels" uint8 [H,W]: nearest look-up of the label
    atlas `labels` at each pixel's UV, 0 = background; + "rast", rows top-down).

    `shading` [V]: per-vertex multiplier of the albedo (else the texture as is: how the
    render path shows an avatar). `background` uint8 [H,W,3], black when None.
    """
    H, W = cam.height, cam.width
    M = clip_from_camera(cam).astype(np.float32)
    clip = np.ascontiguousarray(verts @ M[:, :3].T + M[:, 3])
    rast = backend.rasterize(clip, faces, (H, W))  # bottom-up rows
    cov = rast[..., 3] > 0
    out = np.zeros((H, W, 3), np.uint8) if background is None else np.ascontiguousarray(background[::-1])
    lab_img = np.zeros((H, W), np.uint8) if labels is not None else None
    front = clip[:, 3] > 1e-6
    x0 = x1 = y0 = y1 = 0
    if front.any():  # the person's box from the projected vertices (bottom-up rows)
        ndc = clip[front, :2] / clip[front, 3:4]
        lo, hi = _lo_hi(ndc)
        x0, x1 = int(np.clip((lo[0] + 1) / 2 * W - 1, 0, W)), int(np.clip((hi[0] + 1) / 2 * W + 2, 0, W))
        y0, y1 = int(np.clip((lo[1] + 1) / 2 * H - 1, 0, H)), int(np.clip((hi[1] + 1) / 2 * H + 2, 0, H))
    if x1 > x0 and y1 > y0:
        attr = uvs if shading is None else np.concatenate([uvs, shading[:, None].astype(np.float32)], 1)
        r = np.ascontiguousarray(rast[y0:y1, x0:x1])
        c = cov[y0:y1, x0:x1]
        a = backend.interpolate(attr, r, faces)
        col = backend.texture(texture, a[..., :2], c)
        if shading is not None:
            col *= a[..., 2:3] * np.asarray(tint, np.float32)
        col += 0.5
        np.clip(col, 0, 255, out=col)
        np.copyto(out[y0:y1, x0:x1], col.astype(np.uint8), where=c[..., None])
        if labels is not None:
            Lr, Lc = labels.shape
            lr = np.clip((a[..., 1] * Lr).astype(np.int64), 0, Lr - 1)
            lc = np.clip((a[..., 0] * Lc).astype(np.int64), 0, Lc - 1)
            lab_img[y0:y1, x0:x1] = np.where(c, labels[lr, lc], 0)
        if antialias:
            out = backend.antialias(out, rast, clip, faces)
    res = {"image": np.ascontiguousarray(out[::-1]), "mask": cov[::-1].copy()}
    if lab_img is not None:
        res["labels"] = np.ascontiguousarray(lab_img[::-1])
    if return_rast:
        res["rast"] = rast[::-1]
    return res


# ---- photo effects -------------------------------------------------------------------------
def photo_effects(img: np.ndarray, rng: np.random.Generator, sensor: np.ndarray) -> tuple[np.ndarray, dict]:
    """Mild blur, sensor noise and JPEG compression -> (uint8 image, what was applied)."""
    import cv2

    info = {}
    x = img.astype(np.float32)
    if rng.random() < 0.5:
        s = float(rng.uniform(0.3, 1.1))
        x = cv2.GaussianBlur(x, (0, 0), s)
        info["blur_sigma"] = round(s, 3)
    sigma = float(rng.uniform(0.5, 3.0))
    shift = int(rng.integers(sensor.shape[1]))
    x += np.roll(sensor, shift, axis=1)[: x.shape[0], : x.shape[1]] * sigma
    info["noise_sigma"] = round(sigma, 3)
    out = np.clip(x + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.7:
        q = int(rng.integers(60, 96))
        ok, enc = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        out = np.ascontiguousarray(cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1])
        info["jpeg_quality"] = q
    return out, info
