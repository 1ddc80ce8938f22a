"""Bake a fitted body and its texture into the avatar bundle (rigged glTF .glb)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.bundle.avatar_mesh import BUNDLE_FORMAT_VERSION, AvatarMesh, limit_influences
from models.bundle.gltf import write_glb


def build_avatar_mesh(body, shape: np.ndarray, texture: np.ndarray, extras: dict | None = None) -> AvatarMesh:
    """Rest mesh in the person's shape (A-pose), skeleton, 4 weights per vertex, texture."""
    top = body.topology
    with torch.no_grad():
        coeffs = body.shape_coeffs(torch.as_tensor(shape, dtype=torch.float32)[None])
        verts = body.rest_vertices(coeffs)[0].numpy()
    src = top.source_vertex
    joints, weights = limit_influences(top.skin_indices[src], top.skin_weights[src], k=4)
    meta = {
        "body_model": body.body_model,
        "shape_params": {k: float(v) for k, v in zip(body.shape_labels, shape)},
        "format_version": BUNDLE_FORMAT_VERSION,
        "canonical_joints": dict(body.canonical_joints),
    }
    meta.update(extras or {})
    return AvatarMesh(
        positions=verts[src],
        normals=None,
        uvs=top.uvs,
        faces=top.faces.astype(np.uint32),
        joint_names=top.joint_names,
        parents=np.asarray(top.parents, np.int32),
        rest_matrices=body.rest_joint_matrices(shape),
        joints=joints,
        weights=weights,
        texture=texture,
        extras=meta,
    )


def bake(body, shape: np.ndarray, texture: np.ndarray, out: Path, extras: dict | None = None) -> None:
    write_glb(out, build_avatar_mesh(body, shape, texture, extras))
