"""Errors the pipeline raises, with stable codes the API passes on to clients."""
from __future__ import annotations


class PipelineError(Exception):
    """A stage could not produce its result.

    `code` is stable and machine-readable (clients branch on it); `message` is for people.
    `transient` is True only for failures worth retrying (I/O hiccups), never for bad input.
    """

    def __init__(self, code: str, message: str, *, transient: bool = False, details=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.transient = transient
        self.details = details


class ModelAssetError(PipelineError):
    """A model file is missing or malformed; the message names the setting and the source."""

    def __init__(self, message: str):
        super().__init__("model_asset_missing", message)
