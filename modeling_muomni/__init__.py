"""MuOmni: a tiny Thinker-Talker omni model for the Hugging Face ecosystem.

`import muomni` exposes the public classes and registers them with the transformers Auto
classes, so `AutoConfig`, `AutoModel`, `AutoModelForCausalLM`, `AutoTokenizer` and `pipeline()`
load MuOmni checkpoints by their `model_type`.
"""

from .version import __version__
from muomni.configuration import (
    PRESETS,
    MuOmniCodecConfig,
    MuOmniConfig,
    MuOmniTalkerConfig,
    MuOmniTextConfig,
    MuOmniThinkerConfig,
    MuOmniVocoderConfig,
    get_preset,
    get_preset_config,
)
from .modeling_audio_encoder import (
    MuOmniAudioEncoder,
    MuOmniAudioEncoderForCTC,
    audio_encoder_output_lengths,
    audio_token_count,
    ctc_greedy_decode,
)
from .modeling_vision_encoder import MuOmniVisionEncoder
from .modeling_contrastive import (
    MuOmniContrastiveConfig,
    MuOmniContrastiveTextConfig,
    MuOmniVisionTextContrastiveModel,
)
from .modeling_codec import MuOmniCodec, MuOmniCodecOutput
from .modeling_vocoder import MuOmniGriffinLim, MuOmniNeuralVocoder, MuOmniVocoderOutput, vocode
from .modeling_talker import (
    MuOmniTalkerForConditionalGeneration,
    MuOmniTalkerGenerateOutput,
    MuOmniTalkerOutput,
)
from .modeling_text import (
    MuOmniForCausalLM,
    MuOmniPreTrainedModel,
    MuOmniTextModel,
)
from muomni.processing.tokenization_muomni import (
    MuOmniCTCTokenizer,
    MuOmniTokenizer,
    tokenize_for_pretraining,
    train_tokenizer,
)
from .modeling_thinker import (
    LANGUAGE_MODEL_LORA_TARGETS,
    MuOmniMultiModalProjector,
    MuOmniThinkerForConditionalGeneration,
)
from .modeling_muomni import (
    MuOmniForConditionalGeneration,
    MuOmniForSpeechRecognition,
    MuOmniForTextToSpeech,
    MuOmniGenerateOutput,
    MuOmniSpeechChunk,
)
from muomni.processing.feature_extraction_muomni import MuOmniFeatureExtractor
from muomni.processing.image_processing_muomni import MuOmniImageProcessor
from muomni.processing.processing_muomni import MuOmniProcessor
from .auto import register_auto_classes

register_auto_classes()

__all__ = [
    "__version__",
    "PRESETS",
    "MuOmniConfig",
    "MuOmniTalkerConfig",
    "MuOmniTextConfig",
    "MuOmniThinkerConfig",
    "MuOmniAudioEncoder",
    "MuOmniAudioEncoderForCTC",
    "MuOmniVisionEncoder",
    "MuOmniContrastiveConfig",
    "MuOmniContrastiveTextConfig",
    "MuOmniVisionTextContrastiveModel",
    "MuOmniCodec",
    "MuOmniCodecConfig",
    "MuOmniCodecOutput",
    "MuOmniGriffinLim",
    "MuOmniNeuralVocoder",
    "MuOmniVocoderConfig",
    "MuOmniVocoderOutput",
    "vocode",
    "MuOmniTalkerForConditionalGeneration",
    "MuOmniTalkerGenerateOutput",
    "MuOmniTalkerOutput",
    "audio_encoder_output_lengths",
    "audio_token_count",
    "ctc_greedy_decode",
    "MuOmniForCausalLM",
    "MuOmniPreTrainedModel",
    "MuOmniTextModel",
    "MuOmniTokenizer",
    "MuOmniCTCTokenizer",
    "tokenize_for_pretraining",
    "train_tokenizer",
    "get_preset",
    "get_preset_config",
    "register_auto_classes",
    "LANGUAGE_MODEL_LORA_TARGETS",
    "MuOmniMultiModalProjector",
    "MuOmniThinkerForConditionalGeneration",
    "MuOmniFeatureExtractor",
    "MuOmniImageProcessor",
    "MuOmniProcessor",
    "MuOmniForConditionalGeneration",
    "MuOmniForSpeechRecognition",
    "MuOmniForTextToSpeech",
    "MuOmniGenerateOutput",
    "MuOmniSpeechChunk",
]
