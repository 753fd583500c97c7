from .feature_extraction_muomni import MuOmniFeatureExtractor, log_mel_spectrogram, normalize_log_mel, resample_audio
from .image_processing_muomni import MuOmniImageProcessor
from .tokenization_muomni import MuOmniCTCTokenizer, MuOmniTokenizer, tokenize_for_pretraining, train_tokenizer

__all__ = [
    "MuOmniFeatureExtractor",
    "MuOmniCTCTokenizer",
    "MuOmniImageProcessor",
    "MuOmniTokenizer",
    "log_mel_spectrogram",
    "normalize_log_mel",
    "resample_audio",
    "tokenize_for_pretraining",
    "train_tokenizer",
]
