"""Synthetic samples in memory and on disk: containers, PNG writing, datasets, contact sheet.

On disk, sample i of a dataset is ``DIR/{i:05d}/``:

- ``photo.png`` the photo, ``mask.png`` the clothed person's mask, ``labels.png`` its part
  labels (values index ``outfit.PARSE_LABELS``: 0 background, 1 hair, 2 face, 3 skin,
  4 upper garment, 5 lower garment, 6 dress/coat, 7 shoes, 8 hat/accessory);
- ``keypoints.json`` (MediaPipe-33 and COCO-17 with visibility), ``gt.json`` (shape,
  pose, camera, outfit, light, background, photo effects);
- ``texture.png``: the ground-truth texture on the body's UV atlas (the pipeline's layout);
- ``mesh.npz``: the posed clothed mesh (``verts`` [V,3], ``faces`` [F,3], ``face_parse``
  [F] part label of every face, ``face_garment`` [F]: 0 body layer, 1 drape (skirt, dress,
  coat), 2 ponytail, 3 brim);
- ``views/NAME.png``, ``NAME_mask.png``, ``NAME_labels.png`` for the back, left and right
  views in the photo's pose and the A-pose views, ``views/cameras.json``.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.body.template import MEDIAPIPE_33
from models.fit.camera import Camera
from models.synth.body import COCO_17, SHAPE_LABELS
from models.synth.outfit import PARSE_COLOURS, PARSE_LABELS


@dataclass
class SynthView:
    """One render of the sample's body: image, mask and the camera it was seen from."""

    image: np.ndarray  # uint8 [H,W,3]
    mask: np.ndarray  # bool [H,W]
    camera: Camera
    azimuth_deg: float
    elevation_deg: float
    posed: bool  # True: the photo's pose; False: A-pose (zero pose)
    labels: np.ndarray | None = None  # uint8 [H,W] part labels (outfit.PARSE_LABELS), 0 = background


@dataclass
class SynthSample:
    seed: int
    image: np.ndarray  # uint8 [H,W,3] the front photo
    mask: np.ndarray  # bool [H,W]
    camera: Camera
    shape: np.ndarray  # float32 [6] Anny phenotype (gender, age, muscle, weight, height, proportions)
    pose: np.ndarray  # float32 [J,3]
    texture: np.ndarray  # uint8 [T,T,3] ground-truth texture in the body's UV layout
    keypoints_mp33: np.ndarray  # float32 [33,3]: x, y (pixels), visibility 0/1
    keypoints_coco17: np.ndarray  # float32 [17,3]: x, y, v (0 outside the image, 1 occluded, 2 visible)
    person_height_px: float
    views: dict[str, SynthView] = field(default_factory=dict)
    joint_names: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # pose kind, clothing, background, light, ...
    labels: np.ndarray | None = None  # uint8 [H,W] part labels of the photo (outfit.PARSE_LABELS)
    mesh: dict | None = None  # the posed clothed mesh: verts, faces, face_parse, face_garment
    render_state: object = None  # what ``SynthGenerator.render_clothed`` needs (not written)

    def gt_dict(self) -> dict:
        return {
            "seed": int(self.seed),
            "body_model": "anny",
            "shape": [float(x) for x in self.shape],
            "shape_labels": list(SHAPE_LABELS),
            "pose": self.pose.tolist(),
            "joint_names": list(self.joint_names),
            "texture_size": int(self.texture.shape[0]),
            **self.meta,
            "camera": self.camera.to_dict(),
        }

    def keypoints_dict(self) -> dict:
        return {
            "image_size": [int(self.image.shape[0]), int(self.image.shape[1])],
            "person_height_px": float(self.person_height_px),
            "mediapipe33": {"names": MEDIAPIPE_33, "keypoints": self.keypoints_mp33.tolist(),
                            "visibility": "1 = visible, 0 = occluded or outside the image"},
            "coco17": {"names": COCO_17, "keypoints": self.keypoints_coco17.tolist(),
                       "visibility": "2 = visible, 1 = occluded, 0 = outside the image"},
        }

    def cameras_dict(self) -> dict:
        setup = self.meta["camera_setup"]
        out = {"front": {"camera": self.camera.to_dict(), "azimuth_deg": setup["azimuth_deg"],
                         "elevation_deg": setup["elevation_deg"], "pose": "posed",
                         "image": "../photo.png", "mask": "../mask.png"}}
        for name, v in self.views.items():
            out[name] = {"camera": v.camera.to_dict(), "azimuth_deg": v.azimuth_deg,
                         "elevation_deg": v.elevation_deg, "pose": "posed" if v.posed else "apose",
                         "image": f"{name}.png", "mask": f"{name}_mask.png"}
        return out


def encode_png(arr: np.ndarray, level: int = 1) -> bytes:
    """A plain PNG (8-bit grey or RGB, 'Up' filter on every row, zlib `level`).

    Several times faster than PIL's adaptive filtering for these images, and the bytes
    depend only on the pixels (no timestamps), so samples are byte-for-byte deterministic.
    """
    import struct
    import zlib

    a = np.ascontiguousarray(arr, np.uint8)
    h, w = a.shape[:2]
    c = 1 if a.ndim == 2 else a.shape[2]
    rows = a.reshape(h, w * c)
    raw = np.empty((h, w * c + 1), np.uint8)
    raw[:, 0] = 2  # filter type Up
    raw[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=raw[1:, 1:])

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    colour_type = {1: 0, 3: 2, 4: 6}[c]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + chunk(b"IEND", b""))


def _png(path: Path, arr: np.ndarray) -> None:
    Path(path).write_bytes(encode_png(arr))


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """Part labels [H,W] -> a colour picture of them (uint8 [H,W,3])."""
    return PARSE_COLOURS[np.clip(labels, 0, len(PARSE_LABELS) - 1)]


def write_sample(sample: SynthSample, out_dir: Path) -> Path:
    """Write one sample to out_dir (see the module docstring for the files)."""
    out_dir = Path(out_dir)
    (out_dir / "views").mkdir(parents=True, exist_ok=True)
    _png(out_dir / "photo.png", sample.image)
    _png(out_dir / "mask.png", sample.mask.astype(np.uint8) * 255)
    if sample.labels is not None:
        _png(out_dir / "labels.png", sample.labels)
    _png(out_dir / "texture.png", sample.texture)
    (out_dir / "keypoints.json").write_text(json.dumps(sample.keypoints_dict()))
    (out_dir / "gt.json").write_text(json.dumps(sample.gt_dict()))
    if sample.mesh is not None:
        with open(out_dir / "mesh.npz", "wb") as f:  # no timestamps in a plain npz: same bytes per seed
            np.savez(f, **sample.mesh)
    for name, v in sample.views.items():
        _png(out_dir / "views" / f"{name}.png", v.image)
        _png(out_dir / "views" / f"{name}_mask.png", v.mask.astype(np.uint8) * 255)
        if v.labels is not None:
            _png(out_dir / "views" / f"{name}_labels.png", v.labels)
    (out_dir / "views" / "cameras.json").write_text(json.dumps(sample.cameras_dict()))
    return out_dir


def _generate_and_write(gen, out_dir: Path, indices, seed: int, progress=None) -> float:
    """Generate samples in this thread while a second thread encodes and writes the
    previous one (zlib and the raster kernels release the GIL). -> seconds."""
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    pending = None
    with ThreadPoolExecutor(1) as writer:
        for k, i in enumerate(indices):
            sample = gen.sample(seed + int(i))
            if pending is not None:
                pending.result()
            pending = writer.submit(write_sample, sample, Path(out_dir) / f"{int(i):05d}")
            if progress:
                progress(k + 1, len(indices))
        if pending is not None:
            pending.result()
    return time.perf_counter() - t0


def _worker_range(args) -> float:
    from models.synth.generator import get_generator

    out, indices, seed, size, clothed = args
    return _generate_and_write(get_generator(size, clothed=clothed), Path(out), indices, seed)


def write_dataset(out_dir: Path, n: int, seed: int = 0, size: int = 512, workers: int = 1,
                  progress=None, clothed: bool = True) -> dict:
    """Write n samples to out_dir/00000 ... with seeds seed, seed+1, ...; returns timings.

    ``samples_per_s`` counts generating and writing the samples, after the one-off set-up
    (loading the body, the atlas maps; ``setup_s``); ``samples_per_s_total`` includes it.
    ``workers`` > 1 splits the samples across processes (the bytes written are the same).
    """
    from models.synth.generator import get_generator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    workers = max(1, min(int(workers), n)) if n else 1
    if workers == 1:
        gen = get_generator(size, clothed=clothed)
        setup = time.perf_counter() - t0
        work = _generate_and_write(gen, out_dir, range(n), seed, progress)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        chunks = [c for c in np.array_split(np.arange(n), workers) if len(c)]
        ctx = mp.get_context("spawn")  # torch and numba do not like fork
        with ProcessPoolExecutor(len(chunks), mp_context=ctx, initializer=_init_worker,
                                 initargs=(size, clothed)) as pool:
            # set-up: every worker loads the body model before the timed work starts
            list(pool.map(_ready, range(len(chunks))))
            setup = time.perf_counter() - t0
            futures = [pool.submit(_worker_range, (str(out_dir), c.tolist(), seed, size, clothed)) for c in chunks]
            times = []
            for k, f in enumerate(futures):
                times.append(f.result())
                if progress:
                    progress(sum(len(c) for c in chunks[:k + 1]), n)
        work = max(times)
    rate = n / work if work > 0 else float("inf")
    total = time.perf_counter() - t0
    stats = {"samples": n, "seed": seed, "size": size, "workers": workers, "clothed": clothed, "setup_s": round(setup, 3),
             "seconds": round(total, 3), "samples_per_s": round(rate, 3),
             "samples_per_s_total": round(n / total, 3) if total > 0 else None}
    (out_dir / "synth.json").write_text(json.dumps(stats, indent=1))
    return stats


def _init_worker(size: int, clothed: bool) -> None:
    from models.synth.generator import get_generator

    get_generator(size, clothed=clothed)


def _ready(_: int) -> bool:
    time.sleep(0.2)  # so each worker takes one of these (each runs its initializer first)
    return True


SHEET_COLUMNS = ("photo + keypoints", "part labels", "mask", "back", "left", "right", "A-pose front",
                 "A-pose back", "texture")


def contact_sheet(samples: list[SynthSample], path: Path, cell: int = 128) -> Path:
    """One row per sample: the photo with its keypoints (visible red, occluded blue), its
    part labels, the mask, the back / left / right views, A-pose front and back, the texture."""
    import cv2
    from PIL import Image

    def fit(im):
        c = np.zeros((cell, cell, 3), np.uint8)
        h, w = im.shape[:2]
        k = cell / max(h, w)
        small = cv2.resize(im, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
        y, x = (cell - small.shape[0]) // 2, (cell - small.shape[1]) // 2
        c[y:y + small.shape[0], x:x + small.shape[1]] = small
        return c

    rows = []
    for s in samples:
        photo = s.image.copy()
        r = max(2, s.image.shape[0] // 128)
        for x, y, v in s.keypoints_mp33:
            cv2.circle(photo, (int(x), int(y)), r, (255, 40, 40) if v > 0 else (40, 80, 255), -1, cv2.LINE_AA)
        mask = np.repeat(s.mask[..., None].astype(np.uint8) * 255, 3, 2)
        labels = colour_labels(s.labels) if s.labels is not None else np.zeros_like(photo)
        cells = [photo, labels, mask] + [s.views[n].image for n in ("back", "left", "right", "apose_front", "apose_back")
                                 if n in s.views] + [s.texture]
        rows.append(np.concatenate([fit(c) for c in cells], 1))
    head = np.full((18, rows[0].shape[1], 3), 255, np.uint8)
    for i, t in enumerate(SHEET_COLUMNS):
        cv2.putText(head, t, (i * cell + 3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([head] + rows, 0)).save(path, optimize=True)
    return path


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))