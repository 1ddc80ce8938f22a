"""Pose and shape priors of the fit, built from the body's own rest geometry.

Pose (per fit joint, axis-angle in world-aligned rest axes, see ``models/body/lbs.py``):

- *joint limits*: elbows and knees are hinges that bend one way. The hinge axis comes from
  the rest skeleton: the normal of the plane of the two bones when the rest limb is bent
  (Anny's rest elbows are), else an elbow flexes its forearm towards the front (+z) and a
  knee its shin towards the back. Straightening the limb past straight (hyperextension,
  beyond a small margin) costs a lot; rotating off the hinge axis costs a little.
- *twist*: rotation of a limb about its own bone changes neither its keypoints nor much
  of its silhouette, so it is kept small.
- *natural pose*: a weighted squared norm pulling towards the rest pose, stronger for the
  spine, neck and head (people stand mostly upright) and the feet (they follow only two
  keypoints each, heel and toes) than for the limbs.

Shape: a squared norm of the fit's unconstrained shape parameters (0 is the model's mean
person: Anny phenotypes 0.5, SMPL-X betas 0).

Written against landmark names, so Anny and SMPL-X get the same priors.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# (parent joint, hinge joint, child joint landmarks; the side a straight limb bends to: +1 front)
HINGES = (("left_shoulder", "left_elbow", "left_wrist", 1.0), ("right_shoulder", "right_elbow", "right_wrist", 1.0),
          ("left_hip", "left_knee", "left_ankle", -1.0), ("right_hip", "right_knee", "right_ankle", -1.0))
STRAIGHT_DEG = 10.0  # a rest limb bent less than this counts as straight
# (limb joint's landmark, the landmark its bone points to): twist is about this bone
BONES = (("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
         ("left_hip", "left_knee"), ("right_hip", "right_knee"),
         ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"),
         ("left_knee", "left_ankle"), ("right_knee", "right_ankle"))
HYPEREXTENSION_MARGIN = np.radians(8.0)
TORSO_WEIGHT = 4.0  # natural-pose weight of spine, neck, head joints relative to limbs


@dataclass
class PosePrior:
    hinge: torch.Tensor  # float32 [F, 3]: unit flexion axis of hinge joints, zeros elsewhere
    rest_flex: torch.Tensor  # float32 [F]: how bent the rest limb already is (radians)
    bone: torch.Tensor  # float32 [F, 3]: unit bone direction of limb joints, zeros elsewhere
    weight: torch.Tensor  # float32 [F]: natural-pose weight

    @classmethod
    def for_body(cls, body, fit_joint_idx: list[int]) -> "PosePrior":
        top = body.topology
        with torch.no_grad():
            heads = body.rest_heads(body.shape_coeffs(_neutral_shape(body)))[0].numpy()

        def joint_of(landmark: str) -> int | None:
            kind, idx = top.landmarks.get(landmark, ("", -1))
            return idx if kind == "joint" else None

        pos = {j: k for k, j in enumerate(fit_joint_idx)}
        F = len(fit_joint_idx)
        hinge = np.zeros((F, 3), np.float32)
        rest_flex = np.zeros(F, np.float32)
        bone = np.zeros((F, 3), np.float32)
        weight = np.full(F, TORSO_WEIGHT, np.float32)
        z = np.array([0.0, 0.0, 1.0])
        for parent, lm, child, side in HINGES:
            p, j, c = joint_of(parent), joint_of(lm), joint_of(child)
            if j not in pos or p is None or c is None:
                continue
            u = _unit(heads[j] - heads[p])
            f = _unit(heads[c] - heads[j])
            bent = float(np.degrees(np.arccos(np.clip(u @ f, -1.0, 1.0))))
            # Positive rotation about u x f turns f away from u: flexion.
            a = np.cross(u, f) if bent > STRAIGHT_DEG else np.cross(f, z) * side
            if np.linalg.norm(a) > 1e-6:
                hinge[pos[j]] = _unit(a)
                rest_flex[pos[j]] = np.radians(bent) if bent > STRAIGHT_DEG else 0.0
        for lm, child in BONES:
            j, c = joint_of(lm), joint_of(child)
            if j in pos and c is not None:
                d = heads[c] - heads[j]
                bone[pos[j]] = d / max(np.linalg.norm(d), 1e-6)
                weight[pos[j]] = 1.0
        return cls(torch.from_numpy(hinge), torch.from_numpy(rest_flex), torch.from_numpy(bone),
                   torch.from_numpy(weight))

    def limits(self, pose: torch.Tensor) -> torch.Tensor:
        """[P, F, 3] -> scalar: hyperextension (strong) and off-hinge rotation (weak)."""
        is_hinge = self.hinge.abs().sum(-1) > 0
        flex = (pose * self.hinge).sum(-1)  # [P, F] signed flexion angle
        hyper = torch.relu(-flex - self.rest_flex - HYPEREXTENSION_MARGIN) * is_hinge
        off = pose - flex[..., None] * self.hinge
        off2 = (off * off).sum(-1) * is_hinge
        return (hyper * hyper).sum(-1).mean() * 10.0 + off2.sum(-1).mean() * 0.5

    def twist(self, pose: torch.Tensor) -> torch.Tensor:
        t = (pose * self.bone).sum(-1)
        return (t * t).sum(-1).mean()

    def natural(self, pose: torch.Tensor, torso_weight: float = TORSO_WEIGHT) -> torch.Tensor:
        """Weighted squared rotation angles; `torso_weight` for spine, neck and head."""
        w = torch.where(self.weight == TORSO_WEIGHT, torch.tensor(torso_weight), self.weight)
        return ((pose * pose).sum(-1) * w).sum(-1).mean()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def shape_prior(shape_free: torch.Tensor) -> torch.Tensor:
    return (shape_free * shape_free).mean()


def _neutral_shape(body) -> torch.Tensor:
    free = torch.zeros(1, len(body.shape_labels))
    return getattr(body, "shape_from_free", torch.sigmoid)(free)
