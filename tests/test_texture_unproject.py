"""Unprojection: the three texel masks, gap filling, self-occlusion edges, multi-photo merge."""
from __future__ import annotations

import numpy as np
import pytest

from models.texture.unproject import (
    PartialTexture,
    fill_sampling_gaps,
    limb_parts,
    merge,
    occlusion_edges,
    unproject_photo,
)


def _rast(tri_ids: np.ndarray) -> np.ndarray:
    r = np.zeros(tri_ids.shape + (4,), np.float32)
    r[..., 3] = tri_ids
    return r


def test_occlusion_edges_keep_depth_jumps_and_drop_the_silhouette_and_seams():
    H = W = 64
    tri = np.zeros((H, W), np.int32)
    tri[8:56, 8:56] = 1  # the torso (face 0, part 0)
    tri[20:44, 28:36] = 2  # an arm in front of it (face 1, part 1)
    parts = np.array([0, 1])
    depth = np.where(tri == 1, 2.0, np.where(tri == 2, 1.8, np.inf)).astype(np.float32)
    e = occlusion_edges(_rast(tri), parts, band_px=1, depth=depth)
    assert e[30, 27] or e[30, 28]  # along the arm's side
    assert not e[8:11, :].any() and not e[:, 8:11].any()  # silhouette contour removed
    assert not e[40:56, 8:20].any()  # far from any edge
    flat = np.where(tri > 0, 2.0, np.inf).astype(np.float32)  # same depth: a seam, not an occlusion
    assert not occlusion_edges(_rast(tri), parts, band_px=1, depth=flat).any()


def test_gap_filling_fills_single_holes_only():
    T = 16
    rgb = np.zeros((T, T, 3), np.float32)
    w = np.zeros((T, T), np.float32)
    rgb[2:9, 2:9] = (0.2, 0.4, 0.6)
    w[2:9, 2:9] = 1.0
    rgb[5, 5], w[5, 5] = 0, 0  # a sampling hole
    covered = np.ones((T, T), bool)
    out, wout, gaps = fill_sampling_gaps(rgb, w, covered)
    assert gaps[5, 5] and gaps.sum() <= 1 + 4 * 3  # the hole (and at most a few block corners)
    assert np.allclose(out[5, 5], (0.2, 0.4, 0.6), atol=1e-5) and 0 < wout[5, 5] < 1
    assert not gaps[12, 12]  # far from sampled texels: unseen, left to the inpainting


def test_merge_weights_by_frontality_and_combines_masks():
    T = 4
    a = PartialTexture(np.full((T, T, 3), 0.2, np.float32), np.zeros((T, T), np.float32),
                       np.zeros((T, T), bool), np.zeros((T, T), bool))
    b = PartialTexture(np.full((T, T, 3), 0.8, np.float32), np.zeros((T, T), np.float32),
                       np.zeros((T, T), bool), np.zeros((T, T), bool))
    a.weight[0, 0], a.sampled[0, 0] = 0.75, True
    b.weight[0, 0], b.sampled[0, 0] = 0.25, True
    b.weight[1, 1], b.gap_filled[1, 1] = 0.5, True
    m = merge([a, b])
    assert m.rgb[0, 0] == pytest.approx([0.35] * 3)
    assert m.sampled[0, 0] and not m.sampled[1, 1] and m.gap_filled[1, 1]
    covered = np.ones((T, T), bool)
    assert m.unseen(covered).sum() == T * T - 2


@pytest.fixture(scope="module")
def anny():
    from models.body.registry import get_body

    return get_body("anny")


def test_limb_parts_split_arms_and_legs(anny):
    parts = limb_parts(anny.topology)
    counts = np.bincount(parts, minlength=5)
    assert len(parts) == len(anny.topology.faces) and counts.size == 5 and (counts > 500).all()


def test_unprojection_from_the_ground_truth_body_matches_the_photo(anny):
    """Through the true body and camera, sampled texels carry the photo's colours; an arm in
    front of the body leaves an unsampled band; the masks partition the covered texels."""
    from models.synth.quick import person
    from models.texture.atlas import texel_map

    p = person(seed=5)
    top = anny.topology
    from models.fit.fit_body import posed_vertices

    verts = posed_vertices(anny, p.shape, p.pose)[top.source_vertex]
    tm = texel_map(top.uvs, top.faces, 256)
    plain = unproject_photo(p.image, p.mask.astype(np.float32), verts, top.faces, p.camera, tm, fill_gaps=False)
    part = unproject_photo(p.image, p.mask.astype(np.float32), verts, top.faces, p.camera, tm,
                           face_part=limb_parts(top))
    cov = tm.covered
    assert (part.sampled & part.gap_filled).sum() == 0
    assert ((part.sampled | part.gap_filled | part.unseen(cov)) == cov).all()
    assert 0.2 < part.sampled[cov].mean() < 0.7
    assert part.sampled.sum() <= plain.sampled.sum()  # the edge test only removes texels
    import cv2

    gt = cv2.resize(p.texture, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    err = np.abs(part.rgb[part.sampled] - gt[part.sampled]).mean()
    assert err < 0.12, err  # shading darkens the photo; a wrong mapping is far worse
