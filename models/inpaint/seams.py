"""Blend the filled texture across UV seams (Poisson-style, per split vertex).

The atlas cuts the body along seams (the spine, where head, arms, hands and feet meet the
torso): the two sides of a seam lie in different places of the texture, and a fill that
works in texture space (the diffusion model) colours each side on its own, so a seam can
show as a hard colour edge on the avatar. This module removes that edge with a smooth
additive correction of the unseen texels:

1. Every split vertex gets a colour: the texture sampled at its UV (bilinear, texel centres
   at (i + 0.5) / T as in the rasterized atlas, over a 3 x 3 box of covered texels so a
   vertex on a chart border does not pick up the gutter and the photo's noise averages out).
2. Split vertices that share a model vertex (a seam) get a target colour: the mean over
   their observed members when some were seen in the photo (the photo wins), otherwise the
   mean over the group. Their correction is target - own colour. Vertices that touch an
   observed texel keep correction 0 (the photo is kept as is).
3. The correction of every other vertex is harmonic (graph Laplacian over the UV mesh's
   edges, the seam and observed vertices as Dirichlet constraints), so it fades smoothly
   away from the seam. Mesh components without any constraint get 0.
4. The per-vertex correction is interpolated at every texel (barycentric, the atlas's own
   raster) and added to the unseen texels only; the result is clipped to 0..1.

Everything that depends only on the topology (edges, components, seam groups; the atlas
raster, by ``texel_map``) is cached; the linear system changes with the observed set and is solved per call
(a sparse LU of at most one unknown per split vertex: tens of milliseconds).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu

FOOTPRINT = 3  # box (texels) averaged around a vertex's UV when sampling colours


@dataclass(frozen=True)
class SeamGraph:
    """Topology-only data of the blending (cached per topology)."""

    adjacency: sp.csr_matrix  # [Vs, Vs] 1 per UV-mesh edge (symmetric)
    degree: np.ndarray  # float64 [Vs]
    component: np.ndarray  # int [Vs] connected component (UV island) of each split vertex
    n_components: int
    seam: np.ndarray  # bool [Vs] split vertex shares its model vertex with another one
    group: np.ndarray  # int [Vs] dense id of the source vertex (for group means)
    n_groups: int


_lock = threading.Lock()
_graphs: dict[int, tuple[object, SeamGraph]] = {}


def seam_graph(topology) -> SeamGraph:
    key = id(topology)
    with _lock:
        hit = _graphs.get(key)
    if hit is not None and hit[0] is topology:
        return hit[1]
    faces = np.asarray(topology.faces, np.int64)
    n = int(np.asarray(topology.uvs).shape[0])
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.sort(e, axis=1)
    code = np.unique(e[:, 0] * n + e[:, 1])
    e = np.stack([code // n, code % n], 1)
    e = e[e[:, 0] != e[:, 1]]
    a = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    a = (a + a.T).tocsr()
    a.data[:] = 1.0
    n_comp, comp = connected_components(a, directed=False)
    _, group, counts = np.unique(np.asarray(topology.source_vertex), return_inverse=True, return_counts=True)
    g = SeamGraph(adjacency=a, degree=np.asarray(a.sum(1)).ravel(), component=comp, n_components=int(n_comp),
                  seam=counts[group] > 1, group=group, n_groups=len(counts))
    with _lock:
        _graphs[key] = (topology, g)
    return g


def sample_vertices(img: np.ndarray, valid: np.ndarray, uvs: np.ndarray,
                    footprint: int = FOOTPRINT) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear samples of img [T,T,C] at uvs [V,2] over the `valid` texels only, each texel
    first averaged over a footprint x footprint box of valid texels.

    Returns (values [V,C], support [V]: the summed weight of valid texels; 0 = none near).
    """
    H, W = valid.shape
    v = valid.astype(np.float32)
    num = img.reshape(H, W, -1).astype(np.float32) * v[..., None]
    if footprint > 1:
        k = (footprint, footprint)
        num = cv2.boxFilter(num, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
        v = cv2.boxFilter(v, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    num = num.reshape(H, W, -1)
    x = np.asarray(uvs[:, 0], np.float64) * W - 0.5
    y = np.asarray(uvs[:, 1], np.float64) * H - 0.5
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    acc = np.zeros((len(x), num.shape[2]))
    wsum = np.zeros(len(x))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = np.clip(y0 + dy, 0, H - 1), np.clip(x0 + dx, 0, W - 1)
            w = wy * wx
            acc += w[:, None] * num[yy, xx]
            wsum += w * v[yy, xx]
    return (acc / np.maximum(wsum, 1e-8)[:, None]).astype(np.float32), wsum


def vertex_correction(colour: np.ndarray, observed: np.ndarray, graph: SeamGraph,
                      known: np.ndarray | None = None) -> np.ndarray:
    """Per split vertex colours [Vs,C] and observed flags [Vs] -> harmonic correction [Vs,C].

    known [Vs]: vertices whose colour could be sampled (default all); the others take no
    part in the group means and are solved for like any unseen vertex.
    """
    n, C = colour.shape
    known = np.ones(n, bool) if known is None else known.astype(bool)
    obs = observed.astype(bool) & known
    # Group targets: the observed members' mean if any member was seen, else the group's mean.
    gid = graph.group
    w_all = known.astype(np.float64)
    w_obs = obs.astype(np.float64)
    cnt_all = np.bincount(gid, weights=w_all, minlength=graph.n_groups)
    cnt_obs = np.bincount(gid, weights=w_obs, minlength=graph.n_groups)
    target = np.empty((graph.n_groups, C))
    for c in range(C):
        s_all = np.bincount(gid, weights=colour[:, c] * w_all, minlength=graph.n_groups)
        s_obs = np.bincount(gid, weights=colour[:, c] * w_obs, minlength=graph.n_groups)
        target[:, c] = np.where(cnt_obs > 0, s_obs / np.maximum(cnt_obs, 1), s_all / np.maximum(cnt_all, 1))
    corr = np.zeros((n, C))
    seam = graph.seam & known & ~obs
    corr[seam] = target[gid[seam]] - colour[seam]
    fixed = (graph.seam & known) | obs
    # Islands without a constraint: correction 0 (fixed at 0).
    constrained = np.bincount(graph.component, weights=fixed.astype(np.float64), minlength=graph.n_components) > 0
    fixed = fixed | ~constrained[graph.component]
    free = np.flatnonzero(~fixed)
    if len(free) == 0 or not np.any(corr):
        return corr.astype(np.float32)
    # Only the free vertices that can be reached from a non-zero constraint need a solve; the
    # others (islands with zero constraints only) stay 0. Solve L_ff x_f = A_fc x_c.
    a = graph.adjacency
    a_f = a[free]
    a_ff = a_f[:, free]
    lap = (sp.diags(graph.degree[free]) - a_ff).tocsc()
    rhs = a_f @ corr  # fixed columns carry their values, free ones are 0 in corr
    x = splu(lap).solve(np.ascontiguousarray(rhs))
    corr[free] = x
    return corr.astype(np.float32)


@dataclass
class SeamBlend:
    texture: np.ndarray  # float32 [T,T,3] with the correction added to the unseen texels
    correction: np.ndarray  # float32 [Vs,3] per split vertex
    info: dict


def blend_seams(texture: np.ndarray, observed: np.ndarray, covered: np.ndarray, topology,
                tm=None) -> SeamBlend:
    """Remove colour jumps across UV seams from the unseen texels of `texture` [T,T,3] 0..1.

    observed [T,T]: texels from the photo (never changed); covered [T,T]: texels on the body.
    Texels outside `covered` (the gutters) are returned unchanged: pull-push them afterwards.
    """
    t0 = time.perf_counter()
    T = covered.shape[0]
    graph = seam_graph(topology)
    if tm is None:
        from models.texture.atlas import texel_map

        tm = texel_map(topology.uvs, topology.faces, T)
    cov = covered & tm.covered
    obs = observed & cov
    uvs = np.asarray(topology.uvs)
    colour, support = sample_vertices(texture, cov, uvs)
    obs_frac, _ = sample_vertices(obs.astype(np.float32)[..., None], cov, uvs)
    v_obs = obs_frac[:, 0] > 0  # touches an observed texel: keep it as the photo has it
    corr = vertex_correction(colour, v_obs, graph, known=support > 0)
    out = np.array(texture, np.float32, copy=True)
    if np.any(corr):
        from models.texture.atlas import texel_attribute

        ct = texel_attribute(tm, corr, np.asarray(topology.faces))  # 0 off the covered texels
        ct *= (cov & ~observed)[..., None]
        out += ct
        np.clip(out, 0.0, 1.0, out=out, where=ct != 0)
    seam = graph.seam
    jump = _group_spread(colour, graph)
    info = {"seam_vertices": int(seam.sum()), "observed_vertices": int(v_obs.sum()),
            "max_seam_jump_before": round(float(jump.max(initial=0.0)), 4),
            "max_correction": round(float(np.abs(corr).max(initial=0.0)), 4),
            "seconds": round(time.perf_counter() - t0, 3)}
    return SeamBlend(texture=out, correction=corr, info=info)


def _group_spread(colour: np.ndarray, graph: SeamGraph) -> np.ndarray:
    """Per seam group: max over channels of (max - min) of its members' colours."""
    idx = np.flatnonzero(graph.seam)
    if len(idx) == 0:
        return np.zeros(0, np.float32)
    idx = idx[np.argsort(graph.group[idx], kind="stable")]
    start = np.flatnonzero(np.r_[True, np.diff(graph.group[idx]) != 0])
    c = colour[idx]
    return (np.maximum.reduceat(c, start) - np.minimum.reduceat(c, start)).max(1)


def seam_spread(texture: np.ndarray, covered: np.ndarray, topology) -> np.ndarray:
    """Per seam group, the largest colour difference between its split vertices (sampled as
    blend_seams samples them): 0 where a seam does not show."""
    colour, _ = sample_vertices(texture, covered, np.asarray(topology.uvs))
    return _group_spread(colour, seam_graph(topology))
