# GENERATED FILE - DO NOT EDIT.
# Flat copy of `muomni.modeling_encoder` for loading with `trust_remote_code=True`,
# written by `python -m muomni.hub export-remote-code`. Edit the package source and regenerate.
"""The transformer block shared by the audio encoder (AuT-Tiny) and the vision encoder (ViT-Tiny).

Notation: B batch, L sequence length (audio frames F' or 1 + P image tokens), D hidden,
H heads, Dh head dim, I MLP width.

A pre-norm block, `x + attn(norm(x))` then `x + mlp(norm(x))`, with bidirectional multi-head
self-attention through transformers' attention interface (`sdpa` by default, `eager` when the
attention weights are wanted). Padding is a key mask built by `create_bidirectional_mask`, so a
padded position never contributes to a real one. Module names follow Llama/Qwen2
(`self_attn.{q,k,v,o}_proj`, `mlp.{up,down}_proj`, `input_layernorm`, `post_attention_layernorm`).

The block reads the standard config names `hidden_size`, `num_attention_heads`,
`intermediate_size`, `hidden_act`, `layer_norm_eps`, `dropout`, `attention_dropout`; the audio
config maps its Whisper names onto them with `attribute_map`.
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .modeling_text import eager_attention_forward


class MuOmniEncoderAttention(nn.Module):
    """Bidirectional multi-head self-attention (every head has its own keys and values)."""

    def __init__(self, config: PreTrainedConfig):
        super().__init__()
        self.config = config
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = 1  # plain multi-head attention, read by the shared eager kernel
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = False
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_proj = nn.Linear(hidden, hidden)
        self.o_proj = nn.Linear(hidden, hidden)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]  # (B, L)
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, L, Dh)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, L, Dh)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, L, Dh)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            is_causal=False,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()  # (B, L, H*Dh)
        return self.o_proj(attn_output), attn_weights


class MuOmniEncoderMLP(nn.Module):
    """Two-layer feed-forward: down(act(up(x))), GELU by default."""

    def __init__(self, config: PreTrainedConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act_fn = ACT2FN[config.hidden_act]
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(hidden_states)))


class MuOmniEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm encoder block: x + attn(norm(x)), then x + mlp(norm(x)). Input and output (B, L, D).

    `attention_mask` is what `create_bidirectional_mask` returns for the configured attention
    kernel (a (B, 1, L, L) mask, or None when nothing is padded).
    """

    def __init__(self, config: PreTrainedConfig):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = MuOmniEncoderAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MuOmniEncoderMLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states, _ = self.self_attn(self.input_layernorm(hidden_states), attention_mask=attention_mask, **kwargs)
        hidden_states = residual + self.dropout(hidden_states)

        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + self.dropout(hidden_states)


def check_attention_implementation(config: PreTrainedConfig, output_attentions: bool | None) -> None:
    """Only the eager kernel materialises attention weights; asking another one for them is an error."""
    if output_attentions and config._attn_implementation != "eager":
        raise ValueError(
            f"output_attentions=True needs the eager attention kernel, but this model uses "
            f"{config._attn_implementation!r}; load it with attn_implementation='eager' or call "
            "model.set_attn_implementation('eager') first"
        )


__all__ = ["MuOmniEncoderAttention", "MuOmniEncoderLayer", "MuOmniEncoderMLP", "check_attention_implementation"]
