"""The thinker: the language model with eyes (ViT-Tiny) and ears (AuT-Tiny).

Notation: B batch, T tokens, D thinker hidden, M mel bins, F mel frames (100 Hz),
F' audio-encoder frames (CTC rate), A audio tokens handed to the thinker, s stack factor,
N_img images, n tokens per image, C image channels.

Media enter the thinker as placeholder tokens (`<|image|>`, `<|audio|>`) that the processor
expanded to exactly as many copies as the encoder produces features; `forward` replaces the
placeholder embeddings by the projected features (a count mismatch is an error with both
counts). Positions simply continue through media tokens (1-D RoPE).
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling, MoeCausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from muomni.configuration import MuOmniThinkerConfig

from .modeling_audio_encoder import MuOmniAudioEncoderForCTC
from .modeling_text import MuOmniForCausalLM, check_generation_inputs, check_input_ids, is_decoding_step
from .modeling_utils import MuOmniSafetensorsLoadingMixin
from .modeling_vision_encoder import MuOmniVisionEncoder

# peft `target_modules` regex that reaches the thinker's language-model projections only
# (the encoders have q/k/v projections of their own that LoRA should leave alone).
LANGUAGE_MODEL_LORA_TARGETS = (
    r".*language_model\.model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(experts\.\d+\.)?(gate|up|down)_proj)"
)


@dataclass
class MuOmniAudioFeaturesOutput(BaseModelOutputWithPooling):
    r"""
    token_counts (`torch.LongTensor` of shape `(B,)`):
        Real audio tokens per clip in `pooler_output` (what the processor expands each `<|audio|>` to).
    """

    token_counts: torch.LongTensor | None = None


class MuOmniMultiModalProjector(nn.Module):
    """Two-layer MLP from an encoder's width into the thinker's hidden size.

    With `stack_factor` s > 1, s consecutive frames are concatenated first (audio: 25 Hz -> 12.5 Hz).
    Input (B, L, d_in); output (B, ceil(L / s), D).
    """

    def __init__(self, input_size: int, hidden_size: int, hidden_act: str, stack_factor: int = 1):
        super().__init__()
        self.stack_factor = stack_factor
        self.linear_1 = nn.Linear(input_size * stack_factor, hidden_size)
        self.act = ACT2FN[hidden_act]
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, length, width = features.shape
        s = self.stack_factor
        if s > 1:
            pad = (-length) % s
            features = nn.functional.pad(features, (0, 0, 0, pad))  # (B, s*ceil(L/s), d_in), zero frames
            features = features.reshape(batch, (length + pad) // s, s * width)  # (B, ceil(L/s), s*d_in)
        return self.linear_2(self.act(self.linear_1(features)))


class MuOmniThinkerPreTrainedModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    config: MuOmniThinkerConfig
    config_class = MuOmniThinkerConfig
    base_model_prefix = "thinker"
    # read by `generate` and the any-to-any pipeline (which needs torchvision once "image" is declared)
    input_modalities = ("image", "audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["MuOmniDecoderLayer", "MuOmniEncoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    # media are merged at prefill only; decoding steps are the language model's (sync-free)
    _can_compile_fullgraph = True


class MuOmniThinkerForConditionalGeneration(MuOmniThinkerPreTrainedModel, GenerationMixin):
    """Text, images and speech in; text out.

    Submodules: `audio_tower` (AuT-Tiny with its character CTC head), `visual` (ViT-Tiny),
    `audio_projector`, `vision_projector`, and `language_model` (a `MuOmniForCausalLM`, so a
    stage-A checkpoint loads into it unchanged and LoRA targets keep their usual names).
    """

    _tied_weights_keys = {"language_model.lm_head.weight": "language_model.model.embed_tokens.weight"}
    # loading the thinker alone from a full MuOmni checkpoint skips the speech side
    _keys_to_ignore_on_load_unexpected = [r"^(talker|codec|vocoder)\."]

    def __init__(self, config: MuOmniThinkerConfig):
        super().__init__(config)
        hidden_size = config.text_config.hidden_size
        self.audio_tower = MuOmniAudioEncoderForCTC(config.audio_config)
        self.visual = MuOmniVisionEncoder(config.vision_config)
        self.audio_projector = MuOmniMultiModalProjector(
            config.audio_config.d_model, hidden_size, config.projector_hidden_act, config.audio_config.stack_factor
        )
        self.vision_projector = MuOmniMultiModalProjector(
            config.vision_config.hidden_size, hidden_size, config.projector_hidden_act
        )
        self.language_model = MuOmniForCausalLM(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        self.language_model.set_output_embeddings(new_embeddings)

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """Images (N_img, C, H, W) through the vision encoder and its projector.

        Returns `BaseModelOutputWithPooling`: `pooler_output` (N_img, n, D) are the thinker-space image tokens,
        `last_hidden_state` (N_img, 1 + P, d_vision) the encoder output; `hidden_states` / `attentions` with
        `output_hidden_states` / `output_attentions`; a tuple with `return_dict=False`.
        """
        vision_outputs = self.visual(pixel_values=pixel_values, **kwargs)
        return BaseModelOutputWithPooling(
            last_hidden_state=vision_outputs.last_hidden_state,
            pooler_output=self.vision_projector(vision_outputs.image_tokens),  # (N_img, n, D)
            hidden_states=vision_outputs.hidden_states,
            attentions=vision_outputs.attentions,
        )

    @can_return_tuple
    def get_audio_features(
        self,
        input_features: torch.Tensor,
        feature_attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> "MuOmniAudioFeaturesOutput":
        """Log-mel (B, M, F) through the audio encoder and its projector.

        Returns `MuOmniAudioFeaturesOutput` (a `BaseModelOutputWithPooling`): `pooler_output` (B, A, D) holds
        the thinker-space audio tokens, zero past each clip's `token_counts` (B,); `last_hidden_state`
        (B, F', d_audio) the encoder frames. Frames past a clip's length are zeroed before stacking, so its
        tokens do not depend on what it is batched with.
        """
        encoded = self.audio_tower.audio_encoder(
            input_features=input_features, feature_attention_mask=feature_attention_mask, **kwargs
        )
        hidden = encoded.last_hidden_state  # (B, F', d_audio), already zero at padded frames
        stack = self.config.audio_config.stack_factor
        token_counts = (encoded.output_lengths + stack - 1) // stack  # (B,) = ceil(F' / s)
        tokens = self.audio_projector(hidden)  # (B, A, D)
        real = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < token_counts[:, None]  # (B, A)
        return MuOmniAudioFeaturesOutput(
            last_hidden_state=hidden,
            pooler_output=tokens * real[..., None].to(tokens.dtype),
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            token_counts=token_counts,
        )

    def _merge_media(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.Tensor,
        pixel_values: torch.Tensor | None,
        input_features: torch.Tensor | None,
        feature_attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        image_mask = input_ids == self.config.image_token_id  # (B, T)
        audio_mask = input_ids == self.config.audio_token_id
        if pixel_values is not None:
            image_features = self.get_image_features(pixel_values).pooler_output  # (N_img, n, D)
            image_features = image_features.reshape(-1, image_features.shape[-1]).to(inputs_embeds.dtype)
            n_tokens = int(image_mask.sum())
            if n_tokens != image_features.shape[0]:
                raise ValueError(
                    "Image features and image tokens do not match, tokens: "
                    f"{n_tokens}, features: {image_features.shape[0]} ({pixel_values.shape[0]} images x "
                    f"{self.config.vision_config.num_output_tokens} tokens each)"
                )
            inputs_embeds = inputs_embeds.masked_scatter(image_mask[..., None], image_features)
        elif image_mask.any():
            raise ValueError(
                f"input_ids contain {int(image_mask.sum())} image tokens but no pixel_values were given"
            )
        if input_features is not None:
            audio_outputs = self.get_audio_features(input_features, feature_attention_mask)
            audio_features, token_counts = audio_outputs.pooler_output, audio_outputs.token_counts
            keep = torch.arange(audio_features.shape[1], device=audio_features.device)[None] < token_counts[:, None]
            audio_features = audio_features[keep].to(inputs_embeds.dtype)  # (sum A_i, D), item by item
            n_tokens = int(audio_mask.sum())
            if n_tokens != audio_features.shape[0]:
                raise ValueError(
                    "Audio features and audio tokens do not match, tokens: "
                    f"{n_tokens}, features: {audio_features.shape[0]} (per clip: {token_counts.tolist()})"
                )
            inputs_embeds = inputs_embeds.masked_scatter(audio_mask[..., None], audio_features)
        elif audio_mask.any():
            raise ValueError(
                f"input_ids contain {int(audio_mask.sum())} audio tokens but no input_features were given"
            )
        return inputs_embeds

    def generate(self, input_ids: torch.LongTensor | None = None, *args, **kwargs):
        """`GenerationMixin.generate` after the prompt checks, with the media placeholders `<|image|>` and
        `<|audio|>` suppressed: they are input-only tokens, and a generated one would read as a prompt
        placeholder without its media in any later full forward over the sequence."""
        check_generation_inputs(input_ids, kwargs.get("attention_mask"))
        generation_config = copy.deepcopy(kwargs.pop("generation_config", None) or self.generation_config)
        suppress = kwargs.pop("suppress_tokens", None) or generation_config.suppress_tokens or []
        media = {self.config.image_token_id, self.config.audio_token_id}
        generation_config.suppress_tokens = sorted(set(suppress) | media)
        return super().generate(input_ids, *args, generation_config=generation_config, **kwargs)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ):
        # `generate` drops pixel_values / input_features after the prefill step but would keep passing their
        # mask; media are consumed once, their placeholders then live in the KV cache
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        if not is_first_iteration and kwargs.get("use_cache", True):
            model_inputs.pop("feature_attention_mask", None)
        return model_inputs

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MoeCausalLMOutputWithPast:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(N_img, C, H, W)`, *optional*):
            One entry per `<|image|>` placeholder group, in reading order across the batch.
        input_features (`torch.FloatTensor` of shape `(N_audio, M, F)`, *optional*):
            Log-mel features, one entry per `<|audio|>` placeholder group, in reading order.
        feature_attention_mask (`torch.Tensor` of shape `(N_audio, F)`, *optional*):
            1 for real mel frames, 0 for padding.
        labels (`torch.LongTensor` of shape `(B, T)`, *optional*):
            Targets aligned with `input_ids` (shifted inside); -100 is ignored (media, prompt, padding).
        """
        has_media = pixel_values is not None or input_features is not None
        if has_media and (input_ids is None or inputs_embeds is not None):
            raise ValueError(
                "pixel_values / input_features need input_ids (not inputs_embeds) to locate the media placeholders"
            )
        # Placeholders without media are an error on the prompt; decoding steps may legitimately sample a
        # placeholder id and simply embed it (and make no host sync to look at it).
        decoding = input_ids is not None and is_decoding_step(cache, input_ids.shape[-1])
        if has_media or (input_ids is not None and not decoding):
            check_input_ids(input_ids, self.get_input_embeddings().num_embeddings)
            is_media = (input_ids == self.config.image_token_id) | (input_ids == self.config.audio_token_id)
            if has_media or bool(is_media.any()):
                inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, T, D)
                inputs_embeds = self._merge_media(
                    input_ids, inputs_embeds, pixel_values, input_features, feature_attention_mask
                )
                input_ids = None
        if position_ids is None and isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
            # real tokens count from 0 whatever the left padding, as in generate(): a left-padded batch then
            # gives each item the positions (and the logits) it has alone, and padding uses no position budget
            length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
            if attention_mask.shape[1] < length:
                raise ValueError(
                    f"attention_mask covers {attention_mask.shape[1]} positions but the input has {length} new "
                    "tokens; the mask must cover the cached and the new tokens"
                )
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -length:]  # (B, T)

        return self.language_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )


__all__ = [
    "LANGUAGE_MODEL_LORA_TARGETS",
    "MuOmniAudioFeaturesOutput",
    "MuOmniMultiModalProjector",
    "MuOmniThinkerForConditionalGeneration",
    "MuOmniThinkerPreTrainedModel",
]
