"""Random body poses for synthetic people: standing and beyond (sitting, kneeling, crouching,
jumping, kicking).

``random_pose(ctx, rng, kind=None) -> (pose [J, 3] float32, info)``: world-aligned local
axis-angle rotations, parents first (the convention of ``models/body/lbs.py``), for a
skeleton described by ``ctx`` (a ``SynthGenerator`` or anything with ``joint_names``,
``jidx`` (name -> index), ``parents``, ``rest_dirs`` (unit rest directions of
'upperarm01.S', 'lowerarm01.S', 'upperleg01.S', 'lowerleg01.S') and ``heads0`` (rest
joint heads by name)). ``info`` is JSON-ready: ``{"kind": ..., "variant": ..., ...}``.

Axes (glTF): y up, the person faces +z, x is the person's left. Limbs are posed by world
directions of their bones (an arm or leg bone points where it is told, whatever the
torso does; gravity is world-aligned too), then turned into local rotations with the
smallest rotation from the rest direction. Knees never bend backwards (a shin in front of
its thigh's straight line is brought back to straight); feet stay roughly flat on the
ground where the leg stands on it (within the ankle's range: heels come up in a deep
crouch), relaxed and pointed in the air, lying on their top behind a kneeling knee. The
root is never rotated (the camera framing and the fit assume an upright root): leaning
bodies lean through the spine joints, with the neck and head turned back up to look ahead.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation as Rot

from models.render.rotations import rotation_between

#: Pose kinds and their draw probabilities when no kind is asked for (they sum to 1).
#: sitting + kneeling + crouching + jumping + kicking = 30 % of people are not standing.
POSE_PROBABILITIES = {
    "apose": 0.08,  # Anny's rest A-pose, slightly varied
    "standing": 0.22,  # arms down, one knee a little bent
    "walking": 0.18,  # a stride with arms swinging
    "gesture": 0.12,  # one or both arms do something (GESTURES), legs stand
    "arms_raised": 0.10,  # one or both arms above the head, hands open or on the head
    "sitting": 0.08,  # on an unseen stool, arms on the thighs or hanging
    "kneeling": 0.06,  # on one or both knees
    "crouching": 0.06,  # deep knee bend, torso leaning forward
    "jumping": 0.06,  # star jump, tuck jump or stride leap
    "kicking": 0.04,  # one leg kicks forward or sideways
}
POSE_KINDS = tuple(POSE_PROBABILITIES)
#: The kinds where the person does not stand on straight legs.
NOT_STANDING = ("sitting", "kneeling", "crouching", "jumping", "kicking")
GESTURES = ("wave", "arms_up", "t_pose", "point", "hands_on_hips", "hand_to_head")
VARIANTS = {
    "arms_raised": ("both_up", "one_up", "hands_on_head", "hand_on_head"),
    "sitting": ("hands_on_thighs", "arms_hanging"),
    "kneeling": ("both_knees", "one_knee"),
    "crouching": ("arms_forward", "hands_on_knees"),
    "jumping": ("star", "tuck", "stride"),
    "kicking": ("front", "side"),
}
SIDES = (("L", 1.0), ("R", -1.0))
#: A whole-body lean is spread over these spine joints (fractions of the lean angle).
SPINE_LEAN = (("spine04", 0.2), ("spine03", 0.3), ("spine02", 0.25), ("spine01", 0.25))
#: Of a forward lean, the neck and the head each turn this fraction back (eyes ahead).
LOOK_AHEAD = 0.3
#: Ankle range (degrees) a flat foot may use: toes up (dorsiflexion), toes down.
ANKLE_DORSIFLEX_DEG = 30.0
ANKLE_PLANTARFLEX_DEG = 45.0
#: A knee straighter than this (degrees past the rest knee's bend) is hyperextended.
KNEE_STRAIGHT_MARGIN_DEG = 3.0
MAX_KNEE_FLEX_DEG = 150.0


def _rv(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    """Rotation matrix from an axis-angle in degrees (world axes)."""
    return Rot.from_rotvec(np.radians(np.array([x, y, z], float))).as_matrix()


def _unit(*v) -> np.ndarray:
    v = np.asarray(v if len(v) > 1 else v[0], float)
    return v / np.linalg.norm(v)


def arm_dir(abduct_deg: float, forward_deg: float, side: float) -> np.ndarray:
    """Direction of a limb hanging down (0) rotated outward and forward (the generator's)."""
    a, f = np.radians(abduct_deg), np.radians(forward_deg)
    return _unit(side * np.sin(a) * np.cos(f), -np.cos(a) * np.cos(f), np.sin(f))


def swing(forward_deg: float, out_deg: float, side: float) -> np.ndarray:
    """Direction of a limb hanging down swung `forward_deg` forward in the body's sagittal
    plane (90: horizontal forward, 180: up, negative: backward), then tilted `out_deg`
    outward (towards the person's left for side +1). Unlike ``arm_dir`` the outward tilt
    keeps its side past 90 degrees forward (a crouch's knees stay apart)."""
    f, o = np.radians(forward_deg), np.radians(out_deg)
    return _unit(side * np.sin(o), -np.cos(f) * np.cos(o), np.sin(f) * np.cos(o))


class _Pose:
    """A pose under construction: local rotations, bone direction targets, feet."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.names = list(ctx.joint_names)
        self.jidx = ctx.jidx
        self.parents = np.asarray(ctx.parents, np.int64)
        self.local = np.tile(np.eye(3), (len(self.names), 1, 1))
        self.targets: dict[str, np.ndarray] = {}
        self.feet: dict[str, tuple[str, float]] = {}  # side -> ("flat", toe-out) | ("flex", deg)
        self.lean_deg = (0.0, 0.0)

    def has(self, name: str) -> bool:
        return name in self.jidx

    def turn(self, name: str, x: float = 0.0, y: float = 0.0, z: float = 0.0) -> None:
        """Compose a world-axis rotation (degrees) onto a joint's local rotation."""
        if self.has(name):
            j = self.jidx[name]
            self.local[j] = _rv(x, y, z) @ self.local[j]

    def lean(self, forward_deg: float, left_deg: float = 0.0, twist_deg: float = 0.0) -> None:
        """Lean the upper body forward (negative: back), to the person's left (negative:
        right) and twist it (about y) through the spine; the neck and head look ahead."""
        for name, w in SPINE_LEAN:
            self.turn(name, forward_deg * w, twist_deg * w, -left_deg * w)
        self.turn("neck01", -LOOK_AHEAD * forward_deg, 0.0, LOOK_AHEAD * left_deg)
        self.turn("head", -LOOK_AHEAD * forward_deg, 0.0, LOOK_AHEAD * left_deg)
        self.lean_deg = (forward_deg, left_deg)

    def leg(self, s: str, thigh: np.ndarray, shin: np.ndarray, foot: tuple[str, float]) -> None:
        self.targets[f"upperleg01.{s}"] = np.asarray(thigh, float)
        self.targets[f"lowerleg01.{s}"] = np.asarray(shin, float)
        self.feet[s] = foot

    def bent(self, s: str, thigh: np.ndarray, knee_deg: float) -> np.ndarray:
        """The shin direction of a knee bent `knee_deg` in the thigh's own hinge plane."""
        rest = self.ctx.rest_dirs[f"upperleg01.{s}"]
        return rotation_between(rest, np.asarray(thigh, float)) @ _rv(knee_deg) @ rest

    def arm(self, s: str, upper: np.ndarray, fore: np.ndarray) -> None:
        self.targets[f"upperarm01.{s}"] = np.asarray(upper, float)
        self.targets[f"lowerarm01.{s}"] = np.asarray(fore, float)

    # ---- kinematics ------------------------------------------------------------------
    def _globals(self) -> tuple[np.ndarray, np.ndarray]:
        """-> local [J,3,3] with the targets and feet applied, global rotations [J,3,3]."""
        local = self.local.copy()
        J = len(self.names)
        G = np.empty((J, 3, 3))
        for j in range(J):
            name = self.names[j]
            p = self.parents[j]
            Gp = np.eye(3) if p < 0 else G[p]
            if name in self.targets:
                Gt = rotation_between(self.ctx.rest_dirs[name], self.targets[name])
                local[j] = Gp.T @ Gt
                if name.startswith("lowerleg01."):
                    local[j] = self._knee(local[j], name[-1])
            elif name.startswith("foot.") and name[-1] in self.feet:
                local[j] = self._foot(Gp, name[-1])
            G[j] = Gp @ local[j]
        return local, G

    def _knee(self, L: np.ndarray, s: str) -> np.ndarray:
        """A knee's local rotation without hyperextension or more than the knee's flexion:
        flexion is about the rest lateral axis x (+: the shin goes back)."""
        r = Rot.from_matrix(L).as_rotvec()
        lo = -np.radians(KNEE_STRAIGHT_MARGIN_DEG)
        r[0] = np.clip(r[0], lo, np.radians(MAX_KNEE_FLEX_DEG))
        r[1:] = np.clip(r[1:], -np.radians(25.0), np.radians(25.0))
        return Rot.from_rotvec(r).as_matrix()

    def _foot(self, Gp: np.ndarray, s: str) -> np.ndarray:
        mode, deg = self.feet[s]
        if mode == "flex":  # relative to the shin: + points the toes
            return _rv(deg)
        side = 1.0 if s == "L" else -1.0
        want = _rv(0.0, side * deg, 0.0)  # flat on the ground, toes out by deg
        r = Rot.from_matrix(Gp.T @ want).as_rotvec()
        r[0] = np.clip(r[0], -np.radians(ANKLE_DORSIFLEX_DEG), np.radians(ANKLE_PLANTARFLEX_DEG))
        r[1] = np.clip(r[1], -np.radians(30.0), np.radians(30.0))
        r[2] = np.clip(r[2], -np.radians(15.0), np.radians(15.0))
        return Rot.from_rotvec(r).as_matrix()

    def positions(self) -> dict[str, np.ndarray]:
        """Joint heads of the pose so far on the rest (template) skeleton, by name."""
        _, G = self._globals()
        H = self.ctx.heads0
        pos: dict[str, np.ndarray] = {}
        for j, name in enumerate(self.names):
            p = self.parents[j]
            if p < 0:
                pos[name] = np.asarray(H[name], float)
            else:
                pname = self.names[p]
                pos[name] = pos[pname] + G[p] @ (np.asarray(H[name], float) - np.asarray(H[pname], float))
        return pos

    def reach(self, s: str, hand: np.ndarray, elbow_hint: np.ndarray) -> None:
        """Point the arm on side `s` so its wrist reaches `hand` (world, template skeleton,
        as far as the arm goes) with the elbow towards `elbow_hint` (two-bone IK)."""
        H = self.ctx.heads0
        pos = self.positions()
        S = pos[f"upperarm01.{s}"]
        l1 = float(np.linalg.norm(H[f"lowerarm01.{s}"] - H[f"upperarm01.{s}"]))
        l2 = float(np.linalg.norm(H[f"wrist.{s}"] - H[f"lowerarm01.{s}"]))
        d = np.asarray(hand, float) - S
        n = float(np.clip(np.linalg.norm(d), abs(l1 - l2) + 1e-3, 0.98 * (l1 + l2)))
        dh = _unit(d)
        perp = np.asarray(elbow_hint, float) - (np.asarray(elbow_hint, float) @ dh) * dh
        perp = _unit(perp) if np.linalg.norm(perp) > 1e-6 else _unit(np.cross(dh, [0.0, 0.0, 1.0]))
        a = np.arccos(np.clip((l1 * l1 + n * n - l2 * l2) / (2 * l1 * n), -1.0, 1.0))
        upper = np.cos(a) * dh + np.sin(a) * perp
        elbow = S + l1 * upper
        self.arm(s, upper, S + n * dh - elbow)

    def finish(self) -> np.ndarray:
        local, _ = self._globals()
        return Rot.from_matrix(local).as_rotvec().astype(np.float32)


# ---- the kinds -------------------------------------------------------------------------
def _standing_legs(b: _Pose, rng: np.random.Generator) -> None:
    """Both legs stand (the gesture's legs)."""
    for s, sign in SIDES:
        thigh = arm_dir(rng.uniform(2, 10), rng.uniform(-3, 5), sign)
        b.leg(s, thigh, _rv(rng.uniform(0, 8)) @ thigh, ("flat", rng.uniform(0, 12)))


def _hanging_arm(b: _Pose, rng: np.random.Generator, s: str, sign: float) -> None:
    up = arm_dir(rng.uniform(6, 20), rng.uniform(-5, 10), sign)
    b.arm(s, up, _rv(-rng.uniform(0, 30)) @ up)


def _apose(b, rng, info):
    for s, sign in SIDES:
        up = b.ctx.rest_dirs[f"upperarm01.{s}"]
        b.arm(s, _rv(rng.uniform(-8, 8), 0, sign * rng.uniform(-10, 8)) @ up,
              _rv(rng.uniform(-10, 5), 0, sign * rng.uniform(-10, 5)) @ b.ctx.rest_dirs[f"lowerarm01.{s}"])
        leg = arm_dir(rng.uniform(4, 12), rng.uniform(-3, 3), sign)
        b.leg(s, leg, leg, ("flat", 6.0))


def _standing(b, rng, info):
    bent = rng.integers(2)
    for k, (s, sign) in enumerate(SIDES):
        up = arm_dir(rng.uniform(6, 25), rng.uniform(-8, 12), sign)
        b.arm(s, up, _rv(-rng.uniform(0, 35)) @ up)
        thigh = arm_dir(rng.uniform(1, 8), rng.uniform(-3, 8) if k == bent else rng.uniform(-3, 2), sign)
        b.leg(s, thigh, _rv(rng.uniform(3, 14) if k == bent else 0) @ thigh, ("flat", 8.0))


def _walking(b, rng, info):
    stride = rng.uniform(12, 26)
    lead = int(rng.integers(2))
    for k, (s, sign) in enumerate(SIDES):
        fwd = stride if k == lead else -0.8 * stride
        thigh = arm_dir(rng.uniform(1, 5), fwd, sign)
        knee = rng.uniform(0, 8) if k == lead else rng.uniform(12, 35)
        b.leg(s, thigh, _rv(knee) @ thigh, ("flat", 6.0))
        swing_deg = -0.8 * fwd + rng.uniform(-4, 4)
        up = arm_dir(rng.uniform(6, 15), swing_deg, sign)
        b.arm(s, up, _rv(-rng.uniform(10, 40)) @ up)


def _gesture(b, rng, info):
    g = str(rng.choice(GESTURES))
    info["gesture"] = g
    active = int(rng.integers(2))
    for k, (s, sign) in enumerate(SIDES):
        up = arm_dir(rng.uniform(8, 22), rng.uniform(-5, 10), sign)
        fore = _rv(-rng.uniform(0, 30)) @ up
        both = g in ("arms_up", "t_pose", "hands_on_hips")
        if k == active or both:
            if g == "wave":
                up = arm_dir(rng.uniform(100, 140), rng.uniform(0, 20), sign)
                fore = _unit(sign * rng.uniform(-0.1, 0.3), 1.0, rng.uniform(0, 0.3))
            elif g == "arms_up":
                up = arm_dir(rng.uniform(140, 170), rng.uniform(-5, 15), sign)
                fore = _rv(-rng.uniform(0, 15)) @ up
            elif g == "t_pose":
                up = arm_dir(rng.uniform(80, 100), rng.uniform(-5, 15), sign)
                fore = _rv(0, 0, sign * rng.uniform(-10, 20)) @ up
            elif g == "point":
                up = arm_dir(rng.uniform(10, 30), rng.uniform(60, 90), sign)
                fore = _rv(-rng.uniform(0, 10)) @ up
            elif g == "hands_on_hips":
                up = arm_dir(rng.uniform(30, 45), rng.uniform(-20, -5), sign)
                fore = _unit(-sign * rng.uniform(0.6, 0.9), -rng.uniform(0.3, 0.6), rng.uniform(-0.1, 0.2))
            elif g == "hand_to_head":
                up = arm_dir(rng.uniform(60, 90), rng.uniform(10, 40), sign)
                fore = _unit(-sign * rng.uniform(0.3, 0.6), 1.0, rng.uniform(-0.1, 0.3))
        b.arm(s, up, fore)
        thigh = arm_dir(rng.uniform(2, 10), rng.uniform(-3, 5), sign)
        b.leg(s, thigh, _rv(rng.uniform(0, 8)) @ thigh, ("flat", 6.0))


def _head_top(b: _Pose) -> np.ndarray:
    pos = b.positions()
    return pos["head"] + (pos["head"] - pos["neck01"]) * 1.1 if "neck01" in pos else pos["head"] + [0, 0.15, 0]


def _arms_raised(b, rng, info):
    variant = str(rng.choice(VARIANTS["arms_raised"]))
    info["variant"] = variant
    active = int(rng.integers(2))
    b.lean(rng.uniform(-6, 4), rng.uniform(-4, 4))
    _standing_legs(b, rng)
    on_head = []
    for k, (s, sign) in enumerate(SIDES):
        raised = variant in ("both_up", "hands_on_head") or k == active
        if not raised:
            _hanging_arm(b, rng, s, sign)
        elif variant in ("both_up", "one_up"):  # straight up above the head, hand open
            up = arm_dir(rng.uniform(145, 178), rng.uniform(-10, 20), sign)
            b.arm(s, up, _rv(-rng.uniform(0, 25), 0, -sign * rng.uniform(0, 15)) @ up)
        else:
            on_head.append((s, sign))
    if on_head:  # the hand on top of or beside the head, the elbow out to the side
        top = _head_top(b)
        for s, sign in on_head:
            hand = top + np.array([sign * rng.uniform(0.07, 0.13), rng.uniform(-0.12, -0.02), rng.uniform(-0.05, 0.04)])
            b.reach(s, hand, np.array([sign, rng.uniform(-0.2, 0.3), rng.uniform(-0.4, 0.2)]))


def _sitting(b, rng, info):
    variant = str(rng.choice(VARIANTS["sitting"]))
    info["variant"] = variant
    b.lean(rng.uniform(-8, 20), rng.uniform(-4, 4), rng.uniform(-8, 8))
    for s, sign in SIDES:
        thigh = swing(rng.uniform(70, 95), rng.uniform(4, 14), sign)
        shin = swing(rng.uniform(-12, 15), rng.uniform(-2, 6), sign)
        b.leg(s, thigh, shin, ("flat", rng.uniform(0, 15)))
    if variant == "arms_hanging":
        for s, sign in SIDES:
            _hanging_arm(b, rng, s, sign)
        return
    pos = b.positions()
    for s, sign in SIDES:  # the hand rests on the top of the thigh, half way to the knee
        hip, knee = pos[f"upperleg01.{s}"], pos[f"lowerleg01.{s}"]
        hand = hip + rng.uniform(0.45, 0.8) * (knee - hip) + np.array([sign * rng.uniform(-0.03, 0.03), 0.1, 0.0])
        b.reach(s, hand, np.array([sign * 0.6, 0.0, -1.0]))


def _kneeling(b, rng, info):
    variant = str(rng.choice(VARIANTS["kneeling"]))
    info["variant"] = variant
    front = int(rng.integers(2))
    for k, (s, sign) in enumerate(SIDES):
        if variant == "both_knees" or k != front:  # knee on the ground, shin back along it
            thigh = swing(rng.uniform(-8, 15), rng.uniform(3, 10), sign)
            shin = swing(rng.uniform(-100, -82), rng.uniform(-2, 4), sign)
            b.leg(s, thigh, shin, ("flex", rng.uniform(55, 75)))  # top of the foot down
        else:  # lunge: thigh forward, shin down, foot flat
            thigh = swing(rng.uniform(80, 100), rng.uniform(3, 12), sign)
            shin = swing(rng.uniform(-8, 12), rng.uniform(-3, 3), sign)
            b.leg(s, thigh, shin, ("flat", rng.uniform(0, 12)))
    b.lean(rng.uniform(-5, 15), rng.uniform(-4, 4), rng.uniform(-8, 8))
    pos = b.positions()
    for k, (s, sign) in enumerate(SIDES):
        if variant == "one_knee" and rng.random() < 0.6:  # a hand on the front knee
            knee = pos[f"lowerleg01.{SIDES[front][0]}"]
            b.reach(s, knee + np.array([sign * 0.05, 0.08, -0.02]), np.array([sign, 0.0, -0.5]))
        else:
            _hanging_arm(b, rng, s, sign)


def _crouching(b, rng, info):
    variant = str(rng.choice(VARIANTS["crouching"]))
    info["variant"] = variant
    for s, sign in SIDES:
        tf = rng.uniform(100, 130)
        thigh = swing(tf, rng.uniform(8, 22), sign)
        shin = swing(max(rng.uniform(-40, -15), tf - MAX_KNEE_FLEX_DEG + 5), rng.uniform(-8, 0), sign)
        b.leg(s, thigh, shin, ("flat", rng.uniform(5, 20)))  # heels come up where the ankle ends
    b.lean(rng.uniform(20, 45), rng.uniform(-4, 4), rng.uniform(-8, 8))
    if variant == "arms_forward":
        for s, sign in SIDES:
            up = swing(rng.uniform(50, 95), rng.uniform(5, 20), sign)
            b.arm(s, up, _rv(-rng.uniform(0, 30)) @ up)
        return
    pos = b.positions()
    for s, sign in SIDES:
        knee = pos[f"lowerleg01.{s}"]
        b.reach(s, knee + np.array([sign * rng.uniform(-0.02, 0.04), 0.06, rng.uniform(-0.02, 0.04)]),
                np.array([sign, 0.2, -0.3]))


def _jumping(b, rng, info):
    variant = str(rng.choice(VARIANTS["jumping"]))
    info["variant"] = variant
    if variant == "star":  # arms and legs spread
        for s, sign in SIDES:
            thigh = arm_dir(rng.uniform(18, 35), rng.uniform(-5, 8), sign)
            b.leg(s, thigh, b.bent(s, thigh, rng.uniform(0, 12)), ("flex", rng.uniform(15, 40)))
            up = arm_dir(rng.uniform(115, 165), rng.uniform(-10, 15), sign)
            b.arm(s, up, _rv(-rng.uniform(0, 15)) @ up)
        b.lean(rng.uniform(-6, 6), rng.uniform(-3, 3))
    elif variant == "tuck":  # knees pulled up
        for s, sign in SIDES:
            tf = rng.uniform(75, 115)
            thigh = swing(tf, rng.uniform(5, 15), sign)
            b.leg(s, thigh, b.bent(s, thigh, rng.uniform(90, 130)), ("flex", rng.uniform(20, 45)))
            up = swing(rng.uniform(30, 150), rng.uniform(10, 35), sign)
            b.arm(s, up, _rv(-rng.uniform(0, 40)) @ up)
        b.lean(rng.uniform(0, 15), rng.uniform(-3, 3))
    else:  # stride leap: one leg forward, the other back, arms opposite
        lead = int(rng.integers(2))
        for k, (s, sign) in enumerate(SIDES):
            if k == lead:
                thigh = swing(rng.uniform(45, 80), rng.uniform(2, 10), sign)
                knee = rng.uniform(5, 40)
                arm = swing(-rng.uniform(20, 45), rng.uniform(10, 30), sign)
            else:
                thigh = swing(-rng.uniform(20, 40), rng.uniform(2, 10), sign)
                knee = rng.uniform(30, 80)
                arm = swing(rng.uniform(60, 130), rng.uniform(5, 25), sign)
            b.leg(s, thigh, b.bent(s, thigh, knee), ("flex", rng.uniform(15, 40)))
            b.arm(s, arm, _rv(-rng.uniform(0, 35)) @ arm)
        b.lean(rng.uniform(0, 12), rng.uniform(-3, 3))


def _kicking(b, rng, info):
    variant = str(rng.choice(VARIANTS["kicking"]))
    info["variant"] = variant
    kick = int(rng.integers(2))
    info["leg"] = SIDES[kick][0]
    for k, (s, sign) in enumerate(SIDES):
        if k == kick:
            if variant == "front":
                thigh = swing(rng.uniform(45, 100), rng.uniform(0, 10), sign)
            else:
                thigh = arm_dir(rng.uniform(45, 100), rng.uniform(-5, 20), sign)
            b.leg(s, thigh, b.bent(s, thigh, rng.uniform(0, 25)), ("flex", rng.uniform(10, 40)))
        else:  # the standing leg, a little bent
            thigh = arm_dir(rng.uniform(0, 6), rng.uniform(-8, 2), sign)
            b.leg(s, thigh, b.bent(s, thigh, rng.uniform(0, 15)), ("flat", rng.uniform(5, 20)))
        up = arm_dir(rng.uniform(35, 90), rng.uniform(-20, 35), sign)  # arms out for balance
        b.arm(s, up, _rv(-rng.uniform(0, 40)) @ up)
    away = -SIDES[kick][1]  # the torso leans back from a front kick, away from a side kick
    if variant == "front":
        b.lean(-rng.uniform(3, 20), away * rng.uniform(0, 6))
    else:
        b.lean(rng.uniform(-5, 5), away * rng.uniform(10, 28))


_KINDS = {"apose": _apose, "standing": _standing, "walking": _walking, "gesture": _gesture,
          "arms_raised": _arms_raised, "sitting": _sitting, "kneeling": _kneeling,
          "crouching": _crouching, "jumping": _jumping, "kicking": _kicking}


def random_pose(ctx, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, dict]:
    """A plausible pose of `kind` (drawn by POSE_PROBABILITIES when None) ->
    (pose [J, 3] float32 world-aligned local axis-angles, info {"kind", "variant"/"gesture", ...})."""
    if kind is None:
        kind = str(rng.choice(POSE_KINDS, p=list(POSE_PROBABILITIES.values())))
    if kind not in _KINDS:
        raise ValueError(f"unknown pose kind {kind!r}; one of {', '.join(POSE_KINDS)}")
    b = _Pose(ctx)
    info: dict = {"kind": kind}
    # Spine, neck and head: small lean and turns (the generator's).
    for name, (x, y, z) in (("spine03", (4, 6, 3)), ("spine01", (3, 6, 2))):
        if b.has(name):
            b.local[b.jidx[name]] = _rv(rng.uniform(-x, x), rng.uniform(-y, y), rng.uniform(-z, z))
    if b.has("neck01"):
        b.local[b.jidx["neck01"]] = _rv(rng.uniform(-5, 8), rng.uniform(-8, 8), rng.uniform(-4, 4))
    if b.has("head"):
        b.local[b.jidx["head"]] = _rv(rng.uniform(-6, 8), rng.uniform(-12, 12), rng.uniform(-6, 6))
    _KINDS[kind](b, rng, info)
    if any(b.lean_deg):
        info["lean_deg"] = [round(float(a), 1) for a in b.lean_deg]
    return b.finish(), info
