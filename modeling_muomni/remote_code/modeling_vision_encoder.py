# GENERATED FILE - DO NOT EDIT.
# Flat copy of `muomni.modeling_vision_encoder` for loading with `trust_remote_code=True`,
# written by `python -m muomni.hub export-remote-code`. Edit the package source and regenerate.
"""ViT-Tiny: the vision encoder (image -> CLS + patch tokens) and the tokens it hands to the thinker.

Notation: B batch, C channels, S image side (`image_size`), p patch side, G = S / p patches per
side, P = G * G patches, D hidden, g = `pooled_grid_size`, N_out tokens per image for the thinker,
E `projection_dim`.

    pixel_values (B, C, S, S) --Conv2d(p, stride p)--> (B, P, D), prepend CLS -> (B, 1 + P, D)
      -> + learned positions -> num_hidden_layers x MuOmniEncoderLayer -> post_layernorm

`image_tokens` is what the thinker sees: `output_tokens="cls"` -> the CLS token (N_out = 1);
`"cls_grid"` -> CLS + the G x G patch grid average-pooled to g x g, row-major (N_out = 1 + g*g).
`get_image_features` is the projected CLS token (B, E), the embedding of CLIP-style training.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ModelOutput
from transformers.utils.output_capturing import capture_outputs

from .configuration_muomni import MuOmniVisionEncoderConfig

from .modeling_encoder import MuOmniEncoderAttention, MuOmniEncoderLayer, check_attention_implementation
from .modeling_utils import MuOmniSafetensorsLoadingMixin


@dataclass
class MuOmniVisionEncoderOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(B, 1 + P, D)`):
        CLS then the patches (row-major), after `post_layernorm`.
    image_tokens (`torch.FloatTensor` of shape `(B, N_out, D)`):
        The tokens handed to the thinker (`config.num_output_tokens` per image).
    pooler_output (`torch.FloatTensor` of shape `(B, D)`):
        The CLS token of `last_hidden_state`.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        The input of the first layer and the output of every layer (before the final norm), each `(B, 1 + P, D)`.
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        Attention weights of every layer, each `(B, H, 1 + P, 1 + P)` (eager attention only).
    """

    last_hidden_state: torch.FloatTensor | None = None
    image_tokens: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class MuOmniVisionEmbeddings(nn.Module):
    """Patch embedding, CLS token and learned positions: (B, C, S, S) -> (B, 1 + P, D)."""

    def __init__(self, config: MuOmniVisionEncoderConfig):
        super().__init__()
        self.num_patches = (config.image_size // config.patch_size) ** 2
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.cls_token = nn.Parameter(torch.empty(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.empty(1, 1 + self.num_patches, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values)  # (B, D, G, G)
        patches = patches.flatten(2).transpose(1, 2)  # (B, P, D), row-major over the grid
        cls = self.cls_token.expand(patches.shape[0], -1, -1)  # (B, 1, D)
        return torch.cat([cls, patches], dim=1) + self.position_embeddings  # (B, 1 + P, D)


class MuOmniVisionEncoderPreTrainedModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    config: MuOmniVisionEncoderConfig
    config_class = MuOmniVisionEncoderConfig
    base_model_prefix = "vision_encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["MuOmniVisionEmbeddings", "MuOmniEncoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": MuOmniEncoderLayer,
        "attentions": MuOmniEncoderAttention,
    }

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # Linear/Conv: normal(initializer_range), zero bias; LayerNorm: ones/zeros
        if isinstance(module, MuOmniVisionEmbeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=self.config.initializer_range)
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=self.config.initializer_range)


class MuOmniVisionEncoder(MuOmniVisionEncoderPreTrainedModel):
    """ViT-Tiny. Input `pixel_values` (B, C, S, S); outputs `last_hidden_state` (B, 1 + P, D) and
    `image_tokens` (B, N_out, D); `visual_projection` maps CLS into the contrastive space (E)."""

    def __init__(self, config: MuOmniVisionEncoderConfig):
        super().__init__(config)
        self.embeddings = MuOmniVisionEmbeddings(config)
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(MuOmniEncoderLayer(config) for _ in range(config.num_hidden_layers))
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.visual_projection = nn.Linear(config.hidden_size, config.projection_dim, bias=False)
        self.gradient_checkpointing = False
        self.post_init()

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        if not pixel_values.is_floating_point():
            raise TypeError(f"pixel_values must be a floating-point tensor, got dtype {pixel_values.dtype}")
        config = self.config
        expected = (config.num_channels, config.image_size, config.image_size)
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"pixel_values must have shape (batch, {config.num_channels}, {config.image_size}, "
                f"{config.image_size}) (num_channels, image_size, image_size), got {tuple(pixel_values.shape)}"
            )

    def pool_image_tokens(self, last_hidden_state: torch.Tensor) -> torch.Tensor:
        """The thinker's tokens (B, N_out, D) from the encoder output (B, 1 + P, D)."""
        cls = last_hidden_state[:, :1]  # (B, 1, D)
        if self.config.output_tokens == "cls":
            return cls
        batch, _, hidden = last_hidden_state.shape
        grid = self.config.image_size // self.config.patch_size
        patches = last_hidden_state[:, 1:].transpose(1, 2).reshape(batch, hidden, grid, grid)  # (B, D, G, G)
        pooled = nn.functional.adaptive_avg_pool2d(patches, self.config.pooled_grid_size)  # (B, D, g, g)
        pooled = pooled.flatten(2).transpose(1, 2)  # (B, g*g, D), row-major
        return torch.cat([cls, pooled], dim=1)  # (B, 1 + g*g, D)

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.FloatTensor, **kwargs) -> MuOmniVisionEncoderOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(B, num_channels, image_size, image_size)`):
            Normalised images (`MuOmniImageProcessor`).
        """
        self._check_pixel_values(pixel_values)
        check_attention_implementation(self.config, kwargs.get("output_attentions", self.config.output_attentions))
        pixel_values = pixel_values.to(self.embeddings.patch_embedding.weight.dtype)
        hidden_states = self.dropout(self.embeddings(pixel_values))  # (B, 1 + P, D)
        for encoder_layer in self.layers:
            hidden_states = encoder_layer(hidden_states, attention_mask=None, **kwargs)
        hidden_states = self.post_layernorm(hidden_states)
        return MuOmniVisionEncoderOutput(
            last_hidden_state=hidden_states,
            image_tokens=self.pool_image_tokens(hidden_states),
            pooler_output=hidden_states[:, 0],
        )

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """The contrastive image embedding (B, projection_dim): the projected CLS token, not normalised."""
        return self.visual_projection(self(pixel_values).pooler_output)


__all__ = [
    "MuOmniVisionEmbeddings",
    "MuOmniVisionEncoder",
    "MuOmniVisionEncoderOutput",
    "MuOmniVisionEncoderPreTrainedModel",
]
