"""MuOmni configuration classes.

Dataclass-style `PreTrainedConfig` subclasses with the Llama / Qwen2 field names, so every
transformers utility that reads a config (masking, RoPE, generation, peft, pipelines) finds
what it expects:

    MuOmniTextConfig     the thinker's decoder-only language model (optionally sparse MoE)
    MuOmniThinkerConfig  text_config (+ the encoders' configs and media token ids)
    MuOmniConfig         thinker_config (+ talker, codec and vocoder configs)

Cross-field checks run in `__post_init__` and raise `ValueError` with the offending values.
"""

import dataclasses
import difflib

from packaging.version import InvalidVersion, Version
from transformers import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

from muomni.version import __version__


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


# keyword arguments every PreTrainedConfig takes besides a subclass's own fields (serialised metadata, loading options)
_BASE_CONFIG_KEYS = frozenset(vars(PreTrainedConfig())) | {
    "model_type", "transformers_version", "auto_map", "torch_dtype", "dtype", "attn_implementation",
    "experts_implementation", "output_attentions", "output_hidden_states", "return_dict", "name_or_path",
    "rope_theta", "rope_scaling",  # the older RoPE keys transformers folds into rope_parameters
    "use_cache",  # Trainer writes it into every config it saves
}  # fmt: skip


def _check_fields(config: PreTrainedConfig, kwargs: dict, dropouts: tuple[str, ...] = ()) -> None:
    """Refuse what a config would otherwise take silently: an unknown key (a typo, a wrong override name),
    a non-bool for a bool field (`"no"` is truthy), a dropout outside [0, 1). Runs first in `__post_init__`."""
    fields = {field.name: field for field in dataclasses.fields(config)}
    names = set(fields) | set(getattr(config, "attribute_map", {}))
    unknown = sorted(key for key in kwargs if key not in names and key not in _BASE_CONFIG_KEYS and key[:1] != "_")
    if unknown:
        own = sorted(names - _BASE_CONFIG_KEYS)
        close = difflib.get_close_matches(unknown[0], own, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else f"expected one of {own}"
        raise ValueError(f"{type(config).__name__} has no field {unknown[0]!r}; {hint}")
    for name, field in fields.items():
        value = getattr(config, name, None)
        if field.type is bool and not isinstance(value, bool):
            raise TypeError(f"{type(config).__name__}.{name} must be True or False, got {value!r}")
    for name in dropouts:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise ValueError(f"{type(config).__name__}.{name} must be a probability in [0, 1), got {value!r}")


def _require_positive(config: PreTrainedConfig, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive integer, got {value!r}")


class MuOmniTextConfig(PreTrainedConfig):
    r"""Configuration of the thinker language model, a Llama/Qwen2-style decoder.

    Field names and meanings follow `Qwen2Config` / `LlamaConfig`. `attention_bias=True` adds biases
    to the q/k/v projections (the Qwen2 convention; `o_proj` never has one), so a `Qwen2ForCausalLM`
    state dict loads with `strict=True`.

    Sparse mixture of experts is on when `num_experts > 0`: every decoder layer's MLP becomes a
    top-`num_experts_per_tok` router over `num_experts` SwiGLU experts of width
    `moe_intermediate_size`, and training adds `router_aux_loss_coef` times the load-balancing loss.
    """

    model_type = "muomni_text"
    default_theta = 10000.0
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    # with experts on (set per instance in __post_init__): each expert is a SwiGLU MLP sharded like the dense
    # one; the router (`mlp.gate`) stays replicated so every rank routes the same tokens to the same experts
    moe_tp_plan = {
        **{key: value for key, value in base_model_tp_plan.items() if ".self_attn." in key},
        "layers.*.mlp.experts.*.gate_proj": "colwise",
        "layers.*.mlp.experts.*.up_proj": "colwise",
        "layers.*.mlp.experts.*.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 5000
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int | None = 2
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 512
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = True
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    attention_dropout: float | int = 0.0
    num_experts: int = 0
    num_experts_per_tok: int = 2
    moe_intermediate_size: int | None = None
    router_aux_loss_coef: float = 0.01
    norm_topk_prob: bool = True
    output_router_logits: bool = False
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        _check_fields(self, kwargs)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        _require_positive(
            self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
        )  # fmt: skip
        if self.head_dim is None:
            _require(
                self.hidden_size % self.num_attention_heads == 0,
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads}); set head_dim explicitly or change one of them",
            )
            self.head_dim = self.hidden_size // self.num_attention_heads
        _require_positive(self, "head_dim")
        _require(
            self.num_attention_heads % self.num_key_value_heads == 0,
            f"num_attention_heads ({self.num_attention_heads}) is not a multiple of num_key_value_heads "
            f"({self.num_key_value_heads}); grouped-query attention needs whole groups",
        )
        _require(self.head_dim % 2 == 0, f"head_dim ({self.head_dim}) must be even for rotary embeddings")
        if self.moe_intermediate_size is None:
            self.moe_intermediate_size = self.intermediate_size
        _require(
            isinstance(self.num_experts, int) and self.num_experts >= 0,
            f"num_experts must be an integer >= 0 (0 = dense MLP), got {self.num_experts!r}",
        )
        if self.num_experts > 0:
            self.base_model_tp_plan = dict(self.moe_tp_plan)
            _require_positive(self, "num_experts_per_tok", "moe_intermediate_size")
            _require(
                self.num_experts_per_tok <= self.num_experts,
                f"num_experts_per_tok ({self.num_experts_per_tok}) must not exceed num_experts ({self.num_experts})",
            )
        _require(
            0.0 <= float(self.attention_dropout) < 1.0,
            f"attention_dropout must be in [0, 1), got {self.attention_dropout}",
        )
        _require(self.rms_norm_eps > 0, f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        super().__post_init__(**kwargs)
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            ids = getattr(self, name)
            for token_id in ids if isinstance(ids, list) else [ids]:
                _require(
                    token_id is None or 0 <= token_id < self.vocab_size,
                    f"{name} ({token_id}) is outside the vocabulary [0, {self.vocab_size})",
                )


class MuOmniAudioEncoderConfig(PreTrainedConfig):
    r"""Configuration of the AuT-Tiny audio encoder and its character CTC head.

    Log-mel frames (`num_mel_bins` x 100 Hz) pass a conv stack that subsamples by
    `downsample_factor` (default 4: 100 Hz -> 25 Hz, the CTC rate, fast enough for ~15
    characters/s of speech), then `encoder_layers` pre-norm transformer layers of width `d_model`.
    The projector into the thinker stacks `stack_factor` consecutive frames (default 2: 12.5 Hz).
    `max_source_seconds` bounds the accepted audio length; longer input is an error.
    `sampling_rate` / `frames_per_second` is the mel hop in samples (160), so
    `inputs_to_logits_ratio` (samples per CTC frame, used by the ASR pipeline's chunking) is
    hop x `downsample_factor` (640). `attribute_map` gives the Whisper names their standard
    aliases (`hidden_size`, `num_attention_heads`, ...), which the shared encoder block reads.
    """

    model_type = "muomni_audio_encoder"
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "encoder_attention_heads",
        "num_hidden_layers": "encoder_layers",
        "intermediate_size": "encoder_ffn_dim",
        "hidden_act": "activation_function",
    }

    num_mel_bins: int = 128
    d_model: int = 192
    encoder_layers: int = 4
    encoder_attention_heads: int = 3
    encoder_ffn_dim: int = 768
    activation_function: str = "gelu"
    dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    layer_norm_eps: float = 1e-5
    downsample_factor: int = 4
    stack_factor: int = 2
    frames_per_second: int = 100
    sampling_rate: int = 16000
    max_source_seconds: float | int = 30.0
    ctc_vocab_size: int = 97
    ctc_blank_id: int = 0
    ctc_loss_reduction: str = "mean"
    ctc_zero_infinity: bool = False
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        _check_fields(self, kwargs, dropouts=("dropout", "attention_dropout"))
        _require_positive(
            self, "num_mel_bins", "d_model", "encoder_layers", "encoder_attention_heads",
            "encoder_ffn_dim", "stack_factor", "frames_per_second", "ctc_vocab_size", "sampling_rate",
        )  # fmt: skip
        _require(
            self.d_model % self.encoder_attention_heads == 0,
            f"d_model ({self.d_model}) is not a multiple of encoder_attention_heads ({self.encoder_attention_heads})",
        )
        _require(self.d_model % 2 == 0, f"d_model ({self.d_model}) must be even for sinusoidal positions")
        _require(
            self.sampling_rate % self.frames_per_second == 0,
            f"sampling_rate ({self.sampling_rate}) is not a multiple of frames_per_second ({self.frames_per_second}); "
            "the mel hop must be a whole number of samples",
        )
        _require(
            self.ctc_loss_reduction in ("mean", "sum", "none"),
            f"ctc_loss_reduction must be 'mean', 'sum' or 'none', got {self.ctc_loss_reduction!r}",
        )
        _require(
            self.downsample_factor in (1, 2, 4, 8),
            f"downsample_factor must be 1, 2, 4 or 8 (stride-2 convs), got {self.downsample_factor}",
        )
        _require(
            0 <= self.ctc_blank_id < self.ctc_vocab_size,
            f"ctc_blank_id ({self.ctc_blank_id}) is outside [0, ctc_vocab_size={self.ctc_vocab_size})",
        )
        _require(self.max_source_seconds > 0, f"max_source_seconds must be > 0, got {self.max_source_seconds}")
        super().__post_init__(**kwargs)

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Waveform samples per encoder (CTC) frame: the mel hop times `downsample_factor` (640 by default)."""
        return self.sampling_rate // self.frames_per_second * self.downsample_factor


class MuOmniVisionEncoderConfig(PreTrainedConfig):
    r"""Configuration of the ViT-Tiny vision encoder.

    `image_size`^2 / `patch_size`^2 patches plus a CLS token, learned positions, pre-norm blocks.
    `output_tokens` chooses what the thinker sees: `"cls"` (one token, the seeds' design) or
    `"cls_grid"` (CLS + the patch grid average-pooled to `pooled_grid_size` x `pooled_grid_size`).
    `projection_dim` is the width of the contrastive (CLIP-style) embedding used in stage C.
    """

    model_type = "muomni_vision_encoder"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 512
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    dropout: float | int = 0.0
    attention_dropout: float | int = 0.0
    output_tokens: str = "cls_grid"
    pooled_grid_size: int = 2
    projection_dim: int = 128
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        _check_fields(self, kwargs, dropouts=("dropout", "attention_dropout"))
        _require_positive(
            self, "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers",
            "num_attention_heads", "intermediate_size", "pooled_grid_size", "projection_dim",
        )  # fmt: skip
        _require(
            self.image_size % self.patch_size == 0,
            f"image_size ({self.image_size}) is not a multiple of patch_size ({self.patch_size})",
        )
        _require(
            self.hidden_size % self.num_attention_heads == 0,
            f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads ({self.num_attention_heads})",
        )
        _require(
            self.output_tokens in ("cls", "cls_grid"),
            f"output_tokens must be 'cls' or 'cls_grid', got {self.output_tokens!r}",
        )
        grid = self.image_size // self.patch_size
        _require(
            grid % self.pooled_grid_size == 0,
            f"the patch grid ({grid}x{grid}) is not divisible by pooled_grid_size ({self.pooled_grid_size})",
        )
        super().__post_init__(**kwargs)

    @property
    def num_output_tokens(self) -> int:
        """How many tokens one image hands to the thinker."""
        return 1 if self.output_tokens == "cls" else 1 + self.pooled_grid_size**2


# Ids of the special tokens that `train_tokenizer` places first in every MuOmni vocabulary.
SPECIAL_TOKEN_IDS = {
    "eos_token_id": 0,  # <|endoftext|>
    "pad_token_id": 1,  # <|pad|>
    "im_start_token_id": 2,  # <|im_start|>
    "im_end_token_id": 3,  # <|im_end|>
    "image_token_id": 4,  # <|image|>
    "vision_start_token_id": 5,  # <|vision_start|>
    "vision_end_token_id": 6,  # <|vision_end|>
    "audio_token_id": 7,  # <|audio|>
    "audio_start_token_id": 8,  # <|audio_start|>
    "audio_end_token_id": 9,  # <|audio_end|>
}


class MuOmniThinkerConfig(PreTrainedConfig):
    r"""Configuration of the thinker: the language model, the audio and vision encoders, their
    projectors, and the ids of the media placeholder tokens that projected features replace."""

    model_type = "muomni_thinker"
    base_config_key = "thinker_config"  # MuOmniThinkerConfig.from_pretrained(full checkpoint) reads the thinker
    sub_configs_defaults = {
        "text_config": MuOmniTextConfig,
        "audio_config": MuOmniAudioEncoderConfig,
        "vision_config": MuOmniVisionEncoderConfig,
    }

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    image_token_id: int = SPECIAL_TOKEN_IDS["image_token_id"]
    audio_token_id: int = SPECIAL_TOKEN_IDS["audio_token_id"]
    vision_start_token_id: int = SPECIAL_TOKEN_IDS["vision_start_token_id"]
    vision_end_token_id: int = SPECIAL_TOKEN_IDS["vision_end_token_id"]
    audio_start_token_id: int = SPECIAL_TOKEN_IDS["audio_start_token_id"]
    audio_end_token_id: int = SPECIAL_TOKEN_IDS["audio_end_token_id"]
    projector_hidden_act: str = "gelu"
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        _check_fields(self, kwargs)
        super().__post_init__(**kwargs)
        # the thinker's head follows its language model
        self.tie_word_embeddings = self.text_config.tie_word_embeddings
        vocab_size = self.text_config.vocab_size
        for name in (
            "image_token_id", "audio_token_id", "vision_start_token_id", "vision_end_token_id",
            "audio_start_token_id", "audio_end_token_id",
        ):  # fmt: skip
            value = getattr(self, name)
            _require(
                isinstance(value, int) and 0 <= value < vocab_size,
                f"{name} ({value}) is outside the thinker vocabulary [0, {vocab_size})",
            )
        _require(
            self.image_token_id != self.audio_token_id,
            f"image_token_id and audio_token_id must differ, both are {self.image_token_id}",
        )

    def get_text_config(self, *args, **kwargs):
        return self.text_config


class MuOmniCodecConfig(PreTrainedConfig):
    r"""Configuration of the RVQ speech codec: log-mel -> conv encoder -> residual VQ -> conv decoder -> log-mel.

    The mel front end is the audio encoder's (`num_mel_bins` at `mel_frames_per_second`). The encoder
    downsamples time by `downsample_factor` (codec frame rate = 100 / factor Hz), projects to
    `codebook_dim`, and `num_quantizers` residual codebooks of `codebook_size` entries quantise each
    frame; codes are `(B, Nq, T)`. Training uses the straight-through estimator with codebook and
    commitment losses at every quantizer and restarts codes unused for `dead_code_steps` updates.
    Each codebook is initialised by `kmeans_iters` k-means iterations on the residuals of the
    first training batch (0: random residuals of that batch, no k-means).
    """

    model_type = "muomni_codec"

    num_mel_bins: int = 128
    mel_frames_per_second: int = 100
    hidden_size: int = 128
    num_layers: int = 2
    downsample_factor: int = 4
    codebook_dim: int = 64
    num_quantizers: int = 2
    codebook_size: int = 128
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    dead_code_steps: int = 50
    kmeans_iters: int = 10
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        _check_fields(self, kwargs)
        _require_positive(
            self, "num_mel_bins", "mel_frames_per_second", "hidden_size", "num_layers", "codebook_dim",
            "num_quantizers", "codebook_size", "dead_code_steps",
        )  # fmt: skip
        _require(
            self.downsample_factor in (1, 2, 4, 8),
            f"downsample_factor must be 1, 2, 4 or 8 (stride-2 convs), got {self.downsample_factor}",
        )
        _require(
            isinstance(self.kmeans_iters, int) and not isinstance(self.kmeans_iters, bool) and self.kmeans_iters >= 0,
            f"kmeans_iters must be an integer >= 0, got {self.kmeans_iters!r}",
        )
        for name in ("commitment_weight", "codebook_weight"):
            _require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        super().__post_init__(**kwargs)

    @property
    def num_downsample_layers(self) -> int:
        """Stride-2 stages of the encoder (and transposed ones of the decoder): log2(downsample_factor)."""
        return self.downsample_factor.bit_length() - 1

    @property
    def frame_rate(self) -> float:
        """Codec frames per second."""
        return self.mel_frames_per_second / self.downsample_factor


class MuOmniTalkerConfig(MuOmniTextConfig):
    r"""Configuration of the talker: a decoder built from the thinker's decoder layer that predicts
    codec frames autoregressively from the text being spoken.

    All `MuOmniTextConfig` fields describe its decoder stack (its `vocab_size` is unused: it derives
    its own code vocabularies). The text conditioning is the thinker's token embeddings (width
    `thinker_hidden_size`) projected to `hidden_size` and placed before the frames. Per frame it
    predicts codebook 0, then codebook 1 conditioned on codebook 0 (and so on for `num_quantizers`).
    Codebook 0's vocabulary has `codebook_size` codes plus an end-of-speech code. Generation stops at
    end-of-speech or after `max_frames_per_token` frames per text token (+ `min_frames_guard`).
    The talker's sequence is text + BOS + frames, so `max_position_embeddings` must hold the longest
    text plus its guard: `max_text_tokens + 1 + max_frames(max_text_tokens)`.
    `codebook_loss_weights` (one weight >= 0 per codebook, `None` = equal) weighs the per-codebook
    cross-entropies in the training loss.
    """

    model_type = "muomni_talker"

    vocab_size: int = 1
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int | None = 2
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    thinker_hidden_size: int = 256
    num_quantizers: int = 2
    codebook_size: int = 128
    max_text_tokens: int = 256
    max_frames_per_token: int = 12
    min_frames_guard: int = 25
    codebook_loss_weights: list[float] | None = None

    def __post_init__(self, **kwargs):
        _check_fields(self, kwargs)
        super().__post_init__(**kwargs)
        _require_positive(
            self, "thinker_hidden_size", "num_quantizers", "codebook_size", "max_text_tokens",
            "max_frames_per_token",
        )  # fmt: skip
        _require(self.min_frames_guard >= 0, f"min_frames_guard must be >= 0, got {self.min_frames_guard}")
        longest = self.max_text_tokens + 1 + self.max_frames(self.max_text_tokens)
        _require(
            longest <= self.max_position_embeddings,
            f"max_position_embeddings ({self.max_position_embeddings}) cannot hold the longest talker sequence: "
            f"max_text_tokens ({self.max_text_tokens}) + 1 + max_frames ({self.max_frames(self.max_text_tokens)}) "
            f"= {longest}",
        )
        if self.codebook_loss_weights is not None:
            weights = list(self.codebook_loss_weights)
            _require(
                len(weights) == self.num_quantizers
                and all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in weights)
                and sum(weights) > 0,
                f"codebook_loss_weights must be {self.num_quantizers} numbers >= 0 (one per codebook) with a "
                f"positive sum, got {self.codebook_loss_weights!r}",
            )
            self.codebook_loss_weights = [float(w) for w in weights]

    @property
    def end_of_speech_id(self) -> int:
        """The extra code in codebook 0's vocabulary that ends an utterance."""
        return self.codebook_size

    def max_frames(self, num_text_tokens: int) -> int:
        """The generation guard for a text of `num_text_tokens` tokens."""
        return num_text_tokens * self.max_frames_per_token + self.min_frames_guard


class MuOmniVocoderConfig(PreTrainedConfig):
    r"""Configuration of the vocoders that turn log-mel frames into a waveform.

    `vocoder_type="griffin_lim"` (default, no weights): the mel filterbank is inverted (non-negative
    least squares) to a magnitude spectrogram and phases are recovered by fast Griffin-Lim
    (`griffin_lim_iters`, `griffin_lim_momentum`). `vocoder_type="neural"`: a Vocos-style ConvNeXt
    backbone (`hidden_size`, `num_layers`, `intermediate_size`) with an iSTFT head, trained on
    (mel, waveform) pairs. The STFT geometry (`n_fft`, `hop_length`, `sampling_rate`) is the
    feature extractor's.

    `mel_inversion_iters` multiplicative-update iterations solve the non-negative least squares (in
    the generalised KL sense) that invert the filterbank. The neural vocoder's training loss is a
    multi-resolution STFT loss at `stft_loss_resolutions` (`[n_fft, hop_length]` pairs; spectral
    convergence + log-magnitude L1 at each) plus `mel_loss_weight` times the mel L1.
    """

    model_type = "muomni_vocoder"

    vocoder_type: str = "griffin_lim"
    num_mel_bins: int = 128
    sampling_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    griffin_lim_iters: int = 32
    griffin_lim_momentum: float = 0.99
    mel_inversion_iters: int = 50
    hidden_size: int = 192
    intermediate_size: int = 576
    num_layers: int = 6
    layer_norm_eps: float = 1e-6
    stft_loss_resolutions: list[list[int]] | None = None
    mel_loss_weight: float = 1.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        _check_fields(self, kwargs)
        _require(
            self.vocoder_type in ("griffin_lim", "neural"),
            f"vocoder_type must be 'griffin_lim' or 'neural', got {self.vocoder_type!r}",
        )
        _require_positive(
            self, "num_mel_bins", "sampling_rate", "n_fft", "hop_length", "griffin_lim_iters", "hidden_size",
            "intermediate_size", "num_layers", "mel_inversion_iters",
        )  # fmt: skip
        _require(
            0.0 <= self.griffin_lim_momentum < 1.0,
            f"griffin_lim_momentum must be in [0, 1), got {self.griffin_lim_momentum}",
        )
        _require(
            self.hop_length <= self.n_fft,
            f"hop_length ({self.hop_length}) is larger than n_fft ({self.n_fft}): samples would be skipped",
        )
        if self.stft_loss_resolutions is None:
            self.stft_loss_resolutions = [[256, 64], [512, 128], [1024, 256]]
        for pair in self.stft_loss_resolutions:
            _require(
                isinstance(pair, (list, tuple))
                and len(pair) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
                and pair[1] <= pair[0],
                f"stft_loss_resolutions must hold [n_fft, hop_length] pairs of positive integers with "
                f"hop_length <= n_fft, got {pair!r}",
            )
        self.stft_loss_resolutions = [list(pair) for pair in self.stft_loss_resolutions]
        _require(self.mel_loss_weight >= 0, f"mel_loss_weight must be >= 0, got {self.mel_loss_weight}")
        super().__post_init__(**kwargs)


def check_muomni_version(checkpoint_version: str, installed_version: str = __version__) -> None:
    """Raise a ValueError unless a checkpoint written by muomni `checkpoint_version` can be loaded by
    `installed_version`: same major version, and not newer than the installed one."""
    try:
        checkpoint, installed = Version(str(checkpoint_version)), Version(installed_version)
    except InvalidVersion:
        raise ValueError(
            f"muomni_version {checkpoint_version!r} in the config is not a valid version number "
            f"(installed muomni: {installed_version})"
        )
    if checkpoint.major != installed.major:
        raise ValueError(
            f"This checkpoint was written by muomni {checkpoint_version}, but muomni {installed_version} is "
            f"installed: checkpoints load only within one major version ({checkpoint.major}.x here, "
            f"{installed.major}.x installed). Install muomni {checkpoint.major}.x to load it, or load its bundled "
            "code with trust_remote_code=True in an environment without muomni"
        )
    if checkpoint.release > installed.release:
        raise ValueError(
            f"This checkpoint was written by muomni {checkpoint_version}, newer than the installed muomni "
            f"{installed_version}; upgrade muomni (pip install -U muomni) to load it"
        )


class MuOmniConfig(PreTrainedConfig):
    r"""The composite MuOmni configuration: thinker, talker, codec and vocoder.

    `enable_audio_output=False` builds the model without talker, codec and vocoder (text output
    only, less memory). `muomni_version` records the package version that wrote the config.

    Versioning: a config (checkpoint) loads when it was written by a muomni of the installed major
    version that is not newer than the installed one; anything else is a `ValueError` that names
    both versions (`check_muomni_version`). A config of an older compatible version is stamped with
    the installed version once loaded, since that is the version that will write it next.
    """

    model_type = "muomni"
    sub_configs_defaults = {
        "thinker_config": MuOmniThinkerConfig,
        "talker_config": MuOmniTalkerConfig,
        "codec_config": MuOmniCodecConfig,
        "vocoder_config": MuOmniVocoderConfig,
    }

    thinker_config: dict | PreTrainedConfig | None = None
    talker_config: dict | PreTrainedConfig | None = None
    codec_config: dict | PreTrainedConfig | None = None
    vocoder_config: dict | PreTrainedConfig | None = None
    enable_audio_output: bool = True
    sampling_rate: int = 16000
    tie_word_embeddings: bool = True
    muomni_version: str = __version__

    def __post_init__(self, **kwargs):
        _check_fields(self, kwargs)
        check_muomni_version(self.muomni_version)
        self.muomni_version = __version__
        super().__post_init__(**kwargs)
        self.tie_word_embeddings = self.thinker_config.tie_word_embeddings
        talker, codec = self.talker_config, self.codec_config
        _require(
            talker.thinker_hidden_size == self.thinker_config.text_config.hidden_size,
            f"talker_config.thinker_hidden_size ({talker.thinker_hidden_size}) must equal the thinker's "
            f"hidden_size ({self.thinker_config.text_config.hidden_size})",
        )
        _require(
            (talker.num_quantizers, talker.codebook_size) == (codec.num_quantizers, codec.codebook_size),
            f"talker codes ({talker.num_quantizers} x {talker.codebook_size}) must match the codec's "
            f"({codec.num_quantizers} x {codec.codebook_size})",
        )
        _require(
            self.vocoder_config.sampling_rate == self.sampling_rate,
            f"vocoder sampling_rate ({self.vocoder_config.sampling_rate}) must equal sampling_rate "
            f"({self.sampling_rate})",
        )

    def get_text_config(self, *args, **kwargs):
        return self.thinker_config.get_text_config(*args, **kwargs)

    @property
    def inputs_to_logits_ratio(self) -> int:
        """Waveform samples per CTC frame (the ASR pipeline's chunking stride unit)."""
        return self.thinker_config.audio_config.inputs_to_logits_ratio


__all__ = [
    "SPECIAL_TOKEN_IDS",
    "MuOmniAudioEncoderConfig",
    "MuOmniCodecConfig",
    "MuOmniConfig",
    "MuOmniTalkerConfig",
    "MuOmniVocoderConfig",
    "MuOmniTextConfig",
    "MuOmniThinkerConfig",
    "MuOmniVisionEncoderConfig",
]
