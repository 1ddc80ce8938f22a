"""ONNX whole-body keypoint and human-parsing models, configured by path (onnxruntime).

    AVATARS_KEYPOINT_MODEL_PATH  top-down keypoint model (COCO-WholeBody 133 or COCO 17)
    AVATARS_PARSING_MODEL_PATH   human-parsing model (class 0 = background)

What the models must look like (RTMPose / ViTPose / DWPose and SCHP-style exports do):

- one float32 input ``[1, 3, H, W]``, RGB normalized with the ImageNet mean and standard
  deviation (x / 255 - mean) / std. H and W are read from the model (a dynamic size
  falls back to 256 x 192 for keypoints, 512 x 512 for parsing);
- keypoints: either one output of heatmaps ``[1, K, h, w]`` or two SimCC outputs
  ``[1, K, Wx]`` and ``[1, K, Hy]`` (x and y bins, ``Wx / W`` bins per pixel); K = 133 or 17.
  The person's box (from the mask when known, else the whole photo) is enlarged by 25 %,
  brought to the input's aspect ratio and warped to the input size;
- parsing: one output of class logits ``[1, C, h, w]``; person probability = 1 - softmax
  of class 0. The same box crop as keypoints, warped back into the photo.

Sessions are created lazily, once per (path, file size, mtime) per process, under a lock,
with the CUDA provider first when onnxruntime offers it. A missing or unloadable file is
one ``model_asset_missing`` error naming the setting.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from models.errors import ModelAssetError

KEYPOINT_MODEL_SETTING = "AVATARS_KEYPOINT_MODEL_PATH"
PARSING_MODEL_SETTING = "AVATARS_PARSING_MODEL_PATH"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
BOX_SCALE = 1.25

_lock = threading.Lock()
_sessions: dict[tuple, object] = {}


def configured_path(setting: str) -> Path | None:
    raw = os.environ.get(setting, "").strip()
    return Path(raw).expanduser() if raw else None


def providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available] or available


def _session(path: Path, setting: str):
    """An onnxruntime session for `path`, created once per process and file version."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ModelAssetError(f"{setting} names {path}, which cannot be read ({exc.strerror}). "
                              "Point it at the model's .onnx file or unset it.") from exc
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _lock:
        sess = _sessions.get(key)
        if sess is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            try:
                sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers())
            except Exception as exc:  # onnxruntime raises assorted errors for bad files
                raise ModelAssetError(f"{setting}: {path} is not a loadable ONNX model "
                                      f"({type(exc).__name__}: {exc}).") from exc
            _sessions[key] = sess
        return sess


def _input_size(sess, default: tuple[int, int]) -> tuple[int, int]:
    shape = sess.get_inputs()[0].shape
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise ModelAssetError(f"the ONNX model's input must be [1, 3, H, W], got {shape}")
    h, w = shape[2], shape[3]
    return (h, w) if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 else default


def person_box(image_size: tuple[int, int], mask: np.ndarray | None = None,
               keypoints: np.ndarray | None = None) -> tuple[float, float, float, float]:
    """(cx, cy, w, h) of the person: the mask's box, else confident keypoints', else the photo."""
    H, W = image_size
    if mask is not None and (mask > 0.5).any():
        ys, xs = np.nonzero(mask > 0.5)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    elif keypoints is not None and (keypoints[:, 2] > 0.3).sum() >= 2:
        p = keypoints[keypoints[:, 2] > 0.3, :2]
        (x0, y0), (x1, y1) = p.min(0), p.max(0)
        pad = 0.1 * (y1 - y0)
        x0, x1, y0, y1 = x0 - pad, x1 + pad, y0 - pad, y1 + pad
    else:
        x0, x1, y0, y1 = 0, W, 0, H
    return (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0), max(y1 - y0, 1.0)


def crop_transform(box, out_hw: tuple[int, int], scale: float = BOX_SCALE) -> np.ndarray:
    """2x3 affine mapping photo pixel indices into the model input's (box enlarged, aspect
    kept), OpenCV's ``warpAffine`` convention."""
    cx, cy, w, h = box
    oh, ow = out_hw
    w, h = w * scale, h * scale
    if w / h > ow / oh:
        h = w * oh / ow
    else:
        w = h * ow / oh
    s = ow / w
    return np.array([[s, 0, ow / 2 - s * cx], [0, s, oh / 2 - s * cy]], np.float32)


def _blob(image: np.ndarray, M: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    import cv2

    oh, ow = out_hw
    crop = cv2.warpAffine(image, M, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    x = (crop.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


class OnnxKeypointModel:
    """Top-down whole-body keypoints -> COCO-WholeBody/COCO points [K, 3] in photo pixels."""

    def __init__(self, path: Path, setting: str = KEYPOINT_MODEL_SETTING):
        self.sess = _session(Path(path), setting)
        self.size = _input_size(self.sess, (256, 192))
        outs = self.sess.get_outputs()
        if len(outs) not in (1, 2):
            raise ModelAssetError(f"{setting}: expected heatmaps (1 output) or SimCC (2 outputs), "
                                  f"the model has {len(outs)}")

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        M = crop_transform(box, self.size)
        outs = self.sess.run(None, {self.sess.get_inputs()[0].name: _blob(image, M, self.size)})
        if len(outs) == 1:
            pts = _decode_heatmaps(np.asarray(outs[0], np.float32)[0], self.size)
        else:
            pts = _decode_simcc(np.asarray(outs[0], np.float32)[0], np.asarray(outs[1], np.float32)[0], self.size)
        # input pixel indices -> photo pixel indices (OpenCV's convention) -> continuous
        # coordinates (pixel i spans [i, i + 1), as MediaPipe's and the camera's)
        Minv = np.linalg.inv(np.vstack([M, [0, 0, 1]]))[:2]
        xy = pts[:, :2] @ Minv[:, :2].T + Minv[:, 2] + 0.5
        return np.concatenate([xy, pts[:, 2:3]], 1).astype(np.float32)


def _decode_heatmaps(hm: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[K, h, w] -> [K, 3] (x, y in input pixels, peak value), quarter-pixel refinement."""
    K, h, w = hm.shape
    flat = hm.reshape(K, -1)
    idx = flat.argmax(1)
    y, x = (idx // w).astype(np.float32), (idx % w).astype(np.float32)
    conf = flat[np.arange(K), idx]
    xi, yi = x.astype(np.int64), y.astype(np.int64)
    for k in range(K):  # shift a quarter pixel towards the higher neighbour (as HRNet/ViTPose)
        if 0 < xi[k] < w - 1:
            x[k] += 0.25 * np.sign(hm[k, yi[k], xi[k] + 1] - hm[k, yi[k], xi[k] - 1])
        if 0 < yi[k] < h - 1:
            y[k] += 0.25 * np.sign(hm[k, yi[k] + 1, xi[k]] - hm[k, yi[k] - 1, xi[k]])
    H, W = size
    x = (x + 0.5) * (W / w) - 0.5
    y = (y + 0.5) * (H / h) - 0.5
    return np.stack([x, y, np.clip(conf, 0, 1)], 1)


def _decode_simcc(sx: np.ndarray, sy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[K, Wx], [K, Hy] -> [K, 3]: argmax bins divided by the split ratio."""
    H, W = size
    x = sx.argmax(1).astype(np.float32) / (sx.shape[1] / W)
    y = sy.argmax(1).astype(np.float32) / (sy.shape[1] / H)
    conf = np.minimum(sx.max(1), sy.max(1))
    return np.stack([x, y, np.clip(conf, 0, 1)], 1)


class OnnxParsingModel:
    """Human parsing -> person probability [H, W] in the photo."""

    def __init__(self, path: Path, setting: str = PARSING_MODEL_SETTING):
        self.sess = _session(Path(path), setting)
        self.size = _input_size(self.sess, (512, 512))
        if len(self.sess.get_outputs()) < 1:
            raise ModelAssetError(f"{setting}: the parsing model has no output")

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        import cv2

        H, W = image.shape[:2]
        M = crop_transform(box, self.size)
        logits = np.asarray(self.sess.run(None, {self.sess.get_inputs()[0].name: _blob(image, M, self.size)})[0],
                            np.float32)
        if logits.ndim != 4 or logits.shape[1] < 2:
            raise ModelAssetError(f"{PARSING_MODEL_SETTING}: expected class logits [1, C, h, w], got {logits.shape}")
        z = logits[0] - logits[0].max(0, keepdims=True)
        e = np.exp(z)
        person = 1.0 - e[0] / e.sum(0)
        oh, ow = self.size
        if person.shape != (oh, ow):
            person = cv2.resize(person, (ow, oh), interpolation=cv2.INTER_LINEAR)
        out = cv2.warpAffine(person, M, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        return np.clip(out, 0, 1).astype(np.float32)


def keypoint_model() -> OnnxKeypointModel | None:
    path = configured_path(KEYPOINT_MODEL_SETTING)
    return OnnxKeypointModel(path) if path else None


def parsing_model() -> OnnxParsingModel | None:
    path = configured_path(PARSING_MODEL_SETTING)
    return OnnxParsingModel(path) if path else None
