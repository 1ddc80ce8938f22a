"""Triangle rasterizer backends sharing nvdiffrast's contract.

``get_backend("cpu")`` is the numba renderer used by the player,
``"numpy"`` the plain reference, ``"cuda"`` wraps nvdiffrast.  Importing this
package never imports torch (only the cuda backend does, lazily).
See ``contract.py`` for conventions (bottom-up rows, barycentrics, uv).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .contract import RasterBackend

__all__ = ["RasterBackend", "cuda_available", "get_backend"]


def cuda_available() -> bool:
    """True when nvdiffrast imports and torch sees a CUDA device.

    Checks that nvdiffrast is installed before importing torch, so CPU-only
    machines never pay for (or depend on) importing torch.
    """
    if importlib.util.find_spec("nvdiffrast") is None:
        return False
    try:
        import nvdiffrast.torch  # noqa: F401
        import torch
    except (ImportError, OSError, RuntimeError):  # broken CUDA / plugin build
        return False
    return bool(torch.cuda.is_available())


def get_backend(name: str = "auto") -> ModuleType:
    """Return the backend module ("cpu", "numpy", "cuda" or "auto").

    "auto" is "cuda" when available, else "cpu".  Each module exposes
    rasterize, interpolate, texture, antialias and render_textured.
    """
    if name == "auto":
        name = "cuda" if cuda_available() else "cpu"
    if name == "cpu":
        return importlib.import_module(".cpu", __name__)
    if name == "numpy":
        return importlib.import_module(".numpy_ref", __name__)
    if name == "cuda":
        if not cuda_available():
            raise RuntimeError("cuda raster backend needs nvdiffrast and a CUDA device")
        return importlib.import_module(".nvdiffrast_backend", __name__)
    raise ValueError(f"unknown raster backend {name!r} (auto, cpu, numpy, cuda)")
