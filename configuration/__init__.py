from .configuration_muomni import (
    SPECIAL_TOKEN_IDS,
    MuOmniAudioEncoderConfig,
    MuOmniCodecConfig,
    MuOmniConfig,
    MuOmniTalkerConfig,
    MuOmniVocoderConfig,
    MuOmniTextConfig,
    MuOmniThinkerConfig,
    MuOmniVisionEncoderConfig,
)
from .presets import PRESETS, get_preset, get_preset_config

__all__ = [
    "SPECIAL_TOKEN_IDS",
    "MuOmniAudioEncoderConfig",
    "MuOmniCodecConfig",
    "MuOmniConfig",
    "MuOmniTalkerConfig",
    "MuOmniVocoderConfig",
    "MuOmniTextConfig",
    "MuOmniThinkerConfig",
    "MuOmniVisionEncoderConfig",
    "PRESETS",
    "get_preset",
    "get_preset_config",
]
