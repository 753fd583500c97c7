"""MuOmni training: the built-in dataset (`muomni.training.data`), collators, one Trainer per stage, CLI.

Kept light: names are imported on first use, so `import muomni.training` loads neither `datasets`
nor the speech engine.
"""

import importlib

_EXPORTS = {
    "build_builtin_dataset": "muomni.training.data",
    "load_builtin_dataset": "muomni.training.data",
    "with_audio_arrays": "muomni.training.data",
    "synthesize": "muomni.training.data",
    "normalize_transcript": "muomni.training.data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
