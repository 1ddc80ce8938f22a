"""Seam blending of the filled texture (models.inpaint.seams): colour jumps across UV seams
disappear from the unseen texels, observed texels and texels far from any jump stay as they
were, islands without constraints get no correction, and it is fast and deterministic."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from models.inpaint.seams import blend_seams, sample_vertices, seam_graph, seam_spread, vertex_correction
from models.texture.atlas import texel_map


@pytest.fixture(scope="module")
def anny():
    from models.body.registry import get_body

    return get_body("anny")


def _quad(x0: float, y0: float, s: float, sources: list[int]):
    """Two triangles over a square in UV (counter-clockwise), its 4 corners' source vertices."""
    uvs = np.array([[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s]], np.float32)
    return uvs, np.array([[0, 1, 2], [0, 2, 3]]), np.array(sources)


def _tiny_topology():
    """Three islands: A and B are the two sides of one cut (A's right edge is B's left edge
    on the body), C has no seam. Each island is a 2 x 1 strip of quads."""
    uvs, faces, src = [], [], []
    # island A: columns x = 0.05, 0.2, 0.35 ; island B: x = 0.55, 0.7, 0.85 ; C below.
    for ox, oy, ids in ((0.05, 0.1, [0, 1, 2, 3, 4, 5]), (0.5, 0.1, [2, 6, 7, 5, 8, 9]),
                        (0.05, 0.6, [10, 11, 12, 13, 14, 15])):
        base = len(uvs)
        # 2 x 3 grid of vertices: top row ids[0:3], bottom row ids[3:6]
        for r in range(2):
            for c in range(3):
                uvs.append([ox + 0.15 * c, oy + 0.3 * r])
                src.append(ids[r * 3 + c])
        for c in range(2):
            a, b, d, e = base + c, base + c + 1, base + 3 + c + 1, base + 3 + c
            faces += [[a, b, d], [a, d, e]]
    return SimpleNamespace(uvs=np.array(uvs, np.float32), faces=np.array(faces, np.int32),
                           source_vertex=np.array(src))


def test_a_colour_jump_across_a_seam_disappears_and_the_rest_stays():
    top = _tiny_topology()
    T = 128
    tm = texel_map(top.uvs, top.faces, T)
    u = (np.arange(T) + 0.5) / T
    tex = np.zeros((T, T, 3), np.float32)
    tex[:, u < 0.45] = [0.8, 0.2, 0.2]  # island A red
    tex[:, u > 0.45] = [0.2, 0.2, 0.8]  # island B blue
    tex[T // 2:] = [0.3, 0.6, 0.3]  # island C green (no seam)
    tex *= tm.covered[..., None]
    observed = np.zeros((T, T), bool)
    g = seam_graph(top)
    assert g.seam.sum() == 4 and g.n_components == 3

    before = seam_spread(tex, tm.covered, top)
    res = blend_seams(tex, observed, tm.covered, top, tm)
    after = seam_spread(res.texture, tm.covered, top)
    assert before.max() == pytest.approx(0.6, abs=1e-3)
    assert after.max() < 0.02
    # Vertex level: the corrected colours of a seam group are equal.
    colour, _ = sample_vertices(tex, tm.covered, top.uvs)
    fixed = colour + res.correction
    assert np.abs(fixed[2] - fixed[6]).max() < 1e-5  # both copies of source vertex 2
    # The island without a seam is not touched, nor are the gutters.
    c_island = np.zeros((T, T), bool)
    c_island[T // 2:] = True
    assert np.array_equal(res.texture[c_island], tex[c_island])
    assert np.array_equal(res.texture[~tm.covered], tex[~tm.covered])
    assert np.all(res.correction[12:] == 0)
    # Nothing else anchors A and B: the harmonic correction is the seam's all over each island.
    assert res.correction[:6] == pytest.approx(np.tile(res.correction[2], (6, 1)), abs=1e-5)

    # One side observed: it is kept, the other side takes its colour.
    observed = tm.covered & (u < 0.45)[None, :]
    observed[T // 2:] = False
    res = blend_seams(tex, observed, tm.covered, top, tm)
    assert np.array_equal(res.texture[observed], tex[observed])
    assert seam_spread(res.texture, tm.covered, top).max() < 0.02
    assert res.correction[:6].max() == 0 and res.correction[:6].min() == 0
    assert res.texture[:T // 2][tm.covered[:T // 2] & (u > 0.45)[None, :]][:, 0].max() == pytest.approx(0.8, abs=0.02)


def test_components_without_constraints_get_no_correction():
    top = _tiny_topology()
    g = seam_graph(top)
    colour = np.full((len(top.uvs), 3), 0.5, np.float32)
    colour[6:12] = 0.1  # island B differs from A along the seam
    corr = vertex_correction(colour, np.zeros(len(colour), bool), g)
    assert np.all(corr[12:] == 0)  # island C: no constraint
    assert corr[2] == pytest.approx([-0.2] * 3) and corr[6] == pytest.approx([0.2] * 3)
    # nothing differs: no correction at all
    assert not np.any(vertex_correction(np.full_like(colour, 0.3), np.zeros(len(colour), bool), g))


def test_anny_back_seam_is_blended_observed_texels_kept_fast_and_deterministic(anny):
    top = anny.topology
    T = 1024
    tm = texel_map(top.uvs, top.faces, T)
    cov = tm.covered
    # A texture that jumps wherever the atlas cuts: colour from the UV position itself
    # (the two sides of every seam lie in different places), smooth elsewhere.
    yy, xx = np.mgrid[0:T, 0:T].astype(np.float32) / T
    tex = np.stack([0.2 + 0.6 * xx, 0.5 + 0.3 * np.sin(6 * yy), 0.8 - 0.6 * xx], -1) * cov[..., None]
    tex = tex.astype(np.float32)
    observed = cov & (yy < 0.35)  # some texels seen in the photo
    before = seam_spread(tex, cov, top)
    blend_seams(tex, observed, cov, top)  # warm the caches (graph, raster)
    t0 = time.perf_counter()
    res = blend_seams(tex, observed, cov, top)
    seconds = time.perf_counter() - t0
    again = blend_seams(tex, observed, cov, top)
    assert np.array_equal(res.texture, again.texture)  # deterministic
    assert seconds < 1.5  # about 0.15 s on an idle 2-core CPU; loose for busy machines
    assert np.array_equal(res.texture[observed], tex[observed])
    assert np.array_equal(res.texture[~cov], tex[~cov])
    assert res.texture.min() >= 0 and res.texture.max() <= 1
    # Seam groups with no observed member: the jump is gone.
    g = seam_graph(top)
    frac, _ = sample_vertices(observed.astype(np.float32)[..., None], cov, top.uvs)
    seen_group = np.bincount(g.group, weights=(frac[:, 0] > 0).astype(float), minlength=g.n_groups) > 0
    idx = np.flatnonzero(g.seam)
    idx = idx[np.argsort(g.group[idx], kind="stable")]
    unseen = ~seen_group[g.group[idx][np.r_[True, np.diff(g.group[idx]) != 0]]]
    after = seam_spread(res.texture, cov, top)
    assert unseen.sum() > 100 and before[unseen].mean() > 0.1
    assert after[unseen].mean() < 0.1 * before[unseen].mean()
    assert np.percentile(after[unseen], 95) < 0.03
