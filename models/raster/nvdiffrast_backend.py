"""nvdiffrast (CUDA) backend: numpy in, numpy out, same contract as ``cpu``.

Thin wrapper over ``nvdiffrast.torch`` for GPU machines; torch and nvdiffrast
are imported only when this module is imported (``get_backend("cuda")``).
Each call uploads its inputs and downloads the result, so it suits
correctness checks and batch jobs; a GPU render loop that wants speed should
keep tensors on the device and call nvdiffrast directly.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import nvdiffrast.torch as dr
import torch

from .topology import uv_layout

name = "cuda"

_ctx: dr.RasterizeCudaContext | None = None
_ctx_lock = threading.Lock()


def _context() -> dr.RasterizeCudaContext:
    global _ctx
    with _ctx_lock:
        if _ctx is None:
            _ctx = dr.RasterizeCudaContext(device=torch.device("cuda"))
        return _ctx


def _f32(a) -> torch.Tensor:
    # "W": torch.from_numpy warns on read-only arrays, so copy those
    return torch.from_numpy(np.require(a, np.float32, ["C", "W"])).cuda()


def _i32(a) -> torch.Tensor:
    return torch.from_numpy(np.require(a, np.int32, ["C", "W"])).cuda()


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().cpu().numpy()


def _front_facing(pos: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """bool[F]: counter-clockwise on screen (y up) with all w > 0."""
    p = pos.astype(np.float64)
    w = p[:, 3:4]
    ok = w[:, 0] > 0
    xy = p[:, :2] / np.where(ok[:, None], w, 1.0)
    a, b, c = xy[tri[:, 0]], xy[tri[:, 1]], xy[tri[:, 2]]
    d = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    return (d > 0) & ok[tri].all(axis=1)


def _rasterize_t(pos_clip, tri, resolution, cull_backfaces):
    """(rast [1, H, W, 4] tensor, pos [1, V, 4] tensor, tri [F, 3] tensor)."""
    pos = np.ascontiguousarray(pos_clip, dtype=np.float32)
    tri = np.ascontiguousarray(tri, dtype=np.int32)
    pos_t, tri_t = _f32(pos)[None], _i32(tri)
    h, w = resolution
    if not cull_backfaces:
        rast, _ = dr.rasterize(_context(), pos_t, tri_t, resolution=[h, w], grad_db=False)
        return rast, pos_t, tri_t
    # nvdiffrast never culls: draw only front faces, then map ids back.
    keep = np.nonzero(_front_facing(pos, tri))[0].astype(np.int32)
    rast, _ = dr.rasterize(_context(), pos_t, _i32(tri[keep]), resolution=[h, w], grad_db=False)
    lut = torch.from_numpy(np.concatenate([[0], keep + 1]).astype(np.float32)).cuda()
    rast = torch.cat([rast[..., :3], lut[rast[..., 3].long()][..., None]], dim=-1)
    return rast, pos_t, tri_t


def rasterize(pos_clip, tri, resolution, cull_backfaces: bool = False) -> np.ndarray:
    """float32[H, W, 4] = (u, v, z/w, tri_id + 1); zeros where empty."""
    rast, _, _ = _rasterize_t(pos_clip, tri, resolution, cull_backfaces)
    return _np(rast[0])


def interpolate(attr, rast, tri) -> np.ndarray:
    """float32[H, W, C] (nvdiffrast weighting u*a0 + v*a1 + (1-u-v)*a2)."""
    out, _ = dr.interpolate(_f32(attr)[None], _f32(rast)[None], _i32(tri))
    return _np(out[0])


def _texture_t(tex: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    return dr.texture(tex, uv, filter_mode="linear", boundary_mode="clamp")


def texture(tex, uv, mask=None) -> np.ndarray:
    """float32[H, W, C]: bilinear, clamp; in tex's units (uint8 -> 0..255)."""
    out = _texture_t(_f32(tex)[None], _f32(uv)[None])[0]
    res = _np(out)
    if mask is not None:
        res[~np.asarray(mask, dtype=bool)] = 0
    return res


def antialias(color, rast, pos_clip, tri) -> np.ndarray:
    """nvdiffrast's analytic silhouette antialiasing; returns color's dtype."""
    color = np.asarray(color)
    out = dr.antialias(_f32(color)[None], _f32(rast)[None], _f32(pos_clip)[None], _i32(tri))
    res = _np(out[0])
    if color.dtype == np.uint8:
        return np.clip(np.rint(res), 0, 255).astype(np.uint8)
    return res


def render_textured(
    pos_clip,
    tri,
    uv,
    tex,
    resolution,
    background: Sequence[int] = (0, 0, 0),
    *,
    uv_idx=None,
    antialias: bool = True,
    flip_y: bool = False,
    cull_backfaces: bool = False,
):
    """rgb uint8[H, W, 3] and alpha uint8[H, W], computed on the GPU."""
    tri = np.ascontiguousarray(tri, dtype=np.int32)
    uv, uv_idx = uv_layout(uv, tri, uv_idx)
    rast, pos_t, tri_t = _rasterize_t(pos_clip, tri, resolution, cull_backfaces)
    uvi, _ = dr.interpolate(_f32(uv)[None], rast, _i32(uv_idx))
    col = _texture_t(_f32(tex)[None], uvi)
    cov = (rast[..., 3:4] > 0).float()
    bg = torch.tensor(list(background), dtype=torch.float32, device=col.device)
    rgba = torch.cat([col * cov + bg * (1 - cov), cov * 255], dim=-1)
    if antialias:
        rgba = dr.antialias(rgba.contiguous(), rast, pos_t, tri_t)
    out = _np(torch.clamp(torch.floor(rgba[0] + 0.5), 0, 255).to(torch.uint8))
    if flip_y:
        out = out[::-1]
    return np.ascontiguousarray(out[..., :3]), np.ascontiguousarray(out[..., 3])
