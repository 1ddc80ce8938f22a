"""Plain numpy rasterizer: the reference for tests and the benchmark baseline.

Loops over triangles in Python and vectorizes over the pixels of each
triangle's bounding box.  Slow (about a second per 27k-triangle frame) but
short and obviously correct; ``cpu.py`` must agree with it.  Contract and
conventions: see ``contract.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .topology import edge_neighbors, uv_layout

name = "numpy"


# ---------------------------------------------------------------- setup
def _screen(pos_clip: np.ndarray, h: int, w: int):
    """Per-vertex screen position in pixel units (pixel centres at integers),
    z/w and 1/w; 1/w = 0 marks vertices behind the eye (w <= 0)."""
    p = np.asarray(pos_clip, dtype=np.float32).astype(np.float64)
    ok = p[:, 3] > 0
    iw = np.zeros(len(p))
    iw[ok] = 1.0 / p[ok, 3]
    sx = (p[:, 0] * iw * 0.5 + 0.5) * w - 0.5
    sy = (p[:, 1] * iw * 0.5 + 0.5) * h - 0.5
    zn = p[:, 2] * iw
    return sx, sy, zn, iw, ok


def _setup(sx, sy, ok, tri):
    """Edge-function coefficients: screen barycentric b_k = A_k x + (B_k y + C_k).

    Returns coef float64[F, 9] = (A0, B0, C0, A1, B1, C1, A2, B2, C2), the
    signed doubled area D (> 0: counter-clockwise in the bottom-up image) and
    whether each triangle can be drawn at all.
    """
    t0, t1, t2 = tri[:, 0], tri[:, 1], tri[:, 2]
    x0, y0, x1, y1, x2, y2 = sx[t0], sy[t0], sx[t1], sy[t1], sx[t2], sy[t2]
    d = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    drawable = ok[t0] & ok[t1] & ok[t2] & (d != 0)
    inv = np.where(drawable, 1.0 / np.where(d == 0, 1.0, d), 0.0)
    coef = np.stack(
        [
            (y1 - y2) * inv,
            (x2 - x1) * inv,
            (x1 * y2 - x2 * y1) * inv,
            (y2 - y0) * inv,
            (x0 - x2) * inv,
            (x2 * y0 - x0 * y2) * inv,
            (y0 - y1) * inv,
            (x1 - x0) * inv,
            (x0 * y1 - x1 * y0) * inv,
        ],
        axis=1,
    )
    d = np.where(drawable, d, 0.0)
    return coef, d, drawable


def _raster_ids(pos_clip, tri, h, w, cull_backfaces):
    """Depth-tested visibility: ids int64[H, W] (tri + 1, 0 empty), z float32[H, W]."""
    tri = np.asarray(tri, dtype=np.int64)
    sx, sy, zn, iw, ok = _screen(pos_clip, h, w)
    coef, d, drawable = _setup(sx, sy, ok, tri)
    if cull_backfaces:
        drawable &= d > 0
    zbuf = np.full((h, w), np.inf, dtype=np.float32)
    ids = np.zeros((h, w), dtype=np.int64)
    for f in np.nonzero(drawable)[0]:
        i = tri[f]
        xmin = max(0, int(np.ceil(sx[i].min())))
        xmax = min(w - 1, int(np.floor(sx[i].max())))
        ymin = max(0, int(np.ceil(sy[i].min())))
        ymax = min(h - 1, int(np.floor(sy[i].max())))
        if xmin > xmax or ymin > ymax:
            continue
        xs = np.arange(xmin, xmax + 1, dtype=np.float64)[None, :]
        ys = np.arange(ymin, ymax + 1, dtype=np.float64)[:, None]
        c = coef[f]
        b0 = c[0] * xs + (c[1] * ys + c[2])
        b1 = c[3] * xs + (c[4] * ys + c[5])
        b2 = c[6] * xs + (c[7] * ys + c[8])
        z = b0 * zn[i[0]] + b1 * zn[i[1]] + b2 * zn[i[2]]
        inside = (b0 >= 0) & (b1 >= 0) & (b2 >= 0) & (z >= -1) & (z <= 1)
        zf = z.astype(np.float32)
        zb = zbuf[ymin : ymax + 1, xmin : xmax + 1]
        win = inside & (zf < zb)
        zb[win] = zf[win]
        ids[ymin : ymax + 1, xmin : xmax + 1][win] = f + 1
    return ids, zbuf, coef, d, iw


# ---------------------------------------------------------------- verbs
def rasterize(pos_clip, tri, resolution, cull_backfaces: bool = False) -> np.ndarray:
    """float32[H, W, 4] = (u, v, z/w, tri_id + 1), perspective-correct (u, v)."""
    h, w = resolution
    tri = np.asarray(tri, dtype=np.int64)
    ids, zbuf, coef, _, iw = _raster_ids(pos_clip, tri, h, w, cull_backfaces)
    rast = np.zeros((h, w, 4), dtype=np.float32)
    ys, xs = np.nonzero(ids)
    f = ids[ys, xs] - 1
    c = coef[f]
    x = xs.astype(np.float64)
    y = ys.astype(np.float64)
    b0 = c[:, 0] * x + (c[:, 1] * y + c[:, 2])
    b1 = c[:, 3] * x + (c[:, 4] * y + c[:, 5])
    b2 = c[:, 6] * x + (c[:, 7] * y + c[:, 8])
    p0, p1, p2 = b0 * iw[tri[f, 0]], b1 * iw[tri[f, 1]], b2 * iw[tri[f, 2]]
    s = 1.0 / (p0 + p1 + p2)
    rast[ys, xs, 0] = p0 * s
    rast[ys, xs, 1] = p1 * s
    rast[ys, xs, 2] = zbuf[ys, xs]
    rast[ys, xs, 3] = ids[ys, xs]
    return rast


def interpolate(attr, rast, tri) -> np.ndarray:
    """float32[H, W, C]: u * a[v0] + v * a[v1] + (1 - u - v) * a[v2]; 0 if empty."""
    attr = np.asarray(attr, dtype=np.float32)
    tri = np.asarray(tri, dtype=np.int64)
    h, w = rast.shape[:2]
    out = np.zeros((h, w, attr.shape[1]), dtype=np.float32)
    ids = rast[..., 3].astype(np.int64)
    ys, xs = np.nonzero(ids)
    t = tri[ids[ys, xs] - 1]
    u = rast[ys, xs, 0:1].astype(np.float64)
    v = rast[ys, xs, 1:2].astype(np.float64)
    out[ys, xs] = u * attr[t[:, 0]] + v * attr[t[:, 1]] + (1.0 - u - v) * attr[t[:, 2]]
    return out


def texture(tex, uv, mask=None) -> np.ndarray:
    """Bilinear, clamp-to-edge lookup; float32[H, W, C] in tex's units."""
    tex = np.asarray(tex)
    ht, wt = tex.shape[:2]
    uv = np.asarray(uv, dtype=np.float64)
    x = uv[..., 0] * wt - 0.5
    y = uv[..., 1] * ht - 0.5
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    i0 = np.clip(x0, 0, wt - 1).astype(np.int64)
    i1 = np.clip(x0 + 1, 0, wt - 1).astype(np.int64)
    j0 = np.clip(y0, 0, ht - 1).astype(np.int64)
    j1 = np.clip(y0 + 1, 0, ht - 1).astype(np.int64)
    t = tex.astype(np.float64)
    top = t[j0, i0] * (1 - fx) + t[j0, i1] * fx
    bot = t[j1, i0] * (1 - fx) + t[j1, i1] * fx
    out = (top * (1 - fy) + bot * fy).astype(np.float32)
    if mask is not None:
        out[~np.asarray(mask, dtype=bool)] = 0
    return out


def _rim(nbr, facing):
    """bool[F + 1] by triangle id: within two edge steps of a silhouette edge
    (no neighbour, or the neighbour faces the other way on screen)."""
    has_nbr = nbr >= 0
    nf = np.where(has_nbr, facing[np.maximum(nbr, 0)], 0)
    rim = (((~has_nbr) | (nf != facing[:, None])).any(axis=1)) & (facing != 0)
    for _ in range(2):
        rim = rim | (has_nbr & rim[np.maximum(nbr, 0)]).any(axis=1)
    return np.concatenate([[False], rim])


def _aa_ops(ids, zbuf, coef, d, nbr):
    """Blend operations (dst pixel, src pixel, weight) for silhouette edges.

    nvdiffrast's approximation: for every horizontally / vertically adjacent
    pixel pair with different triangles, start in the front pixel's triangle
    and walk across the mesh (at most 4 triangles) along the segment to the
    other pixel centre.  If it leaves the surface through a silhouette edge
    oriented across the pair, blend by where the edge crosses the segment.
    The walk matters because triangles at the outline, seen edge-on, are
    often thinner than a pixel.
    """
    h, w = ids.shape
    facing = np.sign(d).astype(np.int8)
    rim = _rim(nbr, facing)
    yy, xx = np.mgrid[0:h, 0:w]
    dsts, srcs, wts = [], [], []
    for horizontal in (True, False):
        sl_a = (slice(None), slice(0, w - 1)) if horizontal else (slice(0, h - 1), slice(None))
        sl_b = (slice(None), slice(1, w)) if horizontal else (slice(1, h), slice(None))
        ia, ib = ids[sl_a].ravel(), ids[sl_b].ravel()
        za, zb = zbuf[sl_a].ravel(), zbuf[sl_b].ravel()
        pa = (yy[sl_a] * w + xx[sl_a]).ravel()
        pb = (yy[sl_b] * w + xx[sl_b]).ravel()
        cand = (ia != ib) & ((ia == 0) | (ib == 0) | rim[ia] | rim[ib])
        sel = np.nonzero(cand)[0]
        ia, ib, za, zb, pa, pb = ia[sel], ib[sel], za[sel], zb[sel], pa[sel], pb[sel]
        a_front = (ia > 0) & ((ib == 0) | (za <= zb))
        f = np.where(a_front, ia, ib) - 1
        pp = np.where(a_front, pa, pb)
        pq = np.where(a_front, pb, pa)
        xp, yp = (pp % w).astype(np.float64), (pp // w).astype(np.float64)
        xq, yq = (pq % w).astype(np.float64), (pq // w).astype(np.float64)
        fc = facing[f]
        active = np.ones(len(sel), bool)
        hit_t = np.full(len(sel), np.nan)
        for _ in range(4):
            c = coef[f]
            t = np.full((len(sel), 3), np.inf)
            for k in range(3):
                a, b, cc = c[:, 3 * k], c[:, 3 * k + 1], c[:, 3 * k + 2]
                bp = a * xp + (b * yp + cc)
                bq = a * xq + (b * yq + cc)
                ahead = bq < bp
                t[ahead, k] = bp[ahead] / (bp[ahead] - bq[ahead])
            k = np.argmin(t, axis=1)
            r = np.arange(len(sel))
            tk = t[r, k]
            active &= tk < 1.0  # inf (no edge ahead) or beyond: same surface
            n = nbr[f, k]
            interior = (n >= 0) & (facing[np.maximum(n, 0)] == fc)
            ak, bk = np.abs(c[r, 3 * k]), np.abs(c[r, 3 * k + 1])
            orient = ak >= bk if horizontal else ak < bk
            done = active & ~interior
            hit_t[done & orient] = tk[done & orient]
            active &= interior
            f = np.where(active, n, f)
        ok = ~np.isnan(hit_t)
        tk = np.maximum(hit_t[ok], 0.0)
        pp, pq = pp[ok], pq[ok]
        far = tk > 0.5  # edge beyond the midpoint: the back pixel is partly covered
        keep = tk != 0.5
        dsts.append(np.where(far, pq, pp)[keep])
        srcs.append(np.where(far, pp, pq)[keep])
        wts.append(np.abs(tk - 0.5)[keep])
    return np.concatenate(dsts), np.concatenate(srcs), np.concatenate(wts)


def _apply_ops(img: np.ndarray, dst, src, wt) -> np.ndarray:
    h, w = img.shape[:2]
    c = img.reshape(h * w, -1).astype(np.float64)
    acc = c.copy()
    np.add.at(acc, dst, wt[:, None] * (c[src] - c[dst]))
    acc = acc.reshape(img.shape)
    if img.dtype == np.uint8:
        return np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    return acc.astype(img.dtype)


def antialias(color, rast, pos_clip, tri) -> np.ndarray:
    """Silhouette antialiasing (see ``_aa_ops``); same dtype as ``color``."""
    color = np.asarray(color)
    h, w = color.shape[:2]
    tri = np.asarray(tri, dtype=np.int64)
    sx, sy, _, _, ok = _screen(pos_clip, h, w)
    coef, d, _ = _setup(sx, sy, ok, tri)
    ids = rast[..., 3].astype(np.int64)
    dst, src, wt = _aa_ops(ids, rast[..., 2], coef, d, edge_neighbors(tri))
    return _apply_ops(color, dst, src, wt)


def render_textured(
    pos_clip,
    tri,
    uv,
    tex,
    resolution,
    background: Sequence[int] = (0, 0, 0),
    *,
    uv_idx=None,
    antialias: bool = True,
    flip_y: bool = False,
    cull_backfaces: bool = False,
):
    """rgb uint8[H, W, 3] and alpha uint8[H, W] via the unfused verbs."""
    tri = np.asarray(tri, dtype=np.int32)
    uv, uv_idx = uv_layout(uv, tri, uv_idx)
    rast = rasterize(pos_clip, tri, resolution, cull_backfaces)
    cov = rast[..., 3] > 0
    uvi = interpolate(uv, rast, uv_idx)
    col = texture(tex, uvi, cov)
    bg = np.asarray(background, dtype=np.float32)
    rgb = np.where(cov[..., None], np.floor(col + 0.5), bg).astype(np.uint8)
    alpha = (cov * 255).astype(np.uint8)
    if antialias:
        rgba = antialias_fn(np.dstack([rgb, alpha]), rast, pos_clip, tri)
        rgb, alpha = rgba[..., :3], rgba[..., 3]
    if flip_y:
        rgb, alpha = rgb[::-1], alpha[::-1]
    return np.ascontiguousarray(rgb), np.ascontiguousarray(alpha)


antialias_fn = antialias  # render_textured's keyword shadows the function name
