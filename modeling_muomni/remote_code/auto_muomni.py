# GENERATED FILE - DO NOT EDIT.
# Entry module of the MuOmni remote code for loading with `trust_remote_code=True`,
# written by `python -m muomni.hub export-remote-code`. Edit the package source and regenerate.
"""Every class that `auto_map` names, imported from its module.

All `auto_map` entries point here, so transformers loads (and caches) the remote code once and the
config, model and processor classes come from the same modules.
"""

from .configuration_muomni import MuOmniConfig
from .feature_extraction_muomni import MuOmniFeatureExtractor
from .image_processing_muomni import MuOmniImageProcessor
from .modeling_muomni import MuOmniForConditionalGeneration, MuOmniForSpeechRecognition, MuOmniForTextToSpeech
from .processing_muomni import MuOmniProcessor
from .tokenization_muomni import MuOmniTokenizer

__all__ = [
    "MuOmniConfig",
    "MuOmniFeatureExtractor",
    "MuOmniForConditionalGeneration",
    "MuOmniForSpeechRecognition",
    "MuOmniForTextToSpeech",
    "MuOmniImageProcessor",
    "MuOmniProcessor",
    "MuOmniTokenizer",
]
