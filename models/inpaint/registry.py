"""Which inpainting method and which model weights the pipeline uses.

    AVATARS_INPAINT_METHOD     diffusion | classical (unset: diffusion when a model is available)
    AVATARS_INPAINT_MODEL_DIR  a model folder (diffusers layout, from `avatars train inpaint`);
                               unset: the default model shipped in models/weights/
    AVATARS_INPAINT_STEPS      sampling steps (unset: the model's default)
    AVATARS_INPAINT_SAMPLER    ddim | dpm (unset: the model's default)

Weights never come from a hub. ``models/weights/registry.json`` lists every shipped file
with its sha256 and what it is for; a configured folder is checked against the sha256
list its own ``inpaint.json`` carries (written by training). A missing or corrupt file
raises one ``ModelAssetError`` naming the file and how to obtain it. Models load lazily,
once per process, under a lock.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from models.errors import ModelAssetError, PipelineError

METHOD_SETTING = "AVATARS_INPAINT_METHOD"
MODEL_DIR_SETTING = "AVATARS_INPAINT_MODEL_DIR"
STEPS_SETTING = "AVATARS_INPAINT_STEPS"
SAMPLER_SETTING = "AVATARS_INPAINT_SAMPLER"
METHODS = ("diffusion", "classical")
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
REGISTRY_PATH = WEIGHTS_DIR / "registry.json"
DEFAULT_MODEL = "inpaint_default"
HOW_TO_TRAIN = ("train one with `avatars train data --out PAIRS` then "
                "`avatars train inpaint --data PAIRS --out RUN` and point "
                f"{MODEL_DIR_SETTING} at RUN/model (see README, 'Texture inpainting')")

_lock = threading.Lock()
_cache: dict[str, object] = {}


@dataclass(frozen=True)
class ModelSource:
    name: str  # registry name, or "configured"
    path: Path
    expected: dict[str, str]  # relative file -> sha256


def read_registry() -> dict:
    try:
        return json.loads(REGISTRY_PATH.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ModelAssetError(f"The model registry {REGISTRY_PATH} is not valid JSON ({exc}); "
                              "restore it from the repository.") from exc


def configured_method() -> str | None:
    """AVATARS_INPAINT_METHOD (checked), or None when unset."""
    raw = os.environ.get(METHOD_SETTING, "").strip().lower()
    if raw and raw not in METHODS:
        raise PipelineError("invalid_setting", f"Unknown {METHOD_SETTING} {raw!r}; choose one of: "
                            f"{', '.join(METHODS)}.")
    return raw or None


def inpaint_method() -> str:
    """The method from AVATARS_INPAINT_METHOD; unset: diffusion when a model is available."""
    return configured_method() or ("diffusion" if model_source() is not None else "classical")


def sampling_overrides() -> tuple[int | None, str | None]:
    """(steps, sampler) from AVATARS_INPAINT_STEPS / AVATARS_INPAINT_SAMPLER; None = model default."""
    from models.inpaint.model import SAMPLERS

    steps_raw = os.environ.get(STEPS_SETTING, "").strip()
    sampler = os.environ.get(SAMPLER_SETTING, "").strip().lower() or None
    steps = None
    if steps_raw:
        try:
            steps = int(steps_raw)
        except ValueError:
            steps = 0
        if not 1 <= steps <= 1000:
            raise PipelineError("invalid_setting", f"{STEPS_SETTING} must be an integer 1..1000, got {steps_raw!r}.")
    if sampler is not None and sampler not in SAMPLERS:
        raise PipelineError("invalid_setting", f"Unknown {SAMPLER_SETTING} {sampler!r}; choose one of: "
                            f"{', '.join(SAMPLERS)}.")
    return steps, sampler


def model_source() -> ModelSource | None:
    """Where the weights are: the configured folder, else the shipped default (None if absent)."""
    configured = os.environ.get(MODEL_DIR_SETTING, "").strip()
    if configured:
        path = Path(configured).expanduser()
        cfg = path / "inpaint.json"
        if not cfg.is_file():
            raise ModelAssetError(f"The inpainting model file {cfg} ({MODEL_DIR_SETTING}) does not exist; "
                                  f"{HOW_TO_TRAIN}.")
        try:
            files = json.loads(cfg.read_text()).get("files") or {}
        except json.JSONDecodeError as exc:
            raise ModelAssetError(f"The inpainting model file {cfg} is corrupt ({exc}); {HOW_TO_TRAIN}.") from exc
        if not files:
            raise ModelAssetError(f"The inpainting model file {cfg} lists no checksums; {HOW_TO_TRAIN}.")
        return ModelSource("configured", path, dict(files))
    entry = read_registry().get(DEFAULT_MODEL)
    if not entry:
        return None
    path = WEIGHTS_DIR / entry["path"]
    if not (path / "inpaint.json").exists():
        return None  # not shipped in this checkout: the classical fill is the default
    return ModelSource(DEFAULT_MODEL, path, {k: v["sha256"] for k, v in entry["files"].items()})


def verify(source: ModelSource) -> None:
    """Every expected file exists and has its sha256, else one clear ModelAssetError."""
    from models.inpaint.model import sha256_file

    for rel, digest in sorted(source.expected.items()):
        f = source.path / rel
        origin = (f"it ships in the repository (models/weights/registry.json: {source.name}); restore it "
                  f"with `git checkout -- {_repo_rel(f)}`, or {HOW_TO_TRAIN}" if source.name != "configured"
                  else HOW_TO_TRAIN)
        if not f.is_file():
            raise ModelAssetError(f"The inpainting model file {f} is missing; {origin}.")
        if sha256_file(f) != digest:
            raise ModelAssetError(f"The inpainting model file {f} is corrupt (sha256 mismatch); {origin}.")


def _repo_rel(p: Path) -> str:
    try:
        return str(p.relative_to(WEIGHTS_DIR.parents[1]))
    except ValueError:
        return str(p)


def get_inpainter(source: ModelSource | None = None):
    """The DiffusionInpainter of `source` (default: model_source()), checked and loaded once."""
    from models.inpaint.model import DiffusionInpainter

    source = source or model_source()
    if source is None:
        raise ModelAssetError(f"No inpainting model: {REGISTRY_PATH.parent / DEFAULT_MODEL} is missing and "
                              f"{MODEL_DIR_SETTING} is not set; {HOW_TO_TRAIN}.")
    key = str(source.path.resolve())
    with _lock:
        model = _cache.get(key)
        if model is None:
            verify(source)
            try:
                model = DiffusionInpainter.from_dir(source.path)
            except (OSError, ValueError, KeyError) as exc:
                raise ModelAssetError(f"The inpainting model in {source.path} could not be loaded ({exc}); "
                                      f"{HOW_TO_TRAIN}.") from exc
            model.source_name = source.name
            _cache[key] = model
        return model
