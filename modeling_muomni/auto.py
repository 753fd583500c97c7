"""Registration of every MuOmni class with the transformers Auto classes.

transformers has no plugin mechanism: the Auto classes learn about `muomni_*` model types when
this runs (on `import muomni`), or through `auto_map` + `trust_remote_code` for exported
checkpoints. Registration is idempotent.
"""

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForCTC,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoModelForTextToWaveform,
    AutoProcessor,
    AutoTokenizer,
)

from muomni.configuration import MuOmniConfig, MuOmniTextConfig, MuOmniThinkerConfig
from muomni.configuration import MuOmniAudioEncoderConfig, MuOmniVisionEncoderConfig
from muomni.configuration import MuOmniTalkerConfig
from muomni.configuration import MuOmniCodecConfig, MuOmniVocoderConfig
from muomni.processing.feature_extraction_muomni import MuOmniFeatureExtractor
from muomni.processing.image_processing_muomni import MuOmniImageProcessor
from muomni.processing.tokenization_muomni import MuOmniCTCTokenizer, MuOmniTokenizer

from .modeling_audio_encoder import MuOmniAudioEncoder, MuOmniAudioEncoderForCTC
from .modeling_codec import MuOmniCodec
from .modeling_talker import MuOmniTalkerForConditionalGeneration
from .modeling_text import MuOmniForCausalLM, MuOmniTextModel
from .modeling_thinker import MuOmniThinkerForConditionalGeneration
from .modeling_muomni import MuOmniForConditionalGeneration, MuOmniForSpeechRecognition, MuOmniForTextToSpeech
from muomni.processing.processing_muomni import MuOmniProcessor
from .modeling_contrastive import MuOmniContrastiveConfig, MuOmniContrastiveTextConfig, MuOmniVisionTextContrastiveModel
from .modeling_vision_encoder import MuOmniVisionEncoder
from .modeling_vocoder import MuOmniNeuralVocoder

_registered = False


def register_auto_classes() -> None:
    global _registered
    if _registered:
        return
    for config_class in (MuOmniTextConfig, MuOmniThinkerConfig, MuOmniConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(MuOmniTextConfig, MuOmniTextModel, exist_ok=True)
    AutoModelForCausalLM.register(MuOmniTextConfig, MuOmniForCausalLM, exist_ok=True)
    for config_class in (MuOmniAudioEncoderConfig, MuOmniVisionEncoderConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(MuOmniAudioEncoderConfig, MuOmniAudioEncoder, exist_ok=True)
    AutoModelForCTC.register(MuOmniAudioEncoderConfig, MuOmniAudioEncoderForCTC, exist_ok=True)
    AutoModel.register(MuOmniVisionEncoderConfig, MuOmniVisionEncoder, exist_ok=True)
    # stage C's contrastive model (vision encoder + text tower)
    for config_class in (MuOmniContrastiveConfig, MuOmniContrastiveTextConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(MuOmniContrastiveConfig, MuOmniVisionTextContrastiveModel, exist_ok=True)
    AutoConfig.register(MuOmniTalkerConfig.model_type, MuOmniTalkerConfig, exist_ok=True)
    AutoModel.register(MuOmniTalkerConfig, MuOmniTalkerForConditionalGeneration, exist_ok=True)
    for config_class, model_class in ((MuOmniCodecConfig, MuOmniCodec), (MuOmniVocoderConfig, MuOmniNeuralVocoder)):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, model_class, exist_ok=True)
    for config_class in (MuOmniConfig, MuOmniThinkerConfig, MuOmniAudioEncoderConfig):
        AutoFeatureExtractor.register(config_class, MuOmniFeatureExtractor, exist_ok=True)
    for config_class in (MuOmniConfig, MuOmniThinkerConfig, MuOmniVisionEncoderConfig):
        AutoImageProcessor.register(config_class, image_processor_classes={"pil": MuOmniImageProcessor}, exist_ok=True)
    for config_class in (MuOmniTextConfig, MuOmniThinkerConfig, MuOmniConfig):
        AutoTokenizer.register(config_class, tokenizer_class=MuOmniTokenizer, exist_ok=True)
    AutoTokenizer.register(MuOmniAudioEncoderConfig, tokenizer_class=MuOmniCTCTokenizer, exist_ok=True)
    AutoModel.register(MuOmniThinkerConfig, MuOmniThinkerForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(MuOmniThinkerConfig, MuOmniThinkerForConditionalGeneration, exist_ok=True)
    AutoModelForMultimodalLM.register(MuOmniThinkerConfig, MuOmniThinkerForConditionalGeneration, exist_ok=True)
    for config_class in (MuOmniThinkerConfig, MuOmniConfig):
        AutoProcessor.register(config_class, MuOmniProcessor, exist_ok=True)
    for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForMultimodalLM):
        auto_class.register(MuOmniConfig, MuOmniForConditionalGeneration, exist_ok=True)
    AutoModelForTextToWaveform.register(MuOmniConfig, MuOmniForTextToSpeech, exist_ok=True)
    AutoModelForCTC.register(MuOmniConfig, MuOmniForSpeechRecognition, exist_ok=True)
    _registered = True
