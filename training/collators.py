"""Collators shared by the training stages: dataset rows -> the tensors a MuOmni model takes.

Notation: B batch, T tokens per block, M mel bins, F mel frames (100 Hz), U label length.

    pack_token_blocks        `Dataset.map(batched=True)` function: EOS-terminated token lists -> blocks of T
    document_position_ids    positions that restart after every EOS (document-aware attention in packed blocks)
    CausalLMPackingCollator  stage A: stacks packed blocks into input_ids / labels (B, T)
    SpecAugment              random time and frequency masks on log-mel features (training only)
    CTCCollator              stage B: audio + transcript (or precomputed log-mel + labels) -> padded
                             input_features (B, M, F), feature_attention_mask (B, F), labels (B, U) with -100

Packing (stage A). Documents are tokenized with EOS appended, concatenated in order and cut into
blocks of exactly T tokens; the tail shorter than a block is dropped (per `map` batch). Every block
is full, so no token is padding and `labels == input_ids` (the model shifts them). By default
attention crosses document boundaries inside a block, the standard GPT-2 / `run_clm` choice: the EOS
separator tells the model a new document starts, and the causal mask stays the fast
`is_causal` kernel. `document_attention=True` instead gives `position_ids` that restart after every
EOS (and `use_cache=False`); with neither an `attention_mask` nor a KV cache, transformers'
`create_causal_mask` turns those into a block-diagonal causal mask, so a document attends only to
itself and starts at position 0, as at inference. The EOS that ends a document still predicts the
first token of the next one, from its own document's context.
"""

import re
from collections import Counter
from dataclasses import dataclass, replace
from itertools import chain

import numpy as np
import torch

from muomni.processing import (
    MuOmniCTCTokenizer,
    MuOmniFeatureExtractor,
    MuOmniImageProcessor,
    MuOmniTokenizer,
    resample_audio,
)
from muomni.processing.processing_muomni import MuOmniProcessor

from .data.speech import normalize_transcript


def pack_token_blocks(batch: dict[str, list], block_size: int, column: str = "input_ids") -> dict[str, list]:
    """Concatenate the token lists of `batch[column]` and cut them into blocks of `block_size` tokens.

    Meant for `dataset.map(pack_token_blocks, batched=True, fn_kwargs={"block_size": T},
    remove_columns=dataset.column_names)`; works on `Dataset` and `IterableDataset`. The tail
    (fewer than `block_size` tokens) of each map batch is dropped.

    Returns:
        `{"input_ids": list of lists of exactly block_size ids}` (possibly empty).
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2:
        raise ValueError(f"block_size must be an integer >= 2 (one input and one target), got {block_size!r}")
    stream = list(chain.from_iterable(batch[column]))
    usable = len(stream) // block_size * block_size
    return {"input_ids": [stream[start : start + block_size] for start in range(0, usable, block_size)]}


def document_position_ids(input_ids: torch.Tensor, eos_token_id: int) -> torch.LongTensor:
    """Positions (B, T) that count from 0 at the start of every document, a document starting after each EOS.

    `[[5, 6, EOS, 7, 8, EOS, 9]]` -> `[[0, 1, 2, 0, 1, 2, 0]]`.
    """
    batch, length = input_ids.shape
    index = torch.arange(length, device=input_ids.device).expand(batch, length)  # (B, T)
    starts = torch.zeros_like(input_ids, dtype=torch.bool)
    starts[:, 1:] = input_ids[:, :-1] == eos_token_id  # a document starts right after an EOS
    starts[:, 0] = True
    last_start = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values  # (B, T)
    return index - last_start


@dataclass
class CausalLMPackingCollator:
    """Stacks packed blocks (rows with `input_ids` of one length T) into `input_ids` and `labels` (B, T).

    Args:
        eos_token_id (`int`, *optional*): the document separator; required by `document_attention`.
        document_attention (`bool`): also return `position_ids` restarting after each EOS (and
            `use_cache=False`), so attention stays inside each document (see the module docstring).
            Default False: attention crosses document boundaries within a block.
    """

    eos_token_id: int | None = None
    document_attention: bool = False

    def __post_init__(self):
        if self.document_attention and self.eos_token_id is None:
            raise ValueError("document_attention=True needs eos_token_id (the document separator)")

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        lengths = sorted({len(row["input_ids"]) for row in rows})
        if len(lengths) != 1:
            raise ValueError(
                f"packed blocks must all have the same length, got lengths {lengths}; "
                "pack documents with pack_token_blocks first"
            )
        input_ids = torch.as_tensor(np.asarray([row["input_ids"] for row in rows]), dtype=torch.long)  # (B, T)
        batch = {"input_ids": input_ids, "labels": input_ids.clone()}
        if self.document_attention:
            batch["position_ids"] = document_position_ids(input_ids, self.eos_token_id)
            # transformers reads packed documents from position_ids only without a KV cache
            batch["use_cache"] = False
        return batch


@dataclass
class SpecAugment:
    """SpecAugment-style masking (Park et al., 2019) of log-mel features, inside each clip's real frames.

    Each clip gets `time_masks` time masks of width U[0, min(max_time_width, max_time_fraction x length)]
    frames and `freq_masks` frequency masks of width U[0, max_freq_width] bins; masked values are set to
    `mask_value` (0.0: the middle of the normalised log-mel range, and the padding value). Uses torch's
    global generator, which `Trainer` seeds and checkpoints.
    """

    time_masks: int = 2
    max_time_width: int = 20
    max_time_fraction: float = 0.15
    freq_masks: int = 2
    max_freq_width: int = 16
    mask_value: float = 0.0

    def __post_init__(self):
        for name in ("time_masks", "max_time_width", "freq_masks", "max_freq_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"SpecAugment.{name} must be a non-negative integer, got {value!r}")
        if not 0.0 <= self.max_time_fraction <= 1.0:
            raise ValueError(f"SpecAugment.max_time_fraction must be in [0, 1], got {self.max_time_fraction!r}")

    def __call__(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mask `features` (B, M, F) in place within the first `lengths[b]` frames of each clip; returns it."""
        num_bins = features.shape[1]
        for row, length in enumerate(lengths.tolist()):
            time_limit = min(self.max_time_width, int(self.max_time_fraction * length))
            for _ in range(self.time_masks):
                width = int(torch.randint(0, time_limit + 1, ()))
                start = int(torch.randint(0, length - width + 1, ()))
                features[row, :, start : start + width] = self.mask_value
            for _ in range(self.freq_masks):
                width = int(torch.randint(0, min(self.max_freq_width, num_bins) + 1, ()))
                start = int(torch.randint(0, num_bins - width + 1, ()))
                features[row, start : start + width, :] = self.mask_value
        return features


@dataclass
class CTCCollator:
    """Batches for `MuOmniAudioEncoderForCTC`: padded log-mel, its frame mask and -100-padded character labels.

    A row is either raw, `{audio_column: {"array": (S,), "sampling_rate": int}, text_column: str}`
    (features are extracted here, on the fly), or precomputed, `{"input_features": (F, M) frames
    first, "labels": list[int]}` (what `stage_b.precompute_features` stores: frames first, so that
    `len(row["input_features"])` is the clip's length, which `Trainer`'s group-by-length sampler reads).
    Other keys are ignored.

    Args:
        feature_extractor ([`MuOmniFeatureExtractor`]): the mel front end (its `sampling_rate` is the target).
        tokenizer ([`MuOmniCTCTokenizer`]): transcript -> character ids.
        audio_column / text_column (`str`): keys of raw rows.
        resample (`bool`): resample raw audio at another rate; otherwise another rate is a ValueError.
        normalize_targets (`bool`): train on `normalize_transcript(text)` (lowercase words) instead of the text as is.
        spec_augment ([`SpecAugment`], *optional*): masking applied to every batch; use
            `without_augmentation()` for evaluation batches.

    Returns (from `__call__`): `input_features` (B, M, F) float32, `feature_attention_mask` (B, F) int64,
    `labels` (B, U) int64 padded with -100.
    """

    feature_extractor: MuOmniFeatureExtractor
    tokenizer: MuOmniCTCTokenizer
    audio_column: str = "audio"
    text_column: str = "text"
    resample: bool = False
    normalize_targets: bool = True
    spec_augment: SpecAugment | None = None

    def without_augmentation(self) -> "CTCCollator":
        """The same collator with `spec_augment=None` (for evaluation)."""
        return replace(self, spec_augment=None)

    def encode_targets(self, texts: list[str]) -> list[list[int]]:
        """Character ids of each transcript (normalised first if `normalize_targets`)."""
        if self.normalize_targets:
            texts = [normalize_transcript(text) for text in texts]
        return [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]

    def waveforms(self, rows: list[dict]) -> list[torch.Tensor]:
        """The rows' audio as float32 tensors at the feature extractor's rate (resampled if allowed)."""
        target = self.feature_extractor.sampling_rate
        clips = []
        for index, row in enumerate(rows):
            audio = row.get(self.audio_column)
            if not isinstance(audio, dict) or "array" not in audio:
                raise ValueError(
                    f"row {index} has no decoded audio in column {self.audio_column!r} (expected "
                    f"{{'array', 'sampling_rate'}}, got {type(audio).__name__}); decode Audio columns with "
                    "muomni.training.data.with_audio_arrays"
                )
            waveform = torch.as_tensor(np.asarray(audio["array"], dtype=np.float32))
            rate = int(audio["sampling_rate"])
            if rate != target:
                if not self.resample:
                    raise ValueError(
                        f"row {index} is sampled at {rate} Hz but the feature extractor expects {target} Hz; "
                        "resample the data or load it with resample=True"
                    )
                waveform = resample_audio(waveform, rate, target)
            clips.append(waveform)
        return clips

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        if "input_features" in rows[0]:
            frames = [torch.as_tensor(row["input_features"], dtype=torch.float32) for row in rows]  # (F_i, M) each
            lengths = torch.tensor([f.shape[0] for f in frames])
            features = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True, padding_value=0.0)  # (B, F, M)
            features = features.transpose(1, 2).contiguous()  # (B, M, F)
            mask = (torch.arange(features.shape[-1])[None, :] < lengths[:, None]).long()  # (B, F)
            targets = [list(row["labels"]) for row in rows]
        else:
            extracted = self.feature_extractor(
                self.waveforms(rows), sampling_rate=self.feature_extractor.sampling_rate, return_tensors="pt"
            )
            features, mask = extracted["input_features"], extracted["attention_mask"]
            lengths = mask.sum(-1)
            targets = self.encode_targets([row[self.text_column] for row in rows])
        if self.spec_augment is not None:
            features = self.spec_augment(features, lengths)
        longest = max(1, max(len(target) for target in targets))
        labels = torch.full((len(rows), longest), -100, dtype=torch.long)  # (B, U)
        for row, target in enumerate(targets):
            labels[row, : len(target)] = torch.as_tensor(target, dtype=torch.long)
        return {"input_features": features, "feature_attention_mask": mask, "labels": labels}


__all__ = [
    "CTCCollator",
    "CausalLMPackingCollator",
    "SpecAugment",
    "document_position_ids",
    "pack_token_blocks",
]


# --------------------------------------------------------------------------------------------------
# Stage D: log-mel crops for the codec and the neural vocoder; (text embeddings, codes) for the talker.
# Notation as above, plus L text tokens, Dt thinker hidden, Nq codebooks, T codec frames.


def decoded_waveform(row: dict, sampling_rate: int, audio_column: str = "audio") -> torch.Tensor:
    """The float32 waveform (S,) of a row whose audio is a decoded `{"array", "sampling_rate"}` cell at
    `sampling_rate` (another rate is a ValueError: resample the data first)."""
    audio = row.get(audio_column) if isinstance(row, dict) else None
    if not isinstance(audio, dict) or "array" not in audio or "sampling_rate" not in audio:
        found = sorted(audio) if isinstance(audio, dict) else type(audio).__name__
        raise ValueError(
            f"rows need decoded audio in column {audio_column!r} ({{'array', 'sampling_rate'}}, got {found}); "
            "decode Audio columns with muomni.training.data.with_audio_arrays"
        )
    if int(audio["sampling_rate"]) != sampling_rate:
        raise ValueError(
            f"audio is sampled at {audio['sampling_rate']} Hz, the feature extractor expects {sampling_rate} Hz"
        )
    return torch.as_tensor(np.asarray(audio["array"], dtype=np.float32))


def whole_log_mels(feature_extractor: MuOmniFeatureExtractor, clips: list[torch.Tensor]) -> list[torch.Tensor]:
    """The normalised log-mel (M, F_i) of each clip, exactly as the extractor computes it for the clip alone."""
    features = feature_extractor(clips, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")
    lengths = features["attention_mask"].sum(dim=1).tolist()
    return [features["input_features"][i, :, :n] for i, n in enumerate(lengths)]


@dataclass
class MelCropCollator:
    """Speech rows -> normalised log-mel batches for `MuOmniCodec` (and `MuOmniNeuralVocoder`).

    A row holds `mel` (M, F_i), a clip's whole log-mel computed beforehand, or decoded `audio`, whose
    whole log-mel is computed here; either way a clip is normalised over all its frames, as at inference
    (a crop normalised alone would have another peak). With `max_frames`, every item is then cut to a
    random window of `min(max_frames, shortest clip of the batch)` frames, so a crop never holds padding
    (windows are drawn from torch's global generator, which `Trainer` seeds); without it, whole clips are
    padded with the extractor's `padding_value` to the longest.

    Returns `{"mel": (B, M, F), "mel_mask": (B, F)}`, or with `return_waveform` (rows need `audio`)
    `{"mel": (B, M, F), "waveform": (B, F * hop_length)}`: the samples those F frames were computed from,
    always cut to the shortest clip, as the vocoder's loss has no mask.
    """

    feature_extractor: MuOmniFeatureExtractor
    max_frames: int | None = None
    return_waveform: bool = False

    def __post_init__(self):
        if self.max_frames is not None and (
            isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 1
        ):
            raise ValueError(f"max_frames must be a positive integer or None, got {self.max_frames!r}")

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        extractor = self.feature_extractor
        if self.return_waveform or not all("mel" in row for row in rows):
            clips = [decoded_waveform(row, extractor.sampling_rate) for row in rows]
            mels = whole_log_mels(extractor, clips)
        else:
            mels = [torch.as_tensor(row["mel"], dtype=torch.float32) for row in rows]
        lengths = [mel.shape[-1] for mel in mels]
        if self.max_frames is None and not self.return_waveform:
            mel = torch.full((len(mels), mels[0].shape[0], max(lengths)), float(extractor.padding_value))
            for i, clip_mel in enumerate(mels):
                mel[i, :, : lengths[i]] = clip_mel
            mask = (torch.arange(mel.shape[-1])[None] < torch.tensor(lengths)[:, None]).long()  # (B, F)
            return {"mel": mel, "mel_mask": mask}
        window = min(self.max_frames or max(lengths), min(lengths))
        starts = [int(torch.randint(length - window + 1, ())) for length in lengths]
        mel = torch.stack([clip_mel[:, s : s + window] for clip_mel, s in zip(mels, starts)])  # (B, M, window)
        if not self.return_waveform:
            return {"mel": mel, "mel_mask": torch.ones(len(rows), window, dtype=torch.long)}
        hop = extractor.hop_length
        waveform = torch.stack([clip[s * hop : (s + window) * hop] for clip, s in zip(clips, starts)])
        return {"mel": mel, "waveform": waveform}  # waveform (B, window * hop)


@dataclass
class TalkerCollator:
    """Rows with `text_embeds` (L_i, Dt) and `codes` (Nq, T_i) -> `MuOmniTalkerForConditionalGeneration`'s
    inputs: `text_embeds` (B, L, Dt) LEFT-padded with zeros and `text_attention_mask` (B, L), so every
    text ends where its frames begin; `codes` (B, Nq, T) RIGHT-padded with 0 and `codes_mask` (B, T).

    `pad_text_ids` left-pads thinker token ids the same way (what `speak` takes), with `pad_token_id`.
    """

    pad_token_id: int = 0

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        for row in rows:
            missing = [key for key in ("text_embeds", "codes") if key not in row]
            if missing:
                raise ValueError(f"talker rows need 'text_embeds' and 'codes'; a row lacks {missing}")
        embeds = [torch.as_tensor(np.asarray(row["text_embeds"], dtype=np.float32)) for row in rows]  # (L_i, Dt)
        length = max(e.shape[0] for e in embeds)
        text_embeds = torch.zeros(len(rows), length, embeds[0].shape[-1])  # (B, L, Dt)
        text_mask = torch.zeros(len(rows), length, dtype=torch.long)  # (B, L)
        for i, e in enumerate(embeds):
            text_embeds[i, length - e.shape[0] :] = e
            text_mask[i, length - e.shape[0] :] = 1
        codes, lengths = self.pad_codes([torch.as_tensor(np.asarray(row["codes"]), dtype=torch.long) for row in rows])
        codes_mask = (torch.arange(codes.shape[-1])[None] < lengths[:, None]).long()  # (B, T)
        return {"text_embeds": text_embeds, "text_attention_mask": text_mask, "codes": codes, "codes_mask": codes_mask}

    @staticmethod
    def pad_codes(codes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """[(Nq, T_i)] -> codes (B, Nq, T) RIGHT-padded with 0, and the lengths (B,)."""
        lengths = torch.tensor([c.shape[-1] for c in codes])
        padded = torch.zeros(len(codes), codes[0].shape[0], int(lengths.max()), dtype=torch.long)
        for i, c in enumerate(codes):
            padded[i, :, : c.shape[-1]] = c
        return padded, lengths

    def pad_text_ids(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Thinker ids [L_i] -> (B, L) LEFT-padded with `pad_token_id`, and their (B, L) mask."""
        length = max(len(row) for row in ids)
        text_ids = torch.full((len(ids), length), self.pad_token_id, dtype=torch.long)
        text_mask = torch.zeros(len(ids), length, dtype=torch.long)
        for i, row in enumerate(ids):
            text_ids[i, length - len(row) :] = torch.as_tensor(row, dtype=torch.long)
            text_mask[i, length - len(row) :] = 1
        return text_ids, text_mask


__all__ += ["MelCropCollator", "TalkerCollator", "decoded_waveform", "whole_log_mels"]


# --------------------------------------------------------------------------------------------------
# Stage C: image-caption pairs for the contrastive model. Stage E: SFT chats whose user turns carry the
# literal markers "<image>" / "<audio>", turned into image / audio parts that the processor expands.
# Notation as above, plus S image side, N_img images and N_audio clips in a batch.


@dataclass
class MuOmniContrastiveCollator:
    """Rows {image: PIL image, caption: str} -> `pixel_values` (B, C, S, S), `input_ids` and
    `attention_mask` (B, T), captions right-padded and truncated to `max_length` tokens."""

    tokenizer: MuOmniTokenizer
    image_processor: MuOmniImageProcessor
    max_length: int = 64
    image_column: str = "image"
    text_column: str = "caption"

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        images = [row[self.image_column] for row in rows]
        captions = [row[self.text_column] for row in rows]
        bad = [i for i, c in enumerate(captions) if not isinstance(c, str) or not c.strip()]
        if bad:
            raise ValueError(f"rows {bad} have no caption text in column {self.text_column!r}")
        text = self.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_length, padding_side="right",
            return_tensors="pt",
        )  # fmt: skip
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}


MEDIA_MARKERS = {"<image>": "image", "<audio>": "audio"}
OUTPUT_AUDIO_TASKS = ("tts",)  # tasks whose `audio` is the assistant's speech (an output), not an input


def sft_conversation(row: dict, sampling_rate: int = 16000) -> list[dict]:
    """A built-in `sft` row -> chat messages whose content is a list of text / image / audio parts.

    Each `<image>` / `<audio>` marker in a message becomes a part holding the row's image (PIL) or audio
    (a float32 array at `sampling_rate`, resampled if needed). A row has at most one image and one
    clip, each used by exactly one marker; the audio of `OUTPUT_AUDIO_TASKS` rows is the answer's
    speech and is dropped.
    """
    media = {"image": row.get("image"), "audio": row.get("audio")}
    if row.get("task") in OUTPUT_AUDIO_TASKS:
        media["audio"] = None
    used = Counter()
    conversation = []
    for message in row["messages"]:
        parts = []
        for piece in re.split(r"(<image>|<audio>)", message["content"]):
            kind = MEDIA_MARKERS.get(piece)
            if kind is None:
                if piece:
                    parts.append({"type": "text", "text": piece})
                continue
            if media[kind] is None:
                raise ValueError(f"a {row.get('task')!r} message has the marker {piece} but the row has no {kind}")
            used[kind] += 1
            value = media[kind] if kind == "image" else sft_waveform(media[kind], sampling_rate)
            parts.append({"type": kind, kind: value})
        conversation.append({"role": message["role"], "content": parts})
    for kind, value in media.items():
        if used[kind] != (value is not None):  # a given medium needs exactly one marker, a missing one none
            found = f"{used[kind]} <{kind}> markers" if used[kind] else f"an {kind} but no <{kind}> marker"
            raise ValueError(f"a {row.get('task')!r} row has {found}; expected exactly one marker per {kind}")
    return conversation


def sft_waveform(audio, sampling_rate: int) -> np.ndarray:
    """A decoded audio cell as a float32 array (S,) at `sampling_rate`, resampled if it has another rate."""
    if not isinstance(audio, dict) or "array" not in audio:
        raise ValueError(
            f"audio cells must be decoded {{'array', 'sampling_rate'}} dicts, got {type(audio).__name__}; decode "
            "Audio columns with muomni.training.data.with_audio_arrays"
        )
    waveform = np.asarray(audio["array"], dtype=np.float32)
    if int(audio["sampling_rate"]) != sampling_rate:
        waveform = resample_audio(torch.from_numpy(waveform), int(audio["sampling_rate"]), sampling_rate).numpy()
    return waveform


@dataclass
class MuOmniSFTCollator:
    """SFT rows (`task`, `messages` with markers, `image`, `audio`) -> thinker inputs.

    `__call__` (training): `input_ids`, `attention_mask`, `labels` (B, T), right-padded; labels are the
    input ids on assistant tokens (content and closing `<|im_end|>`) and -100 elsewhere. `pixel_values`
    (N_img, C, S, S) and `input_features` (N_audio, M, F) + `feature_attention_mask` (N_audio, F) hold
    the batch's media in placeholder (reading) order; rows without media contribute none.
    `prompts(rows)` (generation): the conversations without their final assistant turn, with the
    generation prompt, left-padded.
    """

    processor: MuOmniProcessor

    def _conversations(self, rows: list[dict]) -> list[list[dict]]:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        rate = self.processor.feature_extractor.sampling_rate
        return [sft_conversation(row, rate) for row in rows]

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.processor.apply_chat_template(
            self._conversations(rows), tokenize=True, return_dict=True, return_tensors="pt",
            return_assistant_tokens_mask=True, processor_kwargs={"padding_side": "right"},
        )  # fmt: skip
        assistant = batch.pop("assistant_masks").bool()
        batch["labels"] = batch["input_ids"].masked_fill(~assistant, -100)
        return dict(batch)

    def prompts(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        conversations = []
        for conversation in self._conversations(rows):
            if conversation[-1]["role"] != "assistant":
                raise ValueError("an SFT conversation must end with the assistant's answer")
            conversations.append(conversation[:-1])
        batch = self.processor.apply_chat_template(
            conversations, tokenize=True, return_dict=True, return_tensors="pt", add_generation_prompt=True,
            processor_kwargs={"padding_side": "left"},
        )  # fmt: skip
        return dict(batch)


__all__ += [
    "MEDIA_MARKERS",
    "OUTPUT_AUDIO_TASKS",
    "MuOmniContrastiveCollator",
    "MuOmniSFTCollator",
    "sft_conversation",
    "sft_waveform",
]
