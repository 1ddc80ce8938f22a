"""Clothing and hair as geometry: the clothed surface of a synthetic person.

The clothed surface is built in the rest pose and skinned to the body's skeleton, so that
it moves with every pose:

- **the body layer**: the body's own vertices pushed out along their normals by what
  covers them (the outermost material label painted there: a T-shirt stands off ~1 cm, a
  hoodie 2-3 cm, a coat 3 cm, hair its volume, a hood a bump on the upper back, collars
  a ridge at the neck, soles push the feet down), with smooth random folds, smoothed over
  the mesh; bare skin stays where it is, so sleeves and trouser legs end in a step (a hem);
- **a drape** from the waist (skirt, dress) or the hips (long coat) to the hem: a tube that
  bridges the legs, each ring an ellipse around the body at its height (only ever
  widening downwards, plus the skirt's flare); its skin weights blend from the pelvis at the
  top to both thighs at the hem (the left side follows the left thigh, the middle both), so
  it swings with the legs and never splits between them;
- **a ponytail** (a tapered tube behind the head) and **a cap's brim** (skinned to the head).

The drape, ponytail and brim live in an extra atlas below the body's (rows T..T+E of the
render texture); the drape's texels copy the material label of the body texel nearest to
them, so its fabric, pleats and patterns continue the painted skirt, dress or coat.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.synth import outfit as O
from models.synth.body import _P

EXTRA_ROWS = 128  # rows of the extras atlas (below the body's T x T atlas)
DRAPE_U = 0.75  # the drape's share of the extras atlas (u in [0, DRAPE_U))
PONY_U = (0.75, 0.875)
BRIM_U = (0.875, 1.0)
DRAPE_RINGS, DRAPE_SEGMENTS = 14, 48
GARMENT_LABELS = np.array([O.TOP, O.TOP_ALT, O.TOP_ALT2, O.PRINT_A, O.PRINT_B, O.TRIM, O.INNER, O.BUTTON])
BOTTOM_LABELS = np.array([O.BOTTOM, O.BOTTOM_DETAIL, O.BELT])


@dataclass
class ClothedRest:
    """The clothed surface in the rest pose, ready to skin and render.

    Model layout (skinning, normals): ``verts`` = the body's V model vertices (pushed out)
    followed by the extras' vertices. Render layout (UVs): ``render_index`` picks, for every
    render vertex, its model vertex (the body's split vertices, then the extras).
    """

    verts: np.ndarray  # float32 [Vm, 3]
    skin_j: np.ndarray  # int32 [Vm, K]
    skin_w: np.ndarray  # float32 [Vm, K]
    model_faces: np.ndarray  # int64 [F, 3] into verts
    render_index: np.ndarray  # int64 [Vr] into verts
    faces: np.ndarray  # int32 [F, 3] into render vertices
    uvs: np.ndarray  # float32 [Vr, 2] in the render texture (body atlas on top, extras below)
    face_parse: np.ndarray  # uint8 [F] part label of every face (outfit.PARSE_LABELS)
    face_garment: np.ndarray  # uint8 [F] 0 body layer, 1 drape, 2 ponytail, 3 brim
    extra_labels: np.ndarray  # int16 [E, T] material labels of the extras atlas
    extra_parse: np.ndarray  # uint8 [E, T] part labels of the extras atlas
    offsets: np.ndarray  # float32 [V] how far each body vertex was pushed out (m)


def rest_normals(b, verts: np.ndarray, faces: np.ndarray | None = None, f2v=None) -> np.ndarray:
    faces = b.model_faces if faces is None else faces
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = (b._f2v if f2v is None else f2v) @ fn
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    return n.astype(np.float32)


def _smooth_field(b, rng, iters: int = 12) -> np.ndarray:
    f = rng.normal(0, 1, len(b.tmpl_v)).astype(np.float32)
    for _ in range(iters):
        f = b.vertex_mean @ f
    return f / (f.std() + 1e-8)


def body_offsets(b, rng, o: O.Outfit, vlab: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """How far each body vertex stands out (m), from what is painted over it."""
    H0 = b.heads0
    tv = b.tmpl_v
    V = len(tv)
    eye_y, neck_y, sh_y = H0["eye.L"][1], H0["neck01"][1], H0["upperarm01.L"][1]
    hip_y = H0["upperleg01.L"][1]
    torso_z = H0["spine03"][2]
    part = b.vpart
    arm = b.v_t_arm >= -0.5
    leg = b.v_t_leg >= -0.5
    head = part == _P["head"]
    neck = part == _P["neck"]
    hand = np.isin(part, [_P["hand.L"], _P["hand.R"]])
    off = np.zeros(V, np.float32)
    top = np.isin(vlab, GARMENT_LABELS)
    loose = o.top_loose
    t_arm = np.clip(b.v_t_arm, 0, 1)
    if o.top == "loose_top":  # stands off more over the belly and at the sleeve ends
        belly = np.clip((sh_y - 0.1 - tv[:, 1]) / 0.3, 0, 1)
        off[top] = (loose * (0.6 + 0.6 * belly + 0.5 * t_arm * arm))[top]
    else:
        off[top] = (loose * np.where(arm, 0.6 + 0.5 * t_arm, 1.0))[top]
    bottom = np.isin(vlab, BOTTOM_LABELS)
    t_leg = np.clip(b.v_t_leg, 0, 1)
    if o.bottom == "skirt":
        off[bottom] = 0.004  # under the drape
    else:
        off[bottom] = (o.leg_width * (0.7 + 0.3 * leg) + o.leg_flare * t_leg ** 2)[bottom]
    if o.dress:  # the dress's skirt part is painted TOP on the legs: keep it under the drape
        off[top & leg] = 0.004
    coat = np.isin(vlab, [O.COAT, O.COAT_TRIM])
    coat_off = 0.015 if o.materials.get("coat") == "leather" else float(rng.uniform(0.02, 0.035))
    off[coat] = coat_off * np.where(leg[coat], 0.5, 1.0)
    off[vlab == O.SOCK] = 0.002
    shoe = np.isin(vlab, [O.SHOE, O.SOLE])
    off[shoe] = rng.uniform(0.007, 0.012)
    down = np.clip(-normals[:, 1], 0, 1)
    sole = vlab == O.SOLE
    off[sole] += o.sole * down[sole]
    hair = vlab == O.HAIR
    crown = np.clip((tv[:, 1] - (eye_y - 0.03)) / 0.08, 0.35, 1.0)
    off[hair & head] = (o.hair_volume * crown)[hair & head]
    back_neck = (neck | (head & (tv[:, 1] < eye_y - 0.04))) & hair
    if o.hair in ("long", "bob", "ponytail"):
        off[back_neck] = o.hair_volume + 0.015  # hair hanging behind the neck
    hair_body = hair & ~head & ~neck
    off[hair_body] = rng.uniform(0.008, 0.018)
    off[vlab == O.BEARD] = rng.uniform(0.003, 0.009)
    hat = vlab == O.HAT
    off[hat] = o.hair_volume * 0.5 + 0.008
    # Hood: a soft bump on the upper back; collars: a ridge around the neck.
    if o.hood:
        c = np.array([0.0, sh_y + 0.02, torso_z - 0.1], np.float32)
        d2 = ((tv - c) ** 2).sum(1)
        bump = np.exp(-d2 / (2 * 0.07 ** 2)) * (tv[:, 2] < torso_z) * (vlab != O.HAIR)
        off += (rng.uniform(0.03, 0.055) * bump).astype(np.float32) * (top | coat | neck)
    if o.collar:
        ring = (neck | (part == _P["torso"])) & (np.abs(tv[:, 1] - (neck_y - 0.01)) < 0.025) & (top | coat)
        off[ring] += rng.uniform(0.006, 0.014)
    # Folds: smooth random bumps over the garments, denser rings at the trouser hems.
    clothed = top | bottom | coat
    folds = _smooth_field(b, rng) * 0.3 + _smooth_field(b, rng, 4) * 0.15
    off[clothed] *= 1 + np.clip(folds[clothed], -0.6, 0.8)
    if o.bottom == "trousers":
        hem = bottom & leg & (b.v_t_leg > 0.75)
        off[hem] += (0.004 * (1 + np.sin(b.v_t_leg * rng.uniform(50, 80) + rng.uniform(0, 6.3))))[hem]
    # Smooth, then keep bare skin (face, hands, skin) where it is: hems stay steps.
    fixed = ((vlab == O.SKIN) | np.isin(vlab, [O.EYE_WHITE, O.IRIS, O.PUPIL, O.BROW, O.LIP]) | hand) & ~hat
    # (six passes: a garment's edge over another garment becomes a slope a few cm wide, not
    # a saw-tooth of single vertices)
    for _ in range(6):
        off = 0.5 * off + 0.5 * (b.vertex_mean @ off)
        off[fixed] = 0.0
    return np.maximum(off, 0).astype(np.float32)


def _ellipses(b, verts: np.ndarray, ys_tmpl: np.ndarray, margin: np.ndarray, flare: np.ndarray):
    """Ring ellipses (cy, cz, a, b) around the trunk and legs at template heights ys."""
    tv = b.tmpl_v
    body = ~np.isin(b.vpart, [_P[p] for p in ("upperarm.L", "lowerarm.L", "hand.L", "upperarm.R",
                                               "lowerarm.R", "hand.R", "head")])
    out = np.zeros((len(ys_tmpl), 4), np.float32)
    prev_a = prev_b = 0.0
    for k, y in enumerate(ys_tmpl):
        for half in (0.02, 0.04, 0.08, 0.16):  # a thin slab, wider where the body is sparse
            sel = body & (np.abs(tv[:, 1] - y) < half)
            if sel.sum() >= 8:
                break
        if sel.sum() < 8:  # nothing near this height: keep the ring above
            out[k] = out[k - 1] if k else (float(y), 0.0, 0.15, 0.12)
            continue
        p = verts[sel]
        cy = float(p[:, 1].mean())
        x0, x1 = p[:, 0].min(), p[:, 0].max()
        z0, z1 = p[:, 2].min(), p[:, 2].max()
        a = max(float(max(-x0, x1)) + margin[k] + flare[k], prev_a)
        c = max(float(z1 - z0) / 2 + margin[k] + flare[k], prev_b * 0.97)
        prev_a, prev_b = a, c
        out[k] = (cy, float(z0 + z1) / 2, a, c)
    return out


def _drape(b, rng, o: O.Outfit, verts: np.ndarray, texel_labels_full: np.ndarray, T: int):
    """The tube from the waist (or hips) to the hem -> (verts, faces, uvs, weights [n, J],
    extras label block [E, W] for its part of the extras atlas)."""
    H0 = b.heads0
    hip_y = H0["upperleg01.L"][1]
    foot_y = H0["foot.L"][1]
    if o.coat:
        y_top, hem_t = hip_y + 0.09, o.coat_hem
    else:
        y_top, hem_t = o.waist_y, o.leg_len
    y_hem = hip_y + hem_t * (foot_y - hip_y)
    ys = y_top + (y_hem - y_top) * (np.linspace(0, 1, DRAPE_RINGS) ** 1.2)
    h = (y_top - ys) / max(y_top - y_hem, 1e-3)  # 0 top .. 1 hem
    flare = (0.0 if o.coat else o.leg_flare) * (y_top - ys) + (0.02 if o.coat else 0.0) * h
    margin = np.where(h < 0.05, 0.004, 0.012).astype(np.float32)
    ell = _ellipses(b, verts, ys, margin, flare)
    ell_t = _ellipses(b, b.tmpl_v, ys, margin, flare)
    gap = np.radians(rng.uniform(14, 28)) if (o.coat and o.coat_open) else 0.0
    S = DRAPE_SEGMENTS
    # S + 1 columns: a closed tube repeats its first column at 2 pi with u = DRAPE_U
    th = gap + (2 * np.pi - 2 * gap) * np.arange(S + 1) / S
    ncol = len(th)
    wav = 1 + (0.04 * np.sin(th * rng.integers(5, 9) + rng.uniform(0, 6.3)))  # soft folds
    sx, cz = np.sin(th), np.cos(th)
    R = DRAPE_RINGS
    v = np.zeros((R, ncol, 3), np.float32)
    vt = np.zeros((R, ncol, 3), np.float32)
    for k in range(R):
        w = 1 + (wav - 1) * h[k]
        v[k, :, 0] = ell[k, 2] * sx * w
        v[k, :, 1] = ell[k, 0]
        v[k, :, 2] = ell[k, 1] + ell[k, 3] * cz * w
        vt[k, :, 0] = ell_t[k, 2] * sx * w
        vt[k, :, 1] = ell_t[k, 0]
        vt[k, :, 2] = ell_t[k, 1] + ell_t[k, 3] * cz * w
    uv = np.zeros((R, ncol, 2), np.float32)
    uv[..., 0] = (np.arange(ncol) / max(ncol - 1, 1) * DRAPE_U)[None]
    uv[..., 1] = np.linspace(0, 1, R)[:, None]
    faces = []
    for k in range(R - 1):
        for j in range(ncol - 1):
            j1 = j + 1
            a, c, d, e = k * ncol + j, k * ncol + j1, (k + 1) * ncol + j, (k + 1) * ncol + j1
            faces += [(a, d, c), (c, d, e)]
    faces = np.asarray(faces, np.int64)
    # Skin weights: the nearest body vertex at the top ring, blended towards the thighs.
    J = len(b.joint_names)
    top_idx = _nearest(verts, v[0])
    Wt = np.zeros((ncol, J), np.float32)
    for j, vi in enumerate(top_idx):
        np.add.at(Wt[j], b.skin_j[vi], b.skin_w[vi])
    Wt /= Wt.sum(1, keepdims=True)
    legL, legR = b.jidx["upperleg01.L"], b.jidx["upperleg01.R"]
    side = np.clip(0.5 + 0.5 * (sx * 1.6), 0, 1)  # +x: the person's left
    W = np.zeros((R, ncol, J), np.float32)
    for k in range(R):
        a = 0.75 * min(1.0, h[k] * 1.3) ** 1.2
        W[k] = (1 - a) * Wt
        W[k, :, legL] += a * side
        W[k, :, legR] += a * (1 - side)
    # Labels of the drape's texels: the body texel nearest to each (template positions).
    # (looked up on a half-resolution grid, then doubled: the query is most of the cost)
    E = EXTRA_ROWS // 2
    cols = int(round(DRAPE_U * T)) // 2
    ui = (np.arange(cols) + 0.5) / cols * (ncol - 1)
    vi = (np.arange(E) + 0.5) / E * (R - 1)
    k0 = np.minimum(vi.astype(int), R - 2)
    j0 = np.minimum(ui.astype(int), ncol - 2)
    fk = (vi - k0)[:, None, None]
    fj = (ui - j0)[None, :, None]
    p = (vt[k0][:, j0] * (1 - fk) * (1 - fj) + vt[k0 + 1][:, j0] * fk * (1 - fj)
         + vt[k0][:, j0 + 1] * (1 - fk) * fj + vt[k0 + 1][:, j0 + 1] * fk * fj)
    _, near = b.drape_tree.query(p.reshape(-1, 3), eps=0.5)  # approximate: a texel or so off
    lab = texel_labels_full[b.drape_tree_texels[near]].reshape(E, cols).repeat(2, 0).repeat(2, 1)
    # The drape is cloth: a nearest texel of skin or hair (below a short skirt's hem, long
    # hair) takes the garment's own label; a coat's skirt is all coat.
    if o.coat:
        lab[~np.isin(lab, [O.COAT, O.COAT_TRIM])] = O.COAT
    else:
        cloth = np.r_[GARMENT_LABELS, BOTTOM_LABELS]
        lab[~np.isin(lab, cloth)] = O.TOP if o.dress else O.BOTTOM
    return v.reshape(-1, 3), faces, uv.reshape(-1, 2), W.reshape(-1, J), lab


def _nearest(points: np.ndarray, query: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    return cKDTree(points).query(query)[1]


def _tube(path: np.ndarray, radius: np.ndarray, seg: int = 8):
    """A closed tube along path [n,3] -> (verts [n*seg,3], faces, (ring, angle) params)."""
    n = len(path)
    t = np.gradient(path, axis=0)
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-9
    ref = np.array([1.0, 0.0, 0.0])
    v = np.zeros((n, seg, 3), np.float32)
    for i in range(n):
        a = np.cross(t[i], ref)
        a /= np.linalg.norm(a) + 1e-9
        c = np.cross(t[i], a)
        ang = 2 * np.pi * np.arange(seg) / seg
        v[i] = path[i] + radius[i] * (np.cos(ang)[:, None] * a + np.sin(ang)[:, None] * c)
    faces = []
    for i in range(n - 1):
        for j in range(seg):
            j1 = (j + 1) % seg
            a0, a1, b0, b1 = i * seg + j, i * seg + j1, (i + 1) * seg + j, (i + 1) * seg + j1
            faces += [(a0, b0, a1), (a1, b0, b1)]
    return v.reshape(-1, 3), np.asarray(faces, np.int64)


def build_clothed(b, rng, o: O.Outfit, lab: np.ndarray, rest_v: np.ndarray, heads: np.ndarray) -> ClothedRest:
    """The clothed surface (rest pose) for painted labels `lab` (covered texels)."""
    T = b.texture_size
    V = len(rest_v)
    full = np.full(T * T, O.SKIN, np.int16)
    full[b.cov_idx] = lab
    full[b.gut_dst] = full[b.gut_src]
    vlab = full[b.vertex_texel]
    normals = rest_normals(b, rest_v)
    off = body_offsets(b, rng, o, vlab, normals)
    verts = rest_v + normals * off[:, None]
    E = EXTRA_ROWS
    extra_labels = np.full((E, T), O.SKIN, np.int16)
    extra_parse = np.zeros((E, T), np.uint8)
    parse = O.parse_classes(o)
    ex_v, ex_f, ex_uv, ex_w, ex_kind = [], [], [], [], []
    n_ex = 0

    def add(vv, ff, uu, ww, kind):
        nonlocal n_ex
        ex_v.append(vv)
        ex_f.append(ff + n_ex)
        ex_uv.append(uu)
        ex_w.append(ww)
        ex_kind.append(np.full(len(ff), kind, np.uint8))
        n_ex += len(vv)

    J = len(b.joint_names)
    if o.bottom == "skirt" or o.coat:
        dv, df, duv, dw, dlab = _drape(b, rng, o, verts, full, T)
        add(dv, df, duv, dw, 1)
        cols = dlab.shape[1]
        extra_labels[:, :cols] = dlab
        extra_parse[:, :cols] = parse[dlab]
    head = heads[b.jidx["head"]]
    if o.hair == "ponytail":
        L = rng.uniform(0.12, 0.3)
        s = np.linspace(0, 1, 8)[:, None]
        start = head + np.array([0.0, 0.06, -0.1], np.float32)
        path = start + s * np.array([0.0, -L, -0.03]) + (s * (1 - s)) * np.array([0.0, 0.03, -0.06])
        radius = 0.028 * (1 - 0.6 * s[:, 0]) + 0.004
        pv, pf = _tube(path, radius)
        n = len(pv)
        puv = np.zeros((n, 2), np.float32)
        ring = np.repeat(np.arange(8), 8)
        puv[:, 0] = PONY_U[0] + (np.tile(np.arange(8), 8) + 0.5) / 8 * (PONY_U[1] - PONY_U[0])
        puv[:, 1] = (ring + 0.5) / 8
        pw = np.zeros((n, J), np.float32)
        pw[:, b.jidx["head"]] = 1.0
        add(pv, pf, puv, pw, 2)
        c0, c1 = int(PONY_U[0] * T), int(PONY_U[1] * T)
        extra_labels[:, c0:c1] = O.HAIR
        extra_parse[:, c0:c1] = O.P_HAIR
    if o.cap:
        tv = b.tmpl_v
        front = (b.vpart == _P["head"]) & (np.abs(tv[:, 0]) < 0.01) & (tv[:, 1] > b.heads0["eye.L"][1] + 0.03)
        cand = np.flatnonzero(front)
        fv = cand[np.argmax(tv[cand, 2])] if len(cand) else int(np.argmax(tv[:, 2]))
        root = verts[fv] + np.array([0.0, -0.005, -0.01], np.float32)
        ang = np.linspace(-np.pi / 2, np.pi / 2, 11)
        depth = rng.uniform(0.055, 0.075)
        outer = root + np.stack([0.09 * np.sin(ang), -0.02 * np.cos(ang), depth * np.cos(ang)], 1)
        inner = root + np.stack([0.085 * np.sin(ang), np.zeros_like(ang), -0.01 * np.ones_like(ang) + 0.01 * np.cos(ang)], 1)
        bv = np.concatenate([inner, outer]).astype(np.float32)
        bf = []
        for i in range(10):
            bf += [(i, i + 11, i + 1), (i + 1, i + 11, i + 12)]
        buv = np.zeros((22, 2), np.float32)
        buv[:, 0] = BRIM_U[0] + np.r_[np.linspace(0.05, 0.95, 11), np.linspace(0.05, 0.95, 11)] * (BRIM_U[1] - BRIM_U[0])
        buv[:, 1] = np.r_[np.full(11, 0.2), np.full(11, 0.8)]
        bw = np.zeros((22, J), np.float32)
        bw[:, b.jidx["head"]] = 1.0
        add(bv, np.asarray(bf, np.int64), buv, bw, 3)
        c0, c1 = int(BRIM_U[0] * T), int(BRIM_U[1] * T)
        extra_labels[:, c0:c1] = O.HAT
        extra_parse[:, c0:c1] = O.P_HAT
    # Assemble: model layout and render layout.
    K = b.skin_j.shape[1]
    Vs = len(b.src)
    rows = T + E
    body_uv = b.uvs.copy()
    body_uv[:, 1] = body_uv[:, 1] * T / rows
    tex_parse = _texel_parse_full(b, full, o)
    uv_c = b.uvs[b.faces].mean(1)
    fr = np.clip((uv_c[:, 1] * T).astype(np.int64), 0, T - 1)
    fc = np.clip((uv_c[:, 0] * T).astype(np.int64), 0, T - 1)
    face_parse = [tex_parse[fr * T + fc]]
    face_garment = [np.zeros(len(b.faces), np.uint8)]
    if ex_v:
        xv = np.concatenate(ex_v).astype(np.float32)
        xf = np.concatenate(ex_f)
        xuv = np.concatenate(ex_uv).astype(np.float32)
        xuv[:, 1] = (T + xuv[:, 1] * (E - 1)) / rows
        xw = np.concatenate(ex_w)
        kind = np.concatenate(ex_kind)
        order = np.argsort(-xw, axis=1)[:, :K]
        sj = order.astype(np.int32)
        sw = np.take_along_axis(xw, order, 1)
        sw /= sw.sum(1, keepdims=True)
        verts_all = np.concatenate([verts, xv])
        skin_j = np.concatenate([b.skin_j, sj])
        skin_w = np.concatenate([b.skin_w, sw.astype(np.float32)])
        model_faces = np.concatenate([b.model_faces, xf + V])
        render_index = np.concatenate([b.src, V + np.arange(len(xv))])
        faces = np.concatenate([b.faces, (xf + Vs).astype(np.int32)])
        uvs = np.concatenate([body_uv, xuv])
        xc = xuv[xf].mean(1)
        er = np.clip((xc[:, 1] * rows).astype(np.int64) - T, 0, E - 1)
        ec = np.clip((xc[:, 0] * T).astype(np.int64), 0, T - 1)
        face_parse.append(extra_parse[er, ec])
        face_garment.append(kind)
    else:
        verts_all, skin_j, skin_w = verts, b.skin_j, b.skin_w
        model_faces, render_index, faces, uvs = b.model_faces, b.src, b.faces, body_uv
    return ClothedRest(verts=np.ascontiguousarray(verts_all, np.float32), skin_j=np.ascontiguousarray(skin_j, np.int32),
                       skin_w=np.ascontiguousarray(skin_w, np.float32), model_faces=np.asarray(model_faces, np.int64),
                       render_index=np.asarray(render_index, np.int64), faces=np.ascontiguousarray(faces, np.int32),
                       uvs=np.ascontiguousarray(uvs, np.float32), face_parse=np.concatenate(face_parse),
                       face_garment=np.concatenate(face_garment), extra_labels=extra_labels,
                       extra_parse=extra_parse, offsets=off)


def _texel_parse_full(b, full_labels: np.ndarray, o: O.Outfit) -> np.ndarray:
    """Part label of every texel of the T x T atlas (gutters included)."""
    p = O.parse_classes(o)[np.clip(full_labels, 0, O.N_LABELS - 1)]
    head = np.zeros(len(full_labels), bool)
    head[b.cov_idx] = b.is_head
    head[b.gut_dst] = head[b.gut_src]
    p[(full_labels == O.SKIN) & head] = O.P_FACE
    return p


def parse_atlas(b, clothed: ClothedRest, lab: np.ndarray, o: O.Outfit) -> np.ndarray:
    """Part labels of the whole render texture [(T + E), T] uint8 (nearest look-ups)."""
    T = b.texture_size
    full = np.full(T * T, O.SKIN, np.int16)
    full[b.cov_idx] = lab
    full[b.gut_dst] = full[b.gut_src]
    top = _texel_parse_full(b, full, o).reshape(T, T)
    return np.concatenate([top, clothed.extra_parse], 0)
