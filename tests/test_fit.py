"""The body fit: silhouette terms, priors, reduced kinematics, single and several photos, and
the fit stage's outcomes (uploaded keypoints/masks, strictness, untrusted fits)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from models.detect.base import Detection
from models.errors import PipelineError
from models.fit.camera import Camera
from models.fit.fit_body import BodyFit, FitConfig, _kinematics, fit_body, posed_vertices
from models.fit.priors import PosePrior
from models.fit.silhouette import edge_matches, fill_distance, outside_distance, silhouette_target


@pytest.fixture(scope="module")
def body():
    from models.body.registry import get_body

    return get_body("anny")


@pytest.fixture(scope="module")
def gen():
    from models.synth.generator import get_generator

    return get_generator(512)


def _iou(body, fit: BodyFit, i: int, mask: np.ndarray) -> float:
    from models.pipeline import silhouette_iou

    return silhouette_iou(body, fit.shape, fit.poses[i], fit.cameras[i], mask.astype(np.float32))


# ---- silhouette terms --------------------------------------------------------------------------
def test_silhouette_target_of_a_disc():
    yy, xx = np.mgrid[0:200, 0:200]
    r = np.hypot(xx + 0.5 - 100, yy + 0.5 - 90)
    mask = (r < 50).astype(np.float32)
    mask[5, 5] = 1.0  # a speck: dropped
    t = silhouette_target(mask)
    assert t.height_px == pytest.approx(100, abs=1)
    c = t.contour.numpy()
    rad = np.hypot(c[:, 0] - 100, c[:, 1] - 90)
    assert np.abs(rad - 50).max() < 0.8  # edge samples on the circle
    n = t.normals.numpy()
    assert ((c - [100, 90]) / rad[:, None] * n).sum(1).min() > 0.95  # outward normals
    uv = torch.tensor([[100.0, 90.0], [100.0, 20.0], [175.0, 90.0]])
    d = outside_distance(t, uv).numpy() * t.height_px
    assert d[0] == 0 and d[1] == pytest.approx(20, abs=1) and d[2] == pytest.approx(25, abs=1)
    # A smaller concentric ring of points is inside the edge by 10 px along the normals.
    ang = np.linspace(0, 2 * np.pi, 400, endpoint=False)
    ring = torch.tensor(np.stack([100 + 40 * np.cos(ang), 90 + 40 * np.sin(ang)], 1), dtype=torch.float32)
    f = fill_distance(t, ring, edge_matches(t, ring, band_px=2.0)).numpy() * t.height_px
    assert np.abs(f + 10).max() < 0.8


# ---- kinematics and priors ------------------------------------------------------------------------
def test_reduced_kinematics_match_full_skinning(body):
    kin = _kinematics(body, 0.025)
    rng = np.random.default_rng(0)
    free = torch.tensor(rng.normal(0, 1, (1, 6)), dtype=torch.float32)
    pose = torch.tensor(rng.normal(0, 0.4, (2, len(kin.fit_joints), 3)), dtype=torch.float32)
    lm, v = kin.posed(free, pose)
    shape = kin.shape_from_free(free)[0].numpy()
    for p in range(2):
        full = np.zeros((len(body.topology.joint_names), 3), np.float32)
        full[kin.fit_idx] = pose[p].numpy()
        ref = posed_vertices(body, shape, full)
        assert np.abs(ref[kin.vidx[:kin.n_sample]] - v[p].numpy()).max() < 1e-5
        assert np.abs(ref[kin.vidx[kin.n_sample:]] - lm[p, kin.vert_lm].numpy()).max() < 1e-5
    assert 1000 < kin.n_sample < 5000


def test_knees_and_elbows_bend_one_way(body):
    kin = _kinematics(body, 0.025)
    prior: PosePrior = kin.prior
    F = len(kin.fit_joints)
    for name in ("lowerleg01.L", "lowerarm01.R"):
        k = kin.fit_joints.index(name)
        axis = prior.hinge[k]
        assert axis.norm() == pytest.approx(1.0, abs=1e-5)
        bend, over = torch.zeros(1, F, 3), torch.zeros(1, F, 3)
        bend[0, k] = 1.2 * axis
        over[0, k] = -(prior.rest_flex[k] + 0.8) * axis
        assert prior.limits(bend) < 1e-6 < 0.1 < prior.limits(over), name
    # a knee bends its shin backwards (-z), an elbow its forearm forwards (+z) from a hanging arm
    from models.body.lbs import axis_angle_to_matrix

    knee = kin.fit_joints.index("lowerleg01.L")
    shin = axis_angle_to_matrix(0.8 * prior.hinge[knee]) @ torch.tensor([0.0, -1.0, 0.0])
    assert shin[2] < -0.5


# ---- fitting -----------------------------------------------------------------------------------------
def test_silhouette_stage_fits_the_mask_better_than_keypoints_alone(body, gen):
    s = gen.sample(5_000_001, views=False)
    det = Detection(keypoints=s.keypoints_mp33, mask=s.mask.astype(np.float32))
    kp_only = fit_body(body, [det], iterations=(40, 70, 0))
    full = fit_body(body, [det])
    assert set(full.stage_seconds) >= {"camera", "pose", "silhouette"}
    assert full.keypoint_error_pct[0] < 3.0
    iou_kp, iou_full = _iou(body, kp_only, 0, s.mask), _iou(body, full, 0, s.mask)
    assert iou_full > 0.9 and iou_full > iou_kp + 0.01, (iou_kp, iou_full)


def test_raised_arms_get_a_second_start(body, gen, monkeypatch):
    import models.fit.fit_body as fit_module

    s = gen.sample(5_000_019, views=False, pose_kind="gesture")  # arms up: from the rest pose the fit gets stuck
    assert s.meta["pose_kind"].get("gesture") == "arms_up"
    det = Detection(keypoints=s.keypoints_mp33, mask=s.mask.astype(np.float32))
    init = fit_module._raised_arms_pose([det], _kinematics(body, FitConfig().vertex_spacing_m))
    assert init is not None and np.count_nonzero(init) == 2  # both upper arms, about z
    monkeypatch.setattr(fit_module, "RETRY_KEYPOINT_ERROR_PCT", 1e9)
    one_start = fit_body(body, [det])
    monkeypatch.undo()
    two_starts = fit_body(body, [det])
    assert one_start.keypoint_error_pct[0] > 5.0  # the failure this guards against
    assert two_starts.keypoint_error_pct[0] < 2.0
    assert _iou(body, two_starts, 0, s.mask) > _iou(body, one_start, 0, s.mask) + 0.05
    kin = _kinematics(body, FitConfig().vertex_spacing_m)
    standing = gen.sample(5_000_001, views=False, pose_kind="standing")  # arms down: no second start
    assert fit_module._raised_arms_pose([Detection(keypoints=standing.keypoints_mp33, mask=standing.mask)], kin) is None
    wave = gen.sample(5_000_025, views=False, pose_kind="gesture")  # one hand up: that arm only (the right: -z)
    assert wave.meta["pose_kind"].get("gesture") == "wave"
    init = fit_module._raised_arms_pose([Detection(keypoints=wave.keypoints_mp33, mask=wave.mask)], kin)
    assert init is not None and np.count_nonzero(init) == 1
    assert init[0, kin.fit_joints.index("upperarm01.R"), 2] < 0


def test_legs_off_the_ground_get_a_lifted_start(body, gen, monkeypatch):
    import models.fit.fit_body as fit_module

    # Crouching: the thighs point at the camera and look short; from legs hanging down the
    # fit pulls the knees sideways and stays there.
    s = gen.sample(5_000_000, views=False, pose_kind="crouching", clothed=False)
    det = Detection(keypoints=s.keypoints_mp33, mask=s.mask.astype(np.float32))
    monkeypatch.setattr(fit_module, "LEG_RETRY_ERROR_PCT", 1e9)
    one_start = fit_body(body, [det])
    monkeypatch.undo()
    assert fit_module._lifted_legs_start(one_start, [det], _kinematics(body, FitConfig().vertex_spacing_m)) is not None
    two_starts = fit_body(body, [det])
    iou_one, iou_two = _iou(body, one_start, 0, s.mask), _iou(body, two_starts, 0, s.mask)
    assert iou_one < 0.8 and iou_two > 0.85 and iou_two > iou_one + 0.08, (iou_one, iou_two)
    assert two_starts.keypoint_error_pct[0] < one_start.keypoint_error_pct[0]
    # the lifted knees bend the right way (the shin goes back from the thigh's line)
    kin = _kinematics(body, FitConfig().vertex_spacing_m)
    for knee in ("lowerleg01.L", "lowerleg01.R"):
        k = kin.fit_joints.index(knee)
        flex = float(torch.as_tensor(two_starts.poses[0, kin.fit_idx[k]]) @ kin.prior.hinge[k])
        assert flex > 0.5, (knee, flex)


def test_a_jumping_person_fits_and_an_upside_down_one_gets_a_precise_error(tmp_path, body, gen):
    from models.pipeline import fit_stage

    def photo(img: np.ndarray, name: str):
        d = tmp_path / name
        (d / "originals").mkdir(parents=True)
        Image.fromarray(np.ascontiguousarray(img)).save(d / "originals" / "photo_0.png")
        return d

    s = gen.sample(5_000_002, views=False, pose_kind="jumping", clothed=False)  # a stride leap, MediaPipe
    assert s.meta["pose_kind"]["variant"] == "stride"
    d = photo(s.image, "jump")
    fit_stage(d)
    fit = json.loads((d / "fit" / "fit.json").read_text())
    fitted = BodyFit(shape=np.asarray(fit["shape"], np.float32), poses=np.asarray(fit["poses"], np.float32),
                     cameras=[Camera.from_dict(fit["cameras"][0])], keypoint_error_pct=fit["keypoint_error_pct"])
    assert _iou(body, fitted, 0, s.mask) > 0.85
    # Upside down: refused with the code and a message that says what to send instead.
    s = gen.sample(5_000_001, views=False, pose_kind="standing", clothed=False)
    d = photo(s.image[::-1, ::-1], "upside_down")
    with pytest.raises(PipelineError) as err:
        fit_stage(d)
    assert err.value.code == "pose_unsupported"
    assert "upside down" in err.value.message and "standing upright, facing the camera" in err.value.message
    problem = err.value.details["problems"][0]
    assert problem["photo"] == "photo_0.png" and problem["torso_tilt_deg"] > 150
    assert set(problem["limb_error_pct"]) == {"torso", "head", "left_arm", "right_arm", "left_leg", "right_leg"}
    assert not (d / "fit" / "fit.json").exists()


def test_warm_start_from_the_truth_stays_there(body, gen):
    s = gen.sample(5_000_002, views=False, clothed=False)  # the mask is the body's
    det = Detection(keypoints=s.keypoints_mp33, mask=s.mask.astype(np.float32))
    truth = BodyFit(shape=s.shape, poses=s.pose[None], cameras=[s.camera], keypoint_error_pct=[0.0])
    fit = fit_body(body, [det], iterations=(0, 0, 40), start=truth, intrinsics=[s.camera.K],
                   config=FitConfig(lr=0.003, lr_shape=0.003))
    assert _iou(body, fit, 0, s.mask) > 0.97
    assert np.abs(fit.shape - s.shape).max() < 0.1


@pytest.mark.slow
def test_three_photos_of_one_person_share_one_shape(body, gen):
    shape = gen.random_shape(np.random.default_rng(7))
    samples = [gen.sample(5_000_110 + k, views=False, shape=shape, clothed=False) for k in range(3)]
    assert all(np.array_equal(s.shape, shape) for s in samples)
    dets = [Detection(keypoints=s.keypoints_mp33, mask=s.mask.astype(np.float32)) for s in samples]
    joint = fit_body(body, dets)
    assert joint.shape.shape == (6,) and joint.poses.shape[0] == 3 and len(joint.cameras) == 3
    for i, s in enumerate(samples):  # each photo keeps its own pose and camera
        assert _iou(body, joint, i, s.mask) > 0.88, i
    assert not np.allclose(joint.poses[0], joint.poses[1])
    singles = [np.abs(fit_body(body, [d]).shape - shape).mean() for d in dets]
    err = np.abs(joint.shape - shape).mean()
    assert err < np.median(singles) + 0.01, (err, singles)


# ---- the fit stage ------------------------------------------------------------------------------------
def _openpose(kp33: np.ndarray) -> dict:
    from models.body.template import MEDIAPIPE_33
    from models.detect.keypoint_formats import BODY_25

    alias = {"left_big_toe": "left_foot_index", "right_big_toe": "right_foot_index"}
    body25 = []
    for name in BODY_25:
        name = alias.get(name, name)
        if name in MEDIAPIPE_33:
            x, y, v = kp33[MEDIAPIPE_33.index(name)]
            body25 += [float(x) - 0.5, float(y) - 0.5, 0.9 if v > 0 else 0.0]
        else:
            body25 += [0.0, 0.0, 0.0]
    return {"people": [{"pose_keypoints_2d": body25}]}


def test_fit_stage_uses_uploaded_keypoints_and_mask_and_reports_quality(tmp_path, gen, monkeypatch):
    from models.detect import mediapipe_detector
    from models.pipeline import fit_stage

    monkeypatch.setattr(mediapipe_detector, "detect_person",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("detection must be skipped")))
    s = gen.sample(5_000_003, views=False)
    orig = tmp_path / "originals"
    orig.mkdir()
    big = Image.fromarray(s.image).resize((1024, 1024), Image.BICUBIC)  # sent at 2x, processed at 1024
    big.save(orig / "photo_0.png")
    kp = s.keypoints_mp33.copy()
    kp[:, :2] *= 2
    (orig / "keypoints_0.json").write_text(json.dumps(_openpose(kp)))
    Image.fromarray(s.mask.astype(np.uint8) * 255).save(orig / "mask_0.png")
    timings = fit_stage(tmp_path)
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit["detection_sources"] == ["keypoints:upload,mask:upload"]
    assert fit["silhouette_iou"][0] > 0.85 and fit["keypoint_error_pct"][0] < 3.0
    assert set(fit["stage_seconds"]) >= {"camera", "pose", "silhouette", "silhouette_iou"}
    assert fit["focal_from_exif"] == [False] and fit["warnings"] == [] and timings["fit"] > 0
    # the fit stage's figures reach the avatar's quality report
    from models.pipeline import inpaint_stage

    inpaint_stage(tmp_path)
    quality = json.loads((tmp_path / "quality.json").read_text())
    assert quality["fit"]["silhouette_iou"] == fit["silhouette_iou"]
    assert quality["fit"]["keypoint_error_pct"] == fit["keypoint_error_pct"]
    assert quality["warnings"] == fit["warnings"]


def test_fit_stage_strictness_small_people_and_untrusted_fits(tmp_path, gen, monkeypatch):
    import models.pipeline as pipeline

    s = gen.sample(5_000_004, views=False)
    orig = tmp_path / "originals"
    orig.mkdir()
    Image.fromarray(s.image).save(orig / "photo_0.png")
    two = {"people": _openpose(s.keypoints_mp33)["people"] * 2}
    (orig / "keypoints_0.json").write_text(json.dumps(two))
    Image.fromarray(s.mask.astype(np.uint8) * 255).save(orig / "mask_0.png")
    (orig / "options.json").write_text(json.dumps({"strict": True}))
    with pytest.raises(PipelineError) as err:
        pipeline.fit_stage(tmp_path)
    assert err.value.code == "multiple_people"
    (orig / "options.json").write_text(json.dumps({"strict": False}))
    monkeypatch.setattr(pipeline, "UNTRUSTED_SILHOUETTE_IOU", 0.999)  # nothing fits that well
    with pytest.raises(PipelineError) as err:
        pipeline.fit_stage(tmp_path)
    assert err.value.code == "fit_failed" and err.value.details["photos"] == ["photo_0.png"]
    assert "outline" in err.value.message and "standing upright, facing the camera" in err.value.message
    assert err.value.details["problems"][0]["photo"] == "photo_0.png"
    assert not (tmp_path / "fit" / "fit.json").exists()
    monkeypatch.setattr(pipeline, "MIN_FIT_HEIGHT_PX", 1000)
    with pytest.raises(PipelineError) as err:
        pipeline.fit_stage(tmp_path)
    assert err.value.code == "person_too_small"


def test_exif_focal_length_reaches_the_camera(tmp_path, gen):
    from models.pipeline import fit_stage

    s = gen.sample(5_000_005, views=False)
    orig = tmp_path / "originals"
    orig.mkdir()
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50
    Image.fromarray(s.image).save(orig / "photo_0.jpg", exif=exif, quality=95)
    fit_stage(tmp_path)
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit["focal_from_exif"] == [True]
    assert fit["cameras"][0]["K"][0][0] == pytest.approx(50 / 43.27 * np.hypot(512, 512), rel=1e-4)
