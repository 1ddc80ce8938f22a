"""Pose kinds of synthetic people (models.synth.poses): standing and beyond."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation as Rot

from models.synth import poses as P


@pytest.fixture(scope="module")
def ctx():
    return skeleton()


def skeleton() -> SimpleNamespace:
    """The skeleton as SynthGenerator exposes it (without building the generator)."""
    from models.body.registry import get_body

    body = get_body("anny")
    names = list(body.joint_names)
    heads = body.template_heads.numpy().astype(np.float64)
    H = {n: heads[i] for i, n in enumerate(names)}
    rest = {}
    for s in ("L", "R"):
        rest[f"upperarm01.{s}"] = H[f"lowerarm01.{s}"] - H[f"upperarm01.{s}"]
        rest[f"lowerarm01.{s}"] = H[f"wrist.{s}"] - H[f"lowerarm01.{s}"]
        rest[f"upperleg01.{s}"] = H[f"lowerleg01.{s}"] - H[f"upperleg01.{s}"]
        rest[f"lowerleg01.{s}"] = H[f"foot.{s}"] - H[f"lowerleg01.{s}"]
    return SimpleNamespace(joint_names=names, jidx={n: i for i, n in enumerate(names)},
                           parents=np.asarray(body.topology.parents, np.int64), heads0=H,
                           rest_dirs={k: v / np.linalg.norm(v) for k, v in rest.items()})


def _fk(ctx, pose):
    """-> global rotations [J,3,3] and joint positions [J,3] of the template skeleton."""
    local = Rot.from_rotvec(pose.astype(np.float64)).as_matrix()
    J = len(ctx.joint_names)
    G, X = np.empty((J, 3, 3)), np.empty((J, 3))
    for j, n in enumerate(ctx.joint_names):
        p = ctx.parents[j]
        if p < 0:
            G[j], X[j] = local[j], ctx.heads0[n]
        else:
            G[j] = G[p] @ local[j]
            X[j] = X[p] + G[p] @ (ctx.heads0[n] - ctx.heads0[ctx.joint_names[p]])
    return G, X


def test_probabilities_cover_the_kinds():
    assert set(P.POSE_PROBABILITIES) == set(P.POSE_KINDS)
    assert sum(P.POSE_PROBABILITIES.values()) == pytest.approx(1.0)
    assert sum(P.POSE_PROBABILITIES[k] for k in P.NOT_STANDING) >= 0.2


@pytest.mark.parametrize("kind", P.POSE_KINDS)
def test_every_kind_is_finite_and_anatomical(ctx, kind):
    j = ctx.jidx
    for seed in range(12):
        pose, info = P.random_pose(ctx, np.random.default_rng(seed), kind)
        assert info["kind"] == kind
        assert pose.shape == (len(ctx.joint_names), 3) and pose.dtype == np.float32
        assert np.isfinite(pose).all()
        assert np.allclose(pose[j["root"]], 0)  # the root stays upright
        G, X = _fk(ctx, pose)
        for s in ("L", "R"):
            # The knee bends the right way: in the thigh's own (rest) frame the shin never
            # comes forward of the straight leg.
            thigh = X[j[f"lowerleg01.{s}"]] - X[j[f"upperleg01.{s}"]]
            shin = X[j[f"foot.{s}"]] - X[j[f"lowerleg01.{s}"]]
            rest_t = ctx.rest_dirs[f"upperleg01.{s}"]
            rest_s = ctx.rest_dirs[f"lowerleg01.{s}"]
            Gt = G[j[f"upperleg01.{s}"]]
            assert np.allclose(thigh / np.linalg.norm(thigh), Gt @ rest_t, atol=1e-4)
            local_shin = Gt.T @ (shin / np.linalg.norm(shin))
            flex = np.degrees(np.arctan2(-local_shin[2], -local_shin[1]))
            rest_flex = np.degrees(np.arctan2(-rest_s[2], -rest_s[1]))
            assert flex >= rest_flex - P.KNEE_STRAIGHT_MARGIN_DEG - 1.0, (kind, seed, s, flex)
            assert flex <= P.MAX_KNEE_FLEX_DEG + 10.0, (kind, seed, s, flex)
            # Feet on the ground are roughly flat (the foot bone points forward).
            foot = X[j[f"toe3-1.{s}"]] - X[j[f"foot.{s}"]]
            rest_foot = ctx.heads0[f"toe3-1.{s}"] - ctx.heads0[f"foot.{s}"]
            pitch = np.degrees(np.arcsin(foot[1] / np.linalg.norm(foot)))
            rest_pitch = np.degrees(np.arcsin(rest_foot[1] / np.linalg.norm(rest_foot)))
            if kind in ("apose", "standing", "gesture", "arms_raised", "sitting"):
                assert abs(pitch - rest_pitch) < 15.0, (kind, seed, s, pitch)
                assert foot[2] > 0.5 * np.linalg.norm(foot)  # forward


def test_kind_shares_follow_the_probabilities(ctx):
    rng = np.random.default_rng(7)
    n = 500
    kinds = [P.random_pose(ctx, rng)[1]["kind"] for _ in range(n)]
    for kind, p in P.POSE_PROBABILITIES.items():
        share = kinds.count(kind) / n
        assert abs(share - p) < 3.5 * np.sqrt(p * (1 - p) / n) + 0.005, (kind, share, p)
    assert sum(kinds.count(k) for k in P.NOT_STANDING) / n >= 0.2


def test_deterministic_for_a_seed(ctx):
    a, ia = P.random_pose(ctx, np.random.default_rng(2024))
    b, ib = P.random_pose(ctx, np.random.default_rng(2024))
    assert ia == ib and np.array_equal(a, b)
    assert not np.array_equal(a, P.random_pose(ctx, np.random.default_rng(2025))[0])
    # Pinned: the drawn kinds and one pose (a change of the draws changes the data sets).
    drawn = [P.random_pose(ctx, np.random.default_rng(s))[1]["kind"] for s in range(6)]
    assert drawn == PINNED_KINDS
    pose, info = P.random_pose(ctx, np.random.default_rng(11), "kicking")
    assert info == PINNED_KICK_INFO
    np.testing.assert_allclose(pose[ctx.jidx[f"upperleg01.{info['leg']}"]], PINNED_KICK_THIGH, atol=1e-4)


def test_unknown_kind_is_refused(ctx):
    with pytest.raises(ValueError, match="unknown pose kind"):
        P.random_pose(ctx, np.random.default_rng(0), "handstand")


PINNED_KINDS = ["arms_raised", "gesture", "standing", "standing", "jumping", "kneeling"]
PINNED_KICK_INFO = {"kind": "kicking", "variant": "front", "leg": "R", "lean_deg": [-16.6, 5.2]}
PINNED_KICK_THIGH = [-1.66229, 0.18563, -0.08933]
