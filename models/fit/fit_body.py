"""Fit body shape, pose and camera to detected 2D keypoints (SMPLify-style, torch).

Several photos of one person share one shape; each photo has its own pose and camera.
Staged: first the global orientation and translation from the torso, then pose and shape.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from models.body.lbs import axis_angle_to_matrix, forward_kinematics, skin_points
from models.body.template import MEDIAPIPE_33
from models.detect.base import Detection
from models.fit.camera import Camera, default_intrinsics

# Joints whose rotation the fit may change; the rest keep the model's rest pose.
FIT_JOINTS = [
    "spine03", "spine01", "neck01", "head",
    "upperarm01.L", "lowerarm01.L", "upperarm01.R", "lowerarm01.R",
    "upperleg01.L", "lowerleg01.L", "upperleg01.R", "lowerleg01.R",
]
TORSO = ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]
# Landmarks that are less reliable on this body (hands, face details) count less.
LANDMARK_WEIGHT = {"left_pinky": 0.3, "right_pinky": 0.3, "left_index": 0.3, "right_index": 0.3,
                   "left_thumb": 0.3, "right_thumb": 0.3, "left_ear": 0.5, "right_ear": 0.5,
                   "nose": 0.7, "left_eye": 0.5, "right_eye": 0.5}
MIN_CONFIDENCE = 0.3
ASSUMED_HEIGHT_M = 1.7


@dataclass
class BodyFit:
    shape: np.ndarray  # float32 [6] phenotype values
    poses: np.ndarray  # float32 [P, J, 3] axis-angle per joint (world-aligned rest axes)
    cameras: list[Camera]
    keypoint_error_pct: list[float]  # per photo: mean 2D error in % of person height
    seconds: float = 0.0
    iterations: int = 0
    warnings: list[str] = field(default_factory=list)


def _gmof(r2: torch.Tensor, sigma2: float) -> torch.Tensor:
    """Geman-McClure: robust to a few wrong keypoints."""
    return r2 / (r2 + sigma2)


class _Problem:
    """Everything the optimizer needs that does not change across iterations."""

    def __init__(self, body, detections: list[Detection]):
        self.body = body
        top = body.topology
        self.parents = top.parents
        names = [n for n in MEDIAPIPE_33 if n in top.landmarks]
        self.lm_names = names
        kinds = [top.landmarks[n] for n in names]
        self.joint_lm = [i for i, k in enumerate(kinds) if k[0] == "joint"]
        self.joint_idx = torch.tensor([kinds[i][1] for i in self.joint_lm])
        self.vert_lm = [i for i, k in enumerate(kinds) if k[0] == "vertex"]
        self.vert_idx = torch.tensor([kinds[i][1] for i in self.vert_lm])
        self.vert_skin_idx = torch.from_numpy(top.skin_indices[self.vert_idx.numpy()])
        self.vert_skin_w = torch.from_numpy(top.skin_weights[self.vert_idx.numpy()])
        mp_index = [MEDIAPIPE_33.index(n) for n in names]
        kp = np.stack([d.keypoints[mp_index] for d in detections])  # [P,L,3]
        self.kp = torch.from_numpy(kp[..., :2]).float()
        conf = kp[..., 2] * (kp[..., 2] > MIN_CONFIDENCE)
        w = np.array([LANDMARK_WEIGHT.get(n, 1.0) for n in names], np.float32)
        self.conf = torch.from_numpy(conf * w[None]).float()
        self.torso = torch.tensor([names.index(n) for n in TORSO])
        self.heights = torch.tensor([max(d.person_height_px(), 1.0) for d in detections]).float()
        J = len(top.joint_names)
        self.fit_joints = list(getattr(body, "fit_joints", FIT_JOINTS))  # body-specific names
        self.fit_joint_idx = torch.tensor([top.joint_names.index(n) for n in self.fit_joints])
        # Unconstrained parameters -> shape values (Anny: phenotypes in (0,1); SMPL-X: betas).
        self.shape_from_free = getattr(body, "shape_from_free", torch.sigmoid)
        self.n_joints = J
        self.K = [default_intrinsics(d.image_size[1], d.image_size[0]) for d in detections]
        self.Kt = torch.from_numpy(np.stack(self.K)).float()

    def landmarks_world(self, shape_logit, pose_aa) -> torch.Tensor:
        """Posed 3D landmarks [P, L, 3] in world (glTF) axes."""
        P = pose_aa.shape[0]
        shape = self.shape_from_free(shape_logit)[None]
        coeffs = self.body.shape_coeffs(shape)
        heads = self.body.rest_heads(coeffs).expand(P, -1, -1)
        verts = self.body.rest_vertices(coeffs, self.vert_idx).expand(P, -1, -1)
        aa = torch.zeros(P, self.n_joints, 3)
        aa = aa.index_copy(1, self.fit_joint_idx, pose_aa)
        A = forward_kinematics(axis_angle_to_matrix(aa), heads, self.parents)
        jh = heads[:, self.joint_idx]
        Aj = A[:, self.joint_idx]
        pj = (Aj[..., :3, :3] @ jh[..., None])[..., 0] + Aj[..., :3, 3]
        pv = skin_points(A, verts, self.vert_skin_idx, self.vert_skin_w)
        out = torch.zeros(P, len(self.lm_names), 3)
        out[:, self.joint_lm] = pj
        out[:, self.vert_lm] = pv
        return out

    def project(self, pts, rot_aa, transl) -> torch.Tensor:
        R = axis_angle_to_matrix(rot_aa)  # [P,3,3]
        pc = (R[:, None] @ pts[..., None])[..., 0] + transl[:, None]
        z = pc[..., 2:3].clamp(min=0.1)
        f = torch.stack([self.Kt[:, 0, 0], self.Kt[:, 1, 1]], -1)[:, None]
        c = self.Kt[:, :2, 2][:, None]
        return pc[..., :2] / z * f + c


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


def fit_body(body, detections: list[Detection], progress: Callable[[float], None] | None = None,
             iterations: tuple[int, int] = (60, 140)) -> BodyFit:
    """Fit one shared shape and per-photo pose + camera to the detections."""
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    prob = _Problem(body, detections)
    P = len(detections)
    init = [_initial_camera(d, K) for d, K in zip(detections, prob.K)]
    rot = torch.tensor(np.stack([r for r, _ in init]), requires_grad=True)
    transl = torch.tensor(np.stack([t for _, t in init]), requires_grad=True)
    shape_logit = torch.zeros(len(body.shape_labels), requires_grad=True)
    pose = torch.zeros(P, len(prob.fit_joints), 3, requires_grad=True)
    sigma2 = 0.05 ** 2
    total = sum(iterations)
    done = 0

    def loss_fn(stage: int) -> torch.Tensor:
        lm = prob.landmarks_world(shape_logit, pose)
        uv = prob.project(lm, rot, transl)
        r2 = ((uv - prob.kp) ** 2).sum(-1) / prob.heights[:, None] ** 2
        conf = prob.conf
        if stage == 0:
            mask = torch.zeros_like(conf)
            mask[:, prob.torso] = 1.0
            conf = conf * (0.2 + mask)
        data = (conf * _gmof(r2, sigma2)).sum() / conf.sum().clamp(min=1e-6)
        prior = 0.02 * (pose ** 2).mean() + 0.01 * ((torch.sigmoid(shape_logit) - 0.5) ** 2).mean()
        return data + prior

    stages = [([rot, transl], iterations[0], 0.02), ([rot, transl, pose, shape_logit], iterations[1], 0.02)]
    for stage, (params, n, lr) in enumerate(stages):
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(n):
            opt.zero_grad()
            loss = loss_fn(stage)
            loss.backward()
            opt.step()
            done += 1
            if progress and done % 10 == 0:
                progress(done / total)

    with torch.no_grad():
        lm = prob.landmarks_world(shape_logit, pose)
        uv = prob.project(lm, rot, transl)
        err = torch.sqrt(((uv - prob.kp) ** 2).sum(-1)) / prob.heights[:, None]
        seen = prob.conf > 0
        kp_err = [float(100 * err[i][seen[i]].mean()) if seen[i].any() else float("nan") for i in range(P)]
        full_pose = torch.zeros(P, prob.n_joints, 3).index_copy(1, prob.fit_joint_idx, pose)
        Rm = axis_angle_to_matrix(rot).numpy()
    cams = [Camera(K=prob.K[i], R=Rm[i].astype(np.float32), t=transl[i].detach().numpy().astype(np.float32),
                   width=detections[i].image_size[1], height=detections[i].image_size[0]) for i in range(P)]
    return BodyFit(
        shape=prob.shape_from_free(shape_logit).detach().numpy().astype(np.float32),
        poses=full_pose.numpy().astype(np.float32),
        cameras=cams,
        keypoint_error_pct=kp_err,
        seconds=time.perf_counter() - t0,
        iterations=total,
    )


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
