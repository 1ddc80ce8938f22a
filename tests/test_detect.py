"""Person detection: MediaPipe, uploaded OpenPose keypoints and masks, ONNX models, outcomes
(no person, several people, small, cut off, blurry), EXIF orientation and focal length."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from PIL import Image

from models.detect.base import Detection, blur_score, quality_warnings
from models.detect.detector import detect, prepare_mask
from models.detect.keypoint_formats import BODY_25, COCO_17, from_wholebody, parse_openpose
from models.errors import ModelAssetError, PipelineError
from models.body.template import MEDIAPIPE_33

MP = {n: i for i, n in enumerate(MEDIAPIPE_33)}


@pytest.fixture(scope="module")
def people():
    from models.synth.generator import get_generator

    gen = get_generator(512)
    return [gen.sample(seed, views=False) for seed in (3_000_001, 3_000_002)]


def _iou(a, b):
    return float((a & b).sum() / (a | b).sum())


# ---- MediaPipe and the outcomes -------------------------------------------------------------
def test_mediapipe_finds_the_synthetic_person(people):
    from models.detect.mediapipe_detector import detect_person

    s = people[0]
    det = detect_person(s.image)
    assert det.source == "mediapipe" and det.warnings == []
    assert _iou(det.mask > 0.5, s.mask) > 0.85
    vis = (s.keypoints_mp33[:, 2] > 0) & (det.keypoints[:, 2] > 0.5)
    err = np.linalg.norm(det.keypoints[vis, :2] - s.keypoints_mp33[vis, :2], axis=1)
    assert vis.sum() > 15 and np.median(err) < 0.03 * s.person_height_px


def test_no_person():
    g = np.linspace(0, 255, 256, dtype=np.uint8)
    img = np.stack([np.tile(g, (256, 1))] * 3, -1)
    with pytest.raises(PipelineError) as err:
        detect(img)
    assert err.value.code == "no_person_detected"


def _two_people(people, big_left: bool) -> tuple[np.ndarray, np.ndarray]:
    """A wide photo: one person at full size, the other at 60 % beside them."""
    import cv2

    big, small = people
    img = np.full((512, 800, 3), 190, np.uint8)
    mb = big.mask
    x_big, x_small = (0, 470) if big_left else (288, 0)
    img[:, x_big:x_big + 512][mb] = big.image[mb]
    s_img = cv2.resize(small.image, (307, 307), interpolation=cv2.INTER_AREA)
    s_m = cv2.resize(small.mask.astype(np.uint8), (307, 307), interpolation=cv2.INTER_NEAREST) > 0
    img[190:497, x_small:x_small + 307][s_m] = s_img[s_m]
    truth = np.zeros((512, 800), bool)
    truth[:, x_big:x_big + 512] = mb
    return img, truth


@pytest.mark.parametrize("big_left", [True, False])
def test_several_people_use_the_largest_with_a_warning_or_fail_when_strict(people, big_left):
    img, truth = _two_people(people, big_left)
    det = detect(img)
    assert "multiple_people" in det.warnings
    assert _iou(det.mask > 0.5, truth) > 0.75  # the big person, not the small one
    with pytest.raises(PipelineError) as err:
        detect(img, strict=True)
    assert err.value.code == "multiple_people"


def test_an_upside_down_phantom_beside_the_person_is_no_other_person(people, monkeypatch):
    """In the strips beside a person Pose can follow a phantom in background shapes, taller
    than the person and upside down; it must neither replace the person nor count as one."""
    from models.detect import mediapipe_detector as mpd

    s = people[0]
    img = np.pad(s.image, ((0, 0), (144, 144), (0, 0)), mode="edge")  # room beside the person
    real = mpd._run_pose

    def run(image):
        if image.shape[1] == img.shape[1]:
            return real(image)
        kp = np.zeros((33, 3), np.float32)  # the side strips: a tall upside-down "person"
        kp[:, 0], kp[:, 1], kp[:, 2] = 40.0, np.linspace(480, 30, 33), 0.9
        kp[[MP["left_shoulder"], MP["right_shoulder"]], 1] = 400.0
        kp[[MP["left_hip"], MP["right_hip"]], 1] = 250.0
        mask = np.zeros(image.shape[:2], np.float32)
        mask[10:505, 10:70] = 1.0
        return Detection(keypoints=kp, mask=mask)

    monkeypatch.setattr(mpd, "_run_pose", run)
    det = mpd.detect_person(img)
    assert "multiple_people" not in det.warnings
    truth = np.pad(s.mask, ((0, 0), (144, 144)))
    assert _iou(det.mask > 0.5, truth) > 0.85


def test_small_cut_off_and_blurry_photos_are_flagged(people):
    import cv2

    s = people[0]
    assert detect(s.image).warnings == []
    small = cv2.resize(s.image, (256, 256), interpolation=cv2.INTER_AREA)
    assert "person_too_small" in detect(small).warnings
    rows = np.flatnonzero(s.mask.any(1))
    cut = np.ascontiguousarray(s.image[: rows[0] + int(0.7 * (rows[-1] - rows[0]))])
    assert "person_cut_off" in detect(cut).warnings
    h = s.person_height_px
    blurred = cv2.GaussianBlur(s.image, (0, 0), 0.012 * h)
    assert blur_score(s.image, s.mask) < 0.5 < 0.7 < blur_score(blurred, s.mask)
    det = Detection(keypoints=np.zeros((33, 3), np.float32), mask=s.mask.astype(np.float32))
    assert quality_warnings(det, blurred) == ["photo_blurry"]
    assert quality_warnings(det, s.image) == []


# ---- EXIF ---------------------------------------------------------------------------------------
def test_exif_orientation_is_applied_before_anything_else(tmp_path):
    from models.fit.camera import focal_px_from_exif
    from models.ioutil import load_photo

    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :10] = (255, 0, 0)  # a red band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif.get_ifd(0x8769)[0xA405] = 28  # 28 mm full-frame equivalent
    path = tmp_path / "p.jpg"
    Image.fromarray(img).save(path, exif=exif, quality=95)
    out = load_photo(path)
    assert out.shape == (60, 40, 3)
    assert out[:10, :, 0].mean() > 200 and out[-10:, :, 0].mean() < 50  # the band is now on top
    f = focal_px_from_exif(path, 40, 60)
    assert f == pytest.approx(28 / 43.27 * np.hypot(40, 60), rel=1e-6)
    plain = tmp_path / "q.png"
    Image.fromarray(img).save(plain)
    assert focal_px_from_exif(plain, 60, 40) is None


# ---- uploaded keypoints and masks ---------------------------------------------------------------
def _openpose_person(kp33: np.ndarray, offset=(0.0, 0.0), scale=1.0) -> dict:
    """A BODY_25 + face + hands OpenPose person from MediaPipe-33 points (pixel indices)."""
    def at(name):
        x, y, c = kp33[MP[name]]
        return [float(x) * scale + offset[0] - 0.5, float(y) * scale + offset[1] - 0.5, float(c > 0) * 0.9]

    body = []
    for name in BODY_25:
        mp_name = {"left_big_toe": "left_foot_index", "right_big_toe": "right_foot_index"}.get(name, name)
        body += at(mp_name) if mp_name in MP else [0.0, 0.0, 0.0]
    face = [[0.0, 0.0, 0.0] for _ in range(70)]
    for name, idx in (("right_eye_outer", 36), ("right_eye_inner", 39), ("left_eye_inner", 42),
                      ("left_eye_outer", 45), ("mouth_right", 48), ("mouth_left", 54)):
        face[idx] = at(name)
    hands = {}
    for side in ("left", "right"):
        h = [[0.0, 0.0, 0.0] for _ in range(21)]
        h[0], h[5], h[17], h[2] = at(f"{side}_wrist"), at(f"{side}_index"), at(f"{side}_pinky"), at(f"{side}_thumb")
        hands[side] = sum(h, [])
    return {"person_id": [-1], "pose_keypoints_2d": body, "face_keypoints_2d": sum(face, []),
            "hand_left_keypoints_2d": hands["left"], "hand_right_keypoints_2d": hands["right"]}


def test_openpose_body25_face_and_hands_map_onto_mediapipe(people):
    s = people[0]
    kp = s.keypoints_mp33.copy()
    kp[:, 2] = 1.0
    doc = {"version": 1.3, "people": [_openpose_person(kp, scale=2.0)]}  # the photo was sent at 2x
    (out,), (height,) = parse_openpose(json.dumps(doc).encode(), scale=0.5)
    assert height > 0.8 * s.person_height_px
    for name in ("nose", "left_shoulder", "right_knee", "left_heel", "right_foot_index", "left_eye_outer",
                 "mouth_left", "left_index", "right_pinky", "right_thumb"):
        assert out[MP[name], 2] > 0.5, name
        assert np.abs(out[MP[name], :2] - kp[MP[name], :2]).max() < 0.3, name
    assert np.abs(out[MP["left_eye"], :2] - kp[MP["left_eye"], :2]).max() < 0.3  # BODY_25's eye, not the face's
    doc["people"][0]["pose_keypoints_2d"][16 * 3 + 2] = 0.0  # no body eye: the face's eye corners' mean
    (out,), _ = parse_openpose(doc, scale=0.5)
    eye = (kp[MP["left_eye_inner"], :2] + kp[MP["left_eye_outer"], :2]) / 2
    assert np.abs(out[MP["left_eye"], :2] - eye).max() < 0.3


def test_openpose_coco18_several_people_and_bad_files():
    coco18 = np.zeros((18, 3), np.float32)
    coco18[:, :2] = np.stack([np.full(18, 50.0), np.linspace(10, 200, 18)], 1)
    coco18[:, 2] = 0.8
    small = coco18.copy()
    small[:, 1] *= 0.3
    doc = {"people": [{"pose_keypoints_2d": small.ravel().tolist()}, {"pose_keypoints_2d": coco18.ravel().tolist()}]}
    people, heights = parse_openpose(doc)
    assert len(people) == 2 and heights[1] > heights[0]
    assert people[1][MP["left_ankle"], 1] == pytest.approx(coco18[13, 1] + 0.5)
    mask = np.zeros((256, 128), np.uint8)
    mask[10:200, 30:70] = 255
    img = np.full((256, 128, 3), 128, np.uint8)
    det = detect(img, keypoints_json=json.dumps(doc), mask=mask)
    assert "multiple_people" in det.warnings and det.keypoints[MP["left_ankle"], 1] > 150  # the taller one
    with pytest.raises(PipelineError) as err:
        detect(img, keypoints_json=json.dumps(doc), mask=mask, strict=True)
    assert err.value.code == "multiple_people"
    for bad in (b"not json", b'{"people": 3}', b'{"people": [{"pose_keypoints_2d": [1, 2]}]}',
                b'{"people": [{"pose_keypoints_2d": [1, 2, 3, 4, 5, 6]}]}'):
        with pytest.raises(PipelineError) as err:
            detect(img, keypoints_json=bad, mask=mask)
        assert err.value.code == "invalid_keypoints", bad
    with pytest.raises(PipelineError) as err:
        detect(img, keypoints_json=b'{"people": []}', mask=mask)
    assert err.value.code == "no_person_detected"


def test_uploaded_keypoints_and_mask_skip_detection(people, monkeypatch):
    from models.detect import mediapipe_detector

    def refuse(*a, **k):
        raise AssertionError("MediaPipe must not run when keypoints and mask are uploaded")

    monkeypatch.setattr(mediapipe_detector, "detect_person", refuse)
    s = people[0]
    doc = {"people": [_openpose_person(s.keypoints_mp33)]}
    det = detect(s.image, keypoints_json=json.dumps(doc), mask=s.mask.astype(np.uint8) * 255)
    assert det.source == "keypoints:upload,mask:upload"
    assert np.array_equal(det.mask > 0.5, s.mask)
    seen = s.keypoints_mp33[:, 2] > 0
    assert np.abs(det.keypoints[seen & (det.keypoints[:, 2] > 0), :2] - s.keypoints_mp33[seen & (det.keypoints[:, 2] > 0), :2]).max() < 0.01


def test_uploaded_mask_alone_keeps_mediapipe_keypoints(people):
    s = people[0]
    det = detect(s.image, mask=s.mask)
    assert det.source == "keypoints:mediapipe,mask:upload"
    assert np.array_equal(det.mask > 0.5, s.mask)


def test_prepare_mask_resizes_and_refuses_bad_masks():
    m = np.zeros((100, 50, 4), np.uint8)
    m[20:80, 10:40, 3] = 255  # alpha carries the person
    out = prepare_mask(m, (200, 100))
    assert out.shape == (200, 100) and out.dtype == np.float32 and 0.15 < out.mean() < 0.5
    with pytest.raises(PipelineError) as err:
        prepare_mask(np.zeros((100, 100), np.uint8), (100, 100))
    assert err.value.code == "invalid_mask"
    with pytest.raises(PipelineError) as err:
        prepare_mask(m, (100, 100))  # aspect ratio of another photo
    assert err.value.code == "invalid_mask"


# ---- ONNX models, built here by a minimal ONNX (protobuf) writer ---------------------------------
def _varint(n: int) -> bytes:
    out = b""
    n &= (1 << 64) - 1
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _field(num: int, value) -> bytes:
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    if isinstance(value, float):
        return _varint(num << 3 | 5) + struct.pack("<f", value)
    if isinstance(value, str):
        value = value.encode()
    return _varint(num << 3 | 2) + _varint(len(value)) + value


def _tensor(name: str, arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, np.float32)
    return b"".join(_field(1, int(d)) for d in arr.shape) + _field(2, 1) + _field(8, name) + _field(9, arr.tobytes())


def _value_info(name: str, shape) -> bytes:
    dims = b"".join(_field(1, _field(1, int(d))) for d in shape)
    return _field(1, name) + _field(2, _field(1, _field(1, 1) + _field(2, dims)))


def _node(op: str, inputs, outputs, **attrs) -> bytes:
    out = b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op)
    for k, v in attrs.items():
        if isinstance(v, list):
            a = _field(1, k) + b"".join(_field(8, int(x)) for x in v) + _field(20, 7)
        else:
            a = _field(1, k) + _field(3, int(v)) + _field(20, 2)
        out += _field(5, a)
    return out


def _model(nodes, inits, inputs, outputs) -> bytes:
    graph = (b"".join(_field(1, n) for n in nodes) + _field(2, "tiny")
             + b"".join(_field(5, t) for t in inits)
             + b"".join(_field(11, v) for v in inputs) + b"".join(_field(12, v) for v in outputs))
    return _field(1, 8) + _field(2, "tests") + _field(7, graph) + _field(8, _field(1, "") + _field(2, 17))


# "Redness" of each pixel on the ImageNet-normalized input: R - G - B, minus 3.
_RED_W = np.tile(np.array([1.0, -1.0, -1.0], np.float32)[None, :, None, None], (17, 1, 1, 1))
_RED_B = np.full(17, -3.0, np.float32)


def heatmap_model(path, size=(64, 48), stride=4):
    """17 heatmaps [1, 17, 16, 12], each peaking where the photo is red."""
    h, w = size
    nodes = [_node("Conv", ["input", "W", "B"], ["red"], kernel_shape=[1, 1]),
             _node("Sigmoid", ["red"], ["p"]),
             _node("MaxPool", ["p"], ["heatmaps"], kernel_shape=[stride, stride], strides=[stride, stride])]
    path.write_bytes(_model(nodes, [_tensor("W", _RED_W), _tensor("B", _RED_B)], [_value_info("input", [1, 3, h, w])],
                            [_value_info("heatmaps", [1, 17, h // stride, w // stride])]))
    return path


def simcc_model(path, size=(64, 48)):
    """SimCC outputs (1 bin per pixel): the red map's maximum over rows and over columns."""
    h, w = size
    nodes = [_node("Conv", ["input", "W", "B"], ["red"], kernel_shape=[1, 1]),
             _node("Sigmoid", ["red"], ["p"]),
             _node("ReduceMax", ["p"], ["simcc_x"], axes=[2], keepdims=0),
             _node("ReduceMax", ["p"], ["simcc_y"], axes=[3], keepdims=0)]
    path.write_bytes(_model(nodes, [_tensor("W", _RED_W), _tensor("B", _RED_B)], [_value_info("input", [1, 3, h, w])],
                            [_value_info("simcc_x", [1, 17, w]), _value_info("simcc_y", [1, 17, h])]))
    return path


def parsing_model(path, size=(64, 64)):
    """Two classes: background = not red, person = red."""
    h, w = size
    W = np.stack([[-1.0, 1.0, 1.0], [1.0, -1.0, -1.0]]).astype(np.float32)[:, :, None, None]
    nodes = [_node("Conv", ["input", "W", "B"], ["logits"], kernel_shape=[1, 1])]
    path.write_bytes(_model(nodes, [_tensor("W", W), _tensor("B", np.array([3.0, -3.0], np.float32))],
                            [_value_info("input", [1, 3, h, w])], [_value_info("logits", [1, 2, h, w])]))
    return path


def _red_dot_photo(xy, size=(300, 200)):
    import cv2

    img = np.full((*size, 3), 128, np.uint8)
    cv2.circle(img, (int(xy[0]), int(xy[1])), 6, (255, 0, 0), -1)
    return img


@pytest.mark.parametrize("kind", ["heatmaps", "simcc"])
def test_onnx_keypoint_model_runs_and_maps_back_to_photo_pixels(tmp_path, kind):
    from models.detect.onnx_models import OnnxKeypointModel, person_box, providers

    path = (heatmap_model if kind == "heatmaps" else simcc_model)(tmp_path / "kp.onnx")
    model = OnnxKeypointModel(path)
    assert model.size == (64, 48) and "CPUExecutionProvider" in providers()
    dot = (130.0, 90.0)
    img = _red_dot_photo(dot)
    mask = np.zeros(img.shape[:2], np.float32)
    mask[40:260, 60:180] = 1  # the person's box sets the crop
    pts = model(img, person_box(img.shape[:2], mask=mask))
    assert pts.shape == (17, 3) and (pts[:, 2] > 0.8).all()
    px_per_cell = (220 * 1.25) / 64 * (4 if kind == "heatmaps" else 1)  # photo pixels per output cell
    assert np.abs(pts[:, :2] - dot).max() < px_per_cell, pts[0]
    mp33 = from_wholebody(pts)
    assert mp33[MP["left_knee"], 2] > 0.8 and mp33[MP["left_thumb"], 2] == 0  # COCO-17 has no hands


def test_onnx_parsing_model_gives_the_person_mask(tmp_path):
    from models.detect.onnx_models import OnnxParsingModel, person_box

    model = OnnxParsingModel(parsing_model(tmp_path / "parse.onnx"))
    img = np.full((300, 200, 3), 128, np.uint8)
    img[50:250, 70:130] = (255, 0, 0)
    truth = np.zeros((300, 200), bool)
    truth[50:250, 70:130] = True
    m = model(img, person_box(img.shape[:2]))
    assert m.shape == (300, 200) and _iou(m > 0.5, truth) > 0.9


def test_onnx_models_configured_by_path_replace_mediapipe(tmp_path, monkeypatch, people):
    from models.detect import mediapipe_detector

    monkeypatch.setattr(mediapipe_detector, "detect_person", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    monkeypatch.setenv("AVATARS_KEYPOINT_MODEL_PATH", str(heatmap_model(tmp_path / "kp.onnx")))
    monkeypatch.setenv("AVATARS_PARSING_MODEL_PATH", str(parsing_model(tmp_path / "parse.onnx")))
    img = np.full((300, 200, 3), 128, np.uint8)
    img[50:250, 70:130] = (255, 0, 0)  # a red "person": every keypoint lands on it
    det = detect(img)
    assert det.source == "keypoints:onnx,mask:onnx"
    assert (det.mask > 0.5).sum() > 0.8 * 200 * 60
    seen = det.keypoints[:, 2] > 0.5
    assert seen.sum() >= 17 - 4  # COCO-17 minus the eyes/ears absent from MediaPipe's list... all body points
    assert (det.keypoints[seen, 0] > 60).all() and (det.keypoints[seen, 0] < 140).all()


def test_onnx_model_path_errors_name_the_setting(tmp_path, monkeypatch):
    from models.detect import onnx_models

    monkeypatch.setenv("AVATARS_KEYPOINT_MODEL_PATH", str(tmp_path / "missing.onnx"))
    with pytest.raises(ModelAssetError) as err:
        onnx_models.keypoint_model()
    assert "AVATARS_KEYPOINT_MODEL_PATH" in err.value.message
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model")
    monkeypatch.setenv("AVATARS_PARSING_MODEL_PATH", str(bad))
    with pytest.raises(ModelAssetError) as err:
        onnx_models.parsing_model()
    assert "AVATARS_PARSING_MODEL_PATH" in err.value.message


def test_wholebody_133_mapping():
    pts = np.zeros((133, 3), np.float32)
    pts[:, 0] = np.arange(133)
    pts[:, 2] = 1.0
    out = from_wholebody(pts)
    assert out[MP["nose"], 0] == 0 and out[MP["right_ankle"], 0] == COCO_17.index("right_ankle")
    assert out[MP["left_heel"], 0] == 19 and out[MP["right_foot_index"], 0] == 20
    assert out[MP["mouth_left"], 0] == 23 + 54 and out[MP["right_eye_outer"], 0] == 23 + 36
    assert out[MP["left_index"], 0] == 91 + 5 and out[MP["right_pinky"], 0] == 112 + 17
    assert out[MP["left_thumb"], 0] == 91 + 2
