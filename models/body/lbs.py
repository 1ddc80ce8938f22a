"""Forward kinematics and linear blend skinning in torch (used by fitting).

Rotations are SMPL-style: each joint's rotation is expressed in world-aligned axes of the
rest pose and applied about the joint's rest head. The numpy render path implements the
same maths (models/render/skinning.py) so a fit and its render agree.
"""
from __future__ import annotations

import torch


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """[..., 3] axis-angle -> [..., 3, 3] rotation (Rodrigues, safe at zero)."""
    theta = torch.sqrt((aa * aa).sum(-1, keepdim=True) + 1e-12)  # [...,1]
    k = aa / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    K = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s = torch.sin(theta)[..., None]
    c = torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand_as(K)
    return eye + s * K + (1 - c) * (K @ K)


def forward_kinematics(
    rots: torch.Tensor,  # [B, J, 3, 3] joint rotations (world-aligned rest axes)
    heads: torch.Tensor,  # [B, J, 3] rest joint heads
    parents: list[int],  # [J], parents before children, -1 for the root
) -> torch.Tensor:
    """Return skinning transforms A [B, J, 4, 4]: v_posed = sum_j w_j A_j v_rest."""
    B, J = rots.shape[:2]
    # Local transform of each joint: rotate about its own rest head.
    t_local = heads - (rots @ heads[..., None])[..., 0]  # [B,J,3]
    local = torch.zeros(B, J, 4, 4, dtype=rots.dtype, device=rots.device)
    local[..., :3, :3] = rots
    local[..., :3, 3] = t_local
    local[..., 3, 3] = 1.0
    out = [None] * J
    for j in range(J):
        p = parents[j]
        out[j] = local[:, j] if p < 0 else out[p] @ local[:, j]
    return torch.stack(out, 1)


def skin_points(
    A: torch.Tensor,  # [B, J, 4, 4]
    points: torch.Tensor,  # [B, N, 3] rest positions
    idx: torch.Tensor,  # [N, K] joint indices
    w: torch.Tensor,  # [N, K] weights
) -> torch.Tensor:
    """Linear blend skinning of N points -> [B, N, 3]."""
    M = (A[:, idx] * w[None, :, :, None, None]).sum(2)  # [B,N,4,4]
    return (M[..., :3, :3] @ points[..., None])[..., 0] + M[..., :3, 3]


class LinearShapeSpace:
    """Rest vertices and joint heads linear in the shape coefficients (Anny's phenotype
    blendshapes, SMPL-X's betas). The body sets ``template_vertices`` [V,3],
    ``blendshapes`` [S,V,3], ``template_heads`` [J,3] and ``head_blendshapes`` [S,J,3]."""

    template_vertices: torch.Tensor
    blendshapes: torch.Tensor
    template_heads: torch.Tensor
    head_blendshapes: torch.Tensor

    def rest_vertices(self, coeffs: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """[B,S] -> [B,V,3] rest vertices (optionally only `index`)."""
        if index is None:
            return self.template_vertices + torch.einsum("bs,svc->bvc", coeffs, self.blendshapes)
        return self.template_vertices[index] + torch.einsum(
            "bs,svc->bvc", coeffs, self.blendshapes[:, index]
        )

    def rest_heads(self, coeffs: torch.Tensor) -> torch.Tensor:
        """[B,S] -> [B,J,3] rest joint heads."""
        return self.template_heads + torch.einsum("bs,sjc->bjc", coeffs, self.head_blendshapes)
