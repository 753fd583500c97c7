"""Stage B (audio encoder + CTC): the CTC collator (padding, labels, SpecAugment, precomputed = on the
fly), which parameters a step changes, gradient accumulation with the CTC loss, the recipe's metrics
and artefacts, and bad input."""

import math
import os

import numpy as np
import pytest
import torch
from datasets import Audio, Dataset, DatasetDict
from transformers import TrainingArguments

from muomni import MuOmniAudioEncoderForCTC, MuOmniCTCTokenizer, MuOmniFeatureExtractor
from muomni.configuration import MuOmniAudioEncoderConfig
from muomni.training.collators import CTCCollator, SpecAugment
from muomni.training.stage_b import StageBTrainer, precompute_features, run_stage_b, select_clips

pytest.importorskip("espeakng_loader", reason="the built-in dataset needs the espeakng-loader package")
from muomni.training.data import build_builtin_dataset  # noqa: E402
from muomni.training.data.speech import encode_flac  # noqa: E402


def audio_config(**overrides) -> MuOmniAudioEncoderConfig:
    fields = {"num_mel_bins": 16, "d_model": 24, "encoder_layers": 1, "encoder_attention_heads": 2,
              "encoder_ffn_dim": 37, "initializer_range": 0.1}  # fmt: skip
    return MuOmniAudioEncoderConfig(**{**fields, **overrides})


def collator(spec_augment=None, resample=False) -> CTCCollator:
    return CTCCollator(MuOmniFeatureExtractor(feature_size=16), MuOmniCTCTokenizer(), resample=resample,
                       spec_augment=spec_augment)  # fmt: skip


def tone(seconds: float, rate: int = 16000, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def speech_dataset(clips: list[tuple[np.ndarray, int, str]]) -> Dataset:
    """An Audio column of FLAC-encoded clips (what the built-in data and `audiofolder` give) + text."""
    cells = [{"bytes": encode_flac(audio, rate), "path": None} for audio, rate, _ in clips]
    dataset = Dataset.from_dict({"audio": cells, "text": [text for _, _, text in clips]})
    return dataset.cast_column("audio", Audio(decode=False)).cast_column("audio", Audio())


@pytest.fixture(scope="module")
def builtin():
    return build_builtin_dataset(scale="test", show_progress=False)


@pytest.fixture(scope="module")
def train_rows(builtin):
    rows = collator()
    selected = select_clips(builtin["speech"]["train"], "train", audio_config(), rows, max_seconds=30.0)
    return precompute_features(selected, rows)


def args(tmp_path, **overrides) -> TrainingArguments:
    fields = {
        "output_dir": str(tmp_path), "per_device_train_batch_size": 3, "learning_rate": 1e-2, "max_steps": 2,
        "report_to": "none", "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "seed": 0,
        "remove_unused_columns": False, "dataloader_pin_memory": False,
    }  # fmt: skip
    return TrainingArguments(**{**fields, **overrides})


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ---- the collator -----------------------------------------------------------------------------------


def test_ctc_collator_pads_features_and_labels():
    rows = [{"audio": {"array": tone(0.5), "sampling_rate": 16000}, "text": "Hi, there!"},
            {"audio": {"array": tone(0.3), "sampling_rate": 16000}, "text": "ok"}]  # fmt: skip
    batch = collator()(rows)
    assert batch["input_features"].shape == (2, 16, 50) and batch["feature_attention_mask"].sum(-1).tolist() == [50, 30]
    tokenizer = MuOmniCTCTokenizer()
    assert batch["labels"][0].tolist() == tokenizer("hi there")["input_ids"]  # normalised transcript
    assert batch["labels"][1].tolist() == tokenizer("ok")["input_ids"] + [-100] * 6
    assert (batch["input_features"][1, :, 30:] == 0).all()

    # precomputed rows (frames first) collate to the same batch
    precomputed = [
        {"input_features": batch["input_features"][i, :, :n].T, "labels": [t for t in labels.tolist() if t >= 0]}
        for i, (n, labels) in enumerate(zip([50, 30], batch["labels"]))
    ]
    again = collator()(precomputed)
    for key in batch:
        assert torch.equal(again[key], batch[key]), key


def test_spec_augment_masks_only_real_frames_and_not_evaluation_batches():
    torch.manual_seed(0)
    rows = [{"audio": {"array": tone(1.0, frequency=f), "sampling_rate": 16000}, "text": "a"} for f in (300, 600)]
    rows[1]["audio"]["array"] = rows[1]["audio"]["array"][:8000]
    augmenting = collator(SpecAugment(time_masks=2, max_time_width=10, freq_masks=1, max_freq_width=4))
    clean, masked = augmenting.without_augmentation()(rows), augmenting(rows)
    changed = masked["input_features"] != clean["input_features"]
    assert changed.any() and not changed[1, :, 50:].any()  # padding untouched
    assert augmenting.without_augmentation().spec_augment is None and augmenting.spec_augment is not None
    with pytest.raises(ValueError, match="max_time_fraction must be in \\[0, 1\\]"):
        SpecAugment(max_time_fraction=2.0)


def test_wrong_sampling_rate_is_an_error_unless_resampling():
    rows = [{"audio": {"array": tone(0.5, rate=8000), "sampling_rate": 8000}, "text": "ok"}]
    with pytest.raises(ValueError, match="row 0 is sampled at 8000 Hz but the feature extractor expects 16000 Hz"):
        collator()(rows)
    assert collator(resample=True)(rows)["feature_attention_mask"].sum() == 50


# ---- the trainer ----------------------------------------------------------------------------------------


def test_two_steps_change_every_parameter_and_log_cer(tmp_path, train_rows):
    torch.manual_seed(0)
    model = MuOmniAudioEncoderForCTC(audio_config())
    before = parameters(model)
    trainer = StageBTrainer(
        model=model, args=args(tmp_path, eval_strategy="steps", eval_steps=2), train_dataset=train_rows,
        eval_dataset=train_rows[:3], data_collator=collator(SpecAugment()),
    )
    trainer.train()
    after = parameters(model)
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert unchanged == [] and trainer.parameter_counts["frozen"] == 0, unchanged
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"loss", "eval_loss", "eval_cer", "eval_wer"} <= logged
    assert os.path.isfile(tmp_path / "training_curves.png")


def test_gradient_accumulation_with_the_ctc_loss(tmp_path, train_rows):
    def one_update(batch_size: int, accumulation: int):
        torch.manual_seed(0)
        model = MuOmniAudioEncoderForCTC(audio_config())
        training = args(
            tmp_path / f"b{batch_size}", per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd", learning_rate=0.1,
            weight_decay=0.0, max_grad_norm=0.0, lr_scheduler_type="constant",
        )
        StageBTrainer(model=model, args=training, train_dataset=train_rows[:6], data_collator=collator()).train()
        return parameters(model)

    large, accumulated = one_update(6, 1), one_update(3, 2)
    for name in large:
        torch.testing.assert_close(accumulated[name], large[name], rtol=1e-4, atol=1e-6, msg=name)


# ---- the recipe -------------------------------------------------------------------------------------------


def test_run_stage_b_on_the_builtin_data(tmp_path, builtin):
    result = run_stage_b(
        audio_config(num_mel_bins=128), builtin, str(tmp_path),
        training_overrides={"max_steps": 2, "per_device_train_batch_size": 4, "eval_steps": 1, "disable_tqdm": True},
    )
    assert result.stage == "B" and result.outputs == {"audio_encoder": str(tmp_path)}
    for key in ("eval_loss", "eval_cer", "eval_wer", "test_cer", "test_wer", "test_heldout_cer", "train_loss"):
        assert math.isfinite(result.metrics[key]), key
    assert 0 <= result.metrics["eval_cer"] and 0 <= result.metrics["test_heldout_wer"]
    assert os.path.isfile(tmp_path / "training_curves.png")
    model = MuOmniAudioEncoderForCTC.from_pretrained(str(tmp_path))
    extractor = MuOmniFeatureExtractor.from_pretrained(str(tmp_path))
    tokenizer = MuOmniCTCTokenizer.from_pretrained(str(tmp_path))
    assert extractor.feature_size == model.config.num_mel_bins == 128 and tokenizer.vocab_size == 97


def test_run_stage_b_bad_input(tmp_path):
    good = speech_dataset([(tone(1.0), 16000, "hello"), (tone(1.0), 16000, "world")])
    data = DatasetDict({"train": good, "validation": good})
    renamed = DatasetDict({split: d.rename_column("text", "sentence") for split, d in data.items()})
    with pytest.raises(ValueError, match="'train' has no column 'text' \\(available: \\['audio', 'sentence'\\]\\)"):
        run_stage_b(audio_config(), renamed, str(tmp_path))
    slow = speech_dataset([(tone(1.0, rate=8000), 8000, "hello")])
    with pytest.raises(ValueError, match="clip 0 of split 'train' is sampled at 8000 Hz"):
        run_stage_b(audio_config(), DatasetDict({"train": slow, "validation": good}), str(tmp_path))
    with pytest.raises(ValueError, match="stage B needs map-style data"):
        run_stage_b(audio_config(), DatasetDict({s: d.to_iterable_dataset() for s, d in data.items()}), str(tmp_path))
    with pytest.raises(ValueError, match="split 'validation' is empty"):
        run_stage_b(audio_config(), DatasetDict({"train": good, "validation": good.select([])}), str(tmp_path))
    # a transcript that cannot fit its clip's CTC frames (0.2 s = 5 frames) is dropped, with none left
    with pytest.raises(ValueError, match="no usable clip left in split 'train'.*transcript too long for CTC"):
        run_stage_b(audio_config(), DatasetDict({"train": speech_dataset([(tone(0.2), 16000, "a long sentence")]),
                                                 "validation": good}), str(tmp_path))  # fmt: skip
