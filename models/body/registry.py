"""Which body model the pipeline uses, chosen by the environment.

    AVATARS_BODY_MODEL        anny (default) | smplx
    AVATARS_SMPLX_MODEL_PATH  SMPLX_NEUTRAL.npz (or its folder), needed for smplx

Read here, not from the service settings, so `models` never imports `workers`/`service`.
One instance per (name, path) per process, built under a lock.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

from models.errors import ModelAssetError

BODY_MODEL_SETTING = "AVATARS_BODY_MODEL"
SMPLX_PATH_SETTING = "AVATARS_SMPLX_MODEL_PATH"
DEFAULT_BODY_MODEL = "anny"
BODY_MODELS = ("anny", "smplx")

_lock = threading.Lock()
_cache: dict[tuple[str, str | None], object] = {}


def body_model_name(name: str | None = None) -> str:
    """The body model to use: `name`, else AVATARS_BODY_MODEL, else anny (checked)."""
    raw = name if name else os.environ.get(BODY_MODEL_SETTING, "")
    chosen = (raw or DEFAULT_BODY_MODEL).strip().lower()
    if chosen not in BODY_MODELS:
        raise ModelAssetError(
            f"Unknown body model {raw!r} ({BODY_MODEL_SETTING}); choose one of: {', '.join(BODY_MODELS)}."
        )
    return chosen


def get_body(name: str | None = None):
    """The body model `name` (default: AVATARS_BODY_MODEL, else anny), loaded once per process."""
    chosen = body_model_name(name)
    path: str | None = None
    if chosen == "smplx":
        from models.body.smplx_body import asset_error, resolve_path

        configured = os.environ.get(SMPLX_PATH_SETTING, "").strip()
        if not configured:
            raise asset_error(f"the body model is smplx but {SMPLX_PATH_SETTING} is not set")
        path = str(resolve_path(configured).resolve())
    key = (chosen, path)
    with _lock:
        body = _cache.get(key)
        if body is None:
            body = _load(chosen, path)
            _cache[key] = body
        return body


def _load(name: str, path: str | None):
    if name == "anny":
        from models.body import anny_body

        return anny_body.get_anny()  # shares Anny's own process-wide instance
    from models.body.smplx_body import SmplxBody

    return SmplxBody(Path(path))
