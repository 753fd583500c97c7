"""The thinker's language model: a Llama/Qwen2 decoder with an optional sparse mixture of experts.

Notation: B batch, T tokens (new this step), S tokens attended (cache + new), D hidden,
H query heads, Hkv key/value heads, Dh head dim, E experts, N = B*T routed tokens.

The math and the module names are exactly Qwen2's (`embed_tokens`, `layers.N.self_attn.q_proj`,
`mlp.gate_proj`, `input_layernorm`, `norm`, `lm_head`), so a `Qwen2ForCausalLM` state dict loads
with `strict=True` and peft's standard target names apply. KV caching, masks, attention kernels
and output capturing are transformers' own (`Cache`, `create_causal_mask`, the attention
interface, `capture_outputs`).
"""

from collections.abc import Callable

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.import_utils import is_torchdynamo_compiling
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from muomni.configuration import MuOmniTextConfig

from .modeling_utils import MuOmniSafetensorsLoadingMixin


class MuOmniRMSNorm(nn.Module):
    """Root-mean-square norm computed in float32 (Qwen2RMSNorm)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class MuOmniRotaryEmbedding(nn.Module):
    """RoPE cos/sin tables. `inv_freq` is a non-persistent buffer: `_init_weights` recomputes it
    after `from_pretrained` (transformers matches "RotaryEmbedding" + `original_inv_freq`)."""

    def __init__(self, config: MuOmniTextConfig):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: MuOmniTextConfig, **kwargs) -> tuple[torch.Tensor, float]:
        base = config.rope_parameters["rope_theta"]
        dim = config.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))  # (Dh/2,)
        return inv_freq, 1.0

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)  # (B, T, Dh/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, Dh)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim: int = 1):
    """Rotate q (B, H, T, Dh) and k (B, Hkv, T, Dh) by the cos/sin tables (B, T, Dh)."""
    cos = cos.unsqueeze(unsqueeze_dim)  # (B, 1, T, Dh): broadcast over heads
    sin = sin.unsqueeze(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, Hkv, S, Dh) -> (B, Hkv * n_rep, S, Dh), each kv head shared by its group of query heads."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # (B, H, T, S)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)  # (B, H, T, Dh)
    return attn_output.transpose(1, 2).contiguous(), attn_weights  # (B, T, H, Dh)


class MuOmniMLP(nn.Module):
    """SwiGLU feed-forward: down(act(gate(x)) * up(x))."""

    def __init__(self, config: MuOmniTextConfig, intermediate_size: int | None = None):
        super().__init__()
        intermediate_size = intermediate_size or config.intermediate_size
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class MuOmniSparseMoeBlock(nn.Module):
    """Top-k routed mixture of SwiGLU experts.

    The experts are a `ModuleList` of `MuOmniMLP`, so LoRA reaches them under the usual names
    (`mlp.experts.3.gate_proj`). Returns the mixed output (B, T, D) and the router logits (N, E),
    which the model records for the load-balancing loss.
    """

    def __init__(self, config: MuOmniTextConfig):
        super().__init__()
        self.num_experts = config.num_experts
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(
            [MuOmniMLP(config, config.moe_intermediate_size) for _ in range(config.num_experts)]
        )

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq_len, hidden = hidden_states.shape
        flat = hidden_states.reshape(-1, hidden)  # (N, D)
        router_logits = self.gate(flat)  # (N, E)
        routing_weights = torch.softmax(router_logits, dim=-1, dtype=torch.float)
        routing_weights, selected = torch.topk(routing_weights, self.top_k, dim=-1)  # (N, k), (N, k)
        if self.norm_topk_prob:
            routing_weights = routing_weights / routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = routing_weights.to(flat.dtype)

        output = torch.zeros_like(flat)
        if is_torchdynamo_compiling():
            # torch.compile(fullgraph=True) cannot trace data-dependent token gathers: every expert runs on
            # every token, weighted by its routing weight (0 where not chosen); same math, E times the work
            for expert_idx, expert in enumerate(self.experts):
                weight = (routing_weights * (selected == expert_idx)).sum(-1, keepdim=True)  # (N, 1)
                output = output + expert(flat) * weight
            return output.reshape(batch, seq_len, hidden), router_logits
        for expert_idx, expert in enumerate(self.experts):
            token_idx, slot = torch.where(selected == expert_idx)  # tokens routed to this expert
            if token_idx.numel() == 0:
                continue
            expert_out = expert(flat[token_idx]) * routing_weights[token_idx, slot, None]
            output.index_add_(0, token_idx, expert_out)
        return output.reshape(batch, seq_len, hidden), router_logits


def load_balancing_loss(
    router_logits: tuple[torch.Tensor, ...],
    num_experts: int,
    top_k: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Switch-Transformer load-balancing loss, `E * sum_e f_e * P_e`, over all layers.

    `f_e` is the fraction of routing slots that chose expert e, `P_e` the mean router probability
    of e; both are taken over real tokens only when a 2-D `attention_mask` (B, S) is given. With a
    KV cache the mask also covers the cached tokens, so its last T = N / B columns are this step's.
    It is 1.0 for perfectly uniform routing (Qwen2-MoE's `load_balancing_loss_func` / top_k) and
    grows as routing collapses.
    """
    logits = torch.cat([layer_logits.float() for layer_logits in router_logits], dim=0)  # (L*N, E)
    probs = torch.softmax(logits, dim=-1)
    _, selected = torch.topk(probs, top_k, dim=-1)
    chosen = nn.functional.one_hot(selected, num_experts).float().sum(dim=1)  # (L*N, E)
    num_tokens = router_logits[0].shape[0]  # N = B*T
    if attention_mask is not None and attention_mask.dim() == 2 and num_tokens % attention_mask.shape[0] == 0:
        new_tokens = num_tokens // attention_mask.shape[0]  # T
        if attention_mask.shape[1] >= new_tokens:
            step_mask = attention_mask[:, attention_mask.shape[1] - new_tokens :]  # (B, T)
            weights = step_mask.reshape(-1).to(probs.dtype).repeat(len(router_logits))  # (L*N,)
            total = weights.sum().clamp_min(1.0)
            tokens_per_expert = (chosen * weights[:, None]).sum(0) / (total * top_k)
            router_prob_per_expert = (probs * weights[:, None]).sum(0) / total
            return num_experts * torch.sum(tokens_per_expert * router_prob_per_expert)
    tokens_per_expert = chosen.mean(0) / top_k
    router_prob_per_expert = probs.mean(0)
    return num_experts * torch.sum(tokens_per_expert * router_prob_per_expert)


class MuOmniAttention(nn.Module):
    """Grouped-query self-attention with RoPE, through transformers' attention interface."""

    def __init__(self, config: MuOmniTextConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=False)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]  # (B, T)
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, T, Dh)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, Hkv, T, Dh)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, Hkv, T, Dh)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:
            # (B, Hkv, S, Dh): the cache appends this step's keys/values and returns all of them
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)

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
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()  # (B, T, H*Dh)
        return self.o_proj(attn_output), attn_weights


class MuOmniDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x)). Also the talker's block."""

    def __init__(self, config: MuOmniTextConfig, layer_idx: int):
        super().__init__()
        self.self_attn = MuOmniAttention(config, layer_idx)
        self.mlp = MuOmniSparseMoeBlock(config) if config.num_experts > 0 else MuOmniMLP(config)
        self.input_layernorm = MuOmniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MuOmniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings=position_embeddings,
            attention_mask=attention_mask,
            cache=cache,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        if isinstance(hidden_states, tuple):  # MoE: (output, router_logits); the logits are recorded by a hook
            hidden_states = hidden_states[0]
        return residual + hidden_states


class MuOmniPreTrainedModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    config: MuOmniTextConfig
    config_class = MuOmniTextConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MuOmniDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # decoding steps make no host syncs (the input checks run at prefill) and MoE routing switches to a
    # traceable dense form under torch.compile
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": MuOmniDecoderLayer,
        "attentions": MuOmniAttention,
        "router_logits": OutputRecorder(MuOmniSparseMoeBlock, index=1),
    }


def check_input_ids(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Raise a ValueError (instead of an IndexError deep inside torch) for ids outside the vocabulary.

    One reduction and one device->host copy: callers run it on prompts (prefill), not on every decoding step.
    """
    if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
    if not input_ids.numel():
        return
    low, high = torch.stack(torch.aminmax(input_ids)).tolist()
    if low < 0 or high >= vocab_size:
        raise ValueError(f"input_ids contain ids outside the vocabulary [0, {vocab_size}): min {low}, max {high}")


def is_decoding_step(cache: Cache | None, new_tokens: int) -> bool:
    """True for one new token appended to a non-empty cache, the step `generate` repeats.

    Decided without a device->host sync: a static cache keeps its length in a tensor, and any of its
    steps after the first fill counts as decoding. Input checks that need a sync are skipped on these steps
    (their token comes from the model's own head) so that decoding stays sync-free and compilable.
    """
    if cache is None or new_tokens != 1 or is_torchdynamo_compiling():
        return is_torchdynamo_compiling()
    seen = cache.get_seq_length()
    return isinstance(seen, torch.Tensor) or seen > 0


def check_generation_inputs(input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None) -> None:
    """The prompt checks `generate` runs before transformers touches the tensors: a (batch, seq_len) integer
    prompt with at least one token, and a matching 0/1 mask with at least one real token per row."""
    if input_ids is None:
        return
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dim() != 2:
        raise ValueError(
            f"input_ids must have shape (batch, seq_len), got {tuple(input_ids.shape)}; "
            "add the batch dimension with input_ids[None]"
        )
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is an empty prompt (seq_len 0); generation needs at least one token")
    if attention_mask is None:
        return
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != input_ids.shape:
        shape = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask)
        raise ValueError(f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got {shape}")
    empty = (attention_mask.sum(-1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"attention_mask rows {empty} are all zeros: those prompts have no real token to continue; "
            "drop them from the batch"
        )


class MuOmniTextModel(MuOmniPreTrainedModel):
    """The decoder stack without a head. Input (B, T) ids or (B, T, D) embeddings; output (B, T, D)."""

    def __init__(self, config: MuOmniTextConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [MuOmniDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = MuOmniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MuOmniRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def _check_positions(self, position_ids: torch.Tensor | None, cache: Cache | None, new_tokens: int) -> None:
        """Refuse positions past `max_position_embeddings` for plain RoPE (a scaling rope type extends them).

        The exact (syncing) check runs on prompts; on a dynamic cache's decoding steps only when the cache
        itself reaches the limit (real positions never exceed cache length + new tokens - 1).
        """
        if self.config.rope_parameters["rope_type"] != "default" or is_torchdynamo_compiling():
            return
        limit = self.config.max_position_embeddings
        seen = cache.get_seq_length() if cache is not None else 0
        if isinstance(seen, torch.Tensor):  # a static cache: sized by generate, positions checked at prefill
            if new_tokens == 1:
                return
            seen = int(seen)
        last = seen + new_tokens - 1
        if position_ids is not None and (seen == 0 or last >= limit):
            last = int(position_ids.max()) if position_ids.numel() else 0
        if last >= limit:
            raise ValueError(
                f"Sequence too long: position {last} (cached {seen} + new {new_tokens} tokens) exceeds "
                f"max_position_embeddings ({limit}); configure a scaling rope type (linear, dynamic, yarn) "
                "in rope_parameters for longer sequences"
            )

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MoeModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError(
                "Pass exactly one of input_ids or inputs_embeds, got "
                f"{'both' if input_ids is not None else 'neither'}"
            )
        if inputs_embeds is None:
            if not is_decoding_step(cache, input_ids.shape[-1]):
                # the embedding's real size, which `resize_token_embeddings` changes
                check_input_ids(input_ids, self.embed_tokens.num_embeddings)
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, D)
        elif inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.hidden_size:
            raise ValueError(
                f"inputs_embeds must have shape (batch, seq_len, {self.config.hidden_size}), "
                f"got {tuple(inputs_embeds.shape)}"
            )

        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        self._check_positions(position_ids, cache, inputs_embeds.shape[1])
        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)  # (1, T)

        if not isinstance(causal_mask := attention_mask, dict):  # generate() may pass a prepared mapping
            causal_mask = create_causal_mask(
                config=self.config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                cache=cache,
                position_ids=position_ids,
            )
        else:
            causal_mask = causal_mask["full_attention"]

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return MoeModelOutputWithPast(last_hidden_state=hidden_states, cache=cache if use_cache else None)


class MuOmniForCausalLM(MuOmniPreTrainedModel, GenerationMixin):
    """The thinker language model with its LM head; loss from `labels` (shifted inside, -100 ignored)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: MuOmniTextConfig):
        super().__init__(config)
        self.model = MuOmniTextModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def generate(self, input_ids: torch.LongTensor | None = None, *args, **kwargs):
        check_generation_inputs(input_ids, kwargs.get("attention_mask"))
        return super().generate(input_ids, *args, **kwargs)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_router_logits: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MoeCausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(B, T)`, *optional*):
            Target ids aligned with `input_ids` (the shift happens inside); -100 positions are ignored.
            With MoE on and the model in training mode, `router_aux_loss_coef` times the
            load-balancing loss is added to the returned loss.
        """
        moe = self.config.num_experts > 0
        if output_router_logits is None:
            output_router_logits = self.config.output_router_logits
        need_router = moe and (output_router_logits or (labels is not None and self.training))
        if need_router:
            kwargs["output_router_logits"] = True

        outputs: MoeModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_indices, :])  # (B, T', V)

        loss = aux_loss = None
        if labels is not None:
            if labels.shape != hidden_states.shape[:2]:
                raise ValueError(
                    f"labels must have the shape of the input (batch, seq_len) {tuple(hidden_states.shape[:2])}, "
                    f"got {tuple(labels.shape)}"
                )
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        if need_router and outputs.router_logits:
            aux_loss = load_balancing_loss(
                outputs.router_logits, self.config.num_experts, self.config.num_experts_per_tok, attention_mask
            )
            if loss is not None and self.training:
                loss = loss + self.config.router_aux_loss_coef * aux_loss.to(loss.device)

        return MoeCausalLMOutputWithPast(
            loss=loss,
            aux_loss=aux_loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            router_logits=outputs.router_logits if output_router_logits else None,
        )


__all__ = [
    "MuOmniAttention",
    "MuOmniDecoderLayer",
    "MuOmniForCausalLM",
    "MuOmniMLP",
    "MuOmniPreTrainedModel",
    "MuOmniRMSNorm",
    "MuOmniRotaryEmbedding",
    "MuOmniSparseMoeBlock",
    "MuOmniTextModel",
    "load_balancing_loss",
]
