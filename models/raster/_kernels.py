"""numba kernels behind ``cpu.py`` (see there for the why).

All kernels are single-threaded and release the GIL (``nogil``) so several
render streams can run in Python threads at once.  ``cache=True`` keeps the
machine code in ``__pycache__`` next to this file, so only the first process
on a machine pays the compile time.

Pixel coordinates: pixel (x, y) has index y * W + x, row 0 at the bottom, and
its centre at screen position (x, y) (``vs`` stores vertices in those units).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_JIT = {"cache": True, "nogil": True, "fastmath": True}
_INLINE = {**_JIT, "inline": "always"}  # small helpers: inline into callers


@njit(**_JIT)
def setup(pos, tri, h, w, vs, coef, bbox, facing):
    """Per-vertex screen data and per-triangle edge functions.

    pos float32[V, 4] clip space -> vs float64[V, 4] = (sx, sy, z/w, 1/w),
    1/w = 0 for w <= 0.  Per triangle: coef float64[F, 9] with screen-space
    barycentric b_k = coef[3k] * x + (coef[3k+1] * y + coef[3k+2]),
    bbox int32[F, 4] = (x0, x1, y0, y1) inclusive and clipped (empty: x0 > x1),
    facing int8[F] = sign of the screen area (+1 counter-clockwise, 0 skipped).
    """
    for i in range(pos.shape[0]):
        pw = np.float64(pos[i, 3])
        if pw > 0:
            iw = 1.0 / pw
            vs[i, 0] = (np.float64(pos[i, 0]) * iw * 0.5 + 0.5) * w - 0.5
            vs[i, 1] = (np.float64(pos[i, 1]) * iw * 0.5 + 0.5) * h - 0.5
            vs[i, 2] = np.float64(pos[i, 2]) * iw
            vs[i, 3] = iw
        else:
            vs[i, 0] = vs[i, 1] = vs[i, 2] = vs[i, 3] = 0.0
    for f in range(tri.shape[0]):
        facing[f] = 0
        bbox[f, 0] = 1
        bbox[f, 1] = 0
        i0, i1, i2 = tri[f, 0], tri[f, 1], tri[f, 2]
        if vs[i0, 3] == 0.0 or vs[i1, 3] == 0.0 or vs[i2, 3] == 0.0:
            continue
        x0, y0 = vs[i0, 0], vs[i0, 1]
        x1, y1 = vs[i1, 0], vs[i1, 1]
        x2, y2 = vs[i2, 0], vs[i2, 1]
        d = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
        if d == 0.0:
            continue
        facing[f] = 1 if d > 0 else -1
        inv = 1.0 / d
        coef[f, 0] = (y1 - y2) * inv
        coef[f, 1] = (x2 - x1) * inv
        coef[f, 2] = (x1 * y2 - x2 * y1) * inv
        coef[f, 3] = (y2 - y0) * inv
        coef[f, 4] = (x0 - x2) * inv
        coef[f, 5] = (x2 * y0 - x0 * y2) * inv
        coef[f, 6] = (y0 - y1) * inv
        coef[f, 7] = (x1 - x0) * inv
        coef[f, 8] = (x0 * y1 - x1 * y0) * inv
        lo = math.ceil(min(x0, x1, x2))
        hi = math.floor(max(x0, x1, x2))
        bbox[f, 0] = 0 if lo < 0 else (w if lo > w else int(lo))
        bbox[f, 1] = -1 if hi < -1 else (w - 1 if hi > w - 1 else int(hi))
        lo = math.ceil(min(y0, y1, y2))
        hi = math.floor(max(y0, y1, y2))
        bbox[f, 2] = 0 if lo < 0 else (h if lo > h else int(lo))
        bbox[f, 3] = -1 if hi < -1 else (h - 1 if hi > h - 1 else int(hi))


@njit(**_INLINE)
def _clip_span(a, inv_a, r, lo, hi):
    """Narrow [lo, hi] to where a * x + r >= 0 (x* = -r / a, with a 1e-6 px
    margin so the exact per-pixel test, not this bound, decides coverage)."""
    if a > 0.0:
        lo = max(lo, -r * inv_a - 1e-6)
    elif a < 0.0:
        hi = min(hi, -r * inv_a + 1e-6)
    elif r < 0.0:
        hi = lo - 1.0
    return lo, hi


@njit(**_JIT)
def raster(vs, tri, coef, bbox, facing, cull, w, zbuf, ids):
    """Z-buffer pass: zbuf float32[H*W] (z/w), ids int32[H*W] (tri + 1, 0 empty).

    Walks each triangle's rows over the span its three edge functions allow,
    then tests every pixel exactly (so coverage matches numpy_ref bit for
    bit); ties in depth keep the earlier triangle.  Returns the union of the
    drawn triangles' boxes (x0, x1, y0, y1), empty if x0 > x1.
    """
    zbuf[:] = np.inf
    ids[:] = 0
    ux0, uy0, ux1, uy1 = w, zbuf.shape[0] // w, -1, -1
    for f in range(tri.shape[0]):
        fc = facing[f]
        if fc == 0 or (cull and fc < 0):
            continue
        xa, xb, ya, yb = bbox[f, 0], bbox[f, 1], bbox[f, 2], bbox[f, 3]
        if xa > xb or ya > yb:
            continue
        ux0, ux1, uy0, uy1 = min(ux0, xa), max(ux1, xb), min(uy0, ya), max(uy1, yb)
        a0, b0, c0 = coef[f, 0], coef[f, 1], coef[f, 2]
        a1, b1, c1 = coef[f, 3], coef[f, 4], coef[f, 5]
        a2, b2, c2 = coef[f, 6], coef[f, 7], coef[f, 8]
        n0 = 1.0 / a0 if a0 != 0.0 else 0.0
        n1 = 1.0 / a1 if a1 != 0.0 else 0.0
        n2 = 1.0 / a2 if a2 != 0.0 else 0.0
        z0, z1, z2 = vs[tri[f, 0], 2], vs[tri[f, 1], 2], vs[tri[f, 2], 2]
        fid = np.int32(f + 1)
        fxa, fxb = np.float64(xa), np.float64(xb)
        for y in range(ya, yb + 1):
            fy = np.float64(y)
            r0 = b0 * fy + c0
            r1 = b1 * fy + c1
            r2 = b2 * fy + c2
            lo, hi = _clip_span(a0, n0, r0, fxa, fxb)
            lo, hi = _clip_span(a1, n1, r1, lo, hi)
            lo, hi = _clip_span(a2, n2, r2, lo, hi)
            if lo > hi:
                continue
            row = y * w
            for x in range(math.ceil(lo), math.floor(hi) + 1):
                fx = np.float64(x)
                e0 = a0 * fx + r0
                e1 = a1 * fx + r1
                e2 = a2 * fx + r2
                if e0 >= 0.0 and e1 >= 0.0 and e2 >= 0.0:
                    z = e0 * z0 + e1 * z1 + e2 * z2
                    if z >= -1.0 and z <= 1.0:
                        zf = np.float32(z)
                        if zf < zbuf[row + x]:
                            zbuf[row + x] = zf
                            ids[row + x] = fid
    return ux0, ux1, uy0, uy1


@njit(**_INLINE)
def _bary(vs, tri, coef, f, x, y):
    """Perspective-correct barycentrics (c0, c1, c2) of pixel (x, y) in tri f."""
    fx = np.float64(x)
    fy = np.float64(y)
    p0 = (coef[f, 0] * fx + (coef[f, 1] * fy + coef[f, 2])) * vs[tri[f, 0], 3]
    p1 = (coef[f, 3] * fx + (coef[f, 4] * fy + coef[f, 5])) * vs[tri[f, 1], 3]
    p2 = (coef[f, 6] * fx + (coef[f, 7] * fy + coef[f, 8])) * vs[tri[f, 2], 3]
    s = 1.0 / (p0 + p1 + p2)
    return p0 * s, p1 * s, p2 * s


@njit(**_JIT)
def resolve(vs, tri, coef, zbuf, ids, w, rast):
    """rast float32[H, W, 4] = (u, v, z/w, id + 1) from the z-buffer pass."""
    for y in range(rast.shape[0]):
        for x in range(w):
            p = y * w + x
            idv = ids[p]
            if idv == 0:
                rast[y, x, 0] = rast[y, x, 1] = rast[y, x, 2] = rast[y, x, 3] = 0.0
                continue
            c0, c1, _ = _bary(vs, tri, coef, idv - 1, x, y)
            rast[y, x, 0] = c0
            rast[y, x, 1] = c1
            rast[y, x, 2] = zbuf[p]
            rast[y, x, 3] = idv


@njit(**_JIT)
def uv_planes(vs, tri, coef, facing, uv, uv_idx, planes):
    """planes float64[F, 9]: screen-space planes (A, B, C) of 1/w, u/w, v/w.

    These three are affine in screen space, so a pixel's perspective-correct
    uv is two plane evaluations over a third: no barycentrics and no
    per-pixel gathers of vertex data in ``shade``.
    """
    for f in range(tri.shape[0]):
        if facing[f] == 0:
            continue
        for r in range(9):
            planes[f, r] = 0.0
        for k in range(3):
            iw = vs[tri[f, k], 3]
            u = uv[uv_idx[f, k], 0] * iw
            v = uv[uv_idx[f, k], 1] * iw
            for r in range(3):
                c = coef[f, 3 * k + r]
                planes[f, r] += c * iw
                planes[f, 3 + r] += c * u
                planes[f, 6 + r] += c * v


@njit(**_JIT)
def shade(planes, ids, w, tex, bg, flip, rgb, alpha):
    """Perspective-correct uv + bilinear clamp texture for covered pixels.

    tex uint8[Ht, Wt, 3]; rgb uint8[H, W, 3] (bg where empty), alpha uint8[H, W]
    (255 covered); rows reversed if flip.  Channels are unrolled and the texel
    weights are float32 (error far below 1/255): measurably faster here.
    """
    h = rgb.shape[0]
    ht, wt = tex.shape[0], tex.shape[1]
    one = np.float32(1.0)
    half = np.float32(0.5)
    bg0, bg1, bg2 = bg[0], bg[1], bg[2]
    for y in range(h):
        oy = h - 1 - y if flip else y
        row = y * w
        py = np.float64(y)
        for x in range(w):
            idv = ids[row + x]
            if idv == 0:
                rgb[oy, x, 0] = bg0
                rgb[oy, x, 1] = bg1
                rgb[oy, x, 2] = bg2
                alpha[oy, x] = 0
                continue
            f = idv - 1
            px = np.float64(x)
            q = 1.0 / (planes[f, 0] * px + (planes[f, 1] * py + planes[f, 2]))
            u = (planes[f, 3] * px + (planes[f, 4] * py + planes[f, 5])) * q
            v = (planes[f, 6] * px + (planes[f, 7] * py + planes[f, 8])) * q
            i0, i1, k0, k1, gx, gy = _taps(u, v, wt, ht)
            fx = np.float32(gx)
            fy = np.float32(gy)
            w00 = (one - fx) * (one - fy)
            w01 = fx * (one - fy)
            w10 = (one - fx) * fy
            w11 = fx * fy
            r = (
                tex[k0, i0, 0] * w00
                + tex[k0, i1, 0] * w01
                + tex[k1, i0, 0] * w10
                + tex[k1, i1, 0] * w11
            )
            g = (
                tex[k0, i0, 1] * w00
                + tex[k0, i1, 1] * w01
                + tex[k1, i0, 1] * w10
                + tex[k1, i1, 1] * w11
            )
            b = (
                tex[k0, i0, 2] * w00
                + tex[k0, i1, 2] * w01
                + tex[k1, i0, 2] * w10
                + tex[k1, i1, 2] * w11
            )
            rgb[oy, x, 0] = np.uint8(np.int32(r + half))
            rgb[oy, x, 1] = np.uint8(np.int32(g + half))
            rgb[oy, x, 2] = np.uint8(np.int32(b + half))
            alpha[oy, x] = 255


@njit(**_INLINE)
def _taps(u, v, wt, ht):
    """Bilinear taps for nvdiffrast's uv convention with clamp-to-edge."""
    tx = u * wt - 0.5
    ty = v * ht - 0.5
    fx = math.floor(tx)
    fy = math.floor(ty)
    gx = tx - fx
    gy = ty - fy
    i0 = 0 if fx < 0 else (wt - 1 if fx > wt - 1 else int(fx))
    i1 = 0 if fx + 1 < 0 else (wt - 1 if fx + 1 > wt - 1 else int(fx) + 1)
    k0 = 0 if fy < 0 else (ht - 1 if fy > ht - 1 else int(fy))
    k1 = 0 if fy + 1 < 0 else (ht - 1 if fy + 1 > ht - 1 else int(fy) + 1)
    return i0, i1, k0, k1, gx, gy


@njit(**_JIT)
def interpolate(attr, rast, tri, out):
    """out float32[H, W, C] = u a[v0] + v a[v1] + (1 - u - v) a[v2].

    Returns the number of pixels whose id is not a triangle of ``tri``
    (left at 0; the caller raises).
    """
    nc = attr.shape[1]
    nf = tri.shape[0]
    bad = 0
    for y in range(rast.shape[0]):
        for x in range(rast.shape[1]):
            idv = int(rast[y, x, 3])
            if idv <= 0 or idv > nf:
                bad += idv != 0
                for c in range(nc):
                    out[y, x, c] = 0.0
                continue
            f = idv - 1
            u = np.float64(rast[y, x, 0])
            v = np.float64(rast[y, x, 1])
            t = 1.0 - u - v
            j0, j1, j2 = tri[f, 0], tri[f, 1], tri[f, 2]
            for c in range(nc):
                out[y, x, c] = u * attr[j0, c] + v * attr[j1, c] + t * attr[j2, c]
    return bad


@njit(**_JIT)
def split_rast(rast, nf, ids, zbuf):
    """rast float32[H, W, 4] -> ids int32[H*W], zbuf float32[H*W] in one pass.

    Returns (number of ids that are not triangles of the mesh, which become 0,
    and the covered box (x0, x1, y0, y1), empty if x0 > x1).
    """
    h, w = rast.shape[0], rast.shape[1]
    bad = 0
    x0, x1, y0, y1 = w, -1, h, -1
    for y in range(h):
        for x in range(w):
            idv = int(rast[y, x, 3])
            if idv < 0 or idv > nf:
                bad += 1
                idv = 0
            if idv != 0:
                x0, x1 = min(x0, x), max(x1, x)
                y0, y1 = min(y0, y), max(y1, y)
            ids[y * w + x] = idv
            zbuf[y * w + x] = rast[y, x, 2]
    return bad, (x0, x1, y0, y1)


@njit(**_JIT)
def texture(tex, uv, mask, use_mask, out):
    """out float32[H, W, C]: bilinear clamp lookup of tex (uint8 or float32)."""
    ht, wt, nc = tex.shape[0], tex.shape[1], tex.shape[2]
    for y in range(uv.shape[0]):
        for x in range(uv.shape[1]):
            if use_mask and not mask[y, x]:
                for c in range(nc):
                    out[y, x, c] = 0.0
                continue
            i0, i1, k0, k1, gx, gy = _taps(np.float64(uv[y, x, 0]), np.float64(uv[y, x, 1]), wt, ht)
            for c in range(nc):
                top = tex[k0, i0, c] * (1.0 - gx) + tex[k0, i1, c] * gx
                bot = tex[k1, i0, c] * (1.0 - gx) + tex[k1, i1, c] * gx
                out[y, x, c] = top * (1.0 - gy) + bot * gy


# ---------------------------------------------------------------- antialias
@njit(**_JIT)
def rim(nbr, facing, out, tmp):
    """out uint8[F + 1], by triangle id: 1 for triangles within two edge
    steps of a silhouette edge (an edge with no neighbour, or whose neighbour
    faces the other way on screen), and for id 0 (empty pixel): a pair of
    pixels is worth examining when either side is marked.

    Seen edge-on, the triangles next to the outline are often thinner than a
    pixel, so the pixel at the outline may belong to a triangle one or two
    steps inside; pairs of covered pixels away from the rim are skipped.
    """
    nf = nbr.shape[0]
    tmp[0] = 0
    for f in range(nf):
        fc = facing[f]
        m = 0
        if fc != 0:
            for k in range(3):
                n = nbr[f, k]
                if n < 0 or facing[n] != fc:
                    m = 1
        tmp[f + 1] = m
    for ring in range(2):
        for f in range(nf):
            m = tmp[f + 1]
            if m == 0:
                for k in range(3):
                    n = nbr[f, k]
                    if n >= 0 and tmp[n + 1] != 0:
                        m = 1
            out[f + 1] = m
        if ring == 0:
            tmp[:] = out
    out[0] = 1


@njit(**_INLINE)
def _pair(ids, zbuf, coef, facing, nbr, pa, pb, xa, ya, xb, yb, horizontal):
    """One adjacent pixel pair -> blend op (dst, src, weight); dst -1 for none.

    Starting in the front pixel's triangle, walk across the mesh along the
    segment to the other pixel centre (at most 4 triangles).  If the walk
    leaves the surface through a silhouette edge running across the pair
    (more vertical than horizontal for a horizontal pair), the pixel on the far
    side of the midpoint from the crossing takes the other's colour in
    proportion to the overlap, as in nvdiffrast's analytic antialiasing.
    """
    ia = ids[pa]
    ib = ids[pb]
    if ia > 0 and (ib == 0 or zbuf[pa] <= zbuf[pb]):
        pp, pq, f, xp, yp, xq, yq = pa, pb, ia - 1, xa, ya, xb, yb
    else:
        pp, pq, f, xp, yp, xq, yq = pb, pa, ib - 1, xb, yb, xa, ya
    fc = facing[f]
    for _ in range(4):
        best_t = np.inf
        best_k = -1
        for k in range(3):
            a, b, c = coef[f, 3 * k], coef[f, 3 * k + 1], coef[f, 3 * k + 2]
            bp = a * xp + (b * yp + c)
            bq = a * xq + (b * yq + c)
            if bq < bp:  # edge k is ahead along the segment
                t = bp / (bp - bq)
                if t < best_t:
                    best_t = t
                    best_k = k
        if best_k < 0 or best_t >= 1.0:
            return -1, -1, 0.0  # the other pixel is on the same surface
        n = nbr[f, best_k]
        if n >= 0 and facing[n] == fc:
            f = n  # interior edge: continue in the neighbour
            continue
        aa = abs(coef[f, 3 * best_k])
        bb = abs(coef[f, 3 * best_k + 1])
        if (horizontal and aa < bb) or (not horizontal and aa >= bb):
            return -1, -1, 0.0
        t = max(best_t, 0.0)
        if t > 0.5:
            return pq, pp, t - 0.5
        if t < 0.5:
            return pp, pq, 0.5 - t
        return -1, -1, 0.0
    return -1, -1, 0.0


@njit(**_JIT)
def aa_ops(ids, zbuf, h, w, box, coef, facing, nbr, rim_ids, dst, src, wt):
    """Collect blend ops for the pixel pairs in box (x0, x1, y0, y1) grown by
    one pixel; returns their count.

    A pair is examined when exactly one side is empty, or when one side's
    triangle is near the rim (``rim``); everything else costs two table
    lookups.  dst/src int32 and wt float32 need room for 2 * H * W ops.
    """
    n = 0
    xs, xe = max(box[0] - 1, 0), min(box[1] + 1, w - 1)
    for y in range(max(box[2] - 1, 0), min(box[3] + 1, h - 1) + 1):
        fy = np.float64(y)
        for x in range(xs, xe + 1):
            p = y * w + x
            a = ids[p]
            ra = rim_ids[a]
            fx = np.float64(x)
            if x + 1 < w:
                b = ids[p + 1]
                if b != a and (ra | rim_ids[b]) != 0:
                    d, s, t = _pair(
                        ids, zbuf, coef, facing, nbr, p, p + 1, fx, fy, fx + 1.0, fy, True
                    )
                    if d >= 0:
                        dst[n], src[n], wt[n] = d, s, t
                        n += 1
            if y + 1 < h:
                b = ids[p + w]
                if b != a and (ra | rim_ids[b]) != 0:
                    d, s, t = _pair(
                        ids, zbuf, coef, facing, nbr, p, p + w, fx, fy, fx, fy + 1.0, False
                    )
                    if d >= 0:
                        dst[n], src[n], wt[n] = d, s, t
                        n += 1
    return n


@njit(**_INLINE)
def _flip_index(p, h, w, flip):
    return (h - 1 - p // w) * w + p % w if flip else p


@njit(**_JIT)
def apply_ops_f32(img, n, dst, src, wt, h, w, flip):
    """img float32[H*W, C] += wt * (img[src] - img[dst]), from original values."""
    nc = img.shape[1]
    sv = np.empty((n, nc), dtype=np.float32)
    dv = np.empty((n, nc), dtype=np.float32)
    for i in range(n):
        s = _flip_index(src[i], h, w, flip)
        d = _flip_index(dst[i], h, w, flip)
        for c in range(nc):
            sv[i, c] = img[s, c]
            dv[i, c] = img[d, c]
    for i in range(n):
        d = _flip_index(dst[i], h, w, flip)
        for c in range(nc):
            img[d, c] += wt[i] * (sv[i, c] - dv[i, c])


@njit(**_JIT)
def apply_ops_u8(img, n, dst, src, wt, h, w, flip):
    """uint8 version of ``apply_ops_f32`` (rounds after each op)."""
    nc = img.shape[1]
    sv = np.empty((n, nc), dtype=np.float32)
    dv = np.empty((n, nc), dtype=np.float32)
    for i in range(n):
        s = _flip_index(src[i], h, w, flip)
        d = _flip_index(dst[i], h, w, flip)
        for c in range(nc):
            sv[i, c] = img[s, c]
            dv[i, c] = img[d, c]
    for i in range(n):
        d = _flip_index(dst[i], h, w, flip)
        for c in range(nc):
            val = np.float32(img[d, c]) + wt[i] * (sv[i, c] - dv[i, c]) + np.float32(0.5)
            img[d, c] = 0 if val < 0 else (255 if val >= 255 else np.uint8(int(val)))
