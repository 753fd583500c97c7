"""Stage D: speech output. The RVQ codec, the talker and (optionally) the neural vocoder.

Notation: B batch, M mel bins, F mel frames (100 Hz), T codec frames, Nq codebooks, K codebook size,
L text tokens, Dt thinker hidden, S samples.

Three sub-stages, run by `run_stage_d` in this order, each a `MuOmniStageTrainer`:

    StageDCodecTrainer    MuOmniCodec on log-mel crops of every voice of the `speech` train split
                          (reconstruction + codebook + commitment losses, all inside the codec).
                          Metrics on whole held-out clips: mel L1, mel distance in dB, utilisation and
                          perplexity of each codebook.
    StageDVocoderTrainer  MuOmniNeuralVocoder on (log-mel, waveform) crops; only when
                          `vocoder_config.vocoder_type == "neural"` (Griffin-Lim has no weights).
                          Trained before the talker, so the round trip below uses it.
    StageDTalkerTrainer   MuOmniTalkerForConditionalGeneration on (text, codes) pairs in the assistant
                          voice: `speech` rows in `ASSISTANT_VOICE` (normalised transcripts) plus the
                          `tts` rows of `sft` (the same kind of speech with the written, cased text the
                          thinker produces at inference). Both the conditioning and the targets come from
                          frozen models and are computed once, before training:
                            text_embeds = speech_model._talker_inputs(ids): the thinker's token embeddings
                                          of stage A's language model, exactly what `speak` feeds;
                            codes       = codec.encode(log-mel of the clip), the codec in eval mode.
                          Metrics: teacher-forced loss and per-codebook accuracy, and the round-trip CER:
                          `speech_model.speak` (greedy talker -> codec.decode -> vocoder) -> the stage-B
                          ASR -> greedy CTC -> CER against the sentence, next to two references, the
                          ASR's CER on the original eSpeak audio and on codec-resynthesised audio.

`speech_model` is the inference model, a `MuOmniForConditionalGeneration` assembled from the stage
outputs (stage A's language model, this stage's codec, talker and vocoder); the talker being trained
is its `talker` module, so the metric speaks through the very code path users call. Its thinker,
codec and vocoder are frozen and pinned to eval mode; its audio and vision encoders are unused here.

What limits the round trip at the `tiny` scale (measured with a 7-minute CTC stand-in for stage B:
CER 0.38 on the original eSpeak audio, 0.93-0.99 against mismatched sentences): the 25 Hz codec costs
~0.2 (resynthesis CER ~0.60; Griffin-Lim alone costs nothing; a 50 Hz codec gives 0.49, 12.5 Hz 0.71).
On its training sentences the talker reaches exactly that ceiling (greedy decoding reproduces their
codes), but from ~300 assistant-voice utterances it does not generalise to new sentences: held-out
round-trip CER 0.83-0.89 after 200-1500 steps, with all voices (1800 pairs), character-level input or
12.5 Hz codes alike; a smaller talker does worse. More speech in the assistant voice helps the
talker's held-out loss a lot (3.1 vs 8.5 nats) but the round trip only a little: on a single-voice set
(codec trained on that voice, resynthesis CER 0.38-0.41), 300 utterances give 0.81 and 1800 give 0.78
after 600 steps (0.76-0.78 after 1500). The talker itself, not the data volume alone, is what limits it
at this size.
"""

import copy
import math
import os
import time

import torch
from datasets import Audio, Dataset, DatasetDict
from transformers import AutoTokenizer, TrainingArguments, set_seed

from muomni.configuration import MuOmniConfig
from muomni.modeling_audio_encoder import MuOmniAudioEncoderForCTC, audio_max_input_frames, ctc_greedy_decode
from muomni.modeling_codec import MuOmniCodec
from muomni.modeling_muomni import MuOmniForConditionalGeneration
from muomni.modeling_talker import MuOmniTalkerForConditionalGeneration
from muomni.modeling_text import MuOmniForCausalLM
from muomni.modeling_vocoder import MuOmniNeuralVocoder
from muomni.processing.feature_extraction_muomni import MuOmniFeatureExtractor
from muomni.processing.tokenization_muomni import MuOmniCTCTokenizer, MuOmniTokenizer

from .collators import MelCropCollator, TalkerCollator, decoded_waveform, whole_log_mels
from .data import ASSISTANT_VOICE, normalize_transcript, with_audio_arrays
from .metrics import character_error_rate
from .trainer import (
    MuOmniStageTrainer, StageResult, apply_stage_freezing, create_stage_repo, push_stage_to_hub,
    stage_training_arguments,
)  # fmt: skip

DB_PER_MEL_UNIT = 40.0  # one unit of the normalised log-mel is 4 log10 units of power: 40 dB
SPEECH_COLUMNS = ("audio", "text", "voice")
SFT_COLUMNS = ("task", "audio", "target")
PREVIOUS_KEYS = ("thinker_lm", "tokenizer", "audio_encoder")

# Defaults for the `tiny` preset on the built-in `tiny` data: ~5 minutes of one CPU core in all (measured
# with 1 torch thread: log-mels of 1650 clips ~10 s; codec ~0.11 s/step at batch 16 x 1 s; talker examples
# ~15 s for 690 pairs; talker ~0.26 s/step at batch 32; a round-trip evaluation ~5 s). The talker has ~600
# (text, speech) pairs in the assistant voice; its held-out loss is lowest after ~100-250 steps and rises
# after (it memorises the sentences), while the round-trip CER keeps drifting down slowly, so 600 steps.
# Keys that are not TrainingArguments fields configure the data (`DATA_FIELDS`): `crop_frames` (training
# crops, mel frames) and `roundtrip_sentences` (validation sentences spoken for the round-trip CER).
DEFAULTS = {
    "codec": {
        "max_steps": 600, "per_device_train_batch_size": 16, "learning_rate": 2e-3, "warmup_steps": 20,
        "lr_scheduler_type": "cosine", "weight_decay": 0.0, "eval_steps": 200, "logging_steps": 25,
        "crop_frames": 100,
    },
    "vocoder": {
        "max_steps": 600, "per_device_train_batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 20,
        "lr_scheduler_type": "cosine", "weight_decay": 0.0, "eval_steps": 200, "logging_steps": 25,
        "crop_frames": 64,
    },
    "talker": {
        "max_steps": 600, "per_device_train_batch_size": 32, "learning_rate": 2e-3, "warmup_steps": 30,
        "lr_scheduler_type": "cosine", "weight_decay": 0.01, "eval_steps": 200, "logging_steps": 25,
        "roundtrip_sentences": 32,
    },
}  # fmt: skip
# the models this stage trains, in order, each saved (and resumed) under `output_dir/<name>`
SUB_STAGES = tuple(DEFAULTS)
DATA_FIELDS = {"codec": ("crop_frames",), "vocoder": ("crop_frames",), "talker": ("roundtrip_sentences",)}
COMMON_ARGUMENTS = {
    "eval_strategy": "steps", "save_strategy": "no", "report_to": "none", "remove_unused_columns": False,
    "prediction_loss_only": True, "max_grad_norm": 1.0, "dataloader_num_workers": 0,
}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# trainers


class _SelfSupervisedStageTrainer(MuOmniStageTrainer):
    """The codec, talker and vocoder compute their own loss without `labels`: let `evaluate` ask them
    for it (Trainer only does for models with labels or a `return_loss` argument). Their losses are
    per-batch means, so gradient accumulation divides them by the number of accumulated batches."""

    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.can_return_loss = True


class StageDCodecTrainer(_SelfSupervisedStageTrainer):
    """Trains a `MuOmniCodec` on `{"mel", "mel_mask"}` batches (`MelCropCollator`).

    Metrics (`metric_dataset`: speech rows, each clip coded alone as at inference): `mel_l1` (normalised
    log-mel units) and `mel_distance_db` (RMS over mel bins, mean over real frames) of
    `decode(encode(mel))`, and per quantizer q `utilisation_q{q}` (fraction of the K codes used) and
    `perplexity_q{q}` (exp of the code entropy).
    """

    stage = "D-codec"
    metric_names = ("mel_l1", "mel_distance_db", "utilisation_q", "perplexity_q")

    def compute_stage_metrics(self, dataset) -> dict[str, float]:
        collate = MelCropCollator(self.data_collator.feature_extractor)
        codec, config = self.model, self.model.config
        l1_sum = db_sum = frames = 0.0
        counts = torch.zeros(config.num_quantizers, config.codebook_size)
        for row in dataset:
            batch = collate([row])
            mel = batch["mel"].to(codec.device)
            output = codec(mel)
            error = (output.reconstruction - mel)[0]  # (M, F)
            l1_sum += error.abs().mean(dim=0).sum().item()
            db_sum += (DB_PER_MEL_UNIT * error).pow(2).mean(dim=0).sqrt().sum().item()
            frames += mel.shape[-1]
            for q in range(config.num_quantizers):
                counts[q] += torch.bincount(output.codes[0, q].cpu(), minlength=config.codebook_size)
        metrics = {"mel_l1": l1_sum / frames, "mel_distance_db": db_sum / frames}
        for q, count in enumerate(counts):
            probabilities = count[count > 0] / count.sum()
            metrics[f"utilisation_q{q}"] = (count > 0).float().mean().item()
            metrics[f"perplexity_q{q}"] = math.exp(-(probabilities * probabilities.log()).sum().item())
        return metrics


class StageDVocoderTrainer(_SelfSupervisedStageTrainer):
    """Trains a `MuOmniNeuralVocoder` on `{"mel", "waveform"}` crops (`MelCropCollator(return_waveform=True)`).

    Metrics (`metric_dataset`: speech rows, whole clips): `mel_l1`, the L1 between the normalised
    log-mels of the vocoded and the original audio (the vocoder's own `mel_loss`), and `stft_loss`.
    """

    stage = "D-vocoder"
    metric_names = ("mel_l1", "stft_loss")

    def compute_stage_metrics(self, dataset) -> dict[str, float]:
        collate = MelCropCollator(self.data_collator.feature_extractor, return_waveform=True)
        mel_sum = stft_sum = 0.0
        for row in dataset:
            batch = collate([row])
            output = self.model(batch["mel"].to(self.model.device), batch["waveform"].to(self.model.device))
            mel_sum += output.mel_loss.item()
            stft_sum += output.stft_loss.item()
        return {"mel_l1": mel_sum / len(dataset), "stft_loss": stft_sum / len(dataset)}


class StageDTalkerTrainer(_SelfSupervisedStageTrainer):
    """Trains `speech_model.talker` on precomputed `{"text_embeds", "codes"}` pairs (`TalkerCollator`).

    Args (besides `Trainer`'s):
        speech_model ([`MuOmniForConditionalGeneration`]): the inference model; `model` must be its
            `talker`. Its thinker, codec and vocoder are frozen and pinned to eval mode here.
        asr_model ([`MuOmniAudioEncoderForCTC`], *optional*): the stage-B recogniser of the round trip.
        feature_extractor ([`MuOmniFeatureExtractor`]): the front end of the ASR.

    Metrics (`metric_dataset`: `talker_examples(..., keep_audio=True)` rows): `accuracy_q{q}`, the
    teacher-forced argmax accuracy of codebook q over real frames; with an ASR model, `roundtrip_cer`
    (speak -> ASR), `reference_asr_cer` (original audio -> ASR) and `codec_resynthesis_cer` (the clip's
    own codes -> codec.decode -> vocoder -> ASR). The last two do not depend on the talker and are
    computed once.
    """

    stage = "D-talker"
    metric_names = ("accuracy", "roundtrip_cer", "reference_asr_cer", "codec_resynthesis_cer")
    speech_frozen_modules = ("thinker", "codec", "vocoder")

    def __init__(self, *args, speech_model=None, asr_model=None, feature_extractor=None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(speech_model, MuOmniForConditionalGeneration) or speech_model.talker is not self.model:
            raise ValueError(
                "StageDTalkerTrainer needs speech_model=<the MuOmniForConditionalGeneration whose talker is the "
                "model being trained>, so that the metrics speak with that talker"
            )
        if asr_model is not None and feature_extractor is None:
            raise ValueError("asr_model needs the feature_extractor of its log-mel front end")
        frozen = tuple(name for name in self.speech_frozen_modules if getattr(speech_model, name) is not None)
        apply_stage_freezing(speech_model, ("talker",), frozen)
        if asr_model is not None:
            asr_model.requires_grad_(False).eval()  # not Trainer's model: nothing turns it back to training
        self.speech_model, self.asr_model, self.feature_extractor = speech_model, asr_model, feature_extractor
        self._reference_metrics = None

    def compute_stage_metrics(self, dataset) -> dict[str, float]:
        metrics = self._teacher_forced_accuracy(dataset)
        if self.asr_model is None or len(dataset) == 0:
            return metrics
        references = [normalize_transcript(text) for text in dataset["text"]]
        if self._reference_metrics is None:
            original = [torch.tensor(audio, dtype=torch.float32) for audio in dataset["audio"]]
            codes, lengths = self.data_collator.pad_codes([torch.tensor(c) for c in dataset["codes"]])
            resynthesised = self.speech_model.codes_to_audio(codes.to(self.model.device), lengths)
            self._reference_metrics = {
                "reference_asr_cer": character_error_rate(references, self._transcribe(original)),
                "codec_resynthesis_cer": character_error_rate(references, self._transcribe(resynthesised)),
            }
        text_ids, text_mask = self.data_collator.pad_text_ids(dataset["text_ids"])
        speech = self.speech_model.speak(text_ids.to(self.model.device), text_mask.to(self.model.device))
        hypotheses = self._transcribe(speech.audio)
        metrics["roundtrip_cer"] = character_error_rate(references, hypotheses)
        # generated / original length: ~1 when the talker stops where speech ends, > 1 when it runs on
        reference_frames = sum(len(codes[0]) for codes in dataset["codes"])
        metrics["roundtrip_length_ratio"] = float(speech.code_lengths.sum()) / max(reference_frames, 1)
        return {**metrics, **self._reference_metrics}

    def _teacher_forced_accuracy(self, dataset) -> dict[str, float]:
        total = 0
        num_quantizers = self.model.config.num_quantizers
        correct = torch.zeros(num_quantizers)
        batch_size = self.args.per_device_eval_batch_size
        for start in range(0, len(dataset), batch_size):
            batch = self.data_collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {key: value.to(self.model.device) for key, value in batch.items()}
            logits = self.model(**batch).logits[:, :, :-1]  # (B, Nq, T, K + 1): the end-of-speech step dropped
            real = batch["codes_mask"].bool()[:, None].expand_as(batch["codes"])  # (B, Nq, T)
            hits = (logits.argmax(dim=-1) == batch["codes"]) & real
            correct += hits.sum(dim=(0, 2)).cpu()
            total += int(batch["codes_mask"].sum())
        return {f"accuracy_q{q}": float(correct[q]) / max(total, 1) for q in range(num_quantizers)}

    def _transcribe(self, waveforms: list[torch.Tensor]) -> list[str]:
        return transcribe(self.asr_model, self.feature_extractor, waveforms)

# --------------------------------------------------------------------------------------------------
# data


def transcribe(
    asr_model: MuOmniAudioEncoderForCTC,
    feature_extractor: MuOmniFeatureExtractor,
    waveforms: list[torch.Tensor],
    batch_size: int = 16,
) -> list[str]:
    """Greedy CTC transcripts (normalised with `normalize_transcript`) of float waveforms (S_i,) at the
    extractor's rate. A clip too short to frame is transcribed as "" (every reference character then
    counts as deleted); a clip longer than the ASR accepts is cut to its limit."""
    tokenizer = MuOmniCTCTokenizer()
    longest = (audio_max_input_frames(asr_model.config) - 1) * feature_extractor.hop_length
    transcripts = [""] * len(waveforms)
    usable = [i for i, w in enumerate(waveforms) if w.shape[-1] >= feature_extractor.min_num_samples]
    for start in range(0, len(usable), batch_size):
        indices = usable[start : start + batch_size]
        clips = [waveforms[i].detach().float().cpu()[:longest] for i in indices]
        features = feature_extractor(clips, sampling_rate=feature_extractor.sampling_rate, return_tensors="pt")
        with torch.no_grad():
            output = asr_model(
                features["input_features"].to(asr_model.device),
                feature_attention_mask=features["attention_mask"].to(asr_model.device),
            )
        decoded = ctc_greedy_decode(output.logits, output.output_lengths, blank_id=asr_model.config.ctc_blank_id)
        for i, ids in zip(indices, decoded):
            transcripts[i] = normalize_transcript(tokenizer.decode(ids, group_tokens=False))
    return transcripts


def log_mel_rows(dataset, feature_extractor: MuOmniFeatureExtractor, batch_size: int = 32) -> list[dict]:
    """`[{"mel": (M, F_i)}]`: the whole log-mel of every clip of a speech dataset (decoded audio), computed
    once, so that a training step only crops (decoding and the STFT cost about as much as a codec step)."""
    rows = []
    for start in range(0, len(dataset), batch_size):
        audio = dataset[start : start + batch_size]["audio"]
        clips = [decoded_waveform({"audio": cell}, feature_extractor.sampling_rate) for cell in audio]
        rows += [{"mel": mel} for mel in whole_log_mels(feature_extractor, clips)]
    return rows


def _check_columns(dataset: Dataset, columns: tuple[str, ...], name: str) -> None:
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {missing}; it has {dataset.column_names}")


def _check_audio_feature(dataset: Dataset, sampling_rate: int, name: str) -> None:
    feature = dataset.features["audio"]
    if not isinstance(feature, Audio):
        raise ValueError(f"{name}: column 'audio' must be a datasets.Audio column, got {feature}")
    if feature.sampling_rate is not None and feature.sampling_rate != sampling_rate:
        raise ValueError(
            f"{name}: audio is declared at {feature.sampling_rate} Hz but MuOmni's front end expects "
            f"{sampling_rate} Hz; resample the dataset (cast_column('audio', Audio(sampling_rate={sampling_rate})))"
        )


def speech_splits(datasets: dict, sampling_rate: int) -> tuple[DatasetDict, DatasetDict | None]:
    """The `speech` DatasetDict and the `tts` rows of `sft` (None without `sft`), with audio decoded
    as arrays (`with_audio_arrays`), after checking splits, columns, sampling rates and emptiness."""
    if not isinstance(datasets, dict) or "speech" not in datasets:
        found = sorted(datasets) if isinstance(datasets, dict) else type(datasets).__name__
        raise ValueError(f"stage D needs datasets['speech'] (a DatasetDict with audio, text, voice); got {found}")
    checked = {}
    for name, columns in (("speech", SPEECH_COLUMNS), ("sft", SFT_COLUMNS)):
        if name not in datasets:
            continue
        splits = datasets[name]
        missing = [split for split in ("train", "validation") if split not in splits]
        if missing:
            raise ValueError(f"datasets[{name!r}] lacks the split(s) {missing}; it has {list(splits)}")
        decoded = {}
        for split in ("train", "validation"):
            dataset = splits[split].with_format(None)  # drop any decoding transform; decoded below
            label = f"datasets[{name!r}][{split!r}]"
            _check_columns(dataset, columns, label)
            _check_audio_feature(dataset, sampling_rate, label)
            if name == "sft":
                dataset = dataset.filter(lambda task: task == "tts", input_columns="task")
            elif len(dataset) == 0:
                raise ValueError(f"{label} is empty: stage D needs speech to train and validate on")
            decoded[split] = with_audio_arrays(dataset)
            if len(dataset):
                rate = decoded[split][0]["audio"]["sampling_rate"]
                if rate != sampling_rate:
                    raise ValueError(
                        f"{label}: the audio is sampled at {rate} Hz but MuOmni's front end expects "
                        f"{sampling_rate} Hz; resample it first"
                    )
        checked[name] = DatasetDict(decoded)
    return checked["speech"], checked.get("sft")


def assistant_pairs(speech: Dataset, tts: Dataset | None) -> list[tuple[str, dict]]:
    """(text, audio cell) pairs in the assistant voice: the `speech` rows in `ASSISTANT_VOICE` with their
    normalised transcript, then the `tts` rows with their written text (`target`)."""
    voices = speech["voice"]
    pairs = [(speech[i]["text"], speech[i]["audio"]) for i, voice in enumerate(voices) if voice == ASSISTANT_VOICE]
    if tts is not None:
        pairs += [(row["target"], row["audio"]) for row in tts]
    return pairs


def roundtrip_pairs(speech: Dataset, tts: Dataset | None) -> list[tuple[str, dict]]:
    """The sentences the round trip speaks: the `tts` rows (the written text `speak` receives at
    inference) when there are any, else the `speech` rows in the assistant voice."""
    if tts is not None and len(tts):
        return [(row["target"], row["audio"]) for row in tts]
    return assistant_pairs(speech, None)


@torch.no_grad()
def talker_examples(
    pairs: list[tuple[str, dict]],
    speech_model: MuOmniForConditionalGeneration,
    tokenizer,
    feature_extractor: MuOmniFeatureExtractor,
    keep_audio: bool = False,
) -> Dataset:
    """The talker's training rows, computed once with the frozen thinker and codec (both in eval mode).

    Returns a `Dataset` with `text` (str), `text_ids` (the thinker ids `speak` would receive: the
    tokenizer's ids without special tokens), `text_embeds` (L, Dt): `speech_model._talker_inputs`, i.e.
    the thinker's token embeddings that `speak` feeds the talker), `codes` (Nq, T): `codec.encode` of
    the clip's log-mel, each clip alone), and with `keep_audio` the waveform (`audio`, float list).
    """
    rows = {"text": [], "text_ids": [], "text_embeds": [], "codes": []}
    if keep_audio:
        rows["audio"] = []
    codec = speech_model.codec
    for text, audio in pairs:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        text_ids, text_mask = speech_model.speech_text_ids(torch.tensor([ids], device=speech_model.device))
        if int(text_mask.sum()) == 0:
            raise ValueError(f"the transcript {text!r} has no token to speak")
        mel = feature_extractor(audio["array"], sampling_rate=audio["sampling_rate"], return_tensors="pt")
        codes = codec.encode(mel["input_features"].to(codec.device))  # (1, Nq, T)
        rows["text"].append(text)
        rows["text_ids"].append(text_ids[0].tolist())
        rows["text_embeds"].append(speech_model._talker_inputs(text_ids, text_mask)[0].float().cpu().tolist())
        rows["codes"].append(codes[0].cpu().tolist())
        if keep_audio:
            rows["audio"].append(audio["array"].tolist())
    return Dataset.from_dict(rows)


def assemble_speech_model(
    config: MuOmniConfig,
    thinker_lm: MuOmniForCausalLM,
    codec: MuOmniCodec,
    talker: MuOmniTalkerForConditionalGeneration | None = None,
    vocoder: MuOmniNeuralVocoder | None = None,
) -> MuOmniForConditionalGeneration:
    """The inference model made of stage outputs: `config` with the thinker's text config taken from
    `thinker_lm` (its vocabulary follows its tokenizer), whose language model, codec, talker and vocoder
    are the given ones (weights copied strictly). The audio and vision encoders keep fresh weights."""
    if thinker_lm.config.hidden_size != config.talker_config.thinker_hidden_size:
        raise ValueError(
            f"the thinker language model has hidden_size {thinker_lm.config.hidden_size} but the talker expects "
            f"thinker_hidden_size={config.talker_config.thinker_hidden_size}"
        )
    fields = config.to_dict()
    fields["thinker_config"]["text_config"] = thinker_lm.config.to_dict()
    fields["enable_audio_output"] = True
    model = MuOmniForConditionalGeneration(MuOmniConfig(**fields))
    model.thinker.language_model.load_state_dict(thinker_lm.state_dict())
    model.codec.load_state_dict(codec.state_dict())
    if talker is not None:
        model.talker.load_state_dict(talker.state_dict())
    if vocoder is not None:
        model.vocoder.load_state_dict(vocoder.state_dict())
    return model


# --------------------------------------------------------------------------------------------------
# recipe


def stage_d_training_arguments(
    sub_stage: str, output_dir: str, seed: int, training_overrides: dict | None
) -> tuple[TrainingArguments, dict]:
    """`(TrainingArguments, options)` of a sub-stage ("codec", "vocoder" or "talker"), saving to
    `output_dir/<sub_stage>`: `DEFAULTS[sub_stage]`, then the top-level `training_overrides` (those that
    are not sub-stage names apply to every sub-stage; a data option applies where it exists), then
    `training_overrides[sub_stage]`. Unknown settings are a ValueError."""
    overrides = dict(training_overrides or {})
    for name in DEFAULTS:
        if name in overrides and not isinstance(overrides[name], dict):
            raise ValueError(f"training_overrides[{name!r}] must be a dict of settings, got {overrides[name]!r}")
    if "resume_from_checkpoint" in overrides:
        raise ValueError(
            "stage D: a checkpoint belongs to one sub-stage; give training_overrides[<sub-stage>]"
            "['resume_from_checkpoint'] (codec, vocoder or talker), not a top-level one"
        )
    elsewhere = {option for name, options in DATA_FIELDS.items() if name != sub_stage for option in options}
    shared = {
        key: value
        for key, value in overrides.items()
        if key not in DEFAULTS and (key in DATA_FIELDS[sub_stage] or key not in elsewhere)
    }
    options = {key: DEFAULTS[sub_stage][key] for key in DATA_FIELDS[sub_stage]}
    defaults = {**COMMON_ARGUMENTS, **{k: v for k, v in DEFAULTS[sub_stage].items() if k not in options}}
    try:
        return stage_training_arguments(
            os.path.join(output_dir, sub_stage), seed, defaults, {**shared, **overrides.get(sub_stage, {})}, options
        )
    except ValueError as error:
        raise ValueError(f"stage D {sub_stage}: {error}") from None


def _load_previous(previous: dict | None, config: MuOmniConfig, allow_stand_ins: bool):
    """(thinker LM, tokenizer, ASR model or None) from the previous stages' directories; with
    `allow_stand_ins`, missing entries become fresh models (tests only: their metrics mean nothing)."""
    previous = dict(previous or {})
    missing = [key for key in PREVIOUS_KEYS if not previous.get(key)]
    if missing and not allow_stand_ins:
        raise ValueError(
            f"stage D needs previous[{missing}]: 'thinker_lm' and 'tokenizer' from stage A (the talker is "
            "conditioned on the thinker's token embeddings) and 'audio_encoder' from stage B (the round-trip "
            f"CER); got {sorted(previous)}. Pass allow_stand_ins=True to use untrained stand-ins (tests only)"
        )
    for key in PREVIOUS_KEYS:
        if previous.get(key) and not os.path.isdir(previous[key]):
            raise ValueError(f"previous[{key!r}] = {previous[key]!r} is not a directory")
    if previous.get("thinker_lm"):
        thinker_lm = MuOmniForCausalLM.from_pretrained(previous["thinker_lm"])
    else:
        thinker_lm = MuOmniForCausalLM(config.thinker_config.text_config)
    tokenizer = AutoTokenizer.from_pretrained(previous["tokenizer"]) if previous.get("tokenizer") else MuOmniTokenizer()
    if len(tokenizer) > thinker_lm.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the thinker language model only "
            f"{thinker_lm.config.vocab_size} embeddings: they do not belong together"
        )
    asr_model = None
    if previous.get("audio_encoder"):
        asr_model = MuOmniAudioEncoderForCTC.from_pretrained(previous["audio_encoder"])
    elif allow_stand_ins:
        asr_model = MuOmniAudioEncoderForCTC(config.thinker_config.audio_config)
    return thinker_lm.eval(), tokenizer, asr_model


def _check_front_end(config: MuOmniConfig) -> MuOmniFeatureExtractor:
    """The feature extractor shared by the codec, the vocoder and the ASR, after checking they agree."""
    codec, vocoder, audio = config.codec_config, config.vocoder_config, config.thinker_config.audio_config
    bins = {"codec": codec.num_mel_bins, "vocoder": vocoder.num_mel_bins, "audio encoder": audio.num_mel_bins}
    if len(set(bins.values())) != 1:
        raise ValueError(f"the codec, vocoder and audio encoder must share num_mel_bins, got {bins}")
    if config.sampling_rate % codec.mel_frames_per_second or (
        config.sampling_rate // codec.mel_frames_per_second != vocoder.hop_length
    ):
        raise ValueError(
            f"the codec's mel rate ({codec.mel_frames_per_second} frames/s at {config.sampling_rate} Hz) must "
            f"match the vocoder's hop_length ({vocoder.hop_length} samples)"
        )
    return MuOmniFeatureExtractor(
        feature_size=codec.num_mel_bins, sampling_rate=config.sampling_rate, hop_length=vocoder.hop_length,
        n_fft=vocoder.n_fft,
    )  # fmt: skip


def _train_and_save(trainer: MuOmniStageTrainer, name: str, metrics: dict[str, float]) -> str:
    """Train a sub-stage, add its wall time and final evaluation to `metrics` (prefixed `name_`), save
    the model (and its processing class) to `trainer.args.output_dir` and return that directory."""
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    metrics[f"{name}_train_seconds"] = time.perf_counter() - started
    skipped = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch")
    final = trainer.evaluate()
    metrics.update({f"{name}_{key[len('eval_'):]}": value for key, value in final.items() if key not in skipped})
    trainer.save_model()
    return trainer.args.output_dir


def run_stage_d(
    config: MuOmniConfig,
    datasets: dict,
    output_dir: str,
    previous: dict[str, str] | None = None,
    training_overrides: dict | None = None,
    seed: int = 0,
    allow_stand_ins: bool = False,
) -> StageResult:
    """Train the codec, then the neural vocoder (if `config.vocoder_config.vocoder_type == "neural"`),
    then the talker; save each under `output_dir/<name>` and return their directories and final metrics.

    Args:
        config ([`MuOmniConfig`]): the codec, talker and vocoder configs are used; the thinker's text
            config is taken from the stage-A model.
        datasets (`dict`): `"speech"` (a DatasetDict with train / validation splits and `audio`, `text`,
            `voice` columns, e.g. the built-in one) and optionally `"sft"` (its `tts` rows join the talker's data).
        previous (`dict[str, str]`): `"thinker_lm"` and `"tokenizer"` (stage A), `"audio_encoder"`
            (stage B, a `MuOmniAudioEncoderForCTC` directory, for the round-trip CER).
        training_overrides (`dict`, *optional*): `{"codec": {...}, "vocoder": {...}, "talker": {...}}`
            of `TrainingArguments` fields and data settings (`DEFAULTS`); other top-level keys apply to all.
        seed (`int`): seeds model init, data order and crops.
        allow_stand_ins (`bool`): let missing `previous` entries be untrained stand-ins (tests only).

    Returns:
        [`StageResult`] with `outputs` {"codec", "talker"[, "vocoder"]} and `metrics` prefixed
        `codec_` / `vocoder_` / `talker_`, plus `talker_roundtrip_cer`, `reference_asr_cer` and
        `codec_resynthesis_cer` when an ASR model is available.
    """
    if not isinstance(config, MuOmniConfig):
        raise TypeError(f"config must be a MuOmniConfig, got {type(config).__name__}")
    feature_extractor = _check_front_end(config)
    speech, sft = speech_splits(datasets, feature_extractor.sampling_rate)
    train_pairs = assistant_pairs(speech["train"], sft["train"] if sft else None)
    eval_pairs = assistant_pairs(speech["validation"], sft["validation"] if sft else None)
    if not train_pairs or not eval_pairs:
        raise ValueError(
            f"no speech in the assistant voice {ASSISTANT_VOICE!r} to train the talker on (train: "
            f"{len(train_pairs)} pairs, validation: {len(eval_pairs)})"
        )
    settings = {name: stage_d_training_arguments(name, output_dir, seed, training_overrides) for name in DEFAULTS}
    # with push_to_hub, the whole stage folder (codec/, vocoder/, talker/) goes up once at the end; the
    # sub-stage Trainers must not push their own folder to the repository's root
    hub_args = copy.copy(settings["talker"][0])
    for args, _ in settings.values():
        args.push_to_hub = False
    create_stage_repo(hub_args, output_dir)  # before training: a rejected token fails now, not at the end
    thinker_lm, tokenizer, asr_model = _load_previous(previous, config, allow_stand_ins)
    outputs, metrics = {}, {}

    # codec: every voice
    args, options = settings["codec"]
    set_seed(seed)
    started = time.perf_counter()
    train_mels, eval_mels = (log_mel_rows(speech[split], feature_extractor) for split in ("train", "validation"))
    metrics["codec_data_seconds"] = time.perf_counter() - started
    codec = MuOmniCodec(config.codec_config)
    trainer = StageDCodecTrainer(
        model=codec,
        args=args,
        train_dataset=train_mels,
        eval_dataset=eval_mels,
        metric_dataset=eval_mels,
        data_collator=MelCropCollator(feature_extractor, max_frames=options["crop_frames"]),
        processing_class=feature_extractor,
    )
    outputs["codec"] = _train_and_save(trainer, "codec", metrics)

    # neural vocoder: every voice, real mels; before the talker, so that the round trip speaks through it
    vocoder = None
    if config.vocoder_config.vocoder_type == "neural":
        args, options = settings["vocoder"]
        set_seed(seed)
        vocoder = MuOmniNeuralVocoder(config.vocoder_config)
        trainer = StageDVocoderTrainer(
            model=vocoder,
            args=args,
            train_dataset=speech["train"],
            eval_dataset=speech["validation"],
            metric_dataset=speech["validation"],
            data_collator=MelCropCollator(feature_extractor, max_frames=options["crop_frames"], return_waveform=True),
            processing_class=feature_extractor,
        )
        outputs["vocoder"] = _train_and_save(trainer, "vocoder", metrics)

    # talker: the assistant voice, conditioned and targeted by the frozen thinker and codec
    args, options = settings["talker"]
    set_seed(seed)
    speech_model = assemble_speech_model(config, thinker_lm, codec.eval(), vocoder=vocoder).eval()
    started = time.perf_counter()
    train_examples = talker_examples(train_pairs, speech_model, tokenizer, feature_extractor)
    eval_examples = talker_examples(eval_pairs, speech_model, tokenizer, feature_extractor)
    spoken = roundtrip_pairs(speech["validation"], sft["validation"] if sft else None)
    metric_examples = talker_examples(
        spoken[: options["roundtrip_sentences"]], speech_model, tokenizer, feature_extractor, keep_audio=True
    )
    metrics["talker_data_seconds"] = time.perf_counter() - started
    trainer = StageDTalkerTrainer(
        model=speech_model.talker,
        args=args,
        train_dataset=train_examples,
        eval_dataset=eval_examples,
        metric_dataset=metric_examples,
        data_collator=TalkerCollator(pad_token_id=tokenizer.pad_token_id or 0),
        speech_model=speech_model,
        asr_model=asr_model,
        feature_extractor=feature_extractor,
    )
    outputs["talker"] = _train_and_save(trainer, "talker", metrics)
    for name in ("reference_asr_cer", "codec_resynthesis_cer"):  # the round trip's references, not the talker's
        if f"talker_{name}" in metrics:
            metrics[name] = metrics.pop(f"talker_{name}")
    push_stage_to_hub(hub_args, output_dir, "D")
    return StageResult(stage="D", outputs=outputs, metrics=metrics)


__all__ = [
    "DEFAULTS",
    "SUB_STAGES",
    "StageDCodecTrainer",
    "StageDTalkerTrainer",
    "StageDVocoderTrainer",
    "assemble_speech_model",
    "assistant_pairs",
    "log_mel_rows",
    "roundtrip_pairs",
    "run_stage_d",
    "speech_splits",
    "stage_d_training_arguments",
    "talker_examples",
    "transcribe",
]
