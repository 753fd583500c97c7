"""The built-in MuOmni dataset: speech (eSpeak NG), procedural image scenes, text and chat, generated offline."""

from .builtin import (
    DATASET_NAMES,
    FEATURES,
    SCALES,
    SFT_TASKS,
    build_builtin_dataset,
    load_builtin_dataset,
    with_audio_arrays,
)
from .speech import (
    ASSISTANT_VOICE,
    HELDOUT_ACCENTS,
    HELDOUT_VARIANTS,
    TRAIN_ACCENTS,
    TRAIN_VARIANTS,
    EspeakSynthesizer,
    EspeakUnavailableError,
    decode_audio,
    normalize_transcript,
    resample,
    synthesize,
)

__all__ = [
    "ASSISTANT_VOICE",
    "DATASET_NAMES",
    "FEATURES",
    "HELDOUT_ACCENTS",
    "HELDOUT_VARIANTS",
    "SCALES",
    "SFT_TASKS",
    "TRAIN_ACCENTS",
    "TRAIN_VARIANTS",
    "EspeakSynthesizer",
    "EspeakUnavailableError",
    "build_builtin_dataset",
    "decode_audio",
    "load_builtin_dataset",
    "normalize_transcript",
    "resample",
    "synthesize",
    "with_audio_arrays",
]
