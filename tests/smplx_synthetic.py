"""A small synthetic stand-in for SMPLX_NEUTRAL.npz (the real file cannot be shipped).

It has the keys, dtypes and array layout the `smplx` package reads from the real file
(`smplx.SMPLX.__init__`): f, v_template, shapedirs [V,3,400] (300 shape + 100 expression
directions, the newer layout), posedirs [V,3,486], J_regressor [55,V], kintree_table
[2,55], weights [V,55], hands_{components,mean,coeffs}{l,r}, lmk_* and dynamic_lmk_*, and
the UV layout vt / ft. The body is a coarse person (about 600 vertices) made of capped
tubes around a SMPL-X-like skeleton of 55 joints in SMPL-X axes (y up, facing +z, the
person's left on +x, T-pose): torso, head with nose, ears and eyes, arms, hands with five
fingers, legs and feet. Each joint is regressed as the centroid of a ring of vertices
centred on it, skin weights are rigid or 50/50 blends, and every tube has its own UV chart
with a seam where the tube closes (so `vt` has more entries than `v_template`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

BODY = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist",
]
FINGERS = ["index", "middle", "pinky", "ring", "thumb"]
NAMES = BODY + ["jaw", "left_eye_smplhf", "right_eye_smplhf"] + [
    f"{side}_{f}{i}" for side in ("left", "right") for f in FINGERS for i in (1, 2, 3)
]
PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15]
for _wrist in (20, 21):
    for _f in range(5):
        _base = len(PARENTS)
        PARENTS += [_wrist, _base, _base + 1]
assert len(NAMES) == len(PARENTS) == 55

# Left-side and midline joint positions (metres, SMPL-X template-like); right = mirrored x.
_LEFT = {
    "pelvis": (0.0, -0.35, 0.01), "spine1": (0.0, -0.24, -0.01), "spine2": (0.0, -0.11, 0.0),
    "spine3": (0.0, -0.05, 0.01), "neck": (0.0, 0.11, -0.02), "head": (0.0, 0.27, 0.0),
    "jaw": (0.0, 0.22, 0.0),
    "left_hip": (0.06, -0.45, -0.01), "left_knee": (0.10, -0.83, 0.0),
    "left_ankle": (0.08, -1.25, -0.04), "left_foot": (0.10, -1.30, 0.09),
    "left_collar": (0.05, 0.03, -0.01), "left_shoulder": (0.17, 0.08, -0.02),
    "left_elbow": (0.42, 0.03, -0.05), "left_wrist": (0.67, 0.03, -0.06),
    "left_eye_smplhf": (0.032, 0.31, 0.085),
}
# Finger joint offsets from the left wrist (1st, 2nd, 3rd joint; the tip is 3rd + step).
_FINGER_OFFSETS = {
    "index": ((0.095, 0.0, 0.03), (0.035, 0, 0)), "middle": ((0.10, 0.0, 0.01), (0.037, 0, 0)),
    "ring": ((0.095, 0.0, -0.01), (0.034, 0, 0)), "pinky": ((0.085, 0.0, -0.03), (0.027, 0, 0)),
    "thumb": ((0.025, -0.015, 0.04), (0.028, -0.006, 0.022)),
}


def joint_positions() -> np.ndarray:
    """[55,3] rest joint positions of the synthetic body."""
    pos = {}
    for name, p in _LEFT.items():
        pos[name] = np.array(p, np.float64)
        if name.startswith("left_"):
            pos["right_" + name[5:]] = pos[name] * (-1, 1, 1)
    for f, (first, step) in _FINGER_OFFSETS.items():
        for i in range(3):
            pos[f"left_{f}{i + 1}"] = pos["left_wrist"] + np.array(first) + i * np.array(step)
            pos[f"right_{f}{i + 1}"] = pos[f"left_{f}{i + 1}"] * (-1, 1, 1)
    return np.stack([pos[n] for n in NAMES])


class _Builder:
    """Capped tubes with outward counter-clockwise faces and one UV chart per tube."""

    def __init__(self, n_charts: int):
        self.v: list[np.ndarray] = []
        self.w: list[dict[int, float]] = []
        self.vt: list[tuple[float, float]] = []
        self.f: list[tuple[int, int, int]] = []
        self.ft: list[tuple[int, int, int]] = []
        self.groups: dict[int, list[int]] = {}  # joint -> vertices whose centroid is the joint
        self.grid = int(np.ceil(np.sqrt(n_charts)))
        self.chart = 0

    def _add_v(self, p, weights) -> int:
        self.v.append(np.asarray(p, np.float64))
        self.w.append(weights)
        return len(self.v) - 1

    def _add_vt(self, u, v) -> int:
        self.vt.append((float(u), float(v)))
        return len(self.vt) - 1

    def tube(self, centers, radii, weights, around: int = 8, regress: dict[int, int] | None = None,
             axis=None):
        """Rings around a polyline of centres; radii[i] = (r1, r2) on the ring's two axes.

        weights[i]: {joint: weight} for ring i; regress: {ring index: joint} makes that
        ring's vertices the regressor group of the joint (the ring is centred on it).
        """
        c = np.asarray(centers, np.float64)
        d = np.asarray(axis, np.float64) if axis is not None else c[-1] - c[0]
        d = d / np.linalg.norm(d)
        helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
        e1 = np.cross(helper, d)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(d, e1)  # e1 x e2 = d: right-handed ring frame
        R = len(c)
        theta = 2 * np.pi * np.arange(around) / around
        # This tube's UV chart: a cell of the grid; the tube in its top 70 %, caps below.
        gx, gy = self.chart % self.grid, self.chart // self.grid
        self.chart += 1
        cell = 1.0 / self.grid
        u0, v0 = gx * cell + 0.05 * cell, gy * cell + 0.05 * cell
        size = 0.9 * cell
        ring = np.empty((R, around), np.int64)
        for i in range(R):
            r1, r2 = radii[i]
            for k in range(around):
                p = c[i] + r1 * np.cos(theta[k]) * e1 + r2 * np.sin(theta[k]) * e2
                ring[i, k] = self._add_v(p, weights[i])
        for i, j in (regress or {}).items():
            self.groups[j] = ring[i].tolist()
        # UVs (OBJ convention: v grows upward): k = around repeats k = 0 at u = 1 (the seam).
        uv = np.empty((R, around + 1), np.int64)
        for i in range(R):
            for k in range(around + 1):
                uv[i, k] = self._add_vt(u0 + size * k / around, v0 + 0.3 * size + 0.7 * size * i / max(R - 1, 1))
        for i in range(R - 1):
            for k in range(around):
                k1 = (k + 1) % around
                a, b, cc, dd = ring[i, k], ring[i, k1], ring[i + 1, k1], ring[i + 1, k]
                ta, tb, tc, td = uv[i, k], uv[i, k + 1], uv[i + 1, k + 1], uv[i + 1, k]
                self.f += [(a, b, cc), (a, cc, dd)]
                self.ft += [(ta, tb, tc), (ta, tc, td)]
        # Caps: a centre vertex each, with its own small disc of UVs.
        for end, (i, sign) in enumerate(((0, -1), (R - 1, 1))):
            centre = self._add_v(c[i], weights[i])
            cu, cv = u0 + size * (0.25 + 0.5 * end), v0 + 0.14 * size
            tcen = self._add_vt(cu, cv)
            rim = [self._add_vt(cu + 0.12 * size * np.cos(t), cv + 0.12 * size * np.sin(t)) for t in theta]
            for k in range(around):
                k1 = (k + 1) % around
                if sign > 0:  # facing +d: counter-clockwise about d
                    self.f.append((centre, ring[i, k], ring[i, k1]))
                    self.ft.append((tcen, rim[k], rim[k1]))
                else:
                    self.f.append((centre, ring[i, k1], ring[i, k]))
                    self.ft.append((tcen, rim[k1], rim[k]))


def build_mesh() -> dict[str, np.ndarray]:
    """Vertices, faces, UVs, skin weights and joint regressor of the synthetic body."""
    J = joint_positions()
    ix = {n: i for i, n in enumerate(NAMES)}

    def P(name):
        return J[ix[name]]

    def w(*pairs):
        return {ix[n]: float(x) for n, x in pairs}

    def one(name):
        return w((name, 1.0))

    b = _Builder(n_charts=31)
    # Torso: pelvis up to the neck, each ring centred on its joint.
    chain = ["pelvis", "spine1", "spine2", "spine3", "neck"]
    b.tube([P("pelvis") - (0, 0.1, 0)] + [P(n) for n in chain],
           [(0.15, 0.10), (0.16, 0.11), (0.15, 0.10), (0.15, 0.10), (0.17, 0.11), (0.06, 0.06)],
           [one("pelvis"), one("pelvis"), w(("spine1", 0.5), ("pelvis", 0.5)), w(("spine2", 0.5), ("spine1", 0.5)),
            w(("spine3", 0.5), ("spine2", 0.5)), w(("neck", 0.5), ("spine3", 0.5))],
           regress={1: ix["pelvis"], 2: ix["spine1"], 3: ix["spine2"], 4: ix["spine3"], 5: ix["neck"]},
           axis=(0, 1, 0))
    # Head: neck ring, jaw ring, head ring, crown.
    head = P("head")
    b.tube([P("neck") + (0, 0.02, 0), P("jaw"), head, head + (0, 0.06, 0), head + (0, 0.13, 0)],
           [(0.055, 0.055), (0.075, 0.085), (0.085, 0.095), (0.085, 0.095), (0.04, 0.05)],
           [w(("neck", 1.0)), one("jaw"), one("head"), one("head"), one("head")],
           regress={1: ix["jaw"], 2: ix["head"]}, axis=(0, 1, 0))
    eye_y = P("left_eye_smplhf")[1]
    # Nose (in front of the face, below the eyes), ears (beside the head), eyes.
    nose = np.array([0.0, eye_y - 0.04, head[2] + 0.095])
    b.tube([nose - (0, 0, 0.02), nose + (0, 0, 0.02)], [(0.012, 0.012)] * 2, [one("head")] * 2, around=4)
    for side in ("left", "right"):
        s = 1.0 if side == "left" else -1.0
        ear = np.array([s * 0.09, eye_y - 0.02, head[2] - 0.005])
        b.tube([ear - (s * 0.012, 0, 0), ear + (s * 0.012, 0, 0)], [(0.02, 0.012)] * 2, [one("head")] * 2,
               around=4, axis=(s, 0, 0))
        eye = P(f"{side}_eye_smplhf")
        b.tube([eye - (0, 0, 0.01), eye, eye + (0, 0, 0.01)], [(0.012, 0.012)] * 3,
               [one(f"{side}_eye_smplhf")] * 3, around=4, regress={1: ix[f"{side}_eye_smplhf"]})
    for side in ("left", "right"):
        s = 1.0 if side == "left" else -1.0

        def n(x, side=side):
            return f"{side}_{x}"

        # Arm: collar, shoulder, mid upper arm, elbow, mid forearm, wrist.
        pts = [P(n("collar")), P(n("shoulder")), (P(n("shoulder")) + P(n("elbow"))) / 2, P(n("elbow")),
               (P(n("elbow")) + P(n("wrist"))) / 2, P(n("wrist"))]
        b.tube(pts, [(0.05, 0.05), (0.055, 0.055), (0.05, 0.05), (0.042, 0.042), (0.038, 0.038), (0.03, 0.03)],
               [one(n("collar")), w((n("shoulder"), 0.5), (n("collar"), 0.5)), one(n("shoulder")),
                w((n("elbow"), 0.5), (n("shoulder"), 0.5)), one(n("elbow")), w((n("wrist"), 0.5), (n("elbow"), 0.5))],
               regress={0: ix[n("collar")], 1: ix[n("shoulder")], 3: ix[n("elbow")], 5: ix[n("wrist")]})
        # Palm: from the wrist to the knuckles, flat.
        wr = P(n("wrist"))
        b.tube([wr + (s * 0.01, 0, 0), wr + (s * 0.085, 0, 0)], [(0.015, 0.045)] * 2, [one(n("wrist"))] * 2,
               around=4, axis=(s, 0, 0))
        for f in FINGERS:
            ch = [P(n(f"{f}{i}")) for i in (1, 2, 3)]
            tip = ch[2] + (ch[2] - ch[1]) * 0.8
            b.tube(ch + [tip], [(0.009, 0.009)] * 3 + [(0.006, 0.006)],
                   [one(n(f"{f}1")), one(n(f"{f}2")), one(n(f"{f}3")), one(n(f"{f}3"))], around=4,
                   regress={0: ix[n(f"{f}1")], 1: ix[n(f"{f}2")], 2: ix[n(f"{f}3")]})
        # Leg: hip, mid thigh, knee, mid shin, ankle.
        pts = [P(n("hip")), (P(n("hip")) + P(n("knee"))) / 2, P(n("knee")), (P(n("knee")) + P(n("ankle"))) / 2,
               P(n("ankle"))]
        b.tube(pts, [(0.08, 0.08), (0.07, 0.07), (0.05, 0.05), (0.045, 0.045), (0.035, 0.035)],
               [w((n("hip"), 0.5), ("pelvis", 0.5)), one(n("hip")), w((n("knee"), 0.5), (n("hip"), 0.5)),
                one(n("knee")), w((n("ankle"), 0.5), (n("knee"), 0.5))],
               regress={0: ix[n("hip")], 2: ix[n("knee")], 4: ix[n("ankle")]})
        # Foot: heel to toe tip along +z, the ring at the foot joint centred on it.
        ft = P(n("foot"))
        heel = np.array([ft[0], ft[1], P(n("ankle"))[2] - 0.06])
        b.tube([heel, (heel + ft) / 2, ft, ft + (0, 0, 0.08)],
               [(0.035, 0.03), (0.04, 0.035), (0.045, 0.03), (0.03, 0.015)],
               [one(n("ankle")), one(n("ankle")), w((n("foot"), 0.5), (n("ankle"), 0.5)), one(n("foot"))],
               around=6, regress={2: ix[n("foot")]}, axis=(0, 0, 1))
    V = len(b.v)
    weights = np.zeros((V, 55))
    for i, d in enumerate(b.w):
        for j, x in d.items():
            weights[i, j] = x
    reg = np.zeros((55, V))
    for j, verts in b.groups.items():
        reg[j, verts] = 1.0 / len(verts)
    assert (reg.sum(1) > 0).all(), [NAMES[j] for j in np.flatnonzero(reg.sum(1) == 0)]
    return {
        "v": np.stack(b.v), "f": np.asarray(b.f), "vt": np.asarray(b.vt), "ft": np.asarray(b.ft),
        "weights": weights, "J_regressor": reg,
    }


def write_synthetic_smplx(path: str | Path, drop: tuple[str, ...] = (), **overrides) -> Path:
    """Write the synthetic SMPLX_NEUTRAL.npz to `path`; `drop` leaves keys out,
    `overrides` replaces arrays (to make malformed files)."""
    m = build_mesh()
    v = m["v"]
    V = len(v)
    rng = np.random.default_rng(0)
    centre = v.mean(0)
    shapedirs = np.zeros((V, 3, 400))
    shapedirs[:, :, 0] = 0.03 * (v - centre)  # overall size
    shapedirs[:, 0, 1] = 0.04 * (v[:, 0] - centre[0])  # width
    shapedirs[:, 2, 2] = 0.05 * (v[:, 2] - centre[2])  # depth
    shapedirs[:, 1, 3] = 0.02 * (v[:, 1] - centre[1])  # height
    shapedirs[:, :, 4:10] = 0.002 * rng.standard_normal((V, 3, 6))
    shapedirs[:, :, 300:310] = 0.001 * rng.standard_normal((V, 3, 10))  # expressions
    kintree = np.stack([np.array(PARENTS, np.int64), np.arange(55)])
    kintree[0, 0] = 4294967295  # as in the released files: the root's parent is uint32 -1
    n_lmk, n_dyn = 51, 79
    arrays = {
        "f": m["f"].astype(np.uint32),
        "ft": m["ft"].astype(np.uint32),
        "vt": m["vt"].astype(np.float64),
        "v_template": v.astype(np.float64),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((V, 3, 54 * 9)),
        "J_regressor": m["J_regressor"],
        "kintree_table": kintree,
        "weights": m["weights"],
        "hands_componentsl": np.eye(45),
        "hands_componentsr": np.eye(45),
        "hands_meanl": np.zeros(45),
        "hands_meanr": np.zeros(45),
        "hands_coeffsl": np.zeros((4, 45)),
        "hands_coeffsr": np.zeros((4, 45)),
        "lmk_faces_idx": np.arange(n_lmk, dtype=np.int64) % len(m["f"]),
        "lmk_bary_coords": np.full((n_lmk, 3), 1.0 / 3),
        "dynamic_lmk_faces_idx": (np.arange(n_dyn * 17, dtype=np.int64) % len(m["f"])).reshape(n_dyn, 17),
        "dynamic_lmk_bary_coords": np.full((n_dyn, 17, 3), 1.0 / 3),
    }
    for k in drop:
        arrays.pop(k)
    arrays.update(overrides)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path
