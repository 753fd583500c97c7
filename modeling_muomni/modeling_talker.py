"""The talker: codec frames, autoregressively, from the text being spoken.

Notation: B batch, L text tokens (left-padded), T frames, S = L + 1 + T positions (text, BOS, frames),
D talker hidden, Dt thinker hidden, Nq codebooks, K codebook size, n frames in a streamed chunk.
Codebook 0 has K + 1 codes: the extra one, `end_of_speech_id` = K, ends an utterance.

The decoder is the thinker's (`MuOmniDecoderLayer` x N, `MuOmniRMSNorm`, `MuOmniRotaryEmbedding`,
transformers' `DynamicCache` and `create_causal_mask`). Its sequence and targets, with exactly one
shift (the state at position L + s predicts frame s):

    position   0 .. L-1               L      L+1    ...   L+T
    input      text_proj(text_embeds)  BOS    f_0    ...   f_{T-1}
    predicts   -                       f_0    f_1    ...   end of speech

where `f_t = sum_q code_embeddings[q](codes[:, q, t])`. Codebook 0 of frame s comes from that state
through `codebook_heads[0]`; codebook q > 0 from the same state plus the embeddings of frame s's
codes 0..q-1 (teacher-forced in training, just sampled in generation) through `codebook_heads[q]`.
The end-of-speech step (s = T) has a codebook-0 target only.

Padding: texts of a batch are LEFT-padded (`text_attention_mask`, 1 real / 0 pad) so the frames
follow every text directly; frames are RIGHT-padded (`codes_mask` (B, T), 1 real / 0 pad; codes
under 0 are ignored, whatever their value). RoPE positions count real tokens only, so a padded
item gets the positions (and outputs) it would get alone.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation.streamers import BaseStreamer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.masking_utils import create_causal_mask
from transformers.utils import ModelOutput
from transformers.utils.output_capturing import capture_outputs

from muomni.configuration import MuOmniTalkerConfig

from .modeling_text import MuOmniAttention, MuOmniDecoderLayer, MuOmniRMSNorm, MuOmniRotaryEmbedding
from .modeling_utils import MuOmniSafetensorsLoadingMixin

IGNORE_INDEX = -100


@dataclass
class MuOmniTalkerOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`):
        `codebook_losses` averaged with `config.codebook_loss_weights` (equal weights by default).
    codebook_losses (`torch.FloatTensor` of shape `(Nq,)`):
        Cross-entropy of each codebook, averaged over its real targets: codebook 0 over the real
        frames plus the end-of-speech step of every item, codebook q > 0 over the real frames.
    logits (`torch.FloatTensor` of shape `(B, Nq, T + 1, K + 1)`):
        `logits[:, q, s]` scores codebook q of frame s (s = T: the end-of-speech step). Codebooks
        q > 0 have no end-of-speech code: their last column holds the dtype's lowest value.
    last_hidden_state (`torch.FloatTensor` of shape `(B, L + 1 + T, D)`):
        The normed decoder output over text, BOS and frames.
    """

    loss: torch.FloatTensor | None = None
    codebook_losses: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MuOmniTalkerGenerateOutput(ModelOutput):
    r"""
    codes (`torch.LongTensor` of shape `(B, Nq, T)`):
        Generated codes, end-of-speech excluded. Frames at or past an item's length are 0 (padding).
    lengths (`torch.LongTensor` of shape `(B,)`):
        Real frames per item (for a streamed chunk: generated so far, cumulative).
    """

    codes: torch.LongTensor | None = None
    lengths: torch.LongTensor | None = None


class MuOmniTalkerTextProjector(nn.Module):
    """Thinker embeddings (B, L, Dt) -> talker inputs (B, L, D). The norm makes the talker indifferent
    to whether it is fed token embeddings (tiny) or final hidden states (unit scale)."""

    def __init__(self, config: MuOmniTalkerConfig):
        super().__init__()
        self.norm = MuOmniRMSNorm(config.thinker_hidden_size, eps=config.rms_norm_eps)
        self.linear = nn.Linear(config.thinker_hidden_size, config.hidden_size)

    def forward(self, text_embeds: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(text_embeds))


class MuOmniTalkerCodebookHead(nn.Module):
    """Codebook q > 0 of a frame: logits (..., K) from the decoder state (..., D) plus the summed
    embeddings (..., D) of the frame's codes 0..q-1. A one-hidden-layer MLP, so the state and the
    earlier codes interact; the norm brings the embeddings to the scale of the normed state."""

    def __init__(self, config: MuOmniTalkerConfig):
        super().__init__()
        self.prefix_norm = MuOmniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.up_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.act_fn = ACT2FN[config.hidden_act]
        self.out_proj = nn.Linear(config.hidden_size, config.codebook_size)

    def forward(self, hidden_states: torch.Tensor, prefix_embeds: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.act_fn(self.up_proj(hidden_states + self.prefix_norm(prefix_embeds))))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_binary_mask(mask, name: str, shape: tuple[int, int]) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"{name} must hold only 0 (pad) and 1 (real)")
    return mask.long()


def sampling_warpers(
    do_sample: bool, temperature: float, top_k: int, top_p: float
) -> LogitsProcessorList | None:
    """Validate the sampling arguments; the transformers warpers to apply, or None for greedy decoding."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if not _is_int(top_k) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {top_k!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {top_p!r}")
    if not do_sample:
        return None
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(temperature)))
    if top_k > 0:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(float(top_p)))
    return warpers


def sample_codes(
    logits: torch.Tensor, warpers: LogitsProcessorList | None, generator: torch.Generator | None
) -> torch.Tensor:
    """One code per row from logits (B, V): argmax when `warpers` is None, else a warped draw."""
    if warpers is None:
        return logits.argmax(dim=-1)
    scores = warpers(None, logits.float())  # the warpers ignore input_ids
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


class MuOmniTalkerPreTrainedModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    config: MuOmniTalkerConfig
    config_class = MuOmniTalkerConfig
    base_model_prefix = "talker"
    main_input_name = "text_embeds"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MuOmniDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False
    _can_record_outputs = {"hidden_states": MuOmniDecoderLayer, "attentions": MuOmniAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # Linear/Embedding: normal(initializer_range); norms: ones; RoPE buffers
        if isinstance(module, MuOmniTalkerForConditionalGeneration):
            init.normal_(module.bos_embedding, mean=0.0, std=self.config.initializer_range)


class MuOmniTalkerForConditionalGeneration(MuOmniTalkerPreTrainedModel):
    """Predicts codec frames (B, Nq, T) from the thinker's embeddings of the text to speak (B, L, Dt).

    `forward` teacher-forces `codes` and returns per-codebook logits and the loss (the shift is
    inside); `generate` / `generate_stream` decode frames with a KV cache until end-of-speech or the
    frame guard. The module layout and the sequence are described at the top of this file.
    """

    def __init__(self, config: MuOmniTalkerConfig):
        super().__init__(config)
        self.text_proj = MuOmniTalkerTextProjector(config)
        self.bos_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.code_embeddings = nn.ModuleList(
            [nn.Embedding(config.codebook_size + 1, config.hidden_size)]  # + end-of-speech
            + [nn.Embedding(config.codebook_size, config.hidden_size) for _ in range(1, config.num_quantizers)]
        )
        self.layers = nn.ModuleList(
            [MuOmniDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = MuOmniRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MuOmniRotaryEmbedding(config)
        self.codebook_heads = nn.ModuleList(
            [nn.Linear(config.hidden_size, config.codebook_size + 1)]  # + end-of-speech
            + [MuOmniTalkerCodebookHead(config) for _ in range(1, config.num_quantizers)]
        )
        self.gradient_checkpointing = False
        self.post_init()

    # --- input checks ---------------------------------------------------------------------------

    def _check_text(
        self, text_embeds: torch.Tensor, text_attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The (B, L) 0/1 mask of a left-padded text batch, after checking shapes and lengths."""
        if not isinstance(text_embeds, torch.Tensor) or not text_embeds.is_floating_point():
            got = text_embeds.dtype if isinstance(text_embeds, torch.Tensor) else type(text_embeds).__name__
            raise TypeError(f"text_embeds must be a floating-point torch.Tensor, got {got}")
        width = self.config.thinker_hidden_size
        if text_embeds.dim() != 3 or text_embeds.shape[-1] != width:
            raise ValueError(
                f"text_embeds must have shape (batch, text_len, thinker_hidden_size={width}), "
                f"got {tuple(text_embeds.shape)}"
            )
        batch, length = text_embeds.shape[:2]
        if length == 0:
            raise ValueError("The text to speak is empty: text_embeds has 0 tokens")
        if text_attention_mask is None:
            mask = torch.ones(batch, length, dtype=torch.long, device=text_embeds.device)
        else:
            mask = _check_binary_mask(text_attention_mask, "text_attention_mask", (batch, length))
            if (mask[:, 1:] < mask[:, :-1]).any():
                raise ValueError("text_attention_mask must be left-padded (zeros before ones in every row)")
        num_text = mask.sum(-1)  # (B,)
        if (num_text == 0).any():
            empty = (num_text == 0).nonzero().flatten().tolist()
            raise ValueError(f"The text to speak is empty for batch items {empty} (text_attention_mask all 0)")
        longest = int(num_text.max())
        if longest > self.config.max_text_tokens:
            raise ValueError(
                f"The text to speak has {longest} tokens, more than max_text_tokens ({self.config.max_text_tokens})"
            )
        return mask.to(text_embeds.device)

    def _check_codes(self, codes: torch.Tensor, codes_mask: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The (B, T) 0/1 mask of right-padded frames, after checking the codes of real frames."""
        if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex():
            got = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise TypeError(f"codes must be an integer torch.Tensor, got {got}")
        num_quantizers = self.config.num_quantizers
        if codes.dim() != 3 or codes.shape[:2] != (batch, num_quantizers):
            raise ValueError(
                f"codes must have shape (batch={batch}, num_quantizers={num_quantizers}, frames), "
                f"got {tuple(codes.shape)}"
            )
        frames = codes.shape[-1]
        if codes_mask is None:
            mask = torch.ones(batch, frames, dtype=torch.long, device=codes.device)
        else:
            mask = _check_binary_mask(codes_mask, "codes_mask", (batch, frames)).to(codes.device)
            if (mask[:, 1:] > mask[:, :-1]).any():
                raise ValueError("codes_mask must be right-padded (ones before zeros in every row)")
        real = codes[mask[:, None, :].expand_as(codes).bool()]
        if real.numel() and (int(real.min()) < 0 or int(real.max()) >= self.config.codebook_size):
            raise ValueError(
                f"codes of real frames must be in [0, codebook_size={self.config.codebook_size}), got min "
                f"{int(real.min())}, max {int(real.max())} (end of speech is appended by the model, not given)"
            )
        return mask

    def _check_positions(self, last_position: int, what: str) -> None:
        if last_position >= self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence too long: {what} needs position {last_position}, beyond "
                f"max_position_embeddings ({self.config.max_position_embeddings})"
            )

    # --- building blocks ------------------------------------------------------------------------

    def embed_frames(self, codes: torch.Tensor) -> torch.Tensor:
        """Frame embeddings (B, T, D): the sum over codebooks of the code embeddings of codes (B, Nq, T)."""
        return sum(embedding(codes[:, q]) for q, embedding in enumerate(self.code_embeddings))

    def _decode(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: Cache | None,
    ) -> torch.Tensor:
        """The decoder stack: inputs (B, S_new, D), 2-D mask over cache + new (B, S), positions (B, S_new)."""
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)
        hidden_states = inputs_embeds
        for decoder_layer in self.layers:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
            )
        return self.norm(hidden_states)

    def _prefill_inputs(self, text_embeds: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text + BOS embeddings (B, L + 1, D) and their 2-D mask (B, L + 1)."""
        batch = text_embeds.shape[0]
        text = self.text_proj(text_embeds.to(self.dtype))  # (B, L, D)
        bos = self.bos_embedding.to(text.dtype).expand(batch, 1, -1)  # (B, 1, D)
        mask = torch.cat([text_mask, text_mask.new_ones(batch, 1)], dim=1)  # (B, L + 1)
        return torch.cat([text, bos], dim=1), mask

    # --- training -------------------------------------------------------------------------------

    @capture_outputs
    def forward(
        self,
        text_embeds: torch.FloatTensor,
        codes: torch.LongTensor,
        text_attention_mask: torch.Tensor | None = None,
        codes_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> MuOmniTalkerOutput:
        r"""
        text_embeds (`torch.FloatTensor` of shape `(B, L, Dt)`):
            The thinker's embeddings (token embeddings or hidden states) of the text to speak.
        codes (`torch.LongTensor` of shape `(B, Nq, T)`):
            The target frames, also the teacher-forced inputs (the one shift happens inside). `T` may be 0.
        text_attention_mask (`torch.Tensor` of shape `(B, L)`, *optional*):
            1 for real tokens, 0 for LEFT padding. Defaults to all ones.
        codes_mask (`torch.Tensor` of shape `(B, T)`, *optional*):
            1 for real frames, 0 for RIGHT padding (those codes are ignored). Defaults to all ones.
        output_hidden_states, output_attentions (`bool`, *optional*):
            Collect every layer's hidden states / attention weights (handled by `capture_outputs`).
        """
        text_mask = self._check_text(text_embeds, text_attention_mask)
        frames_mask = self._check_codes(codes, codes_mask, text_embeds.shape[0])
        batch, text_len, frames = text_embeds.shape[0], text_embeds.shape[1], codes.shape[-1]
        num_text, num_frames = text_mask.sum(-1), frames_mask.sum(-1)  # (B,), (B,)
        # positions: text 0..n-1, BOS n, frame t at n + 1 + t
        self._check_positions(int((num_text + num_frames).max()), "text + BOS + frames")
        eos = self.config.end_of_speech_id

        # what frame s is, for s = 0..T: real frames, then end of speech at s = T_b (codebook 0; the
        # others read 0), then padding that reads code 0
        steps = torch.arange(frames + 1, device=codes.device)  # (T + 1,)
        codes = codes.long() * frames_mask[:, None]  # (B, Nq, T)
        targets = torch.cat([codes, codes.new_zeros(batch, codes.shape[1], 1)], dim=2)  # (B, Nq, T + 1)
        targets[:, 0] = targets[:, 0].masked_fill(steps == num_frames[:, None], eos)
        # Nq x (B, T + 1, D): inputs for frames 0..T-1, and the codebook heads' prefixes for steps 0..T
        code_embeds = [embedding(targets[:, q]) for q, embedding in enumerate(self.code_embeddings)]

        prefix, mask = self._prefill_inputs(text_embeds, text_mask)  # (B, L + 1, D), (B, L + 1)
        inputs_embeds = torch.cat([prefix, sum(code_embeds)[:, :frames]], dim=1)  # (B, L + 1 + T, D)
        attention_mask = torch.cat([mask, frames_mask], dim=1)  # (B, L + 1 + T)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, S): real tokens count from 0
        hidden_states = self._decode(inputs_embeds, attention_mask, position_ids, cache=None)

        states = hidden_states[:, text_len:]  # (B, T + 1, D): BOS and frames 0..T-1 predict frames 0..T
        logits = [self.codebook_heads[0](states)]  # (B, T + 1, K + 1)
        prefix_embeds = torch.zeros_like(states)
        for q in range(1, self.config.num_quantizers):
            prefix_embeds = prefix_embeds + code_embeds[q - 1]  # codes 0..q-1 of the frame being predicted
            head_logits = self.codebook_heads[q](states, prefix_embeds)  # (B, T + 1, K)
            logits.append(nn.functional.pad(head_logits, (0, 1), value=torch.finfo(head_logits.dtype).min))
        logits = torch.stack(logits, dim=1)  # (B, Nq, T + 1, K + 1)

        # labels: the targets of real frames, and the end of speech of codebook 0
        ignored = (steps >= num_frames[:, None])[:, None].repeat(1, codes.shape[1], 1)  # (B, Nq, T + 1)
        ignored[:, 0] = steps > num_frames[:, None]
        labels = targets.masked_fill(ignored, IGNORE_INDEX)
        codebook_losses = torch.stack(
            [
                nn.functional.cross_entropy(
                    logits[:, q].flatten(0, 1).float(),  # (B * (T + 1), K + 1)
                    labels[:, q].flatten(),  # (B * (T + 1),)
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
                / (labels[:, q] != IGNORE_INDEX).sum().clamp(min=1)  # a mean that is 0, not NaN, without targets
                for q in range(self.config.num_quantizers)
            ]
        )  # (Nq,)
        weights = self.config.codebook_loss_weights or [1.0] * self.config.num_quantizers
        weights = torch.tensor(weights, dtype=codebook_losses.dtype, device=codebook_losses.device)
        loss = (codebook_losses * weights).sum() / weights.sum()

        return MuOmniTalkerOutput(
            loss=loss, codebook_losses=codebook_losses, logits=logits, last_hidden_state=hidden_states
        )

    # --- generation -----------------------------------------------------------------------------

    def _sample_frame(
        self, state: torch.Tensor, warpers: LogitsProcessorList | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        """One frame (B, Nq) from the state (B, D) before it: codebook 0, then each next codebook
        conditioned on the codes just drawn."""
        codes = [sample_codes(self.codebook_heads[0](state), warpers, generator)]  # Nq x (B,)
        prefix_embeds = torch.zeros_like(state)
        for q in range(1, self.config.num_quantizers):
            prefix_embeds = prefix_embeds + self.code_embeddings[q - 1](codes[-1])
            codes.append(sample_codes(self.codebook_heads[q](state, prefix_embeds), warpers, generator))
        return torch.stack(codes, dim=1)  # (B, Nq)

    def generate_stream(
        self,
        text_embeds: torch.FloatTensor,
        text_attention_mask: torch.Tensor | None = None,
        max_frames: int | None = None,
        chunk_frames: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Iterator[MuOmniTalkerGenerateOutput]:
        r"""Decode frames with a KV cache, yielding them in chunks as they are produced.

        Args:
            text_embeds (`(B, L, Dt)`), text_attention_mask (`(B, L)`, left padding): the text to speak.
            max_frames (`int`, *optional*): the frame guard for every item; defaults to
                `config.max_frames(real text tokens of the item)`.
            chunk_frames (`int`): frames per yielded chunk.
            do_sample, temperature, top_k, top_p, generator: greedy decoding unless `do_sample`; then
                each codebook is drawn from its temperature / top-k / top-p warped distribution.

        Yields:
            `MuOmniTalkerGenerateOutput` with `codes` (B, Nq, n), 1 <= n <= chunk_frames, and the
            cumulative `lengths` (B,). Concatenated along the last axis the chunks are `generate`'s
            `codes`; the last chunk's `lengths` are its `lengths`. A generation that ends before its
            first frame yields one empty chunk (B, Nq, 0).
        """
        warpers = sampling_warpers(do_sample, temperature, top_k, top_p)
        if not _is_int(chunk_frames) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
        text_mask = self._check_text(text_embeds, text_attention_mask)
        num_text = text_mask.sum(-1)  # (B,)
        if max_frames is None:
            guard = self.config.max_frames(num_text)  # (B,): per item
        elif not _is_int(max_frames) or max_frames < 1:
            raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
        else:
            guard = torch.full_like(num_text, max_frames)
        # frame t is predicted at position n + t (n text tokens); the last frame is never fed back
        self._check_positions(int((num_text + guard - 1).max()), f"generating {int(guard.max())} frames")
        # the checks above run now; the decoding below runs as the caller iterates
        return self._stream_frames(text_embeds, text_mask, guard, chunk_frames, warpers, generator)

    @torch.no_grad()
    def _stream_frames(
        self,
        text_embeds: torch.Tensor,
        text_mask: torch.Tensor,
        guard: torch.Tensor,
        chunk_frames: int,
        warpers: LogitsProcessorList | None,
        generator: torch.Generator | None,
    ) -> Iterator[MuOmniTalkerGenerateOutput]:
        batch = text_embeds.shape[0]
        cache = DynamicCache(config=self.config)
        inputs_embeds, attention_mask = self._prefill_inputs(text_embeds, text_mask)  # (B, L + 1, D), (B, L + 1)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, L + 1)
        state = self._decode(inputs_embeds, attention_mask, position_ids, cache)[:, -1]  # (B, D): BOS
        next_position = position_ids[:, -1:] + 1  # (B, 1)

        lengths = torch.zeros_like(guard)
        finished = torch.zeros_like(guard, dtype=torch.bool)
        chunk, yielded = [], False
        for _ in range(int(guard.max())):
            frame = self._sample_frame(state, warpers, generator)  # (B, Nq)
            real = ~finished & (frame[:, 0] != self.config.end_of_speech_id)
            frame = frame * real[:, None]  # ended items read 0
            lengths = lengths + real
            finished = finished | ~real | (lengths >= guard)
            if real.any():  # otherwise every item has just ended: nothing to emit
                chunk.append(frame)
            if chunk and (len(chunk) == chunk_frames or finished.all()):
                yield MuOmniTalkerGenerateOutput(codes=torch.stack(chunk, dim=-1), lengths=lengths)  # (B, Nq, n)
                chunk, yielded = [], True
            if finished.all():
                break
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)  # (B, S + 1)
            frame_embeds = self.embed_frames(frame[:, :, None])  # (B, Nq, 1) -> (B, 1, D)
            state = self._decode(frame_embeds, attention_mask, next_position, cache)[:, -1]  # (B, D)
            next_position = next_position + 1
        if not yielded:
            codes = torch.zeros(batch, self.config.num_quantizers, 0, dtype=torch.long, device=text_embeds.device)
            yield MuOmniTalkerGenerateOutput(codes=codes, lengths=lengths)

    @torch.no_grad()
    def generate(
        self,
        text_embeds: torch.FloatTensor,
        text_attention_mask: torch.Tensor | None = None,
        max_frames: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        streamer: BaseStreamer | None = None,
    ) -> MuOmniTalkerGenerateOutput:
        r"""Speak the text: codes (B, Nq, T) with T = max(lengths), and per-item `lengths` (B,).

        Arguments as in `generate_stream`. Every item stops at its first end-of-speech (excluded from
        the codes) or at its frame guard; frames past an item's length are 0. `streamer`, if given,
        receives each new frame (B, Nq, 1) through `put` and is closed with `end()` (the transformers
        `BaseStreamer` interface).
        """
        chunks = []
        for chunk in self.generate_stream(
            text_embeds,
            text_attention_mask,
            max_frames=max_frames,
            chunk_frames=1,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        ):
            chunks.append(chunk)
            if streamer is not None and chunk.codes.shape[-1]:
                streamer.put(chunk.codes)
        if streamer is not None:
            streamer.end()
        return MuOmniTalkerGenerateOutput(
            codes=torch.cat([chunk.codes for chunk in chunks], dim=-1), lengths=chunks[-1].lengths
        )


__all__ = [
    "MuOmniTalkerCodebookHead",
    "MuOmniTalkerForConditionalGeneration",
    "MuOmniTalkerGenerateOutput",
    "MuOmniTalkerOutput",
    "MuOmniTalkerPreTrainedModel",
    "MuOmniTalkerTextProjector",
    "sampling_warpers",
]
