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
    assert pipe["fit_iou_median"] > 0.6
    # fit figures are shared; the textures differ only where the photo did not look
    assert res["methods"]["baseline_mean"]["fit_iou_median"] == pipe["fit_iou_median"]
    assert abs(res["methods"]["baseline_mean"]["same_view_psnr"] - pipe["same_view_psnr"]) < 3
    assert set(res["photos"]) == {"someone.png"}
    ph = res["photos"]["someone.png"]
    assert 0.6 < ph["fit_iou"] <= 1 and 0 < ph["fit_iou_detector"] <= 1
    assert 5 < ph["same_view_psnr"] < 60 and 0 < ph["same_view_ssim"] <= 1
    with Image.open(sheet) as im:
        assert im.width == 5 * 192 and im.height > 3 * 192  # 2 samples + 1 photo, 5 columns


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
                         "detect_seconds_median": 0.1, "shape_err_joint": 0.1, "shape_err_single_median": 0.12},
            "diffusion": {"back_view_psnr": 16.0, "back_view_ssim": 0.80, "same_view_psnr_on_avatar": 30.0,
                          "inpaint_seconds_median": 1.0, "inpaint_steps": 20},
            "classical": {"back_view_psnr": 15.5, "back_view_ssim": 0.79},
        },
        "photos": {},
    }
    got = {t["name"].split(" (")[0]: t["ok"] for t in q.targets(result)}
    assert got["pipeline fit_iou_median"] is True
    assert got["pipeline kp_err_pct_median"] is False  # 2.5 % > 2 %
    assert got["photos pifu_ryota.png fit_iou"] is None  # no such photo in this run
    assert got["pipeline shape_err_joint"] is True
    assert got["diffusion back_view_psnr"] is False  # only +0.5 dB
    assert got["diffusion back_view_ssim"] is True
    assert got["diffusion inpaint_seconds_median"] is True
    del result["methods"]["diffusion"]  # no model: nothing to judge, not a pass
    got = {t["name"].split(" (")[0]: t["ok"] for t in q.targets(result)}
    assert got["diffusion back_view_psnr"] is None and got["diffusion inpaint_seconds_median"] is None
