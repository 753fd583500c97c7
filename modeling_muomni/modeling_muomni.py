"""MuOmni: the thinker (text, images, speech in; text out) and the talker pipeline (text -> speech).

Notation: B batch, T tokens, L text tokens to speak, Nq codebooks, F' codec frames,
F mel frames, M mel bins, S waveform samples.

    thinker.generate -> answer token ids (B, T)
    answer ids -> thinker token embeddings (B, L, D) -> talker.generate -> codes (B, Nq, F')
    codec.decode -> log-mel (B, M, F) -> vocoder (Griffin-Lim or neural) -> waveform (S,) per item

`MuOmniForConditionalGeneration` answers in text and, with `return_audio=True`, speaks its answer.
`MuOmniForTextToSpeech` (registered under `AutoModelForTextToWaveform`, what the text-to-speech
pipeline loads) speaks its input text. `MuOmniForSpeechRecognition` (under `AutoModelForCTC`) is the
audio encoder's CTC head read out of a full checkpoint. All three share one checkpoint layout.
"""

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import MoeCausalLMOutputWithPast
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.deprecation import deprecate_kwarg

from muomni.configuration import SPECIAL_TOKEN_IDS, MuOmniConfig

from .modeling_audio_encoder import MuOmniAudioEncoderForCTC
from .modeling_codec import MuOmniCodec
from .modeling_talker import MuOmniTalkerForConditionalGeneration
from .modeling_thinker import MuOmniThinkerForConditionalGeneration
from .modeling_utils import MuOmniSafetensorsLoadingMixin
from .modeling_vocoder import MuOmniNeuralVocoder, vocode

TALKER_ARGUMENTS = ("max_frames", "do_sample", "temperature", "top_k", "top_p", "generator", "streamer")


@dataclass
class MuOmniGenerateOutput(ModelOutput):
    r"""
    sequences (`torch.LongTensor` of shape `(B, T)`):
        The thinker's output ids (prompt + answer), or for text-to-speech the input ids.
    audio (`list[torch.FloatTensor]`):
        One float32 waveform (S_i,) per batch item at `config.sampling_rate`.
    codes (`torch.LongTensor` of shape `(B, Nq, F')`):
        The talker's codec codes; frames past `code_lengths[i]` are padding.
    code_lengths (`torch.LongTensor` of shape `(B,)`):
        Real codec frames per item.
    """

    sequences: torch.LongTensor | None = None
    audio: list[torch.FloatTensor] | None = None
    codes: torch.LongTensor | None = None
    code_lengths: torch.LongTensor | None = None


@dataclass
class MuOmniSpeechChunk(ModelOutput):
    r"""One streamed piece of speech: `audio` holds the new float32 samples of every item (B lists of (S_i,))."""

    audio: list[torch.FloatTensor] | None = None
    codes: torch.LongTensor | None = None
    code_lengths: torch.LongTensor | None = None


def split_generation_kwargs(kwargs: dict) -> tuple[dict, dict]:
    """Route `thinker_*` / `talker_*` keyword arguments; unprefixed ones go to the thinker, except the
    talker's own sampling arguments when given with the `talker_` prefix only."""
    thinker, talker = {}, {}
    for key, value in kwargs.items():
        if key.startswith("talker_"):
            talker[key[len("talker_") :]] = value
        elif key.startswith("thinker_"):
            thinker[key[len("thinker_") :]] = value
        else:
            thinker.setdefault(key, value)
    unknown = sorted(set(talker) - set(TALKER_ARGUMENTS))
    if unknown:
        raise ValueError(f"Unknown talker generation arguments {unknown}; expected some of {list(TALKER_ARGUMENTS)}")
    return thinker, talker


class MuOmniOmniPreTrainedModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    config: MuOmniConfig
    config_class = MuOmniConfig
    base_model_prefix = "muomni"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MuOmniDecoderLayer", "MuOmniEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True  # the thinker's forward (the talker decodes in its own loop)

    def post_init(self):
        super().post_init()
        # transformers gathers the children's ignore patterns; the thinker's (skip the speech side when loaded
        # alone) must not let a full checkpoint drop talker/codec/vocoder weights silently
        self._keys_to_ignore_on_load_unexpected = set(type(self)._keys_to_ignore_on_load_unexpected or [])
        # ... but the parts this config switches off are skipped on purpose (a text-only load of a full checkpoint)
        if not self.config.enable_audio_output:
            self._keys_to_ignore_on_load_unexpected.add(r"^(talker|codec|vocoder)\.")
        elif self.config.vocoder_config.vocoder_type != "neural":
            self._keys_to_ignore_on_load_unexpected.add(r"^vocoder\.")


class MuOmniForConditionalGeneration(MuOmniOmniPreTrainedModel, GenerationMixin):
    """The whole model: `thinker`, and unless `config.enable_audio_output` is False, `talker`, `codec`
    and (for `vocoder_type="neural"`) `vocoder`. `forward` is the thinker's (training, peft)."""

    input_modalities = ("text", "image", "audio")
    output_modalities = ("text", "audio")
    main_input_name = "input_ids"

    def __init__(self, config: MuOmniConfig):
        super().__init__(config)
        self.thinker = MuOmniThinkerForConditionalGeneration(config.thinker_config)
        self.talker = self.codec = self.vocoder = None
        if config.enable_audio_output:
            self.talker = MuOmniTalkerForConditionalGeneration(config.talker_config)
            self.codec = MuOmniCodec(config.codec_config)
            if config.vocoder_config.vocoder_type == "neural":
                self.vocoder = MuOmniNeuralVocoder(config.vocoder_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.thinker.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.thinker.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.thinker.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        self.thinker.set_output_embeddings(new_embeddings)

    def disable_talker(self) -> None:
        """Drop the talker, codec and vocoder to save memory; `generate` then returns text only."""
        self.talker = self.codec = self.vocoder = None
        self.config.enable_audio_output = False

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
        """The thinker's forward (see `MuOmniThinkerForConditionalGeneration.forward`)."""
        return self.thinker(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            pixel_values=pixel_values,
            input_features=input_features,
            feature_attention_mask=feature_attention_mask,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

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
        return self.thinker.prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )

    # ----------------------------------------------------------------------------------------------
    # speech

    def _require_talker(self) -> None:
        if self.talker is None:
            raise ValueError(
                "Audio output is disabled for this model (config.enable_audio_output=False or "
                "disable_talker() was called); generate text only or load it with enable_audio_output=True"
            )

    def speech_text_ids(self, token_ids: torch.LongTensor) -> tuple[torch.LongTensor, torch.LongTensor]:
        """The tokens of (B, T) `token_ids` that are spoken: everything but MuOmni's special tokens
        (end of text, padding, chat markers, media placeholders), left-packed into (B, L) ids and a
        (B, L) mask so every item's text ends where the talker's frames begin."""
        special = torch.tensor(sorted(SPECIAL_TOKEN_IDS.values()), device=token_ids.device)
        spoken = ~torch.isin(token_ids, special)  # (B, T)
        lengths = spoken.sum(dim=1)  # (B,)
        width = max(int(lengths.max()) if lengths.numel() else 0, 1)
        ids = torch.full((token_ids.shape[0], width), SPECIAL_TOKEN_IDS["pad_token_id"], dtype=torch.long)
        ids = ids.to(token_ids.device)
        mask = torch.zeros_like(ids)
        for row in range(token_ids.shape[0]):
            n = int(lengths[row])
            if n:
                ids[row, width - n :] = token_ids[row][spoken[row]]
                mask[row, width - n :] = 1
        return ids, mask

    def _check_text_to_speak(self, text_mask: torch.Tensor) -> None:
        counts = text_mask.sum(dim=1).tolist()
        empty = [i for i, n in enumerate(counts) if n == 0]
        if empty:
            raise ValueError(f"There is no text to speak for batch item(s) {empty} (empty text after special tokens)")
        limit = self.config.talker_config.max_text_tokens
        too_long = [(i, n) for i, n in enumerate(counts) if n > limit]
        if too_long:
            raise ValueError(
                f"Text to speak is too long: (item, tokens) {too_long}; the talker accepts at most "
                f"max_text_tokens={limit} tokens per utterance (split the text into sentences)"
            )

    def codes_to_audio(self, codes: torch.LongTensor, lengths: torch.LongTensor) -> list[torch.FloatTensor]:
        """Codes (B, Nq, F') with real lengths (B,) -> one float32 waveform per item (empty if length 0).

        Item i has `lengths[i] * codec downsample_factor * hop_length` samples; its codes past
        `lengths[i]` are padding and never read (the real ones must lie in [0, codebook_size)).
        """
        self._require_talker()
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3:
            found = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise ValueError(f"codes must be a tensor of shape (B, Nq, F'), got {found}")
        lengths = torch.as_tensor(lengths)
        frames = codes.shape[2]
        if lengths.shape != codes.shape[:1] or bool(((lengths < 0) | (lengths > frames)).any()):
            raise ValueError(
                f"lengths must hold one frame count in [0, {frames}] per item (codes {tuple(codes.shape)}), "
                f"got {lengths.tolist()}"
            )
        waveforms = []
        mel_per_code = self.config.codec_config.downsample_factor
        for row in range(codes.shape[0]):
            n = int(lengths[row])
            if n == 0:
                waveforms.append(torch.zeros(0, dtype=torch.float32, device=codes.device))
                continue
            mel = self.codec.decode(codes[row : row + 1, :, :n])  # (1, M, n * mel_per_code)
            waveform = vocode(mel, self.config.vocoder_config, self.vocoder)  # (1, S)
            samples = n * mel_per_code * self.config.vocoder_config.hop_length
            waveforms.append(waveform[0, :samples].float())
        return waveforms

    def _talker_inputs(self, text_ids: torch.LongTensor, text_mask: torch.Tensor) -> torch.Tensor:
        return self.thinker.get_input_embeddings()(text_ids)  # (B, L, D)

    @torch.no_grad()
    def speak(self, text_ids: torch.LongTensor, text_mask: torch.Tensor | None = None, **talker_kwargs):
        """Speak `text_ids` (B, L) (left-padded thinker token ids, `text_mask` 1 = real) -> MuOmniGenerateOutput."""
        self._require_talker()
        if text_mask is None:
            text_mask = torch.ones_like(text_ids)
        self._check_text_to_speak(text_mask)
        talker_out = self.talker.generate(self._talker_inputs(text_ids, text_mask), text_mask, **talker_kwargs)
        audio = self.codes_to_audio(talker_out.codes, talker_out.lengths)
        return MuOmniGenerateOutput(
            sequences=text_ids, audio=audio, codes=talker_out.codes, code_lengths=talker_out.lengths
        )

    def speak_stream(
        self,
        text_ids: torch.LongTensor,
        text_mask: torch.Tensor | None = None,
        chunk_frames: int = 12,
        **talker_kwargs,
    ) -> Iterator[MuOmniSpeechChunk]:
        """Yield speech chunk by chunk while the talker is still generating.

        Each chunk's codes are decoded together with up to `chunk_frames` frames of left context
        (the codec and vocoder see across the chunk border) and only the new samples are yielded;
        the concatenated chunks are the streamed utterance, as long as `speak`'s for the same codes.
        Talker arguments are `speak`'s; a `streamer` receives each chunk's codes (B, Nq, n) through
        `put` before they are vocoded, and `end()` after the last one. The inputs are checked when
        this is called; the talker runs as the caller iterates.
        """
        self._require_talker()
        if text_mask is None:
            text_mask = torch.ones_like(text_ids)
        self._check_text_to_speak(text_mask)
        streamer = talker_kwargs.pop("streamer", None)
        with torch.no_grad():
            text_embeds = self._talker_inputs(text_ids, text_mask)  # (B, L, D)
        stream = self.talker.generate_stream(text_embeds, text_mask, chunk_frames=chunk_frames, **talker_kwargs)
        return self._vocode_stream(stream, text_ids.shape[0], chunk_frames, streamer)

    @torch.no_grad()
    def _vocode_stream(self, stream, batch: int, chunk_frames: int, streamer) -> Iterator[MuOmniSpeechChunk]:
        samples_per_code = self.config.codec_config.downsample_factor * self.config.vocoder_config.hop_length
        history = None
        emitted = torch.zeros(batch, dtype=torch.long)
        for chunk in stream:
            if streamer is not None and chunk.codes.shape[-1]:
                streamer.put(chunk.codes)
            history = chunk.codes if history is None else torch.cat([history, chunk.codes], dim=-1)
            lengths = chunk.lengths.cpu()
            audio = []
            for row in range(history.shape[0]):
                start, end = int(emitted[row]), int(lengths[row])
                if end <= start:
                    audio.append(torch.zeros(0, dtype=torch.float32, device=history.device))
                    continue
                context = max(0, start - chunk_frames)
                mel = self.codec.decode(history[row : row + 1, :, context:end])
                waveform = vocode(mel, self.config.vocoder_config, self.vocoder)[0]
                offset = (start - context) * samples_per_code
                audio.append(waveform[offset : (end - context) * samples_per_code].float())
                emitted[row] = end
            yield MuOmniSpeechChunk(audio=audio, codes=chunk.codes, code_lengths=chunk.lengths)
        if streamer is not None:
            streamer.end()

    # ----------------------------------------------------------------------------------------------
    # generation

    @torch.no_grad()
    def generate(self, input_ids: torch.LongTensor | None = None, return_audio: bool = False, **kwargs):
        """Generate the thinker's answer; with `return_audio=True` also speak it.

        Keyword arguments prefixed `thinker_` go to the thinker's `generate`, `talker_` ones to the
        talker (`max_frames`, `do_sample`, `temperature`, `top_k`, `top_p`, `generator`, `streamer`);
        unprefixed ones go to the thinker. `generation_mode="audio"` (what the any-to-any pipeline
        passes) means `return_audio=True`, `"text"` means text only. Returns the thinker's output
        unchanged when not speaking, else a `MuOmniGenerateOutput` with `sequences` and `audio`; an
        item whose answer has nothing to speak (only special tokens) gets empty audio and 0 frames.
        """
        generation_mode = kwargs.pop("generation_mode", None)
        if generation_mode not in (None, "text", "audio"):
            raise ValueError(f"generation_mode must be 'text' or 'audio', got {generation_mode!r}")
        if generation_mode == "text" and return_audio:
            raise ValueError("generation_mode='text' contradicts return_audio=True; pass one of them")
        return_audio = return_audio or generation_mode == "audio"
        thinker_kwargs, talker_kwargs = split_generation_kwargs(kwargs)
        if return_audio:
            self._require_talker()
        if "generation_config" not in thinker_kwargs:
            # the checkpoint's generation_config.json belongs to this model, not to the thinker inside it
            generation_config = copy.deepcopy(self.generation_config)
            thinker_kwargs = generation_config.update(**thinker_kwargs)
            thinker_kwargs["generation_config"] = generation_config
        output = self.thinker.generate(input_ids=input_ids, **thinker_kwargs)
        if not return_audio:
            return output
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        prompt_length = input_ids.shape[1] if input_ids is not None else 0
        text_ids, text_mask = self.speech_text_ids(sequences[:, prompt_length:])
        audio, codes, code_lengths = self._speak_answers(text_ids, text_mask, talker_kwargs)
        return MuOmniGenerateOutput(sequences=sequences, audio=audio, codes=codes, code_lengths=code_lengths)

    def _speak_answers(self, text_ids: torch.LongTensor, text_mask: torch.Tensor, talker_kwargs: dict):
        """`speak` for the items that have text to speak; the others get empty audio and 0 frames."""
        batch = text_ids.shape[0]
        has_text = text_mask.sum(dim=1) > 0  # (B,)
        if bool(has_text.all()):
            speech = self.speak(text_ids, text_mask, **talker_kwargs)
            return speech.audio, speech.codes, speech.code_lengths
        rows = has_text.nonzero().flatten().tolist()
        num_quantizers = self.config.talker_config.num_quantizers
        codes = torch.zeros(batch, num_quantizers, 0, dtype=torch.long, device=text_ids.device)
        lengths = torch.zeros(batch, dtype=torch.long, device=text_ids.device)
        audio = [torch.zeros(0, dtype=torch.float32, device=text_ids.device) for _ in range(batch)]
        if rows:
            # drop the columns that are padding for every speaking item, so the talker sees no empty prefix
            width = int(text_mask[rows].sum(dim=1).max())
            speech = self.speak(text_ids[rows, -width:], text_mask[rows, -width:], **talker_kwargs)
            codes = codes.new_zeros(batch, num_quantizers, speech.codes.shape[-1])
            codes[rows], lengths[rows] = speech.codes, speech.code_lengths
            for row, waveform in zip(rows, speech.audio):
                audio[row] = waveform
        return audio, codes, lengths


class MuOmniForTextToSpeech(MuOmniForConditionalGeneration):
    """Speech by default: `generate(input_ids)` speaks the given text (no thinker answer).

    This is the class the text-to-speech pipeline loads (`AutoModelForTextToWaveform`). Thinker
    generation arguments the pipeline passes (`max_new_tokens`, …) do not apply and are ignored;
    the talker's length guard comes from the text length (`talker_max_frames` overrides it).
    """

    output_modalities = ("audio",)

    @torch.no_grad()
    def generate(self, input_ids: torch.LongTensor | None = None, attention_mask=None, **kwargs):
        if input_ids is None:
            raise ValueError("Text-to-speech needs input_ids: the tokenized text to speak")
        _, talker_kwargs = split_generation_kwargs({k: v for k, v in kwargs.items() if k.startswith("talker_")})
        text_ids = input_ids if attention_mask is None else input_ids.masked_fill(attention_mask == 0, 0)
        text_ids, text_mask = self.speech_text_ids(text_ids)
        return self.speak(text_ids, text_mask, **talker_kwargs)


class _MuOmniThinkerAudioTower(torch.nn.Module):
    """The thinker's audio tower alone, under the module path it has in a full checkpoint."""

    def __init__(self, config):
        super().__init__()
        self.audio_tower = MuOmniAudioEncoderForCTC(config.audio_config)


class MuOmniForSpeechRecognition(MuOmniOmniPreTrainedModel):
    """The audio encoder's character CTC head read out of a full MuOmni checkpoint (everything else
    in the checkpoint is skipped), for `pipeline("automatic-speech-recognition", model=dir)`."""

    main_input_name = "input_features"
    _keys_to_ignore_on_load_unexpected = [r"^thinker\.(?!audio_tower\.)", r"^(talker|codec|vocoder)\."]

    def __init__(self, config: MuOmniConfig):
        super().__init__(config)
        self.thinker = _MuOmniThinkerAudioTower(config.thinker_config)
        self.post_init()

    def forward(self, input_features=None, feature_attention_mask=None, attention_mask=None, labels=None, **kwargs):
        return self.thinker.audio_tower(
            input_features=input_features,
            feature_attention_mask=feature_attention_mask,
            attention_mask=attention_mask,
            labels=labels,
            **kwargs,
        )


__all__ = [
    "MuOmniForConditionalGeneration",
    "MuOmniForSpeechRecognition",
    "MuOmniForTextToSpeech",
    "MuOmniGenerateOutput",
    "MuOmniSpeechChunk",
]
