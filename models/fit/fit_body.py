"""Fit body shape, pose and camera to detected keypoints and person masks (SMPLify-style, torch).

Several photos of one person share one shape; each photo has its own pose and camera.
The same code fits Anny and SMPL-X: it only uses the body interface (``shape_coeffs``,
``rest_vertices``, ``rest_heads``, ``topology``, ``fit_joints``, ``shape_from_free``).

Energy (all image distances in units of the person's height in pixels):

- keypoints: confidence-weighted Geman-McClure reprojection of the body's landmarks;
- silhouette (``models/fit/silhouette.py``): projected vertices outside the person mask
  are pulled in (distance transform sampled with ``grid_sample``), and the mask's contour
  is pulled to its nearest projected vertex so the body fills the mask;
- priors (``models/fit/priors.py``): joint limits (elbows and knees bend one way), limb
  twist, closeness to the rest pose, and a shape prior.

Schedule: (1) global orientation and translation from the torso keypoints, (2) pose and
shape from all keypoints, (3) everything with the silhouette terms. Where (1)-(2) from the
rest pose are known to get stuck, a second start runs them again and the one closer to the
keypoints goes on to (3): arms up (a wrist above its shoulder) start raised; legs whose
knee or ankle was missed (a thigh pointing at the camera: sitting, kneeling, crouching,
jumping, kicking) start lifted from their keypoints with the first fit's camera.

Speed: only the fit joints rotate, so every other joint moves rigidly with its nearest
fit-joint ancestor; forward kinematics runs over those few joints, and skinning blends
one transform per fit joint. The silhouette terms use a fixed, evenly spread subset of the
vertices (about 2-3 cm apart). The rest shape is linear in the shape coefficients, so the
needed vertices and joint heads come from a small precomputed basis.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

from models.body.lbs import axis_angle_to_matrix, forward_kinematics, skin_points
from models.body.template import MEDIAPIPE_33
from models.detect.base import Detection
from models.fit.camera import Camera, default_intrinsics
from models.fit.priors import PosePrior, shape_prior
from models.fit.silhouette import edge_matches, fill_distance, gmof, outside_distance, silhouette_target

# Joints whose rotation the fit may change; the rest keep the model's rest pose.
FIT_JOINTS = [
    "spine03", "spine01", "neck01", "head",
    "upperarm01.L", "lowerarm01.L", "upperarm01.R", "lowerarm01.R",
    "upperleg01.L", "lowerleg01.L", "upperleg01.R", "lowerleg01.R",
    # The feet follow their heel and toe keypoints: pointed in a jump or a kick, the heel up
    # behind a stride or a crouch (stiff like the torso: see models/fit/priors.py).
    "foot.L", "foot.R",
]
TORSO = ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]
# Landmarks that are less reliable on this body (hands, face details) count less.
LANDMARK_WEIGHT = {"left_pinky": 0.3, "right_pinky": 0.3, "left_index": 0.3, "right_index": 0.3,
                   "left_thumb": 0.3, "right_thumb": 0.3, "left_ear": 0.5, "right_ear": 0.5,
                   "nose": 0.7, "left_eye": 0.5, "right_eye": 0.5}
MIN_CONFIDENCE = 0.3
ASSUMED_HEIGHT_M = 1.7
STAGES = ("camera", "pose", "silhouette")


@dataclass
class FitConfig:
    """Weights and schedule of the fit (the defaults are the product's)."""

    iterations: tuple[int, int, int] = (40, 70, 70)  # camera, pose + shape, + silhouette
    lr: float = 0.03
    lr_shape: float = 0.03
    keypoint_sigma: float = 0.05  # Geman-McClure scale, person heights
    silhouette_sigma: float = 0.04
    w_keypoints: float = 1.0
    w_keypoints_silhouette: float = 0.3  # the keypoints' weight once the silhouette joins
    lr_final: float = 1.0  # the last stage's learning rate decays to this fraction
    w_outside: float = 10.0
    w_fill: float = 10.0
    w_natural: float = 0.01
    torso_prior_weight: float = 4.0  # spine, neck and head: this much stiffer than the limbs
    w_limits: float = 0.05
    w_twist: float = 0.02
    w_shape: float = 0.01
    vertex_spacing_m: float = 0.025  # silhouette vertex subset
    match_every: int = 4  # iterations between updates of the edge-to-vertex matches
    # Several photos: each has its own shape until this stage, which starts from their mean
    # and shares it (0: shared from the start).
    shared_shape_stage: int = 2


@dataclass
class BodyFit:
    shape: np.ndarray  # float32 [S] shape values (Anny: 6 phenotypes; SMPL-X: 10 betas)
    poses: np.ndarray  # float32 [P, J, 3] axis-angle per joint (world-aligned rest axes)
    cameras: list[Camera]
    keypoint_error_pct: list[float]  # per photo: mean 2D error in % of person height
    seconds: float = 0.0
    iterations: int = 0
    warnings: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    loss: float = float("nan")  # the energy at the end (last stage's terms)


class _Kinematics:
    """The body reduced to what the fit moves and looks at (built once per body)."""

    def __init__(self, body, spacing_m: float):
        top = body.topology
        self.body = body
        names = top.joint_names
        parents = top.parents
        J = len(names)
        self.fit_joints = list(getattr(body, "fit_joints", FIT_JOINTS))  # body-specific names
        fit_idx = [names.index(n) for n in self.fit_joints]
        order = sorted(range(len(fit_idx)), key=lambda k: fit_idx[k])  # parents first
        self.fit_idx = fit_idx
        self.order = order
        pos = {j: k for k, j in enumerate(fit_idx)}
        # group[j]: 0 = does not move (rest), k + 1 = moves rigidly with fit joint k
        group = np.zeros(J, np.int64)
        for j in range(J):
            p = j
            while p >= 0 and p not in pos:
                p = parents[p]
            group[j] = 0 if p < 0 else pos[p] + 1
        self.group = group
        self.parent_group = [int(group[parents[fit_idx[k]]]) if parents[fit_idx[k]] >= 0 else 0
                             for k in range(len(fit_idx))]
        # Landmarks present on this body, in MediaPipe order.
        self.lm_names = [n for n in MEDIAPIPE_33 if n in top.landmarks]
        kinds = [top.landmarks[n] for n in self.lm_names]
        self.joint_lm = [i for i, k in enumerate(kinds) if k[0] == "joint"]
        self.joint_lm_idx = [kinds[i][1] for i in self.joint_lm]
        self.vert_lm = [i for i, k in enumerate(kinds) if k[0] == "vertex"]
        vert_lm_idx = np.array([kinds[i][1] for i in self.vert_lm], np.int64)
        # Vertex subset for the silhouette (+ the landmark vertices at the end).
        sample = _spread_vertices(body.template_vertices.numpy(), spacing_m)
        self.n_sample = len(sample)
        vidx = np.concatenate([sample, vert_lm_idx])
        self.vidx = vidx
        # Skinning weights merged per group.
        si, sw = top.skin_indices[vidx], top.skin_weights[vidx]
        W = np.zeros((len(vidx), len(fit_idx) + 1), np.float32)
        np.add.at(W, (np.repeat(np.arange(len(vidx)), si.shape[1]), group[si].reshape(-1)), sw.reshape(-1))
        self.W = torch.from_numpy(W)
        # Linear shape bases of the needed vertices and joint heads.
        self.heads_needed = sorted(set(fit_idx) | set(self.joint_lm_idx))
        # Unconstrained parameters -> shape values (Anny: phenotypes in (0,1); SMPL-X: betas).
        self.shape_from_free = getattr(body, "shape_from_free", torch.sigmoid)
        with torch.no_grad():
            S = body.shape_coeffs(self.neutral_shape()[None]).shape[1]
            zero, eye = torch.zeros(1, S), torch.eye(S)
            index = torch.from_numpy(vidx)
            v0 = body.rest_vertices(zero, index)
            h0 = body.rest_heads(zero)[:, self.heads_needed]
            self.v0 = v0[0]  # [N, 3]
            self.vB = (body.rest_vertices(eye, index) - v0).reshape(S, -1)  # [S, N*3]
            self.h0 = h0[0]
            self.hB = (body.rest_heads(eye)[:, self.heads_needed] - h0).reshape(S, -1)
        hpos = {j: i for i, j in enumerate(self.heads_needed)}
        self.fit_head = torch.tensor([hpos[j] for j in fit_idx])
        self.lm_head = torch.tensor([hpos[j] for j in self.joint_lm_idx])
        self.lm_group = torch.from_numpy(group[self.joint_lm_idx])
        self.prior = PosePrior.for_body(body, fit_idx)

    def neutral_shape(self) -> torch.Tensor:
        return self.shape_from_free(torch.zeros(len(self.body.shape_labels)))

    def rest(self, shape_free: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, S] free shape parameters -> rest vertices [B, N, 3] and needed joint heads [B, H, 3]."""
        B = shape_free.shape[0]
        coeffs = self.body.shape_coeffs(self.shape_from_free(shape_free))  # [B, S]
        v = self.v0 + (coeffs @ self.vB).reshape(B, -1, 3)
        h = self.h0 + (coeffs @ self.hB).reshape(B, -1, 3)
        return v, h

    def transforms(self, heads: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads [B, H, 3] (B = 1 or P), pose [P, F, 3] -> per-group rotations [P, G, 3, 3]
        and translations [P, G, 3]."""
        P, Fn = pose.shape[:2]
        R_local = axis_angle_to_matrix(pose)  # [P, F, 3, 3]
        hf = heads[:, self.fit_head]  # [B, F, 3]
        Rg = [torch.eye(3).expand(P, 3, 3)] + [None] * Fn
        tg = [torch.zeros(P, 3)] + [None] * Fn
        for k in self.order:
            pg = self.parent_group[k]
            R = R_local[:, k]
            t = hf[:, k] - (R @ hf[:, k, :, None])[..., 0]  # local: rotate about the joint's rest head
            Rg[k + 1] = Rg[pg] @ R
            tg[k + 1] = (Rg[pg] @ t[..., None])[..., 0] + tg[pg]
        return torch.stack(Rg, 1), torch.stack(tg, 1)

    def posed(self, shape_free: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Free shape [B, S] (B = 1: shared, or P: one per photo), pose [P, F, 3] -> landmarks
        [P, L, 3] and silhouette vertices [P, N, 3], world (glTF) axes."""
        v, h = self.rest(shape_free)
        R, t = self.transforms(h, pose)
        # Skinning: blend per-group transforms with the merged weights.
        P, G = R.shape[:2]
        # (one [N, G] @ [G, 12] product, then elementwise: tiny batched matmuls are slow on CPU)
        Mt = self.W @ torch.cat([R.reshape(P, G, 9), t], -1)  # [P, N, 12]
        verts = (Mt[..., :9].reshape(P, -1, 3, 3) * v[:, :, None, :]).sum(-1) + Mt[..., 9:]
        hl = h[:, self.lm_head]  # [B, Lj, 3]
        Rl, tl = R[:, self.lm_group], t[:, self.lm_group]
        pj = (Rl * hl[:, :, None, :]).sum(-1) + tl
        P = pose.shape[0]
        lm = verts.new_zeros(P, len(self.lm_names), 3)
        lm[:, self.joint_lm] = pj
        lm[:, self.vert_lm] = verts[:, self.n_sample:]
        return lm, verts[:, :self.n_sample]


@lru_cache(maxsize=4)
def _kinematics(body, spacing_m: float) -> _Kinematics:
    return _Kinematics(body, spacing_m)


def _spread_vertices(v: np.ndarray, spacing: float) -> np.ndarray:
    """Indices of vertices about `spacing` apart: one per voxel, the one nearest its centre."""
    cell = np.floor(v / spacing).astype(np.int64)
    centre = (cell + 0.5) * spacing
    d = np.linalg.norm(v - centre, axis=1)
    key = (cell[:, 0] * 73856093) ^ (cell[:, 1] * 19349663) ^ (cell[:, 2] * 83492791)
    order = np.lexsort((d, key))
    first = np.ones(len(order), bool)
    first[1:] = key[order][1:] != key[order][:-1]
    return np.sort(order[first])


def _initial_camera(det: Detection, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Person facing the camera, upright, at the depth that makes them their pixel height."""
    rot = np.array([math.pi, 0.0, 0.0], np.float32)  # body y-up/+z-front -> camera y-down/-z
    f = K[1, 1]
    h = max(det.person_height_px(), 16.0)
    z = f * ASSUMED_HEIGHT_M / h
    m = det.mask > 0.5
    ys, xs = np.nonzero(m)
    cx, cy = (xs.mean(), ys.mean()) if xs.size else (K[0, 2], K[1, 2])
    x = (cx - K[0, 2]) / f * z
    y = (cy - K[1, 2]) / f * z
    return rot, np.array([x, y, z], np.float32)


def _shared(shape_free: torch.Tensor) -> torch.Tensor:
    """Per-photo free shape parameters [P, S] -> one shared [1, S] (their mean), a new leaf."""
    return shape_free.detach().mean(0, keepdim=True).requires_grad_(True)


def _matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(np.asarray(R, np.float64)).as_rotvec().astype(np.float32)


def _inverse_elementwise(f, y: torch.Tensor, lo: float = -30.0, hi: float = 30.0) -> torch.Tensor:
    """x with f(x) = y for an increasing elementwise f (bisection; the shape's free parameters)."""
    a, b = torch.full_like(y, lo), torch.full_like(y, hi)
    for _ in range(60):
        m = (a + b) / 2
        below = f(m) < y
        a, b = torch.where(below, m, a), torch.where(below, b, m)
    return (a + b) / 2


def _project(pts: torch.Tensor, rot: torch.Tensor, transl: torch.Tensor, Kt: torch.Tensor) -> torch.Tensor:
    """[P, N, 3] world points -> [P, N, 2] pixels."""
    R = axis_angle_to_matrix(rot)  # [P, 3, 3]
    pc = pts @ R.transpose(1, 2) + transl[:, None]
    z = pc[..., 2:3].clamp(min=0.1)
    f = torch.stack([Kt[:, 0, 0], Kt[:, 1, 1]], -1)[:, None]
    return pc[..., :2] / z * f + Kt[:, :2, 2][:, None]


def fit_body(body, detections: list[Detection], progress: Callable[[float], None] | None = None,
             iterations: tuple[int, ...] | None = None, intrinsics: list[np.ndarray | None] | None = None,
             config: FitConfig | None = None, start: BodyFit | None = None) -> BodyFit:
    """Fit one shared shape and per-photo pose + camera to the detections.

    `intrinsics[i]` is photo i's K (e.g. from its EXIF focal length); None = default FoV.
    `iterations` overrides the schedule: (camera, pose) or (camera, pose, silhouette).
    """
    cfg = config or FitConfig()
    if iterations is not None:
        its = (tuple(int(n) for n in iterations) + (0, 0, 0))[:3]
        cfg = FitConfig(**{**cfg.__dict__, "iterations": its})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add overhead (10x on a busy CPU)
    try:
        if start is not None:
            return _fit(body, detections, progress, intrinsics, cfg, start)
        return _fit_with_restarts(body, detections, progress, intrinsics, cfg)
    finally:
        torch.set_num_threads(threads)


def _fit_with_restarts(body, detections, progress, intrinsics, cfg: FitConfig) -> BodyFit:
    """The schedule from the rest pose, with second starts where it is known to get stuck.

    The camera and pose stages run first; a second start (camera and pose stages too) is
    tried for raised arms and for legs whose knee or ankle the fit missed, the one closer
    to the keypoints is kept, and the silhouette stage runs once, from that one.
    """
    kin = _kinematics(body, cfg.vertex_spacing_m)
    n_cam, n_pose, n_sil = cfg.iterations
    total = max(n_cam + n_pose + n_sil, 1)
    head = replace(cfg, iterations=(n_cam, n_pose, 0))
    fit = _fit(body, detections, (lambda f: progress(f * (n_cam + n_pose) / total)) if progress else None,
               intrinsics, head, None)
    raised = _raised_arms_pose(detections, kin)
    if raised is not None and max(fit.keypoint_error_pct) > RETRY_KEYPOINT_ERROR_PCT:
        # From the rest pose (arms down) the optimizer can get stuck on a raised arm
        # (the arm swings up through the body, or the elbow folds): start once more with
        # those arms already up, keep the better fit.
        fit = _better(fit, _fit(body, detections, None, intrinsics, head, None, init_pose=raised))
    lifted = _lifted_legs_start(fit, detections, kin)
    if lifted is not None:
        # A thigh pointing at the camera (sitting, crouching, kneeling on one knee, a tuck
        # jump, a kick) looks short in the photo; from legs hanging down the optimizer pulls
        # the knee sideways instead of forward and stays there. Start once more from this
        # fit with those legs lifted from their keypoints (the camera is already placed).
        warm = replace(cfg, iterations=(n_cam // WARM_CAMERA_SHARE, n_pose, 0))
        fit = _better(fit, _fit(body, detections, None, intrinsics, warm, lifted))
    if n_sil == 0:
        return fit
    tail = _fit(body, detections, (lambda f: progress((n_cam + n_pose + f * n_sil) / total)) if progress else None,
                intrinsics, replace(cfg, iterations=(0, 0, n_sil)), fit)
    tail.seconds += fit.seconds
    tail.iterations += fit.iterations
    tail.warnings = sorted(set(tail.warnings) | set(fit.warnings))
    for k, v in fit.stage_seconds.items():
        tail.stage_seconds[k] = tail.stage_seconds.get(k, 0.0) + v
    return tail


#: A fit whose keypoint error (% of the person's height) is above this gets a second start.
RETRY_KEYPOINT_ERROR_PCT = 1.0
#: Rotation (about the body's forward axis, radians) that takes an arm from Anny's A-pose
#: to about horizontal-and-up, the start for an arm whose wrist is above its shoulder.
RAISED_ARM_RAD = 2.0
_ARMS = (("upperarm01.L", "left_shoulder", "left_wrist", 1.0),
         ("upperarm01.R", "right_shoulder", "right_wrist", -1.0))


def _raised_arms_pose(detections: list[Detection], kin: _Kinematics) -> np.ndarray | None:
    """An initial pose [P, fit joints, 3] with the arms raised whose wrist is seen above its
    shoulder (image y), or None when no arm is raised in any photo. Rotations are about the
    body's forward axis (z): +z lifts the left arm (+x side), -z the right one."""
    pose = np.zeros((len(detections), len(kin.fit_joints), 3), np.float32)
    raised = False
    for p, det in enumerate(detections):
        kp = det.keypoints
        for joint, shoulder, wrist, sign in _ARMS:
            s, w = kp[MEDIAPIPE_33.index(shoulder)], kp[MEDIAPIPE_33.index(wrist)]
            if joint in kin.fit_joints and min(s[2], w[2]) > 0.5 and w[1] < s[1]:
                pose[p, kin.fit_joints.index(joint), 2] = sign * RAISED_ARM_RAD
                raised = True
    return pose if raised else None


def _better(fit: BodyFit, second: BodyFit) -> BodyFit:
    """The fit of the two starts closer to the keypoints (seconds, iterations, stage
    seconds and warnings of both)."""
    best, other = (second, fit) if sum(second.keypoint_error_pct) < sum(fit.keypoint_error_pct) else (fit, second)
    best.warnings = sorted(set(best.warnings) | set(other.warnings))
    best.seconds += other.seconds
    best.iterations += other.iterations
    for k, v in other.stage_seconds.items():
        best.stage_seconds[k] = best.stage_seconds.get(k, 0.0) + v
    return best


#: A second start from an earlier fit runs this fraction (1/n) of the camera stage.
WARM_CAMERA_SHARE = 4
#: A leg whose fitted knee or ankle is this far from its keypoint (% of the person's
#: height) gets lifted from its keypoints for a second start.
LEG_RETRY_ERROR_PCT = 4.0
#: (landmark side, thigh joint, shin joint)
_LEGS = (("left", "upperleg01.L", "lowerleg01.L"), ("right", "upperleg01.R", "lowerleg01.R"))
#: A lifted knee may bend this little past straight, and this much at most (degrees).
_KNEE_RANGE_DEG = (-10.0, 160.0)


def _lifted_legs_start(fit: BodyFit, detections: list[Detection], kin: _Kinematics) -> BodyFit | None:
    """`fit` with the legs that missed their knee or ankle keypoint re-aimed at them, or None.

    Each such leg is lifted into 3D with the fitted camera and body: the knee is put on
    the camera ray through its keypoint at a thigh's length from the fitted hip, the ankle
    on its ray at a shin's length from that knee. Of the two points on a ray (towards or
    away from the camera) the thigh takes the one in front of the body (hips flex far
    more than they extend); the shin one that bends the knee the right way: under the
    hip when the foot is the lowest point of the person (the leg carries the body:
    crouching, kneeling), else the straighter one (a kick).
    """
    from models.render.rotations import rotation_between

    names = kin.lm_names
    lmk = kin.body.topology.landmarks
    needed = [f"{s}_{j}" for s, _, _ in _LEGS for j in ("hip", "knee", "ankle")]
    if any(n not in names or lmk[n][0] != "joint" for n in needed) or \
            any(t not in kin.fit_joints or k not in kin.fit_joints for _, t, k in _LEGS):
        return None
    with torch.no_grad():
        shape_free = _inverse_elementwise(kin.shape_from_free, torch.as_tensor(fit.shape, dtype=torch.float32))[None]
        lm, _ = kin.posed(shape_free, torch.as_tensor(np.asarray(fit.poses, np.float32)[:, kin.fit_idx]))
        _, heads = kin.rest(shape_free)
    lm, heads = lm.numpy().astype(np.float64), heads[0].numpy().astype(np.float64)
    hpos = {j: i for i, j in enumerate(kin.heads_needed)}

    def rest_head(landmark: str) -> np.ndarray:
        return heads[hpos[lmk[landmark][1]]]

    poses = np.array(fit.poses, np.float32)
    lifted = False
    for p, det in enumerate(detections):
        cam = fit.cameras[p]
        uv, _ = cam.project(lm[p].astype(np.float32))
        height = max(det.person_height_px(), 1.0)
        rows = np.flatnonzero((det.mask > 0.5).any(1))
        bottom = float(rows[-1]) if rows.size else float(det.image_size[0])
        centre = -cam.R.T.astype(np.float64) @ cam.t.astype(np.float64)
        for side, thigh_joint, shin_joint in _LEGS:
            hip, knee, ankle = (f"{side}_{j}" for j in ("hip", "knee", "ankle"))
            kk, ka = det.keypoints[MEDIAPIPE_33.index(knee)], det.keypoints[MEDIAPIPE_33.index(ankle)]
            if min(kk[2], ka[2]) < 0.5:
                continue
            err = max(np.linalg.norm(uv[names.index(knee)] - kk[:2]), np.linalg.norm(uv[names.index(ankle)] - ka[:2]))
            if 100 * err / height < LEG_RETRY_ERROR_PCT:
                continue
            rest_thigh = rest_head(knee) - rest_head(hip)
            rest_shin = rest_head(ankle) - rest_head(knee)
            H = lm[p, names.index(hip)]
            thighs = _on_ray(cam, centre, kk[:2], H, float(np.linalg.norm(rest_thigh)))
            thigh = max(thighs, key=lambda d: d[2])  # in front of the body
            Gt = rotation_between(rest_thigh, thigh)
            K = H + thigh * np.linalg.norm(rest_thigh)
            shins = _on_ray(cam, centre, ka[:2], K, float(np.linalg.norm(rest_shin)))
            flex = {i: _flexion(Gt.T @ d) - _flexion(rest_shin) for i, d in enumerate(shins)}
            ok = [i for i, f in flex.items() if _KNEE_RANGE_DEG[0] <= f <= _KNEE_RANGE_DEG[1]] or \
                [min(flex, key=lambda i: abs(flex[i]))]
            if ka[1] > bottom - 0.12 * height:  # the foot carries the body: ankle under the hip
                shin = shins[min(ok, key=lambda i: abs(K[2] + shins[i][2] * np.linalg.norm(rest_shin) - H[2]))]
            else:
                shin = shins[min(ok, key=lambda i: abs(flex[i]))]
            Gs = rotation_between(rest_shin, shin)
            ti, si = kin.fit_idx[kin.fit_joints.index(thigh_joint)], kin.fit_idx[kin.fit_joints.index(shin_joint)]
            poses[p, ti] = _matrix_to_axis_angle(Gt)
            poses[p, si] = _matrix_to_axis_angle(Gt.T @ Gs)
            lifted = True
    if not lifted:
        return None
    return BodyFit(shape=fit.shape, poses=poses, cameras=fit.cameras, keypoint_error_pct=fit.keypoint_error_pct)


def _flexion(d: np.ndarray) -> float:
    """Knee flexion (degrees) of a shin direction in its thigh's rest frame (+: shin back)."""
    return float(np.degrees(np.arctan2(-d[2], -d[1])))


def _on_ray(cam: Camera, centre: np.ndarray, px: np.ndarray, origin: np.ndarray, length: float) -> list[np.ndarray]:
    """Unit directions from `origin` to the points on the camera ray through pixel `px` at
    `length` from it (two, one; the nearest point when the ray passes farther away)."""
    K = cam.K.astype(np.float64)
    ray = cam.R.T.astype(np.float64) @ np.array([(px[0] - K[0, 2]) / K[0, 0], (px[1] - K[1, 2]) / K[1, 1], 1.0])
    ray /= np.linalg.norm(ray)
    oc = centre - origin
    b = float(ray @ oc)
    disc = b * b - (float(oc @ oc) - length * length)
    taus = [-b] if disc <= 0 else [-b - math.sqrt(disc), -b + math.sqrt(disc)]
    out = []
    for tau in taus:
        d = centre + max(tau, 0.0) * ray - origin
        n = float(np.linalg.norm(d))
        if n > 1e-6:
            out.append(d / n)
    return out or [np.array([0.0, -1.0, 0.0])]


def _fit(body, detections, progress, intrinsics, cfg: FitConfig, start: BodyFit | None,
         init_pose: np.ndarray | None = None) -> BodyFit:
    t_start = time.perf_counter()
    kin = _kinematics(body, cfg.vertex_spacing_m)
    P = len(detections)
    names = kin.lm_names
    mp_index = [MEDIAPIPE_33.index(n) for n in names]
    kp = np.stack([d.keypoints[mp_index] for d in detections])  # [P, L, 3]
    kp_xy = torch.from_numpy(kp[..., :2]).float()
    conf_np = kp[..., 2] * (kp[..., 2] > MIN_CONFIDENCE)
    lw = np.array([LANDMARK_WEIGHT.get(n, 1.0) for n in names], np.float32)
    conf = torch.from_numpy(conf_np * lw[None]).float()
    torso = torch.zeros(len(names))
    torso[[names.index(n) for n in TORSO if n in names]] = 1.0
    heights = torch.tensor([max(d.person_height_px(), 1.0) for d in detections]).float()
    Ks = [np.asarray(k, np.float32) if k is not None else default_intrinsics(d.image_size[1], d.image_size[0])
          for d, k in zip(detections, intrinsics or [None] * P)]
    Kt = torch.from_numpy(np.stack(Ks)).float()
    targets = [silhouette_target(d.mask, d.person_height_px()) for d in detections]
    t_setup = time.perf_counter() - t_start

    if start is None:
        cams = [_initial_camera(d, K) for d, K in zip(detections, Ks)]
        shape_free = torch.zeros(P if cfg.shared_shape_stage > 0 else 1, len(body.shape_labels))
        pose = torch.zeros(P, len(kin.fit_joints), 3) if init_pose is None else torch.as_tensor(init_pose).float()
    else:  # warm start from an earlier fit of the same photos
        cams = [(_matrix_to_axis_angle(c.R), c.t) for c in start.cameras]
        shape_free = _inverse_elementwise(kin.shape_from_free, torch.as_tensor(start.shape, dtype=torch.float32))[None]
        pose = torch.as_tensor(np.asarray(start.poses, np.float32)[:, kin.fit_idx])
    rot = torch.tensor(np.stack([r for r, _ in cams]), dtype=torch.float32, requires_grad=True)
    transl = torch.tensor(np.stack([t for _, t in cams]), dtype=torch.float32, requires_grad=True)
    shape_free.requires_grad_(True)
    pose.requires_grad_(True)
    ks2 = cfg.keypoint_sigma ** 2
    ss2 = cfg.silhouette_sigma ** 2
    total = max(sum(cfg.iterations), 1)
    done = 0

    # Edge samples look for their vertex within about one vertex spacing (in pixels).
    band = [0.75 * cfg.vertex_spacing_m / ASSUMED_HEIGHT_M * float(h) + 1.0 for h in heights]
    matches: list[torch.Tensor | None] = [None] * P

    def loss_fn(stage: int, refresh: bool = False) -> torch.Tensor:
        lm, verts = kin.posed(shape_free, pose)
        uv = _project(lm, rot, transl, Kt)
        r2 = ((uv - kp_xy) ** 2).sum(-1) / heights[:, None] ** 2
        c = conf * (0.2 + torso) if stage == 0 else conf
        w = cfg.w_keypoints_silhouette if stage == 2 else cfg.w_keypoints
        data = w * (c * gmof(r2, ks2)).sum() / c.sum().clamp(min=1e-6)
        if stage == 0:
            return data
        prior = (cfg.w_natural * kin.prior.natural(pose, cfg.torso_prior_weight) + cfg.w_limits * kin.prior.limits(pose)
                 + cfg.w_twist * kin.prior.twist(pose) + cfg.w_shape * shape_prior(shape_free))
        loss = data + prior
        if stage == 2:
            vuv = _project(verts, rot, transl, Kt)
            sil = 0.0
            for i, tgt in enumerate(targets):
                if tgt is None:
                    continue
                out = outside_distance(tgt, vuv[i])
                sil = sil + cfg.w_outside * gmof(out * out, ss2).mean()
                if matches[i] is None or refresh:
                    matches[i] = edge_matches(tgt, vuv[i].detach(), band[i])
                fill = fill_distance(tgt, vuv[i], matches[i])
                if fill.numel():
                    sil = sil + cfg.w_fill * gmof(fill * fill, ss2).mean()
            loss = loss + sil / P
        return loss

    stage_seconds = {"setup": t_setup}
    for stage, n in enumerate(cfg.iterations):
        t0 = time.perf_counter()
        if stage == cfg.shared_shape_stage and shape_free.shape[0] > 1:
            shape_free = _shared(shape_free)
        stage_params = [rot, transl] if stage == 0 else [rot, transl, pose, shape_free]
        if n > 0:
            groups = [{"params": [p], "base_lr": cfg.lr_shape if p is shape_free else cfg.lr}
                      for p in stage_params]
            opt = torch.optim.Adam(groups, lr=cfg.lr)
            final = cfg.lr_final if stage == len(cfg.iterations) - 1 else 1.0
            for it in range(n):
                for g in opt.param_groups:
                    g["lr"] = g["base_lr"] * (1.0 + (final - 1.0) * it / max(n - 1, 1))
                opt.zero_grad()
                loss = loss_fn(stage, refresh=it % cfg.match_every == 0)
                loss.backward()
                opt.step()
                done += 1
                if progress and done % 10 == 0:
                    progress(done / total)
        stage_seconds[STAGES[stage]] = time.perf_counter() - t0
    if shape_free.shape[0] > 1:
        shape_free = _shared(shape_free)
    with torch.no_grad():
        final_loss = float(loss_fn(len(cfg.iterations) - 1, refresh=True))

    with torch.no_grad():
        lm, _ = kin.posed(shape_free, pose)
        uv = _project(lm, rot, transl, Kt)
        err = torch.sqrt(((uv - kp_xy) ** 2).sum(-1)) / heights[:, None]
        seen = conf > 0
        kp_err = [float(100 * err[i][seen[i]].mean()) if seen[i].any() else float("nan") for i in range(P)]
        full_pose = torch.zeros(P, len(body.topology.joint_names), 3).index_copy(
            1, torch.tensor(kin.fit_idx), pose)
        Rm = axis_angle_to_matrix(rot).numpy()
    cams = [Camera(K=Ks[i], R=Rm[i].astype(np.float32), t=transl[i].detach().numpy().astype(np.float32),
                   width=detections[i].image_size[1], height=detections[i].image_size[0]) for i in range(P)]
    return BodyFit(
        shape=kin.shape_from_free(shape_free[0]).detach().numpy().astype(np.float32),
        poses=full_pose.numpy().astype(np.float32),
        cameras=cams,
        keypoint_error_pct=kp_err,
        seconds=time.perf_counter() - t_start,
        iterations=sum(cfg.iterations),
        stage_seconds=stage_seconds,
        loss=final_loss,
    )


#: Body parts a failed fit is explained by: their landmarks (those the body has are used).
LIMBS = {
    "torso": ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),
    "head": ("nose", "left_eye", "right_eye", "left_ear", "right_ear"),
    "left_arm": ("left_elbow", "left_wrist"),
    "right_arm": ("right_elbow", "right_wrist"),
    "left_leg": ("left_knee", "left_ankle", "left_heel", "left_foot_index"),
    "right_leg": ("right_knee", "right_ankle", "right_heel", "right_foot_index"),
}


def limb_errors(body, fit: BodyFit, detections: list[Detection], config: FitConfig | None = None
                ) -> list[dict[str, float | None]]:
    """Per photo and body part (LIMBS): the mean distance (% of the person's height) from the
    fitted body's landmarks to the confident keypoints; None where the part's keypoints
    were not seen."""
    kin = _kinematics(body, (config or FitConfig()).vertex_spacing_m)
    names = kin.lm_names
    with torch.no_grad():
        shape_free = _inverse_elementwise(kin.shape_from_free, torch.as_tensor(fit.shape, dtype=torch.float32))[None]
        lm, _ = kin.posed(shape_free, torch.as_tensor(np.asarray(fit.poses, np.float32)[:, kin.fit_idx]))
    out = []
    for p, det in enumerate(detections):
        uv, _ = fit.cameras[p].project(lm[p].numpy())
        height = max(det.person_height_px(), 1.0)
        row: dict[str, float | None] = {}
        for limb, landmarks in LIMBS.items():
            errs = [float(np.linalg.norm(uv[names.index(n)] - det.keypoints[MEDIAPIPE_33.index(n), :2]))
                    for n in landmarks
                    if n in names and det.keypoints[MEDIAPIPE_33.index(n), 2] > MIN_CONFIDENCE]
            row[limb] = round(100 * float(np.mean(errs)) / height, 2) if errs else None
        out.append(row)
    return out


def torso_tilt_deg(det: Detection) -> float | None:
    """How far the photo's torso (hips to shoulders) is from upright, in degrees (0: upright,
    90: lying, 180: upside down); None when the shoulders or hips were not seen."""
    kp = det.keypoints
    idx = [MEDIAPIPE_33.index(n) for n in TORSO]
    if kp[idx, 2].min() <= MIN_CONFIDENCE:
        return None
    shoulders, hips = kp[idx[:2], :2].mean(0), kp[idx[2:], :2].mean(0)
    up = hips - shoulders  # image y grows downwards: upright = (0, +)
    if float(np.linalg.norm(up)) < 1e-6:
        return None
    return float(np.degrees(np.arctan2(abs(up[0]), up[1])))


def posed_vertices(body, shape: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """Model vertices [V,3] (world, glTF axes) for one shape and one pose [J,3]."""
    top = body.topology
    with torch.no_grad():
        coeffs = body.shape_coeffs(torch.as_tensor(shape, dtype=torch.float32)[None])
        heads = body.rest_heads(coeffs)
        verts = body.rest_vertices(coeffs)
        A = forward_kinematics(axis_angle_to_matrix(torch.as_tensor(pose, dtype=torch.float32)[None]),
                               heads, top.parents)
        out = skin_points(A, verts, torch.from_numpy(top.skin_indices), torch.from_numpy(top.skin_weights))
    return out[0].numpy()
