"""Stage D (speech output): the codec, vocoder and talker trainers change exactly their own
parameters, the talker learns from `codec.encode` codes and the thinker's own embeddings (what
`speak` feeds at inference), the metrics are computed and plotted, and bad input fails early."""

import os

import pytest
import torch
from datasets import Audio, DatasetDict
from transformers import TrainingArguments

from muomni import (
    MuOmniAudioEncoderForCTC,
    MuOmniCodec,
    MuOmniForCausalLM,
    MuOmniNeuralVocoder,
    MuOmniTalkerForConditionalGeneration,
    get_preset_config,
    train_tokenizer,
)
from muomni.training.data import ASSISTANT_VOICE, build_builtin_dataset, with_audio_arrays
from muomni.training.collators import MelCropCollator, TalkerCollator
from muomni.training.stage_d import (
    StageDCodecTrainer,
    StageDTalkerTrainer,
    StageDVocoderTrainer,
    assemble_speech_model,
    assistant_pairs,
    log_mel_rows,
    run_stage_d,
    speech_splits,
    talker_examples,
)
from muomni.processing import MuOmniFeatureExtractor

# odd sizes expose shape bugs; short generation guards and few Griffin-Lim iterations keep it fast
TINY = {
    "thinker_config": {
        "text_config": {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                        "num_attention_heads": 4, "num_key_value_heads": 2},
        "audio_config": {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 37},
        "vision_config": {"image_size": 32, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                          "intermediate_size": 37, "projection_dim": 16},
    },
    "talker_config": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "thinker_hidden_size": 32, "codebook_size": 19,
                      "max_frames_per_token": 2, "min_frames_guard": 4},
    "codec_config": {"hidden_size": 24, "num_layers": 1, "codebook_dim": 12, "codebook_size": 19, "kmeans_iters": 2},
    "vocoder_config": {"griffin_lim_iters": 2, "mel_inversion_iters": 2, "hidden_size": 16, "intermediate_size": 37,
                       "num_layers": 1},
}  # fmt: skip
QUICK = {
    "max_steps": 2, "eval_strategy": "no", "logging_steps": 1, "per_device_train_batch_size": 2,
    "per_device_eval_batch_size": 4, "learning_rate": 1e-2, "warmup_steps": 0, "lr_scheduler_type": "constant",
    "disable_tqdm": True,
}  # fmt: skip


def tiny_config(**overrides):
    config = get_preset_config("tiny", **TINY)
    for name, fields in overrides.items():
        for key, value in fields.items():
            setattr(getattr(config, name), key, value)
    return config


def quick_args(output_dir, **overrides) -> TrainingArguments:
    fields = {**QUICK, "report_to": "none", "save_strategy": "no", "remove_unused_columns": False,
              "prediction_loss_only": True, **overrides}  # fmt: skip
    return TrainingArguments(output_dir=str(output_dir), **fields)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module) -> set[str]:
    return {name for name, value in module.state_dict().items() if not torch.equal(before[name], value)}


@pytest.fixture(scope="module")
def data():
    return build_builtin_dataset(scale="test", show_progress=False)


@pytest.fixture(scope="module")
def config():
    return tiny_config()


@pytest.fixture(scope="module")
def extractor():
    return MuOmniFeatureExtractor()


@pytest.fixture(scope="module")
def previous(data, config, tmp_path_factory):
    """Stand-ins for the stage A (language model + tokenizer) and stage B (CTC) outputs."""
    root = tmp_path_factory.mktemp("previous")
    texts = list(data["text"]["train"]["text"]) + list(data["speech"]["train"]["text"])
    tokenizer = train_tokenizer(texts, vocab_size=300)
    torch.manual_seed(0)
    lm = MuOmniForCausalLM(config.thinker_config.text_config)
    asr = MuOmniAudioEncoderForCTC(config.thinker_config.audio_config)
    paths = {"thinker_lm": str(root / "lm"), "tokenizer": str(root / "tok"), "audio_encoder": str(root / "asr")}
    lm.save_pretrained(paths["thinker_lm"])
    tokenizer.save_pretrained(paths["tokenizer"])
    asr.save_pretrained(paths["audio_encoder"])
    return {"paths": paths, "lm": lm.eval(), "tokenizer": tokenizer, "asr": asr.eval()}


@pytest.fixture(scope="module")
def speech(data, extractor):
    return speech_splits(data, extractor.sampling_rate)


@pytest.fixture(scope="module")
def codec(config, speech, extractor, tmp_path_factory) -> MuOmniCodec:
    """A codec after two training steps (initialised codebooks), in eval mode."""
    torch.manual_seed(0)
    codec = MuOmniCodec(config.codec_config)
    trainer = StageDCodecTrainer(
        model=codec, args=quick_args(tmp_path_factory.mktemp("codec")),
        train_dataset=log_mel_rows(speech[0]["train"], extractor),
        data_collator=MelCropCollator(extractor, max_frames=16),
    )  # fmt: skip
    trainer.train()
    return codec.eval()


# --------------------------------------------------------------------------------------------------
# collators and data


def test_mel_collator_cuts_windows_of_the_whole_clip_log_mel(speech, extractor):
    rows = [speech[0]["train"][i] for i in range(3)]
    whole = [extractor(r["audio"]["array"], sampling_rate=16000, return_tensors="pt")["input_features"][0]
             for r in rows]  # fmt: skip
    torch.manual_seed(3)
    batch = MelCropCollator(extractor, max_frames=20, return_waveform=True)(rows)
    assert batch["mel"].shape == (3, 128, 20) and batch["waveform"].shape == (3, 20 * extractor.hop_length)
    for mel, clip_mel, row, waveform in zip(batch["mel"], whole, rows, batch["waveform"]):
        starts = [s for s in range(clip_mel.shape[-1] - 19) if torch.equal(clip_mel[:, s : s + 20], mel)]
        assert len(starts) == 1  # a window of the clip normalised whole, not a crop normalised alone
        s = starts[0] * extractor.hop_length
        torch.testing.assert_close(waveform, torch.as_tensor(row["audio"]["array"])[s : s + 20 * 160])
    # precomputed log-mels give the same whole clips, padded and masked
    padded = MelCropCollator(extractor)(log_mel_rows(speech[0]["train"].select(range(3)), extractor))
    for i, clip_mel in enumerate(whole):
        assert int(padded["mel_mask"][i].sum()) == clip_mel.shape[-1]
        torch.testing.assert_close(padded["mel"][i, :, : clip_mel.shape[-1]], clip_mel)
        assert (padded["mel"][i, :, clip_mel.shape[-1] :] == 0).all()


def test_mel_collator_rejects_bad_rows(extractor):
    with pytest.raises(ValueError, match="max_frames must be a positive integer"):
        MelCropCollator(extractor, max_frames=0)
    with pytest.raises(ValueError, match=r"audio is sampled at 8000 Hz, the feature extractor expects 16000 Hz"):
        MelCropCollator(extractor)([{"audio": {"array": torch.zeros(8000).numpy(), "sampling_rate": 8000}}])
    with pytest.raises(ValueError, match="rows need decoded audio in column 'audio'"):
        MelCropCollator(extractor)([{"audio": {"bytes": b"", "path": None}}])
    with pytest.raises(ValueError, match="need 'text_embeds' and 'codes'"):
        TalkerCollator()([{"codes": [[1]]}])


def test_talker_examples_are_codec_codes_and_the_thinker_embeddings_speak_feeds(config, speech, extractor, previous,
                                                                                codec):  # fmt: skip
    speech_model = assemble_speech_model(config, previous["lm"], codec).eval()
    pairs = assistant_pairs(speech[0]["train"], speech[1]["train"])
    voices = [v for v in speech[0]["train"]["voice"] if v == ASSISTANT_VOICE]
    assert len(pairs) == len(voices) + len(speech[1]["train"]) > 0
    examples = talker_examples(pairs, speech_model, previous["tokenizer"], extractor)
    batch = TalkerCollator(pad_token_id=1)([examples[i] for i in range(len(examples))])
    embeddings = previous["lm"].get_input_embeddings()
    for i, (text, audio) in enumerate(pairs):
        ids = previous["tokenizer"](text, add_special_tokens=False)["input_ids"]
        assert examples[i]["text_ids"] == ids
        # the conditioning is stage A's token embeddings of the transcript, left-padded ...
        expected = embeddings(torch.tensor(ids))
        n = len(ids)
        torch.testing.assert_close(batch["text_embeds"][i, -n:], expected, rtol=0, atol=1e-6)
        assert batch["text_attention_mask"][i].tolist() == [0] * (batch["text_attention_mask"].shape[1] - n) + [1] * n
        # ... which is what `speak` feeds the talker at inference
        torch.testing.assert_close(
            speech_model._talker_inputs(torch.tensor([ids]), torch.ones(1, n, dtype=torch.long))[0], expected
        )
        # the targets are the codec's codes of the clip's whole log-mel
        mel = extractor(audio["array"], sampling_rate=16000, return_tensors="pt")["input_features"]
        codes = codec.encode(mel)[0]
        t = codes.shape[-1]
        assert torch.equal(batch["codes"][i, :, :t], codes) and int(batch["codes_mask"][i].sum()) == t
    assert not speech_model.codec.training


# --------------------------------------------------------------------------------------------------
# trainers: what two optimisation steps change


def test_codec_trainer_changes_the_codec_and_reports_its_metrics(config, speech, extractor, tmp_path):
    torch.manual_seed(0)
    codec = MuOmniCodec(config.codec_config)
    before = snapshot(codec)
    eval_rows = log_mel_rows(speech[0]["validation"], extractor)
    trainer = StageDCodecTrainer(
        model=codec, args=quick_args(tmp_path, eval_strategy="steps", eval_steps=1),
        train_dataset=log_mel_rows(speech[0]["train"], extractor), eval_dataset=eval_rows, metric_dataset=eval_rows,
        data_collator=MelCropCollator(extractor, max_frames=16),
    )  # fmt: skip
    trainer.train()
    assert changed(before, codec) == set(before)  # every weight and both codebooks' init/usage state
    assert bool(codec.quantizer.layers[0].initialized)
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"loss", "eval_loss", "eval_mel_l1", "eval_mel_distance_db", "eval_utilisation_q0",
            "eval_utilisation_q1", "eval_perplexity_q0"} <= logged  # fmt: skip
    assert "eval_perplexity" not in logged  # exp(loss) means nothing for a codec
    metrics = trainer.evaluate()
    assert 0 < metrics["eval_utilisation_q0"] <= 1 and metrics["eval_mel_l1"] > 0
    assert os.path.isfile(tmp_path / "training_curves.png")


def test_talker_trainer_changes_only_the_talker(config, speech, extractor, previous, codec, tmp_path):
    speech_model = assemble_speech_model(config, previous["lm"], codec)
    pairs = assistant_pairs(speech[0]["train"], speech[1]["train"])
    examples = talker_examples(pairs, speech_model, previous["tokenizer"], extractor)
    metric_examples = talker_examples(
        assistant_pairs(speech[0]["validation"], None), speech_model, previous["tokenizer"], extractor, keep_audio=True
    )
    asr = previous["asr"]
    before = {name: snapshot(getattr(speech_model, name)) for name in ("thinker", "codec", "talker")}
    asr_before = snapshot(asr)
    trainer = StageDTalkerTrainer(
        model=speech_model.talker, args=quick_args(tmp_path / "talker"), train_dataset=examples,
        eval_dataset=examples, metric_dataset=metric_examples, data_collator=TalkerCollator(pad_token_id=1),
        speech_model=speech_model, asr_model=asr, feature_extractor=extractor,
    )  # fmt: skip
    trainer.train()
    assert changed(before["talker"], speech_model.talker) == set(before["talker"])
    assert not changed(before["thinker"], speech_model.thinker) and not changed(before["codec"], speech_model.codec)
    assert not changed(asr_before, asr)
    speech_model.train()  # what Trainer does to its model every step must not reach the frozen parts
    assert not speech_model.codec.training and not speech_model.thinker.training
    assert not any(p.requires_grad for p in speech_model.codec.parameters())

    metrics = trainer.evaluate()
    for name in ("loss", "accuracy_q0", "accuracy_q1", "roundtrip_cer", "reference_asr_cer", "codec_resynthesis_cer",
                 "roundtrip_length_ratio"):  # fmt: skip
        assert f"eval_{name}" in metrics and metrics[f"eval_{name}"] >= 0
    assert 0 <= metrics["eval_accuracy_q0"] <= 1
    assert os.path.isfile(tmp_path / "talker" / "training_curves.png")


def test_talker_trainer_needs_the_speech_model_of_its_talker(config, tmp_path):
    talker = MuOmniTalkerForConditionalGeneration(config.talker_config)
    with pytest.raises(ValueError, match="speech_model=<the MuOmniForConditionalGeneration whose talker"):
        StageDTalkerTrainer(model=talker, args=quick_args(tmp_path), data_collator=TalkerCollator())


def test_vocoder_trainer_changes_the_vocoder(config, speech, extractor, tmp_path):
    torch.manual_seed(0)
    vocoder_config = tiny_config(vocoder_config={"vocoder_type": "neural"}).vocoder_config
    vocoder = MuOmniNeuralVocoder(vocoder_config)
    before = snapshot(vocoder)
    trainer = StageDVocoderTrainer(
        model=vocoder, args=quick_args(tmp_path), train_dataset=speech[0]["train"],
        metric_dataset=speech[0]["validation"].select(range(2)),
        data_collator=MelCropCollator(extractor, max_frames=16, return_waveform=True),
    )  # fmt: skip
    trainer.train()
    assert changed(before, vocoder) == set(before)
    metrics = trainer.evaluate()
    assert metrics["eval_mel_l1"] > 0 and metrics["eval_stft_loss"] > 0


# --------------------------------------------------------------------------------------------------
# the recipe


def test_run_stage_d_saves_codec_vocoder_talker_and_reports_the_round_trip(data, previous, tmp_path):
    config = tiny_config(vocoder_config={"vocoder_type": "neural"})
    result = run_stage_d(
        config, data, str(tmp_path), previous=previous["paths"],
        training_overrides={**QUICK, "codec": {"crop_frames": 16}, "vocoder": {"crop_frames": 16}}, seed=1,
    )  # fmt: skip
    assert result.stage == "D" and set(result.outputs) == {"codec", "vocoder", "talker"}
    for name, path in result.outputs.items():
        assert os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(
            os.path.join(path, "training_curves.png")
        ), name
    codec = MuOmniCodec.from_pretrained(result.outputs["codec"])
    talker = MuOmniTalkerForConditionalGeneration.from_pretrained(result.outputs["talker"])
    assert codec.config.codebook_size == talker.config.codebook_size == 19
    for name in ("codec_mel_l1", "codec_mel_distance_db", "codec_utilisation_q0", "codec_utilisation_q1",
                 "vocoder_mel_l1", "talker_loss", "talker_accuracy_q0", "talker_roundtrip_cer", "reference_asr_cer",
                 "codec_resynthesis_cer", "codec_train_seconds", "talker_train_seconds"):  # fmt: skip
        assert name in result.metrics and result.metrics[name] == result.metrics[name], name  # present, not NaN


# --------------------------------------------------------------------------------------------------
# bad input fails before any training


def _replace_split(data, name, split, dataset):
    return {**data, name: DatasetDict({**data[name], split: dataset})}


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_speech", r"needs datasets\['speech'\]"),
        ("missing_column", r"datasets\['speech'\]\['train'\] lacks the column\(s\) \['voice'\]"),
        ("missing_split", r"lacks the split\(s\) \['validation'\]"),
        ("empty_split", r"datasets\['speech'\]\['validation'\] is empty"),
        ("wrong_rate", r"declared at 8000 Hz but MuOmni's front end expects 16000 Hz"),
        ("no_assistant_voice", "no speech in the assistant voice"),
        ("missing_previous", r"stage D needs previous\[\['audio_encoder'\]\]"),
        ("bad_override", r"stage D codec: unknown training_overrides \['crop_size'\]"),
        ("bad_front_end", "must share num_mel_bins"),
        ("shared_checkpoint", r"a checkpoint belongs to one sub-stage"),
    ],
)
def test_bad_input_is_refused_before_training(case, match, data, previous, tmp_path):
    config, paths, overrides = tiny_config(), dict(previous["paths"]), dict(QUICK)
    if case == "no_speech":
        data = {key: value for key, value in data.items() if key != "speech"}
    elif case == "missing_column":
        data = _replace_split(data, "speech", "train", data["speech"]["train"].remove_columns("voice"))
    elif case == "missing_split":
        data = {**data, "speech": DatasetDict({"train": data["speech"]["train"]})}
    elif case == "empty_split":
        data = _replace_split(data, "speech", "validation", data["speech"]["validation"].select([]))
    elif case == "wrong_rate":
        data = _replace_split(data, "speech", "train", data["speech"]["train"].cast_column("audio", Audio(8000)))
    elif case == "no_assistant_voice":
        other = data["speech"]["train"].filter(lambda voice: voice != ASSISTANT_VOICE, input_columns="voice")
        data = {key: value for key, value in _replace_split(data, "speech", "train", other).items() if key != "sft"}
    elif case == "missing_previous":
        del paths["audio_encoder"]
    elif case == "bad_override":
        overrides["codec"] = {"crop_size": 8}
    elif case == "shared_checkpoint":
        overrides["resume_from_checkpoint"] = str(tmp_path)
    elif case == "bad_front_end":
        config = tiny_config(codec_config={"num_mel_bins": 80})
    with pytest.raises(ValueError, match=match):
        run_stage_d(config, data, str(tmp_path), previous=paths, training_overrides=overrides)
    assert not os.listdir(tmp_path)  # nothing was trained or written


def test_stand_ins_only_with_the_flag(data, tmp_path):
    with pytest.raises(ValueError, match="Pass allow_stand_ins=True"):
        run_stage_d(tiny_config(), data, str(tmp_path), previous=None, training_overrides=QUICK)
    with pytest.raises(ValueError, match=r"previous\['thinker_lm'\] = '/nonexistent' is not a directory"):
        run_stage_d(tiny_config(), data, str(tmp_path), previous={"thinker_lm": "/nonexistent"}, allow_stand_ins=True)


def test_speech_splits_decode_audio_without_torchcodec(data, extractor):
    speech, tts = speech_splits(data, 16000)
    assert set(tts["train"]["task"]) == {"tts"}
    row = speech["train"][0]
    assert row["audio"]["sampling_rate"] == 16000 and len(row["audio"]["array"]) > 0
    # an already-decoded dataset is accepted as well
    again, _ = speech_splits({**data, "speech": with_audio_arrays(data["speech"])}, 16000)
    assert again["train"][0]["audio"]["array"].tolist() == row["audio"]["array"].tolist()
