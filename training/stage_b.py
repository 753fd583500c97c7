"""Stage B: train the audio encoder with its character CTC head (`MuOmniAudioEncoderForCTC`).

    run_stage_b(config, datasets, output_dir, previous=None, training_overrides=None, seed=0) -> StageResult
    StageBTrainer   trains the whole encoder + head; reports CER / WER on the validation clips

Data. `datasets` is the built-in dict (its `speech` DatasetDict) or one `DatasetDict` with an `audio`
(`datasets.Audio`) and a `text` column (e.g. from `load_stage_dataset`), map-style (not streamed).
Audio is read with soundfile (`with_audio_arrays`), at 16 kHz: a clip at another rate is a
ValueError before training, unless the `Audio` feature asks for 16 kHz (`Audio(sampling_rate=16000)`,
what `load_stage_dataset(..., resample=True)` sets), in which case it is resampled.

Targets are `normalize_transcript(text)` (lowercase words and apostrophes, the form the built-in
transcripts have; `normalize_targets=False` keeps the text as is) encoded by `MuOmniCTCTokenizer`.
Before training, every split is checked clip by clip from the file headers (no decoding): clips
longer than `max_train_seconds` (train) or than the encoder's `max_source_seconds`, and clips whose
transcript cannot fit their CTC frames (25 per second), are dropped and counted (a warning says how
many; none in the built-in data).

Features. Log-mel features are computed once, before training, and kept in memory
(`precompute_features`; by default when the train audio is at most 2 hours, ~51 kB per second of
audio). Measured on the tiny built-in data (1500 train clips, 46 min of audio, one thread): decoding
and log-mel cost ~3 s of CPU once when precomputed, but ~4.6 s in every epoch on the fly, against
~6 s for the epoch's training steps of the tiny encoder (+75%). With
`precompute_features=False`, the collator decodes and extracts every batch (for corpora that do not
fit in memory). Training batches are grouped by length (`train_sampling_strategy="group_by_length"`)
and SpecAugment-masked (`spec_augment`, a collator option; never on evaluation batches).

Metrics: greedy CTC decoding (`ctc_greedy_decode`), ids -> text with the CTC tokenizer, then
`normalize_transcript` on hypothesis and reference; corpus-level CER and WER. On the built-in test
split (which has a `voice` column) the clips of held-out voices are also scored on their own
(`test_heldout_cer`, `test_heldout_wer`).

Saved to `output_dir`: the model, `preprocessor_config.json` (the feature extractor) and the CTC
tokenizer's files: `outputs={"audio_encoder": output_dir}`.
"""

import math
from collections.abc import Mapping

from datasets import Audio, Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from transformers import PreTrainedConfig, set_seed
from transformers.utils import logging

from muomni.configuration import MuOmniAudioEncoderConfig
from muomni.modeling_audio_encoder import (
    MuOmniAudioEncoderForCTC,
    audio_encoder_output_lengths,
    ctc_greedy_decode,
    ctc_required_frames,
)
from muomni.processing import MuOmniCTCTokenizer, MuOmniFeatureExtractor

from .collators import CTCCollator, SpecAugment
from .data.builtin import with_audio_arrays
from .data.speech import is_heldout_voice, normalize_transcript
from .metrics import character_error_rate, word_error_rate
from .sources import audio_info, check_columns, check_splits
from .trainer import MuOmniStageTrainer, StageResult, push_stage_to_hub, stage_training_arguments

logger = logging.get_logger(__name__)

# Defaults for the tiny preset on 2 CPU cores (~3 minutes on the built-in `tiny` data); every key can
# be overridden through `training_overrides`.
STAGE_B_TRAINING_DEFAULTS = {
    "num_train_epochs": 30,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.08,
    "weight_decay": 0.01,
    "adam_beta2": 0.98,
    "max_grad_norm": 1.0,
    "logging_steps": 10,
    "eval_strategy": "steps",
    "eval_steps": 0.2,
    "save_strategy": "no",
    "report_to": "none",
    "train_sampling_strategy": "group_by_length",
    "remove_unused_columns": False,  # the collator reads `audio` / `text`, which are no forward() arguments
    "dataloader_pin_memory": False,
    "dataloader_num_workers": 0,
}
# Stage settings that are not TrainingArguments fields (also given through `training_overrides`).
STAGE_B_OPTIONS = {
    "max_train_seconds": 20.0,  # longer train clips are dropped
    "precompute_features": None,  # None: when the train audio lasts at most precompute_max_hours
    "precompute_max_hours": 2.0,
    "spec_augment": True,  # True (SpecAugment() defaults), False, or a dict of SpecAugment fields
    "normalize_targets": True,
}


class StageBTrainer(MuOmniStageTrainer):
    """Stage B: CTC training of the whole `MuOmniAudioEncoderForCTC`.

    Evaluation batches use the collator without SpecAugment. The CTC loss (`ctc_loss_reduction="mean"`:
    per clip, divided by its target length, averaged over the batch) does not take `num_items_in_batch`,
    so `Trainer` is told the model accepts no loss kwargs and divides the loss by the gradient
    accumulation steps itself (otherwise accumulation would scale the gradients up).
    """

    stage = "B"
    trainable_modules = ()  # everything
    metric_names = ("cer", "wer")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False

    def _evaluation_collator(self):
        collator = self.data_collator
        return collator.without_augmentation() if hasattr(collator, "without_augmentation") else collator

    def get_eval_dataloader(self, eval_dataset=None):
        training_collator, self.data_collator = self.data_collator, self._evaluation_collator()
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = training_collator

    def compute_stage_metrics(self, dataset) -> dict[str, float]:
        collator = self._evaluation_collator()
        device = next(self.model.parameters()).device
        lengths = dataset["length"] if isinstance(dataset, Dataset) else [row["length"] for row in dataset]
        order = sorted(range(len(lengths)), key=lengths.__getitem__)  # little padding per batch
        references, hypotheses = [], []
        batch_size = self.args.per_device_eval_batch_size
        for start in range(0, len(order), batch_size):
            rows = [dataset[i] for i in order[start : start + batch_size]]
            batch = collator(rows)
            outputs = self.model(
                input_features=batch["input_features"].to(device),
                feature_attention_mask=batch["feature_attention_mask"].to(device),
            )
            for ids in ctc_greedy_decode(outputs.logits, outputs.output_lengths, self.model.config.ctc_blank_id):
                hypotheses.append(normalize_transcript(collator.tokenizer.decode(ids, group_tokens=False)))
            references += [normalize_transcript(row["text"]) for row in rows]
        return {"cer": character_error_rate(references, hypotheses), "wer": word_error_rate(references, hypotheses)}


def stage_b_data(datasets) -> DatasetDict:
    """The speech DatasetDict of stage B: the built-in dict's `speech`, or the DatasetDict given."""
    if isinstance(datasets, IterableDatasetDict) or (
        isinstance(datasets, Mapping) and any(isinstance(d, IterableDataset) for d in datasets.values())
    ):
        raise ValueError("stage B needs map-style data: load it with streaming=False")
    if isinstance(datasets, DatasetDict):
        data = datasets
    elif isinstance(datasets, Mapping) and isinstance(datasets.get("speech"), DatasetDict):
        data = datasets["speech"]
    else:
        raise TypeError(
            "datasets must be the built-in dict (with 'speech') or a DatasetDict with 'audio' and 'text' columns, "
            f"got {type(datasets).__name__}"
        )
    check_splits(data, required=("train", "validation"), stage="B")
    check_columns(data, ("audio", "text"), stage="B")
    for split, dataset in data.items():
        if not isinstance(dataset.features["audio"], Audio):
            raise ValueError(
                f"stage B: column 'audio' of split {split!r} must be a datasets.Audio column, got "
                f"{dataset.features['audio']}"
            )
    return data


def _audio_encoder_config(config: PreTrainedConfig) -> MuOmniAudioEncoderConfig:
    if isinstance(config, MuOmniAudioEncoderConfig):
        return config
    thinker = getattr(config, "thinker_config", config)
    audio_config = getattr(thinker, "audio_config", None)
    if not isinstance(audio_config, MuOmniAudioEncoderConfig):
        raise TypeError(
            "config must be a MuOmniConfig, MuOmniThinkerConfig or MuOmniAudioEncoderConfig, got "
            f"{type(config).__name__}"
        )
    return audio_config


def select_clips(
    dataset: Dataset,
    split: str,
    config: MuOmniAudioEncoderConfig,
    collator: CTCCollator,
    max_seconds: float,
) -> Dataset:
    """`dataset` without the clips that cannot be trained on, with a `length` column (mel frames).

    Reads only the file headers. Raises a ValueError for audio at the wrong rate (see the module
    docstring); drops (with a warning) clips longer than `max_seconds` (or the encoder's
    `max_source_seconds`), clips too short for one STFT frame, empty transcripts and transcripts that
    do not fit their CTC frames.
    """
    feature = dataset.features["audio"]
    target_rate = collator.feature_extractor.sampling_rate
    if feature.sampling_rate not in (None, target_rate):
        raise ValueError(
            f"stage B: column 'audio' of split {split!r} is cast to {feature.sampling_rate} Hz; the encoder expects "
            f"{target_rate} Hz"
        )
    raw = dataset.cast_column("audio", Audio(sampling_rate=feature.sampling_rate, decode=False))
    extractor = collator.feature_extractor
    longest = min(max_seconds, config.max_source_seconds)
    lengths, keep = [], []
    reasons = {"too long": 0, "too short": 0, "empty transcript": 0, "transcript too long for CTC": 0}
    for start in range(0, len(raw), 1000):
        chunk = raw.select_columns(["audio", "text"])[start : start + 1000]
        targets = collator.encode_targets(chunk["text"])
        for offset, (cell, target) in enumerate(zip(chunk["audio"], targets)):
            samples, rate = audio_info(cell)
            if rate != target_rate:
                if not collator.resample:
                    raise ValueError(
                        f"stage B: clip {start + offset} of split {split!r} is sampled at {rate} Hz but the encoder "
                        f"expects {target_rate} Hz; resample it (load_stage_dataset(..., resample=True))"
                    )
                samples = math.ceil(samples * target_rate / rate)
            frames = extractor.num_frames(samples)
            if samples / target_rate > longest:
                reasons["too long"] += 1
                continue
            if samples < extractor.min_num_samples:
                reasons["too short"] += 1
                continue
            if not target:
                reasons["empty transcript"] += 1
                continue
            if ctc_required_frames(target) > audio_encoder_output_lengths(config, frames):
                reasons["transcript too long for CTC"] += 1
                continue
            keep.append(start + offset)
            lengths.append(frames)
    dropped = {reason: count for reason, count in reasons.items() if count}
    if dropped:
        logger.warning(
            f"stage B: dropped {sum(dropped.values())} of {len(dataset)} clips of split {split!r}: {dropped}"
        )
    if not keep:
        raise ValueError(f"stage B: no usable clip left in split {split!r} ({dropped})")
    selected = dataset.select(keep) if len(keep) < len(dataset) else dataset
    return selected.add_column("length", lengths)


def precompute_features(dataset: Dataset, collator: CTCCollator, batch_size: int = 64) -> list[dict]:
    """Rows `{"input_features": (F, M) float32 tensor, frames first, "labels": list[int], "text", "length"
    [, "voice"]}` in memory. Frames come first so that `len(row["input_features"])` is the clip's length,
    which `Trainer`'s group-by-length sampler reads."""
    decoded = with_audio_arrays(dataset)
    order = sorted(range(len(dataset)), key=dataset["length"].__getitem__)  # little padding per extraction batch
    rows: list[dict | None] = [None] * len(dataset)
    extra = [c for c in ("voice",) if c in dataset.column_names]
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        batch = decoded[indices]
        clips = collator.waveforms([{"audio": audio} for audio in batch["audio"]])
        extracted = collator.feature_extractor(
            clips, sampling_rate=collator.feature_extractor.sampling_rate, return_tensors="pt"
        )
        targets = collator.encode_targets(batch["text"])
        for k, index in enumerate(indices):
            length = int(extracted["attention_mask"][k].sum())
            rows[index] = {
                "input_features": extracted["input_features"][k, :, :length].T.contiguous(),  # (F, M)
                "labels": targets[k],
                "text": batch["text"][k],
                "length": length,
                **{column: batch[column][k] for column in extra},
            }
    return rows


def _spec_augment(option) -> SpecAugment | None:
    if option is True:
        return SpecAugment()
    if option is False or option is None:
        return None
    if isinstance(option, Mapping):
        return SpecAugment(**option)
    if isinstance(option, SpecAugment):
        return option
    raise ValueError(f"spec_augment must be True, False, a dict of SpecAugment fields or a SpecAugment, got {option!r}")


def run_stage_b(
    config: PreTrainedConfig,
    datasets,
    output_dir: str,
    previous: dict[str, str] | None = None,
    training_overrides: dict | None = None,
    seed: int = 0,
) -> StageResult:
    """Train the audio encoder with CTC (see the module docstring) and save it to `output_dir`.

    Args:
        config: a `MuOmniConfig` (or its thinker config, or a `MuOmniAudioEncoderConfig`).
        datasets: the built-in dict, or a map-style `DatasetDict` with `audio` and `text` columns.
        output_dir (`str`): model, feature extractor, CTC tokenizer, `training_curves.png`.
        previous (`dict`, *optional*): `{"audio_encoder": dir}` continues from a saved encoder.
        training_overrides (`dict`, *optional*): `TrainingArguments` fields and `STAGE_B_OPTIONS` keys.
        seed (`int`): seeds the model init, the data order, SpecAugment and dropout.

    Returns:
        [`StageResult`] with `outputs={"audio_encoder": output_dir}` and metrics `eval_loss`, `eval_cer`,
        `eval_wer`, `test_*` (if there is a test split), `test_heldout_*` (held-out voices, built-in data),
        `train_loss`, `train_runtime`.
    """
    previous = dict(previous or {})
    audio_config = _audio_encoder_config(config)
    args, options = stage_training_arguments(
        output_dir, seed, STAGE_B_TRAINING_DEFAULTS, training_overrides, STAGE_B_OPTIONS
    )
    data = stage_b_data(datasets)
    tokenizer = MuOmniCTCTokenizer()
    if tokenizer.vocab_size != audio_config.ctc_vocab_size:
        raise ValueError(
            f"the CTC tokenizer has {tokenizer.vocab_size} characters but the encoder's ctc_vocab_size is "
            f"{audio_config.ctc_vocab_size}"
        )
    feature_extractor = MuOmniFeatureExtractor(
        feature_size=audio_config.num_mel_bins,
        sampling_rate=audio_config.sampling_rate,
        hop_length=audio_config.sampling_rate // audio_config.frames_per_second,
        max_length_seconds=audio_config.max_source_seconds,
    )
    resample = data["train"].features["audio"].sampling_rate is not None
    collator = CTCCollator(
        feature_extractor, tokenizer, resample=resample, normalize_targets=options["normalize_targets"],
        spec_augment=_spec_augment(options["spec_augment"]),
    )
    splits = {
        split: select_clips(dataset, split, audio_config, collator,
                            options["max_train_seconds"] if split == "train" else audio_config.max_source_seconds)
        for split, dataset in data.items()
        if split in ("train", "validation", "test")
    }
    precompute = options["precompute_features"]
    if precompute is None:
        hours = sum(splits["train"]["length"]) / audio_config.frames_per_second / 3600
        precompute = hours <= options["precompute_max_hours"]
    if precompute:
        splits = {split: precompute_features(dataset, collator) for split, dataset in splits.items()}
    else:
        splits = {split: with_audio_arrays(dataset) for split, dataset in splits.items()}

    set_seed(seed)
    if "audio_encoder" in previous:
        model = MuOmniAudioEncoderForCTC.from_pretrained(previous["audio_encoder"])
    else:
        model = MuOmniAudioEncoderForCTC(audio_config)
    trainer = StageBTrainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["validation"],
        data_collator=collator,
        processing_class=feature_extractor,
    )
    train_output = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    metrics = {"train_loss": train_output.training_loss, "train_runtime": train_output.metrics["train_runtime"]}
    metrics.update(trainer.evaluate())
    if "test" in splits:
        test = splits["test"]
        metrics.update(trainer.evaluate(test, metric_key_prefix="test"))
        voices = test["voice"] if isinstance(test, Dataset) and "voice" in test.column_names else (
            [row.get("voice") for row in test] if isinstance(test, list) else None
        )
        if voices is not None and any(v is not None and is_heldout_voice(v) for v in voices):
            heldout = [i for i, v in enumerate(voices) if v is not None and is_heldout_voice(v)]
            subset = test.select(heldout) if isinstance(test, Dataset) else [test[i] for i in heldout]
            metrics.update(trainer.evaluate(subset, metric_key_prefix="test_heldout"))
    trainer.save_model(output_dir)
    if trainer.args.should_save:  # the main process only, like save_model
        tokenizer.save_pretrained(output_dir)
    push_stage_to_hub(trainer.args, output_dir, "B")
    return StageResult(stage="B", outputs={"audio_encoder": output_dir}, metrics=metrics)


__all__ = [
    "STAGE_B_OPTIONS",
    "STAGE_B_TRAINING_DEFAULTS",
    "StageBTrainer",
    "precompute_features",
    "run_stage_b",
    "select_clips",
]
