"""``bench/quality.py`` runs the real pipeline on synthetic people and on a photo folder,
and writes its figures with the documented schema (values in sane ranges)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT
from PIL import Image

METHODS = ("pipeline", "baseline_mean", "baseline_mirror")
RATIOS = ("fit_iou_median", "same_view_ssim", "back_view_ssim")
PSNRS = ("same_view_psnr", "back_view_psnr", "unseen_texel_psnr")
TIMES = ("detect_seconds_median", "fit_seconds_median", "inpaint_seconds_median")


@pytest.mark.slow
def test_quality_bench_schema_and_ranges(tmp_path):
    from models.synth.quick import person

    photos = tmp_path / "photos"
    photos.mkdir()
    p = person(seed=8)  # a "real" photo with its mask, and a file the bench must ignore
    Image.fromarray(p.image).save(photos / "someone.png")
    Image.fromarray(p.mask.astype(np.uint8) * 255).save(photos / "someone_mask.png")
    (photos / "someone_clothes.json").write_text("{}")
    out, sheet = tmp_path / "q.json", tmp_path / "sheet.png"
    proc = subprocess.run(
        [sys.executable, "bench/quality.py", "--synthetic", "2", "--photos", str(photos),
         "--json", str(out), "--sheet", str(sheet)],
        check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert '"methods"' in proc.stdout  # the figures are printed too
    res = json.loads(out.read_text())
    assert res["samples"] == 2 and res["seed_offset"] == 1_000_000
    assert set(res["methods"]) >= set(METHODS)
    for name in METHODS:
        m = res["methods"][name]
        assert m["failures"] == 0
        for k in RATIOS:
            assert 0.0 < m[k] <= 1.0, (name, k, m[k])
        for k in PSNRS:
            assert 5.0 < m[k] < 60.0, (name, k, m[k])
        for k in TIMES:
            assert m[k] > 0, (name, k)
        assert 0 <= m["kp_err_pct_median"] < 15 and 0 <= m["shape_err_median"] <= 1
    pipe = res["methods"]["pipeline"]
    assert pipe["fit_iou_median"] > 0.6 and pipe["fit_iou_clothed_median"] == pipe["fit_iou_median"]
    assert set(pipe["fit_iou_clothed_by_pose"]) == {r["pose_kind"] for r in res["per_sample"]}
    for k in ("side_view_psnr", "back_view_psnr_whole", "side_view_psnr_whole"):
        assert 5.0 < pipe[k] < 60.0, k
    assert 0 < pipe["side_view_ssim"] <= 1 and res["people"] == "clothed"
    # fit figures are shared; the textures differ only where the photo did not look
    assert res["methods"]["baseline_mean"]["fit_iou_median"] == pipe["fit_iou_median"]
    assert abs(res["methods"]["baseline_mean"]["same_view_psnr"] - pipe["same_view_psnr"]) < 3
    assert set(res["photos"]) == {"someone.png"}
    ph = res["photos"]["someone.png"]
    assert 0.6 < ph["fit_iou"] <= 1 and 0 < ph["fit_iou_detector"] <= 1
    assert 5 < ph["same_view_psnr"] < 60 and 0 < ph["same_view_ssim"] <= 1
    assert ph["uploads"] == [] and 0 <= ph["back_colour_de_median"] < 100  # a mask alone is not uploaded
    assert res["real_fit_success_rate"] == 1.0 and res["real_methods"]["pipeline"]["back_colour_de_median"] >= 0
    with Image.open(sheet) as im:  # 2 samples (5 columns) + 1 photo (6 columns), each under its labels
        assert im.width == 6 * 192 and im.height == 2 * 22 + 3 * 192


def test_masked_metrics():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quality", REPO_ROOT / "bench" / "quality.py")
    q = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(q)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[10:50, 20:40] = True
    assert q.masked_ssim(a, a, mask) == pytest.approx(1.0)
    assert q.masked_psnr(a, a, mask) > 90
    b = a.copy()
    b[~mask] = 0  # outside the mask does not count
    assert q.masked_ssim(a, b, mask) == pytest.approx(1.0) and q.masked_psnr(a, b, mask) > 90
    import cv2

    smooth = cv2.GaussianBlur(a, (0, 0), 2)
    noisy = np.clip(smooth + rng.normal(0, 10, a.shape), 0, 255).astype(np.uint8)
    full = np.ones((64, 64), bool)
    # scikit-image (gaussian_weights, sigma 1.5, population covariance) gives 0.577 here
    assert q.masked_ssim(smooth, noisy, full) == pytest.approx(0.577, abs=0.02)
    assert 27 < q.masked_psnr(smooth, noisy, mask) < 30  # sigma 10/255 -> ~28 dB


def test_targets_compare_the_figures_with_the_bars():
    import importlib.util

    spec = importlib.util.spec_from_file_location("quality", REPO_ROOT / "bench" / "quality.py")
    q = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(q)
    result = {
        "methods": {
            "pipeline": {"fit_iou_median": 0.93, "kp_err_pct_median": 2.5, "fit_seconds_median": 3.0,
                         "detect_seconds_median": 0.1, "shape_err_joint": 0.1, "shape_err_single_median": 0.12,
                         "fit_iou_clothed_by_pose": {"standing": 0.93, "jumping": 0.89}, "failures": 1},
            "diffusion": {"back_view_psnr": 16.0, "back_view_ssim": 0.80, "same_view_psnr_on_avatar": 30.0,
                          "inpaint_seconds_median": 1.0, "inpaint_steps": 20},
            "classical": {"back_view_psnr": 15.5, "back_view_ssim": 0.79},
        },
        "photos": {},
        "samples": 50,
    }
    got = {t["name"].split(" (")[0]: t["ok"] for t in q.targets(result)}
    assert got["pipeline fit_iou_clothed_by_pose"] is True  # every kind >= 0.88
    assert got["pipeline failures"] is True  # 1 in 50
    assert got["pipeline kp_err_pct_median"] is False  # 2.5 % > 2 %
    assert got["photos pifu_ryota.png fit_iou"] is None  # no such photo in this run
    assert got["pipeline shape_err_joint"] is True
    assert got["diffusion back_view_psnr"] is False  # only +0.5 dB (bar +1.5)
    assert got["diffusion back_view_ssim"] is True
    assert got["diffusion inpaint_seconds_median"] is True
    result["methods"]["pipeline"]["fit_iou_clothed_by_pose"]["kneeling"] = 0.80
    got = {t["name"].split(" (")[0]: t["ok"] for t in q.targets(result)}
    assert got["pipeline fit_iou_clothed_by_pose"] is False
    del result["methods"]["diffusion"]  # no model: nothing to judge, not a pass
    got = {t["name"].split(" (")[0]: t["ok"] for t in q.targets(result)}
    assert got["diffusion back_view_psnr"] is None and got["diffusion inpaint_seconds_median"] is None


# ---- real photos: the back figures (bench/real_photos.py) ---------------------------------------
def _real_photos():
    import importlib

    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("bench.real_photos")


# Sharma, Wu & Dalal (2005), supplementary test data: (Lab 1, Lab 2, dE00), pairs 1, 2, 4, 7,
# 13, 15, 17, 21, 22, 26, 34, 43 (hue wrap-around, achromatic and near-black cases).
SHARMA_ROWS = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),
    ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0009), 7.1792),
    ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0011), 7.2195),
    ((50.0, -0.0010, 2.4900), (50.0, 0.0009, -2.4900), 4.8045),
    ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (50.0, 3.1736, 0.5854), 1.0000),
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_ciede2000_matches_sharma_test_data():
    rp = _real_photos()
    a = np.array([r[0] for r in SHARMA_ROWS])
    b = np.array([r[1] for r in SHARMA_ROWS])
    want = np.array([r[2] for r in SHARMA_ROWS])
    np.testing.assert_allclose(rp.ciede2000(a, b), want, atol=5e-5)
    np.testing.assert_allclose(rp.ciede2000(b, a), want, atol=5e-5)  # symmetric
    assert rp.ciede2000(a[0], a[0]) == 0.0
    lab = rp.srgb_to_lab(np.array([[255, 255, 255], [255, 0, 0], [0, 0, 0]], np.uint8))
    np.testing.assert_allclose(lab, [[100, 0, 0], [53.24, 80.09, 67.20], [0, 0, 0]], atol=0.01)


def _regions(rp, T: int = 128):
    """Hand-made regions: every part a 12-row band, observed on its left half; the face
    (observed) and the back of the head (unseen) in the last bands."""
    parts, face = {}, np.zeros((T, T), bool)
    for i, p in enumerate(rp.PARTS):
        m = np.zeros((T, T), bool)
        m[i * 12:(i + 1) * 12 - 2, 4:T - 4] = True
        parts[p] = m
    face[120:126, 4:60] = True
    head_ref = parts["head_back"].copy()
    observed = np.zeros((T, T), bool)
    observed[:, :T // 2] = True
    observed[parts["head_back"]] = False
    observed[108:110, 4:60] = True  # the reference of head_back: observed hair (row outside the part)
    head_ref[108:110, 4:60] = True
    covered = np.logical_or.reduce([*parts.values(), face, head_ref])
    return rp.BodyRegions(parts=parts, face=face, head_ref=head_ref, size=T), observed, covered


def test_back_colour_de_is_zero_when_the_back_matches_the_front():
    rp = _real_photos()
    regions, observed, covered = _regions(rp)
    rng = np.random.default_rng(1)
    tex = np.zeros((128, 128, 3), np.uint8)
    for p in rp.PARTS:
        tex[regions.parts[p]] = rng.integers(30, 220, 3)
    tex[regions.head_ref] = (40, 30, 20)  # dark hair, front and back
    tex[regions.face] = (230, 190, 160)
    noisy = np.clip(tex + rng.normal(0, 4, tex.shape), 0, 255).astype(np.uint8)  # medians are robust
    f = rp.back_colour_de(noisy, tex, observed, covered, regions)
    assert set(f["back_colour_de_by_part"]) == set(rp.PARTS)
    assert all(v is not None and v < 1.5 for v in f["back_colour_de_by_part"].values()), f
    assert f["back_colour_de_median"] < 1.0 and f["back_colour_de_worst"] < 1.5
    # a brown back on a grey torso, a skin-coloured back of the head
    bad = noisy.copy()
    bad[regions.parts["torso"] & ~observed] = (110, 80, 50)
    tex[regions.parts["torso"]] = (128, 128, 128)
    bad[regions.parts["torso"] & observed] = (128, 128, 128)
    bad[regions.parts["head_back"]] = (230, 190, 160)
    f = rp.back_colour_de(bad, tex, observed, covered, regions)
    assert f["back_colour_de_by_part"]["torso"] > 15 and f["back_colour_de_by_part"]["head_back"] > 20
    assert f["back_colour_de_worst"] > 20 and f["back_colour_de_median"] < 1.5  # 8 of 10 parts still match
    # a part with too few texels on one side is skipped
    few = observed.copy()
    few[regions.parts["shin_l"]] = True
    assert rp.back_colour_de(noisy, tex, few, covered, regions)["back_colour_de_by_part"]["shin_l"] is None


def test_back_head_skin_share():
    rp = _real_photos()
    regions, observed, covered = _regions(rp)
    tex = np.zeros((128, 128, 3), np.uint8)
    skin, hair = (225, 180, 150), (45, 35, 30)
    tex[regions.face] = skin
    back = regions.parts["head_back"]
    tex[back] = hair
    skin_lab = rp.texture_skin_lab(tex, observed, regions)
    np.testing.assert_allclose(skin_lab, rp.srgb_to_lab(np.array(skin, np.uint8)), atol=1e-6)
    assert rp.back_head_skin_share(tex, skin_lab, observed, covered, regions) == 0.0
    xs = np.nonzero(back)[1]
    tex[back & (np.arange(128)[None, :] < np.median(xs))] = (220, 178, 152)  # half: a face-like colour
    share = rp.back_head_skin_share(tex, skin_lab, observed, covered, regions)
    assert 0.4 < share < 0.6
    assert rp.texture_skin_lab(tex, observed & ~regions.face, regions) is None  # no face seen
    assert rp.back_head_skin_share(tex, None, observed, covered, regions) is None


def test_photo_skin_lab_reads_the_face_under_the_eyes():
    rp = _real_photos()
    img = np.full((100, 100, 3), 30, np.uint8)  # dark hair everywhere...
    img[45:56, 40:61] = (225, 180, 150)  # ...but the cheeks and the nose
    kp = np.zeros((33, 3), np.float32)
    kp[0] = (50, 55, 1)  # nose
    kp[2], kp[5] = (60, 42, 1), (40, 42, 1)  # eyes: 20 px apart
    lab = rp.photo_skin_lab(img, kp)
    np.testing.assert_allclose(lab, rp.srgb_to_lab(np.array((225, 180, 150), np.uint8)), atol=1e-6)
    assert rp.photo_skin_lab(img, kp, mask=np.zeros((100, 100), bool)) is None
    kp[2, 2] = 0  # an eye not seen
    assert rp.photo_skin_lab(img, kp) is None


def test_back_detail_ratio_flat_vs_noisy():
    rp = _real_photos()
    T = 256
    rng = np.random.default_rng(2)
    covered = np.zeros((T, T), bool)
    covered[16:240, 16:240] = True
    observed = np.zeros((T, T), bool)
    observed[:, :T // 2] = True
    base = np.full((T, T, 3), 120.0)
    noise = rng.normal(0, 20, (T, T, 3))
    front_only = np.where(observed[..., None], base + noise, base)  # a smeared back
    both = base + noise  # as detailed as the front
    u8 = lambda x: np.clip(x, 0, 255).astype(np.uint8)
    kw = {"sigma": 2.0, "erode": 3}
    flat = rp.back_detail_ratio(u8(front_only), observed, covered, covered, **kw)
    same = rp.back_detail_ratio(u8(both), observed, covered, covered, **kw)
    assert flat < 0.01 and 0.8 < same < 1.25
    # the seen/unseen edge and the island border do not count: a detailed dark front next
    # to a flat light back (a colour step at the boundary) is still a flat back
    step = np.where(observed[..., None], 60.0 + noise, 200.0)
    assert rp.back_detail_ratio(u8(step), observed, covered, covered, **kw) < 0.005
    assert rp.back_detail_ratio(u8(both), observed, covered, np.zeros((T, T), bool), **kw) is None


def test_uploads_for_sends_keypoints_with_the_mask(tmp_path):
    rp = _real_photos()
    photo = tmp_path / "p.png"
    Image.new("RGB", (40, 60)).save(photo)
    assert rp.uploads_for(photo) == {}
    Image.new("L", (40, 60), 255).save(tmp_path / "p_mask.png")
    assert rp.uploads_for(photo) == {}  # a mask alone is not sent: the detector is tested
    (tmp_path / "p_keypoints.json").write_text('{"people": []}')
    alpha = Image.new("RGBA", (40, 60), (0, 0, 0, 0))
    alpha.putpixel((3, 4), (0, 0, 0, 255))
    alpha.save(tmp_path / "p_mask.png")
    up = rp.uploads_for(photo)
    assert set(up) == {"keypoints_0.json", "mask_0.png"}
    with Image.open(__import__("io").BytesIO(up["mask_0.png"])) as im:  # the alpha, as gray
        assert im.mode == "L" and im.getpixel((3, 4)) == 255 and im.getpixel((0, 0)) == 0


def test_real_summary_and_targets():
    rp = _real_photos()
    good = {"back_colour_de_median": 8.0, "back_head_skin_share": 0.01, "back_detail_ratio": 0.9}
    photos = {"a.png": {**good, "methods": {"pipeline": good, "classical": {**good, "back_colour_de_median": 20.0}}},
              "b.png": {**good, "back_colour_de_median": 14.0, "back_head_skin_share": 0.2,
                        "methods": {"pipeline": {**good, "back_colour_de_median": 14.0, "back_head_skin_share": 0.2}}},
              "c.png": {"error": "fit_failed"}}
    s = rp.summarize_photos(photos)
    assert s["real_fit_success_rate"] == pytest.approx(2 / 3) and s["real_fit_errors"] == {"c.png": "fit_failed"}
    assert s["real_back_colour_de_median"] == 11.0 and s["real_methods"]["classical"]["back_colour_de_median"] == 20
    got = {t["name"]: t["ok"] for t in rp.target_rows({**s, "photos": photos})}
    assert got["real_back_colour_de_median"] is True
    assert got["photos.*.back_head_skin_share max"] is False  # b.png: 0.2
    assert got["real pipeline back_detail_ratio median"] is True
    assert all(t["ok"] is None for t in rp.target_rows({}))


@pytest.mark.slow
def test_score_photo_on_a_synthetic_photo(tmp_path):
    import importlib.util

    from models.synth.quick import person

    spec = importlib.util.spec_from_file_location("quality", REPO_ROOT / "bench" / "quality.py")
    q = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(q)
    p = person(seed=3)
    Image.fromarray(p.image).save(tmp_path / "someone.png")
    Image.fromarray(p.mask.astype(np.uint8) * 255).save(tmp_path / "someone_mask.png")
    work = tmp_path / "work"
    work.mkdir()
    row = q.score_photo(q.Context(256), tmp_path / "someone.png", work)
    assert "error" not in row, row
    for name in ("pipeline", "classical", "baseline_mean", "baseline_mirror"):
        m = row["methods"][name]
        assert set(m) >= {"back_colour_de_median", "back_colour_de_worst", "back_colour_de_by_part",
                          "back_head_skin_share", "back_detail_ratio"}
        assert m["back_colour_de_median"] is not None and 0 <= m["back_colour_de_median"] < 100
    assert row["back_colour_de_median"] == row["methods"]["pipeline"]["back_colour_de_median"]
    assert row["uploads"] == [] and len(row["_sheet"]) == 6 == len(row["_sheet_labels"])
    assert row["skin_source"] in ("photo", "texture") and len(row["skin_lab"]) == 3
    assert all(im is not None and im.ndim == 3 for im in row["_sheet"])
