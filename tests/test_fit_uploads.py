"""POST /v1/avatars with per-photo fit inputs: OpenPose keypoints, person masks, strictness.
They are checked at the gateway and stored beside the photos for the fit stage."""
from __future__ import annotations

import io
import json
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image


def _png(size=(64, 48), mode="RGB", colour=(120, 80, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _keypoints() -> bytes:
    body = []
    for i in range(25):
        body += [10.0 + i, 5.0 + 1.5 * i, 0.9]
    return json.dumps({"version": 1.3, "people": [{"pose_keypoints_2d": body}]}).encode()


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    return response.json()["error"]


def test_keypoints_masks_and_strict_are_stored_beside_the_photos(client: TestClient, data_dir: Path):
    mask = io.BytesIO()
    m = Image.new("LA", (32, 24), (0, 0))
    m.paste((255, 255), (8, 4, 24, 20))  # the person in the alpha channel
    m.save(mask, format="PNG")
    response = client.post(
        "/v1/avatars",
        files=[("photos", ("a.png", _png(), "image/png")), ("photos", ("b.png", _png(), "image/png")),
               ("keypoints", ("a.json", _keypoints(), "application/json")),
               ("keypoints", ("b.json", b"", "application/json")),  # no keypoints for photo 1
               ("masks", ("a.png", b"", "image/png")),
               ("masks", ("b_mask.png", mask.getvalue(), "image/png"))],
        data={"strict": "true"},
    )
    assert response.status_code == 202, response.text
    originals = data_dir / "avatars" / response.json()["avatar_id"] / "originals"
    assert sorted(p.name for p in originals.iterdir()) == [
        "keypoints_0.json", "mask_1.png", "options.json", "photo_0.png", "photo_1.png"]
    assert (originals / "keypoints_0.json").read_bytes() == _keypoints()
    assert json.loads((originals / "options.json").read_text()) == {"strict": True}
    with Image.open(originals / "mask_1.png") as im:
        stored = im.convert("L")
        assert stored.size == (32, 24) and stored.getpixel((16, 12)) == 255 and stored.getpixel((1, 1)) == 0


def test_without_fit_inputs_nothing_extra_is_stored(client: TestClient, data_dir: Path):
    response = client.post("/v1/avatars", files=[("photos", ("a.png", _png(), "image/png"))])
    assert response.status_code == 202, response.text
    originals = data_dir / "avatars" / response.json()["avatar_id"] / "originals"
    assert [p.name for p in originals.iterdir()] == ["photo_0.png"]


def test_bad_fit_inputs_are_refused_and_nothing_is_stored(client: TestClient, data_dir: Path):
    photo = ("photos", ("a.png", _png(), "image/png"))
    _error(client.post("/v1/avatars", files=[photo, photo, ("keypoints", ("k.json", _keypoints(), "application/json"))]),
           400, "misaligned_upload")
    _error(client.post("/v1/avatars", files=[photo, ("keypoints", ("k.json", b"{not json", "application/json"))]),
           422, "invalid_keypoints")
    _error(client.post("/v1/avatars", files=[photo, ("keypoints", ("k.json", b'{"people": [{"pose_keypoints_2d": [1]}]}',
                                                                   "application/json"))]), 422, "invalid_keypoints")
    _error(client.post("/v1/avatars", files=[photo, ("masks", ("m.png", b"not an image", "image/png"))]),
           422, "invalid_mask")
    err = _error(client.post("/v1/avatars", files=[photo, ("masks", ("m.png", _png((48, 48), "L", 255), "image/png"))]),
                 422, "invalid_mask")
    assert "aspect" in err["message"]
    assert not (data_dir / "avatars").exists() or not any((data_dir / "avatars").iterdir())
