"""Stage E (multimodal SFT): chat conversion of marker rows, exact assistant-only labels, media order in
batches, which parameters two steps change (frozen encoders pinned in eval mode, deterministic under
dropout), the per-task scores and majority baselines, strict assembly from saved stage outputs, the
recipe's artefacts, bad input."""

import os
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import DatasetDict
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoProcessor, TrainingArguments

from muomni import (
    MuOmniAudioEncoderForCTC,
    MuOmniCodec,
    MuOmniForCausalLM,
    MuOmniForConditionalGeneration,
    MuOmniTalkerForConditionalGeneration,
    MuOmniVisionEncoder,
    get_preset_config,
    train_tokenizer,
)
from muomni.training.stage_e import (
    MuOmniSFTCollator,
    StageETrainer,
    assemble_muomni,
    build_sft_split,
    majority_answers,
    run_stage_e,
    sft_conversation,
    sft_metrics,
    token_f1,
)

pytest.importorskip("espeakng_loader", reason="the built-in dataset needs the espeakng-loader package")
from muomni.training.data import build_builtin_dataset  # noqa: E402

SR = 16000


def picture(seed: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8))


def clip(seconds: float, seed: int) -> dict:
    samples = 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))
    return {"array": samples.astype(np.float32), "sampling_rate": SR}


def row(task: str, user: str, answer: str, image=None, audio=None, history=()) -> dict:
    messages = [*history, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"task": task, "messages": messages, "image": image, "audio": audio, "target": answer, "question_type": ""}


ROWS = [
    row("image_qa", "<image>\nWhat colour is the star?", "red", image=picture(0)),
    row("asr", "<audio>\nTranscribe the audio.", "the cat sat on the mat", audio=clip(0.9, 1)),
    row("chat", "And you?", "I am fine.", history=[{"role": "user", "content": "Hello there."},
                                                   {"role": "assistant", "content": "Hi! How are you?"}]),
    row("image_caption", "<image>\nDescribe the image.", "two blue circles", image=picture(2)),
    row("speech_qa", "<audio>", "October", audio=clip(0.5, 3)),
    row("tts", "Say this out loud: Good morning.", "Good morning.", audio=clip(0.7, 4)),
]


@pytest.fixture(scope="module")
def builtin():
    return build_builtin_dataset(scale="test", show_progress=False)


@pytest.fixture(scope="module")
def tokenizer(builtin):
    texts = [m["content"] for split in builtin["sft"].values() for messages in split["messages"] for m in messages]
    return train_tokenizer(texts + [m["content"] for r in ROWS for m in r["messages"]], vocab_size=400)


def tiny_config(vocab_size: int, dropout: float = 0.0):
    """Small odd sizes; `dropout` in both encoders, so eval mode is observable."""
    return get_preset_config(
        "tiny",
        thinker_config={
            "text_config": {"vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 37,
                            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
            "vision_config": {"image_size": 32, "patch_size": 8, "hidden_size": 24, "intermediate_size": 37,
                              "dropout": dropout},
            "audio_config": {"d_model": 24, "encoder_ffn_dim": 37, "dropout": dropout},
        },
        talker_config={"thinker_hidden_size": 32, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1},
        codec_config={"hidden_size": 24},
    )  # fmt: skip


@pytest.fixture(scope="module")
def stage_dirs(tmp_path_factory, tokenizer) -> dict[str, str]:
    """What stages A-D would save: a language model + tokenizer, a CTC encoder, a vision encoder, talker and codec."""
    config = tiny_config(len(tokenizer), dropout=0.3)
    root = tmp_path_factory.mktemp("stages")
    torch.manual_seed(0)
    thinker = config.thinker_config
    thinker.text_config.use_cache = False  # as a Trainer saves it (TrainingArguments.use_cache=False)
    components = {
        "thinker_lm": MuOmniForCausalLM(thinker.text_config),
        "audio_encoder": MuOmniAudioEncoderForCTC(thinker.audio_config),
        "vision_encoder": MuOmniVisionEncoder(thinker.vision_config),
        "talker": MuOmniTalkerForConditionalGeneration(config.talker_config),
        "codec": MuOmniCodec(config.codec_config),
    }
    dirs = {}
    for name, model in components.items():
        model.save_pretrained(root / name)
        dirs[name] = str(root / name)
    tokenizer.save_pretrained(root / "thinker_lm")
    dirs["tokenizer"] = dirs["thinker_lm"]
    return dirs


@pytest.fixture(scope="module")
def assembled(stage_dirs, tokenizer):
    return assemble_muomni(tiny_config(len(tokenizer)), stage_dirs)


# ---- data ------------------------------------------------------------------------------------------


def test_markers_become_media_parts_and_tts_audio_is_dropped():
    image_qa, asr = sft_conversation(ROWS[0]), sft_conversation(ROWS[1])
    assert image_qa[0]["content"] == [{"type": "image", "image": ROWS[0]["image"]},
                                      {"type": "text", "text": "\nWhat colour is the star?"}]  # fmt: skip
    assert image_qa[1] == {"role": "assistant", "content": [{"type": "text", "text": "red"}]}
    assert asr[0]["content"][0]["type"] == "audio" and np.array_equal(asr[0]["content"][0]["audio"],
                                                                      ROWS[1]["audio"]["array"])  # fmt: skip
    tts = sft_conversation(ROWS[5])  # its audio is the answer's speech, not an input
    assert [part["type"] for message in tts for part in message["content"]] == ["text", "text"]
    resampled = sft_conversation({**ROWS[1], "audio": {"array": np.zeros(8000, np.float32), "sampling_rate": 8000}})
    assert resampled[0]["content"][0]["audio"].shape == (16000,)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({**ROWS[0], "image": None}, "has the marker <image> but the row has no image"),
        ({**ROWS[2], "image": picture(5)}, "has an image but no <image> marker"),
        (row("image_qa", "<image><image>two?", "no", image=picture(0)), "has 2 <image> markers"),
        ({**ROWS[1], "audio": np.zeros(10)}, "decode Audio columns with muomni.training.data.with_audio_arrays"),
    ],
)
def test_bad_rows(bad, match):
    with pytest.raises(ValueError, match=match):
        sft_conversation(bad)


def assistant_spans(ids: list[int], tokenizer) -> list[int]:
    """Positions of assistant tokens, found independently of the chat template's generation marks: after
    each `<|im_start|>assistant\\n` up to and including the next `<|im_end|>`."""
    prefix = tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    positions = []
    for start in range(len(ids)):
        if ids[start : start + len(prefix)] == prefix:
            end = ids.index(im_end, start + len(prefix))
            positions.extend(range(start + len(prefix), end + 1))
    return positions


def test_labels_are_exactly_the_assistant_tokens(assembled):
    _, processor, _ = assembled
    tokenizer = processor.tokenizer
    batch = MuOmniSFTCollator(processor)(ROWS)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    for i, example in enumerate(ROWS):
        expected = torch.full_like(ids[i], -100)
        spans = assistant_spans(ids[i].tolist(), tokenizer)
        expected[spans] = ids[i][spans]
        assert torch.equal(labels[i], expected), example["task"]
        answers = [m["content"] + "<|im_end|>" for m in example["messages"] if m["role"] == "assistant"]
        assert tokenizer.decode(labels[i][labels[i] != -100]) == "".join(answers)
        length = int(mask[i].sum())
        assert mask[i, :length].all() and not mask[i, length:].any()  # right padding
    media = torch.isin(ids, torch.tensor([processor.image_token_id, processor.audio_token_id]))
    assert (labels[media] == -100).all() and (labels[mask == 0] == -100).all()


def test_media_are_stacked_in_placeholder_order(assembled):
    _, processor, _ = assembled
    batch = MuOmniSFTCollator(processor)(ROWS)
    images = processor.image_processor([ROWS[0]["image"], ROWS[3]["image"]], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"], images)
    clips = [ROWS[1]["audio"]["array"], ROWS[4]["audio"]["array"]]  # not the tts row's (an output)
    audio = processor.feature_extractor(clips, sampling_rate=SR, return_tensors="pt")
    torch.testing.assert_close(batch["input_features"], audio["input_features"])
    assert torch.equal(batch["feature_attention_mask"], audio["attention_mask"])
    image_tokens = (batch["input_ids"] == processor.image_token_id).sum(dim=1).tolist()
    audio_tokens = (batch["input_ids"] == processor.audio_token_id).sum(dim=1).tolist()
    frames = audio["attention_mask"].sum(dim=1).tolist()
    assert image_tokens == [5, 0, 0, 5, 0, 0]
    assert audio_tokens == [0, processor.audio_token_count(frames[0]), 0, 0, processor.audio_token_count(frames[1]), 0]
    text_only = MuOmniSFTCollator(processor)([ROWS[2], ROWS[5]])
    assert "pixel_values" not in text_only and "input_features" not in text_only


def test_generation_prompts_are_left_padded_and_stop_before_the_answer(assembled):
    _, processor, _ = assembled
    prompts = MuOmniSFTCollator(processor).prompts(ROWS[:3])
    assert prompts["attention_mask"][:, -1].all() and not prompts["attention_mask"][:, 0].all()
    texts = processor.tokenizer.batch_decode(prompts["input_ids"], skip_special_tokens=False)
    for text, example in zip(texts, ROWS[:3]):
        assert text.endswith("<|im_start|>assistant\n") and not text.endswith(example["target"] + "<|im_end|>\n")
    assert texts[2].count("<|im_start|>assistant\n") == 2  # the chat history keeps its earlier answer


def test_build_sft_split_adds_question_types_and_unasked_image_questions(builtin):
    images = builtin["images"]["train"]
    lookup = {q.lower(): t for qs, ts in zip(images["questions"], images["question_types"]) for q, t in zip(qs, ts)}
    sft = build_sft_split(builtin["sft"]["train"], type_lookup=lookup)
    assert len(sft) == len(builtin["sft"]["train"])
    assert all(t in lookup.values() for task, t in zip(sft["task"], sft["question_type"]) if task == "image_qa")
    assert isinstance(sft[0]["image"] or sft[-1]["audio"], (PIL.Image.Image, dict))
    extended = build_sft_split(builtin["sft"]["train"], images, lookup, include_image_questions=True)
    questions = sum(len(q) for q in images["questions"])
    sft_image_qa = sum(task == "image_qa" for task in sft["task"])
    assert sum(task == "image_qa" for task in extended["task"]) == questions  # every question once
    assert len(extended) == len(sft) - sft_image_qa + questions
    only = build_sft_split(builtin["sft"]["train"], tasks=("asr",))
    assert set(only["task"]) == {"asr"}


# ---- training ----------------------------------------------------------------------------------------


def test_two_steps_train_the_thinker_lm_and_projectors_with_encoders_frozen_in_eval_mode(
    tmp_path, stage_dirs, tokenizer
):
    model, processor, _ = assemble_muomni(tiny_config(len(tokenizer), dropout=0.3), stage_dirs)
    assert model.config.thinker_config.vision_config.dropout == 0.3  # the checkpoints' configs
    before = {name: value.clone() for name, value in model.state_dict().items()}
    watched = {  # module -> the output it hands on
        "visual": (model.thinker.visual, "image_tokens"),
        "audio": (model.thinker.audio_tower.audio_encoder, "last_hidden_state"),
        "language_model": (model.thinker.language_model, "logits"),
    }
    seen = {name: [] for name in watched}
    for name, (module, field) in watched.items():
        module.register_forward_hook(
            lambda module, args, output, name=name, field=field: seen[name].append(
                (module.training, getattr(output, field).detach().clone())
            )
        )
    # every step sees the same rows (two copies each): the frozen encoders must give identical features
    # at both steps despite their dropout of 0.3
    train = [ROWS[0], ROWS[1]] * 2
    args = TrainingArguments(
        str(tmp_path), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2, report_to="none",
        save_strategy="no", disable_tqdm=True, dataloader_pin_memory=False, seed=0,
    )  # fmt: skip
    trainer = StageETrainer(model=model, args=args, train_dataset=train, data_collator=MuOmniSFTCollator(processor))
    trainer.train()

    assert [training for training, _ in seen["visual"]] == [False, False]
    assert [training for training, _ in seen["audio"]] == [False, False]
    assert [training for training, _ in seen["language_model"]] == [True, True]
    assert torch.equal(seen["visual"][0][1], seen["visual"][1][1])
    assert torch.equal(seen["audio"][0][1], seen["audio"][1][1])
    trainable = ("thinker.language_model.", "thinker.vision_projector.", "thinker.audio_projector.")
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    frozen = [name for name in before if not name.startswith(trainable)]
    assert not changed & set(frozen)
    assert {name.split(".")[1] for name in changed} == {"language_model", "vision_projector", "audio_projector"}
    assert any(name.startswith(("talker.", "codec.")) for name in frozen)
    assert all(not p.requires_grad for name, p in model.named_parameters() if not name.startswith(trainable))
    # the check has teeth: the same encoder in training mode is not deterministic
    visual = model.thinker.visual
    torch.nn.Module.train(visual, True)
    pixels = torch.randn(1, 3, 32, 32)
    assert not torch.equal(visual(pixels).image_tokens, visual(pixels).image_tokens)


def test_projector_learning_rate_puts_the_projectors_in_their_own_groups(tmp_path, stage_dirs, tokenizer):
    model, processor, _ = assemble_muomni(tiny_config(len(tokenizer)), stage_dirs)
    args = TrainingArguments(
        str(tmp_path), max_steps=1, learning_rate=1e-4, weight_decay=0.1, lr_scheduler_type="constant",
        report_to="none", save_strategy="no", disable_tqdm=True, dataloader_pin_memory=False,
    )  # fmt: skip
    trainer = StageETrainer(model=model, args=args, train_dataset=[ROWS[0]], data_collator=MuOmniSFTCollator(processor),
                            projector_learning_rate=3e-3)  # fmt: skip
    optimizer = trainer.create_optimizer()
    names = {id(p): name for name, p in model.named_parameters()}
    by_lr = {}
    for group in optimizer.param_groups:
        by_lr.setdefault(group["lr"], []).extend(names[id(p)] for p in group["params"])
    assert set(by_lr) == {1e-4, 3e-3}
    assert by_lr[3e-3] and all(n.startswith(("thinker.vision_projector.", "thinker.audio_projector.")) for n in by_lr[3e-3])
    every = [name for group in by_lr.values() for name in group]
    assert sorted(every) == sorted(name for name, p in model.named_parameters() if p.requires_grad)  # each once
    assert {group["weight_decay"] for group in optimizer.param_groups} == {0.0, 0.1}  # decay groups kept
    trainer.train()  # the scheduler and the step work with the extra groups
    with pytest.raises(ValueError, match="projector_learning_rate must be a positive number, got -1"):
        StageETrainer(model=model, args=args, train_dataset=[ROWS[0]], data_collator=MuOmniSFTCollator(processor),
                      projector_learning_rate=-1)  # fmt: skip


# ---- scoring -----------------------------------------------------------------------------------------


def test_task_scores_and_majority_baselines_on_hand_made_answers():
    tasks = ["image_qa", "image_qa", "image_qa", "asr", "image_caption", "speech_qa", "chat"]
    types = ["colour", "colour", "count", "", "", "", ""]
    refs = ["red", "blue", "two", "the cat sat", "a red star and a blue circle", "Paris", "I am fine."]
    preds = ["Red.", "green", "two", "the bat sat", "a red star", "paris", "i am FINE, thanks"]
    majority = majority_answers(["image_qa"] * 3 + ["speech_qa"] * 2, ["colour", "colour", "count", "", ""],
                                ["blue", "blue", "two", "Paris", "Rome"])  # fmt: skip
    assert majority == {"image_qa": "blue", "image_qa/colour": "blue", "image_qa/count": "two", "speech_qa": "Paris"}
    metrics = sft_metrics(tasks, types, refs, preds, majority)
    assert metrics["image_qa_accuracy"] == pytest.approx(2 / 3)
    assert metrics["image_qa_colour_accuracy"] == 0.5 and metrics["image_qa_count_accuracy"] == 1.0
    assert metrics["image_qa_colour_majority_accuracy"] == 0.5 and metrics["image_qa_count_majority_accuracy"] == 1
    assert metrics["image_qa_majority_accuracy"] == pytest.approx(1 / 3)  # "blue" for every image_qa row
    assert metrics["image_qa_majority_by_type_accuracy"] == pytest.approx(2 / 3)  # "blue", "blue", "two"
    assert metrics["asr_cer"] == pytest.approx(1 / 11) and metrics["asr_accuracy"] == 0.0
    assert metrics["image_caption_token_f1"] == pytest.approx(2 * 1.0 * (3 / 7) / (1 + 3 / 7))  # P 3/3, R 3/7
    assert metrics["speech_qa_accuracy"] == 1.0 and metrics["speech_qa_majority_accuracy"] == 1.0
    assert metrics["chat_accuracy"] == 0.0 and metrics["chat_token_f1"] == pytest.approx(6 / 7)  # P 3/4, R 3/3
    assert metrics["image_qa_rows"] == 3 and "chat_majority_accuracy" not in metrics
    assert token_f1("", "") == 1.0 and token_f1("a", "") == 0.0


# ---- assembly ----------------------------------------------------------------------------------------


def test_assembly_loads_every_key_of_every_stage(assembled, stage_dirs):
    model, processor, random_init = assembled
    assert random_init == [] and model.config.enable_audio_output
    parts = {
        "thinker_lm": (MuOmniForCausalLM, model.thinker.language_model),
        "audio_encoder": (MuOmniAudioEncoderForCTC, model.thinker.audio_tower),
        "vision_encoder": (MuOmniVisionEncoder, model.thinker.visual),
        "talker": (MuOmniTalkerForConditionalGeneration, model.talker),
        "codec": (MuOmniCodec, model.codec),
    }
    for name, (cls, module) in parts.items():
        saved, assembled_part = cls.from_pretrained(stage_dirs[name]).state_dict(), module.state_dict()
        assert saved.keys() == assembled_part.keys(), name
        for key, value in saved.items():
            assert torch.equal(value, assembled_part[key]), f"{name}: {key}"
    im_end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == [processor.tokenizer.eos_token_id, im_end]
    assert model.generation_config.use_cache and model.config.thinker_config.text_config.use_cache
    assert processor.image_seq_length == model.config.thinker_config.vision_config.num_output_tokens


def edited_copy(source: str, target, edit) -> str:
    shutil.copytree(source, target)
    weights = load_file(os.path.join(target, "model.safetensors"))
    edit(weights)
    save_file(weights, os.path.join(target, "model.safetensors"), metadata={"format": "pt"})
    return str(target)


def test_a_missing_or_unexpected_key_is_an_error_naming_it(tmp_path, stage_dirs, tokenizer):
    config = tiny_config(len(tokenizer))
    no_norm = edited_copy(stage_dirs["thinker_lm"], tmp_path / "lm", lambda w: w.pop("model.norm.weight"))
    with pytest.raises(ValueError, match=r"previous\['thinker_lm'\].*missing_keys: \['model.norm.weight'\]"):
        assemble_muomni(config, {**stage_dirs, "thinker_lm": no_norm})
    extra = edited_copy(stage_dirs["vision_encoder"], tmp_path / "vision", lambda w: w.update(extra=torch.ones(2)))
    with pytest.raises(ValueError, match=r"previous\['vision_encoder'\].*unexpected_keys: \['extra'\]"):
        assemble_muomni(config, {**stage_dirs, "vision_encoder": extra})


def test_missing_stages_are_listed_unless_random_init_is_allowed(stage_dirs, tokenizer):
    config = tiny_config(len(tokenizer))
    required = "['thinker_lm', 'tokenizer', 'audio_encoder', 'vision_encoder']"
    with pytest.raises(ValueError, match=r"missing previous\[\.\.\.\] keys: " + required.replace("[", r"\[")):
        assemble_muomni(config, None)
    without_vision = {k: v for k, v in stage_dirs.items() if k != "vision_encoder"}
    with pytest.raises(ValueError, match=r"keys: \['vision_encoder'\]"):
        assemble_muomni(config, without_vision)
    with pytest.raises(ValueError, match=r"keys: \['thinker_lm', 'audio_encoder', 'vision_encoder'\]"):
        assemble_muomni(config, {"tokenizer": stage_dirs["tokenizer"]})
    model, _, random_init = assemble_muomni(config, {"tokenizer": stage_dirs["tokenizer"]}, allow_random_init=True)
    assert random_init == ["thinker_lm", "audio_encoder", "vision_encoder"] and model.talker is None
    with pytest.raises(ValueError, match=r"previous\['tokenizer'\] \(stage A's tokenizer\) is required, even with"):
        assemble_muomni(config, {}, allow_random_init=True)
    with pytest.raises(ValueError, match="talker'\\] and previous\\['codec'\\] come together"):
        assemble_muomni(config, {**without_vision, "vision_encoder": stage_dirs["vision_encoder"], "codec": None})
    with pytest.raises(ValueError, match="must be a saved MuOmniVisionEncoder directory"):
        assemble_muomni(config, {**stage_dirs, "vision_encoder": "/nowhere"})


# ---- the recipe --------------------------------------------------------------------------------------


def test_recipe_assembles_trains_scores_and_saves(tmp_path, builtin, stage_dirs, tokenizer):
    overrides = {"max_steps": 2, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 8,
                 "disable_tqdm": True, "dataloader_pin_memory": False, "include_image_questions": True}  # fmt: skip
    result = run_stage_e(tiny_config(len(tokenizer)), builtin, str(tmp_path), stage_dirs, overrides)
    assert result.stage == "E" and result.outputs == {"muomni": str(tmp_path)}
    metrics = result.metrics
    for split in ("eval", "test"):
        for task in ("image_qa", "image_caption", "asr", "speech_qa", "tts", "chat"):
            assert 0 <= metrics[f"{split}_{task}_accuracy"] <= 1 and metrics[f"{split}_{task}_rows"] >= 1
        assert f"{split}_image_qa_majority_accuracy" in metrics and f"{split}_asr_cer" in metrics
        assert any(key.startswith(f"{split}_image_qa_") and key.endswith("_majority_accuracy") and
                   key != f"{split}_image_qa_majority_accuracy" for key in metrics)  # fmt: skip
    assert "eval_loss" in metrics and not any(key.startswith("random_init") for key in metrics)
    assert os.path.isfile(tmp_path / "training_curves.png")
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, MuOmniForConditionalGeneration) and loaded.talker is not None
    processor = AutoProcessor.from_pretrained(tmp_path)
    inputs = processor.apply_chat_template(
        sft_conversation(ROWS[0])[:1], add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert loaded.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] <= inputs["input_ids"].shape[1] + 3


def test_recipe_bad_input(tmp_path, builtin, stage_dirs, tokenizer):
    config, out, sft = tiny_config(len(tokenizer)), str(tmp_path), builtin["sft"]
    with pytest.raises(ValueError, match=r"datasets\['sft'\]\['train'\] lacks the columns \['target'\]"):
        run_stage_e(config, {"sft": DatasetDict({"train": sft["train"].remove_columns("target"),
                                                 "validation": sft["validation"]})}, out, stage_dirs)  # fmt: skip
    with pytest.raises(ValueError, match=r"datasets\['sft'\]\['validation'\] is empty"):
        run_stage_e(config, {"sft": DatasetDict({"train": sft["train"], "validation": sft["validation"].select([])})},
                    out, stage_dirs)  # fmt: skip
    with pytest.raises(ValueError, match=r"unknown training_overrides \['epochs'\]"):
        run_stage_e(config, builtin, out, stage_dirs, {"epochs": 3})
    with pytest.raises(ValueError, match="include_image_questions=True needs datasets\\['images'\\]"):
        run_stage_e(config, {"sft": sft}, out, stage_dirs, {"include_image_questions": True})
    with pytest.raises(ValueError, match=r"missing previous\[\.\.\.\] keys: \['audio_encoder'\]"):
        run_stage_e(config, builtin, out, {k: v for k, v in stage_dirs.items() if k != "audio_encoder"})
    with pytest.raises(ValueError, match="no SFT rows left for the tasks"):
        run_stage_e(config, builtin, out, stage_dirs, {"tasks": ("translation",)})
