"""The stage-C model: ViT-Tiny and a small text tower trained together CLIP-style (symmetric InfoNCE).

Notation: B batch (image-caption pairs), T caption tokens, D text-tower hidden, E `projection_dim`
(the vision config's, shared by both towers), V vocabulary (the thinker's BPE tokenizer).

    pixel_values (B, C, S, S) -> MuOmniVisionEncoder.get_image_features -> (B, E) -> L2-normalise
    input_ids (B, T) -> embeddings + learned positions -> num_hidden_layers x MuOmniEncoderLayer
      -> LayerNorm -> mean over real tokens (B, D) -> text_projection -> (B, E) -> L2-normalise
    logits_per_text = exp(logit_scale) * text @ image^T  (B, B); the loss is the mean of the
      cross-entropies over rows and over columns, with the matching pair on the diagonal.

The text tower exists only to train the vision encoder (stage C saves `vision_model` on its own for
the thinker); it reuses the encoders' block, bidirectional, with a padding mask. `logit_scale` starts
at log(1 / 0.07) (CLIP) and is clamped to `max_logit_scale` = log(100) in the forward pass, so the
temperature never drops below 0.01 (CLIP clamps the parameter after each step; here the clamp stops
the gradient past the bound instead, which keeps the training loop free of model-specific steps).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import ModelOutput

from muomni.configuration import MuOmniVisionEncoderConfig

from .modeling_encoder import MuOmniEncoderLayer
from .modeling_text import check_input_ids
from .modeling_utils import MuOmniSafetensorsLoadingMixin
from .modeling_vision_encoder import MuOmniVisionEncoder


class MuOmniContrastiveTextConfig(PreTrainedConfig):
    r"""Configuration of the contrastive text tower: a small bidirectional encoder over the thinker's
    BPE ids (`vocab_size` = `len(tokenizer)`), mean-pooled over real tokens. Field names are the
    standard ones the shared encoder block reads."""

    model_type = "muomni_contrastive_text"

    vocab_size: int = 2048
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 2
    intermediate_size: int = 192
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    max_position_embeddings: int = 64
    pad_token_id: int | None = 1
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings"):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id ({self.pad_token_id}) is outside the vocabulary [0, {self.vocab_size})")
        super().__post_init__(**kwargs)


class MuOmniContrastiveConfig(PreTrainedConfig):
    r"""Configuration of `MuOmniVisionTextContrastiveModel`: `vision_config` (the thinker's vision
    encoder, whose `projection_dim` is the shared embedding width), `text_config` (the text tower),
    `logit_scale_init_value` (log 1/temperature, CLIP's log(1/0.07)) and `max_logit_scale` (log 100)."""

    model_type = "muomni_contrastive"
    sub_configs_defaults = {"vision_config": MuOmniVisionEncoderConfig, "text_config": MuOmniContrastiveTextConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    logit_scale_init_value: float = math.log(1 / 0.07)
    max_logit_scale: float = math.log(100.0)
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not 0 <= self.logit_scale_init_value <= self.max_logit_scale:
            raise ValueError(
                f"logit_scale_init_value ({self.logit_scale_init_value}) must be in [0, max_logit_scale "
                f"({self.max_logit_scale})]"
            )

    def get_text_config(self, *args, **kwargs):
        return self.text_config


@dataclass
class MuOmniContrastiveOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*):
        Symmetric InfoNCE: the mean of the image->text and text->image cross-entropies.
    logits_per_image (`torch.FloatTensor` of shape `(B, B)`):
        Scaled cosine similarities, images as rows; the matching caption is on the diagonal.
    logits_per_text (`torch.FloatTensor` of shape `(B, B)`):
        The transpose: captions as rows.
    image_embeds / text_embeds (`torch.FloatTensor` of shape `(B, E)`):
        The L2-normalised embeddings.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


def contrastive_loss(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of a (B, B) similarity matrix whose diagonal holds the matching pairs."""
    target = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    text_loss = nn.functional.cross_entropy(logits_per_text, target)
    image_loss = nn.functional.cross_entropy(logits_per_text.t(), target)
    return (text_loss + image_loss) / 2


class MuOmniContrastiveTextModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    """The text tower: token + learned position embeddings, encoder blocks, final LayerNorm, mean over
    real tokens. Input (B, T) ids and (B, T) mask (1 = real); output (B, D)."""

    config: MuOmniContrastiveTextConfig
    config_class = MuOmniContrastiveTextConfig
    base_model_prefix = "text_model"
    _no_split_modules = ["MuOmniEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def __init__(self, config: MuOmniContrastiveTextConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(MuOmniEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        hidden_states = self.dropout(self.embed_tokens(input_ids) + self.position_embeddings(positions))  # (B, T, D)
        attention_bias = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )  # (B, 1, T, T) or None when nothing is padded
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=attention_bias)
        hidden_states = self.norm(hidden_states)
        weights = attention_mask[:, :, None].to(hidden_states.dtype)  # (B, T, 1)
        return (hidden_states * weights).sum(dim=1) / weights.sum(dim=1)  # (B, D): mean over real tokens


class MuOmniVisionTextContrastiveModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    """ViT-Tiny (`vision_model`) + text tower (`text_model`, `text_projection`) + `logit_scale`.

    `forward(pixel_values (B, C, S, S), input_ids (B, T), attention_mask (B, T))` returns the symmetric
    InfoNCE loss and the (B, B) similarity logits. `vision_model` is a `MuOmniVisionEncoder`, saved on
    its own (`model.vision_model.save_pretrained(...)`) for the thinker.
    """

    config: MuOmniContrastiveConfig
    config_class = MuOmniContrastiveConfig
    base_model_prefix = "contrastive"
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["MuOmniEncoderLayer", "MuOmniVisionEmbeddings"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def __init__(self, config: MuOmniContrastiveConfig):
        super().__init__(config)
        self.vision_model = MuOmniVisionEncoder(config.vision_config)
        self.text_model = MuOmniContrastiveTextModel(config.text_config)
        self.text_projection = nn.Linear(
            config.text_config.hidden_size, config.vision_config.projection_dim, bias=False
        )
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, MuOmniVisionTextContrastiveModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """(B, C, S, S) -> (B, E) image embeddings, not normalised (the vision encoder's projected CLS)."""
        return self.vision_model.get_image_features(pixel_values)

    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
    ) -> torch.FloatTensor:
        """(B, T) ids (+ (B, T) mask, 1 = real) -> (B, E) caption embeddings, not normalised."""
        config = self.config.text_config
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
            raise ValueError(f"input_ids must be a (batch, seq_len) tensor, got {shape}")
        check_input_ids(input_ids, config.vocab_size)
        if input_ids.shape[1] > config.max_position_embeddings:
            raise ValueError(
                f"captions of {input_ids.shape[1]} tokens exceed the text tower's max_position_embeddings "
                f"({config.max_position_embeddings}); truncate them"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask {tuple(attention_mask.shape)} must have the shape of input_ids "
                f"{tuple(input_ids.shape)}"
            )
        empty = (attention_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"captions {empty} have no real token (attention_mask is all zero)")
        return self.text_projection(self.text_model(input_ids, attention_mask))

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool = True,
        **kwargs,
    ) -> MuOmniContrastiveOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(B, C, S, S)`):
            Normalised images (`MuOmniImageProcessor`).
        input_ids / attention_mask (`torch.LongTensor` of shape `(B, T)`):
            Their captions (the i-th caption describes the i-th image), padded with mask 0.
        return_loss (`bool`, defaults to `True`):
            Whether to compute the loss (`Trainer` reads this default to know the model returns one).
        """
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"pixel_values and input_ids must hold the same number of pairs, got {pixel_values.shape[0]} images "
                f"and {input_ids.shape[0]} captions"
            )
        image_embeds = nn.functional.normalize(self.get_image_features(pixel_values), dim=-1)  # (B, E)
        text_embeds = nn.functional.normalize(self.get_text_features(input_ids, attention_mask), dim=-1)  # (B, E)
        logit_scale = self.logit_scale.clamp(0.0, self.config.max_logit_scale).exp()
        logits_per_text = logit_scale * text_embeds @ image_embeds.t()  # (B, B)
        return MuOmniContrastiveOutput(
            loss=contrastive_loss(logits_per_text) if return_loss else None,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )


__all__ = [
    "MuOmniContrastiveConfig",
    "MuOmniContrastiveOutput",
    "MuOmniContrastiveTextConfig",
    "MuOmniContrastiveTextModel",
    "MuOmniVisionTextContrastiveModel",
    "contrastive_loss",
]
