"""Model zoo: known EDVR checkpoints, download cache and checkpoint loading."""
from __future__ import annotations

from .cache import ModelError, cache_dir, fetch, model_path, verify
from .checkpoint import infer_arch, load_model, read_state_dict
from .registry import DEFAULT_MODEL, MODELS, ModelSpec

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "ModelError",
    "ModelSpec",
    "cache_dir",
    "fetch",
    "infer_arch",
    "load_model",
    "model_path",
    "read_state_dict",
    "verify",
]
