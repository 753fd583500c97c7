"""`MuOmniProcessor`: one object that prepares any mix of text, images and audio for MuOmni.

It bundles the thinker's BPE tokenizer (with the ChatML chat template), the log-mel feature
extractor and the image processor. Every `<|image|>` / `<|audio|>` placeholder in the text is
expanded to exactly as many placeholder tokens as the encoders will produce for that item, so
the model can swap them for projected features one for one:

    image: `image_seq_length` tokens (1 for CLS only, 1 + g*g for CLS + a pooled g x g grid)
    audio: `audio_token_count(audio_config, num_frames)` tokens, e.g. 125 for a 10 s clip
           (1000 mel frames -> 250 CTC frames at 25 Hz -> 125 tokens at 12.5 Hz)
"""

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from transformers import ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature

from muomni.configuration import MuOmniAudioEncoderConfig
from muomni.modeling_audio_encoder import audio_token_count
from muomni.modeling_utils import save_atomically


class MuOmniProcessor(ProcessorMixin):
    r"""Tokenizer + `MuOmniFeatureExtractor` + `MuOmniImageProcessor` + chat template.

    Args:
        image_processor ([`MuOmniImageProcessor`]): turns images into `pixel_values` (N_img, 3, H, W).
        feature_extractor ([`MuOmniFeatureExtractor`]): turns waveforms into `input_features`
            (N_audio, 128, F) and `feature_attention_mask` (N_audio, F).
        tokenizer ([`MuOmniTokenizer`]): the thinker's byte-level BPE tokenizer.
        chat_template (`str`, *optional*): defaults to the tokenizer's ChatML template.
        image_seq_length (`int`): tokens per image (the vision config's `num_output_tokens`).
        audio_downsample_factor / audio_stack_factor (`int`): the audio config's values.
    """

    def __init__(
        self,
        image_processor=None,
        feature_extractor=None,
        tokenizer=None,
        chat_template=None,
        image_seq_length: int = 5,
        audio_downsample_factor: int = 4,
        audio_stack_factor: int = 2,
    ):
        if chat_template is None and tokenizer is not None:
            chat_template = getattr(tokenizer, "chat_template", None)
        for name, value in (
            ("image_seq_length", image_seq_length),
            ("audio_downsample_factor", audio_downsample_factor),
            ("audio_stack_factor", audio_stack_factor),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.image_seq_length = image_seq_length
        self.audio_downsample_factor = audio_downsample_factor
        self.audio_stack_factor = audio_stack_factor
        # the encoder's length arithmetic needs only these two numbers
        self._audio_config = MuOmniAudioEncoderConfig(
            downsample_factor=audio_downsample_factor, stack_factor=audio_stack_factor
        )
        self.image_token = tokenizer.image_token
        self.image_token_id = tokenizer.image_token_id
        self.audio_token = tokenizer.audio_token
        self.audio_token_id = tokenizer.audio_token_id
        super().__init__(image_processor, feature_extractor, tokenizer, chat_template=chat_template)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """`ProcessorMixin.save_pretrained`, atomically: a failed save leaves an earlier one in place, and the
        model files of a checkpoint folder are never touched."""
        if push_to_hub and "repo_id" not in kwargs:
            kwargs["repo_id"] = os.path.basename(os.path.abspath(os.fspath(save_directory)))  # not the staging name
        parent_save = super().save_pretrained
        return save_atomically(lambda staging: parent_save(staging, push_to_hub=push_to_hub, **kwargs), save_directory)

    @classmethod
    def from_config(cls, config, image_processor, feature_extractor, tokenizer, **kwargs) -> "MuOmniProcessor":
        """Build a processor whose placeholder expansion matches `config` (a `MuOmniConfig` or thinker config)."""
        thinker = getattr(config, "thinker_config", config)
        return cls(
            image_processor=image_processor,
            feature_extractor=feature_extractor,
            tokenizer=tokenizer,
            image_seq_length=thinker.vision_config.num_output_tokens,
            audio_downsample_factor=thinker.audio_config.downsample_factor,
            audio_stack_factor=thinker.audio_config.stack_factor,
            **kwargs,
        )

    def __call__(self, text=None, images=None, audio=None, **kwargs) -> BatchFeature:
        """Text first (the text-to-speech pipeline passes it positionally), then images and audio.

        `text` is a string or a list of strings with `<|image|>` / `<|audio|>` placeholders, one per
        image / clip in reading order. Batches are left-padded (ready for `generate`).
        """
        if text is None and images is None and audio is None:
            raise ValueError("MuOmniProcessor needs at least one of text, images or audio")
        if text is not None:
            if isinstance(text, str):
                text = [text]
            if not isinstance(text, (list, tuple)) or not all(isinstance(t, str) for t in text):
                raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
        kwargs.setdefault("padding", True)
        kwargs.setdefault("padding_side", "left")
        return super().__call__(images=images, text=text, audio=audio, **kwargs)

    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        # Audio stays as given (arrays, tensors or file paths): the feature extractor reads, checks
        # the sampling rate and mixes down itself, instead of transformers' URL fetcher.
        if audio is not None:
            audio = list(audio) if isinstance(audio, (list, tuple)) and not _is_flat_number_list(audio) else [audio]
        if text is not None:
            text = list(text)
        if images is not None and hasattr(self, "image_processor"):
            images = self.image_processor.fetch_images(images)
        return images, text, videos, audio

    def _process_audio(self, audio, **kwargs):
        kwargs.pop("padding", None)  # audio is always padded to the longest clip, never truncated
        kwargs.pop("padding_side", None)
        kwargs.pop("truncation", None)
        kwargs.pop("max_length", None)
        # the model needs the mel mask to ignore padded frames (and the count below reads it), so it is always
        # returned; `return_attention_mask=False` still applies to the text's attention_mask
        kwargs.pop("return_attention_mask", None)
        processed = self.feature_extractor(audio, return_attention_mask=True, **kwargs)
        # the text's attention_mask keeps its name; the mel frames' mask becomes feature_attention_mask
        processed["feature_attention_mask"] = processed.pop("attention_mask")
        frames = processed["feature_attention_mask"]
        frames = frames.sum(-1).tolist() if hasattr(frames, "sum") else [int(np.sum(f)) for f in frames]
        replacements = [self.audio_token * self.audio_token_count(int(n)) for n in frames]
        return processed, replacements

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.image_seq_length

    def audio_token_count(self, num_frames: int) -> int:
        """Placeholder tokens that a clip of `num_frames` mel frames expands to."""
        if num_frames <= 0:
            raise ValueError(f"an audio clip needs at least one mel frame, got {num_frames}")
        return int(audio_token_count(self._audio_config, num_frames))

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs):
        """Decode generated ids (B, T) or (T,) to a list of strings."""
        if isinstance(generated_outputs, torch.Tensor) and generated_outputs.dim() == 1:
            generated_outputs = generated_outputs[None]
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    def post_process_multimodal_output(
        self, generated_outputs, skip_special_tokens=True, generation_mode=None, **kwargs
    ) -> list:
        """What the any-to-any pipeline shows of `MuOmniForConditionalGeneration.generate`'s output.

        `generation_mode` None or `"text"`: the decoded text of the ids (B, T) (or of the output's
        `sequences`), a list of B strings. `"audio"`: the output's waveforms (it must come from
        `generate(..., generation_mode="audio")` or `return_audio=True`), a list of B float32 numpy
        arrays (S_i,) at the model's `sampling_rate`.
        """
        if generation_mode is None or generation_mode == "text":
            if isinstance(generated_outputs, Mapping):
                generated_outputs = generated_outputs["sequences"]
            return self.post_process_image_text_to_text(
                generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs
            )
        if generation_mode == "audio":
            audio = generated_outputs.get("audio") if isinstance(generated_outputs, Mapping) else None
            if audio is None:
                raise ValueError(
                    "generation_mode='audio' needs the output of generate(..., generation_mode='audio') (or "
                    f"return_audio=True) with its `audio` waveforms, got {type(generated_outputs).__name__}"
                )
            return [np.asarray(waveform.detach().cpu().float().reshape(-1).numpy()) for waveform in audio]
        raise ValueError(f"generation_mode must be 'text' or 'audio' for MuOmni, got {generation_mode!r}")

    @property
    def model_input_names(self) -> list[str]:
        names = self.tokenizer.model_input_names + self.image_processor.model_input_names
        return list(dict.fromkeys(names + ["input_features", "feature_attention_mask"]))


def _is_flat_number_list(values: Sequence) -> bool:
    return len(values) > 0 and all(isinstance(v, (int, float)) for v in values)


__all__ = ["MuOmniProcessor"]
