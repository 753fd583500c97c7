"""AuT-Tiny: the audio encoder (log-mel -> frames at the CTC rate) and its character CTC head.

Notation: B batch, M mel bins, F mel frames (100 Hz), F' encoder frames (100 / downsample_factor
Hz, 25 Hz by default), D = d_model, V CTC vocabulary (blank included), U label length,
s stack_factor (frames the thinker's projector concatenates into one token).

    input_features (B, M, F) --[log2(downsample_factor) x (Conv1d k3 s2 p1 -> GELU)]--> (B, D, F')
      -> + sinusoidal positions -> encoder_layers x MuOmniEncoderLayer -> LayerNorm -> (B, F', D)

Lengths. Every stride-2 conv (kernel 3, padding 1) maps L frames to (L - 1) // 2 + 1, so with the
default factor 4 a clip of F mel frames gives F' = ((F - 1) // 2) // 2 + 1 encoder frames, and the
thinker gets ceil(F' / s) audio tokens. A 10 s clip framed with `center=True` has 1001 mel frames
-> 501 -> 251 frames at 25 Hz -> 126 thinker tokens at 12.5 Hz (s = 2); MuOmni's own feature
extractor drops the last centred frame, giving 1000 -> 500 -> 250 -> 125.

Padding never changes a real frame: padded mel frames are zeroed before every conv (a kernel at the
clip's end would otherwise read them), padded positions are zeroed after every conv and at the
output, and attention masks padded keys. A clip's output is the same alone or in any batch.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import CausalLMOutput, ModelOutput
from transformers.utils import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from muomni.configuration import MuOmniAudioEncoderConfig

from .modeling_encoder import MuOmniEncoderAttention, MuOmniEncoderLayer, check_attention_implementation
from .modeling_utils import MuOmniSafetensorsLoadingMixin

CONV_KERNEL_SIZE = 3
CONV_PADDING = 1


def _conv_strides(config: MuOmniAudioEncoderConfig) -> list[int]:
    """Strides of the conv stack: log2(downsample_factor) stride-2 convs, or one stride-1 conv for factor 1."""
    num_stride_two = int(math.log2(config.downsample_factor))
    return [2] * num_stride_two if num_stride_two > 0 else [1]


def audio_encoder_output_lengths(
    config: MuOmniAudioEncoderConfig, num_frames: int | torch.Tensor
) -> int | torch.Tensor:
    """Encoder frames (CTC rate) for `num_frames` mel frames: (L - 1) // stride + 1 per conv.

    Args:
        config ([`MuOmniAudioEncoderConfig`]): the encoder's config (`downsample_factor`).
        num_frames (`int` or `torch.LongTensor` of any shape): real mel frames per clip.

    Returns:
        The same type and shape: 1 -> 1, 4 -> 1, 5 -> 2, 1001 -> 251, 3000 -> 750 at factor 4.
    """
    length = num_frames
    for stride in _conv_strides(config):
        length = (length - 1) // stride + 1
    return length


def audio_token_count(config: MuOmniAudioEncoderConfig, num_frames: int | torch.Tensor) -> int | torch.Tensor:
    """Thinker tokens for a clip of `num_frames` mel frames: ceil(F' / stack_factor).

    1001 mel frames (10 s, `center=True` framing) -> 251 encoder frames -> 126 tokens with the defaults.
    """
    encoder_frames = audio_encoder_output_lengths(config, num_frames)
    return -(-encoder_frames // config.stack_factor)


def audio_max_input_frames(config: MuOmniAudioEncoderConfig) -> int:
    """The most mel frames the encoder accepts: `max_source_seconds` at `frames_per_second`, plus the one
    extra frame that centred framing adds (a 30 s clip is 3000 or 3001 frames depending on the front end)."""
    return int(math.floor(config.max_source_seconds * config.frames_per_second + 1e-6)) + 1


def sinusoidal_positions(length: int, channels: int, device=None, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's sinusoidal position table (L, D): sines in the first half of the channels, cosines in
    the second. Computed on the fly, so any length works and nothing has to survive `from_pretrained`."""
    half = channels // 2
    log_timescale_increment = math.log(max_timescale) / max(half - 1, 1)
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(half, device=device, dtype=torch.float32))
    positions = torch.arange(length, device=device, dtype=torch.float32)
    scaled_time = positions[:, None] * inv_timescales[None, :]  # (L, D/2)
    return torch.cat([scaled_time.sin(), scaled_time.cos()], dim=1)  # (L, D)


def ctc_greedy_decode(
    logits: torch.Tensor, output_lengths: torch.Tensor | None = None, blank_id: int = 0
) -> list[list[int]]:
    """Best-path CTC decoding: argmax per frame, collapse repeats, drop blanks.

    Args:
        logits (`torch.Tensor` of shape `(B, F', V)`, or argmax ids of shape `(B, F')`).
        output_lengths (`torch.LongTensor` of shape `(B,)`, *optional*): real frames per clip; frames
            past it are ignored. Defaults to all frames.
        blank_id (`int`): the CTC blank (`config.ctc_blank_id`).

    Returns:
        `list[list[int]]`: one list of label ids per clip.
    """
    if logits.dim() == 3:
        ids = logits.argmax(dim=-1)  # (B, F')
    elif logits.dim() == 2 and not logits.is_floating_point():
        ids = logits
    else:
        raise ValueError(
            f"logits must be (batch, frames, vocab) scores or (batch, frames) integer ids, got shape "
            f"{tuple(logits.shape)} and dtype {logits.dtype}"
        )
    batch, frames = ids.shape
    if output_lengths is None:
        lengths = [frames] * batch
    else:
        lengths = torch.as_tensor(output_lengths).reshape(-1).tolist()
        if len(lengths) != batch:
            raise ValueError(f"output_lengths has {len(lengths)} entries for a batch of {batch}")
    decoded = []
    for row, length in zip(ids.tolist(), lengths):
        row = row[: int(length)]
        decoded.append([t for i, t in enumerate(row) if t != blank_id and (i == 0 or t != row[i - 1])])
    return decoded


def ctc_required_frames(target: list[int]) -> int:
    """The fewest frames a CTC path for `target` needs: one per label, plus a blank between equal neighbours."""
    return len(target) + sum(1 for a, b in zip(target, target[1:]) if a == b)


@dataclass
class MuOmniAudioEncoderOutput(ModelOutput):
    r"""
    last_hidden_state (`torch.FloatTensor` of shape `(B, F', D)`):
        Encoder frames at the CTC rate, zero at padded positions.
    output_lengths (`torch.LongTensor` of shape `(B,)`):
        Real encoder frames per clip (`audio_encoder_output_lengths` of the mel lengths).
    attention_mask (`torch.LongTensor` of shape `(B, F')`):
        1 for real encoder frames, 0 for padding.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        The input of the first layer and the output of every layer (before the final norm), each `(B, F', D)`.
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        Attention weights of every layer, each `(B, H, F', F')` (eager attention only).
    """

    last_hidden_state: torch.FloatTensor | None = None
    output_lengths: torch.LongTensor | None = None
    attention_mask: torch.LongTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class MuOmniCTCOutput(CausalLMOutput):
    r"""
    `CausalLMOutput` (loss, logits `(B, F', V)`, hidden_states, attentions) plus:

    output_lengths (`torch.LongTensor` of shape `(B,)`):
        Real logit frames per clip, for `ctc_greedy_decode`.
    """

    output_lengths: torch.LongTensor | None = None


class MuOmniAudioEncoderPreTrainedModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    config: MuOmniAudioEncoderConfig
    config_class = MuOmniAudioEncoderConfig
    base_model_prefix = "audio_encoder"
    main_input_name = "input_features"
    input_modalities = ("audio",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["MuOmniEncoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": MuOmniEncoderLayer,
        "attentions": MuOmniEncoderAttention,
    }


class MuOmniAudioEncoder(MuOmniAudioEncoderPreTrainedModel):
    """AuT-Tiny. Input log-mel `input_features` (B, M, F) at 100 Hz; output (B, F', D) at the CTC rate."""

    def __init__(self, config: MuOmniAudioEncoderConfig):
        super().__init__(config)
        strides = _conv_strides(config)
        self.conv_layers = nn.ModuleList(
            nn.Conv1d(
                config.num_mel_bins if index == 0 else config.d_model,
                config.d_model,
                kernel_size=CONV_KERNEL_SIZE,
                stride=stride,
                padding=CONV_PADDING,
            )
            for index, stride in enumerate(strides)
        )
        self.conv_act = ACT2FN[config.activation_function]
        self.dropout = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(MuOmniEncoderLayer(config) for _ in range(config.encoder_layers))
        self.norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_output_lengths(self, feature_lengths: torch.Tensor) -> torch.LongTensor:
        """Encoder frames for `feature_lengths` mel frames (any shape), as a LongTensor."""
        return audio_encoder_output_lengths(self.config, torch.as_tensor(feature_lengths).long())

    def _check_inputs(self, input_features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Validate the inputs and return the mel mask (B, F) as bool."""
        if not isinstance(input_features, torch.Tensor):
            raise TypeError(f"input_features must be a torch.Tensor, got {type(input_features).__name__}")
        if not input_features.is_floating_point():
            raise TypeError(
                f"input_features must be a floating-point log-mel tensor, got dtype {input_features.dtype}"
            )
        if input_features.dim() != 3:
            raise ValueError(
                f"input_features must have shape (batch, num_mel_bins={self.config.num_mel_bins}, frames), "
                f"got {input_features.dim()}-D shape {tuple(input_features.shape)}"
            )
        batch, num_mel_bins, num_frames = input_features.shape
        if num_mel_bins != self.config.num_mel_bins:
            raise ValueError(
                f"input_features has {num_mel_bins} mel bins, the encoder expects num_mel_bins="
                f"{self.config.num_mel_bins} (shape (batch, mel bins, frames), got {tuple(input_features.shape)})"
            )
        if num_frames == 0:
            raise ValueError("input_features has 0 frames; an audio clip needs at least one mel frame")
        max_frames = audio_max_input_frames(self.config)
        if num_frames > max_frames:
            raise ValueError(
                f"input_features has {num_frames} frames ({num_frames / self.config.frames_per_second:.2f} s), "
                f"longer than max_source_seconds={self.config.max_source_seconds} (at most {max_frames} frames "
                f"at {self.config.frames_per_second} frames/s); split the audio or raise max_source_seconds"
            )
        if mask is None:
            return torch.ones(batch, num_frames, dtype=torch.bool, device=input_features.device)
        if tuple(mask.shape) != (batch, num_frames):
            raise ValueError(
                f"feature_attention_mask must have shape (batch, frames) = {(batch, num_frames)} to match "
                f"input_features {tuple(input_features.shape)}, got {tuple(mask.shape)}"
            )
        mask = mask.to(device=input_features.device) != 0
        lengths = mask.sum(-1)
        if (lengths == 0).any():
            empty = torch.nonzero(lengths == 0).flatten().tolist()
            raise ValueError(
                f"feature_attention_mask has no real frame for clip(s) {empty}; every clip needs at least one"
            )
        prefix = torch.arange(num_frames, device=mask.device)[None, :] < lengths[:, None]  # (B, F)
        if not torch.equal(mask, prefix):
            bad = torch.nonzero((mask != prefix).any(-1)).flatten().tolist()
            raise ValueError(
                f"feature_attention_mask must be right-padded (ones, then zeros) but clip(s) {bad} are not"
            )
        return mask

    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        input_features: torch.FloatTensor,
        feature_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> MuOmniAudioEncoderOutput:
        r"""
        input_features (`torch.FloatTensor` of shape `(B, M, F)`):
            Log-mel frames at `frames_per_second`, at most `max_source_seconds` long.
        feature_attention_mask (`torch.Tensor` of shape `(B, F)`, *optional*):
            1 for real frames, 0 for right padding. `attention_mask` is accepted as an alias (the ASR
            pipeline passes that name); give at most one of them.
        """
        if feature_attention_mask is not None and attention_mask is not None:
            raise ValueError("Pass the mel mask as feature_attention_mask or attention_mask, not both")
        check_attention_implementation(self.config, kwargs.get("output_attentions", self.config.output_attentions))
        if feature_attention_mask is None:
            feature_attention_mask = attention_mask
        mask = self._check_inputs(input_features, feature_attention_mask)
        lengths = mask.sum(-1)  # (B,)

        hidden_states = input_features.to(self.conv_layers[0].weight.dtype)
        for conv in self.conv_layers:
            # zero padded frames so a kernel straddling the clip's end reads what the conv's own padding would
            hidden_states = hidden_states * mask[:, None, :].to(hidden_states.dtype)  # (B, C, L)
            hidden_states = self.conv_act(conv(hidden_states))  # (B, D, (L - 1) // stride + 1)
            lengths = (lengths - 1) // conv.stride[0] + 1
            mask = torch.arange(hidden_states.shape[-1], device=mask.device)[None, :] < lengths[:, None]
        hidden_states = hidden_states * mask[:, None, :].to(hidden_states.dtype)
        hidden_states = hidden_states.transpose(1, 2)  # (B, F', D)
        positions = sinusoidal_positions(hidden_states.shape[1], self.config.d_model, device=hidden_states.device)
        hidden_states = self.dropout(hidden_states + positions.to(hidden_states.dtype))

        attention_bias = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=mask
        )  # (B, 1, F', F') or None when nothing is padded
        for encoder_layer in self.layers:
            hidden_states = encoder_layer(hidden_states, attention_mask=attention_bias, **kwargs)
        hidden_states = self.norm(hidden_states) * mask[:, :, None].to(hidden_states.dtype)  # (B, F', D)

        return MuOmniAudioEncoderOutput(
            last_hidden_state=hidden_states, output_lengths=lengths, attention_mask=mask.long()
        )


class MuOmniAudioEncoderForCTC(MuOmniAudioEncoderPreTrainedModel):
    """AuT-Tiny with a linear character head trained with CTC (blank = `config.ctc_blank_id`).

    Logits are at the CTC rate, `config.inputs_to_logits_ratio` waveform samples per frame (640), which
    the automatic-speech-recognition pipeline uses to align chunk strides.
    """

    def __init__(self, config: MuOmniAudioEncoderConfig):
        super().__init__(config)
        self.audio_encoder = MuOmniAudioEncoder(config)
        self.lm_head = nn.Linear(config.d_model, config.ctc_vocab_size)
        self.post_init()

    def get_output_lengths(self, feature_lengths: torch.Tensor) -> torch.LongTensor:
        """Logit frames for `feature_lengths` mel frames (any shape), as a LongTensor."""
        return self.audio_encoder.get_output_lengths(feature_lengths)

    @can_return_tuple
    def forward(
        self,
        input_features: torch.FloatTensor,
        feature_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MuOmniCTCOutput:
        r"""
        labels (`torch.LongTensor` of shape `(B, U)`, *optional*):
            Character ids in `[0, ctc_vocab_size)` without the blank, right-padded with -100. Every
            target must fit its clip: len(target) + (equal adjacent labels) <= output frames, or a
            ValueError names the clip (CTC cannot emit more labels than it has frames).
        """
        outputs: MuOmniAudioEncoderOutput = self.audio_encoder(
            input_features, feature_attention_mask=feature_attention_mask, attention_mask=attention_mask, **kwargs
        )
        logits = self.lm_head(outputs.last_hidden_state)  # (B, F', V)

        loss = None
        if labels is not None:
            loss = self.ctc_loss(logits, outputs.output_lengths, labels)
        return MuOmniCTCOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            output_lengths=outputs.output_lengths,
        )

    def ctc_loss(self, logits: torch.Tensor, output_lengths: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`F.ctc_loss` in float32 with the config's blank, reduction and `zero_infinity`, after checking
        that the labels are valid and that every target fits its clip's frames."""
        config = self.config
        batch = logits.shape[0]
        if labels.dim() != 2 or labels.shape[0] != batch:
            raise ValueError(f"labels must have shape (batch={batch}, max_label_length), got {tuple(labels.shape)}")
        if labels.is_floating_point():
            raise TypeError(f"labels must be integer ids, got dtype {labels.dtype}")
        labels = labels.to(logits.device)
        label_mask = labels != -100
        valid = (labels >= 0) & (labels < config.ctc_vocab_size) & (labels != config.ctc_blank_id)
        if (label_mask & ~valid).any():
            bad = sorted(set(labels[label_mask & ~valid].tolist()))
            raise ValueError(
                f"labels contain {bad}: CTC targets must be in [0, {config.ctc_vocab_size}) without the blank id "
                f"{config.ctc_blank_id}, padded with -100"
            )
        targets = [row[keep].tolist() for row, keep in zip(labels, label_mask)]
        frame_rate = config.frames_per_second / config.downsample_factor
        for index, (target, frames) in enumerate(zip(targets, output_lengths.tolist())):
            needed = ctc_required_frames(target)
            if needed > frames:
                raise ValueError(
                    f"CTC target of sample {index} cannot fit its audio: {len(target)} labels with "
                    f"{needed - len(target)} repeated neighbours need {needed} frames, but the clip has only "
                    f"{frames} frames at {frame_rate:g} frames/s ({frames / frame_rate:.2f} s); the transcript is "
                    "too long for the audio (or the wrong transcript)"
                )

        log_probs = nn.functional.log_softmax(logits, dim=-1, dtype=torch.float32).transpose(0, 1)  # (F', B, V)
        target_lengths = label_mask.sum(-1)  # (B,)
        with torch.backends.cudnn.flags(enabled=False):
            return nn.functional.ctc_loss(
                log_probs,
                labels.masked_select(label_mask),  # (sum U,) concatenated targets
                output_lengths,
                target_lengths,
                blank=config.ctc_blank_id,
                reduction=config.ctc_loss_reduction,
                zero_infinity=config.ctc_zero_infinity,
            )


__all__ = [
    "MuOmniAudioEncoder",
    "MuOmniAudioEncoderForCTC",
    "MuOmniAudioEncoderOutput",
    "MuOmniAudioEncoderPreTrainedModel",
    "MuOmniCTCOutput",
    "audio_encoder_output_lengths",
    "audio_max_input_frames",
    "audio_token_count",
    "ctc_greedy_decode",
    "ctc_required_frames",
    "sinusoidal_positions",
]
