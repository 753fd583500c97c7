"""A saved thinker (model + processor) through `pipeline("image-text-to-text")` and `pipeline("any-to-any")`,
and a saved CTC audio encoder (model + feature extractor + CTC tokenizer) through
`pipeline("automatic-speech-recognition")`. Every pipeline answer is checked against the model called
directly (greedy `generate` / argmax of the CTC logits) on the same inputs."""

import importlib.util
import random
import shutil

import numpy as np
import PIL.Image
import pytest
import soundfile
import torch
from transformers import AutoModelForMultimodalLM, AutoProcessor, pipeline

from muomni import (
    MuOmniAudioEncoderForCTC,
    MuOmniCTCTokenizer,
    MuOmniFeatureExtractor,
    MuOmniImageProcessor,
    MuOmniProcessor,
    MuOmniThinkerConfig,
    MuOmniThinkerForConditionalGeneration,
    train_tokenizer,
)
from muomni.configuration import MuOmniAudioEncoderConfig, get_preset

WORDS = "the a cat dog bird sat ran on under mat tree big small red blue happy and but where is what color".split()
SR = 16000
MAX_NEW_TOKENS = 6
GREEDY = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False}


def picture(seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8))


def sound(seconds: float = 1.2, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


# ---------------------------------------------------------------- the thinker


@pytest.fixture(scope="module")
def thinker_checkpoint(tmp_path_factory):
    """A random thinker and its processor saved together; returns (directory, model, processor)."""
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "." for _ in range(300)]
    tokenizer = train_tokenizer(corpus, vocab_size=300)
    overrides = {
        # 0.2: a random model's greedy continuation varies instead of repeating one token
        "text_config": {"vocab_size": len(tokenizer), "initializer_range": 0.2},
        "vision_config": {"image_size": 32, "patch_size": 8},
    }
    config = MuOmniThinkerConfig(**get_preset("tiny", thinker_config=overrides)["thinker_config"])
    torch.manual_seed(0)
    model = MuOmniThinkerForConditionalGeneration(config).eval()
    processor = MuOmniProcessor.from_config(
        config, MuOmniImageProcessor(size={"height": 32, "width": 32}), MuOmniFeatureExtractor(), tokenizer
    )
    path = tmp_path_factory.mktemp("muomni_thinker")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, model, processor


@pytest.fixture(scope="module")
def image_text_to_text(thinker_checkpoint):
    return pipeline("image-text-to-text", model=str(thinker_checkpoint[0]))


def generate_new_ids(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        output = model.generate(**inputs, **GREEDY)
    return output[:, inputs["input_ids"].shape[1] :]


def image_chat(image) -> list[dict]:
    content = [{"type": "image", "image": image}, {"type": "text", "text": "what color is the cat?"}]
    return [{"role": "user", "content": content}]


def audio_chat(clip) -> list[dict]:
    content = [{"type": "audio", "audio": clip}, {"type": "text", "text": "where is the dog?"}]
    return [{"role": "user", "content": content}]


def test_image_text_to_text_pipeline_answers_a_chat_like_generate(thinker_checkpoint, image_text_to_text):
    _, model, processor = thinker_checkpoint
    assert type(image_text_to_text.model) is MuOmniThinkerForConditionalGeneration
    assert type(image_text_to_text.processor) is MuOmniProcessor
    messages = image_chat(picture())
    (result,) = image_text_to_text(text=messages, generate_kwargs=GREEDY)

    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert int((inputs["input_ids"] == processor.image_token_id).sum()) == 5
    new_ids = generate_new_ids(model, inputs)
    expected = processor.post_process_image_text_to_text(new_ids)[0]
    assert len(expected) > 0
    assert result["generated_text"] == [*messages, {"role": "assistant", "content": expected}]


def test_image_text_to_text_pipeline_with_images_and_text_like_generate(thinker_checkpoint, image_text_to_text):
    _, model, processor = thinker_checkpoint
    prompt = "<|vision_start|><|image|><|vision_end|>what color is the cat?"
    (result,) = image_text_to_text(images=picture(1), text=prompt, generate_kwargs=GREEDY)
    inputs = processor(text=prompt, images=[picture(1)], return_tensors="pt")
    expected = processor.post_process_image_text_to_text(generate_new_ids(model, inputs))[0]
    assert len(expected) > 0
    # the placeholders are special tokens: decoding drops them, and the pipeline returns prompt + answer
    assert result == {"input_text": prompt, "generated_text": prompt + expected}
    (new_only,) = image_text_to_text(images=picture(1), text=prompt, generate_kwargs=GREEDY, return_full_text=False)
    assert new_only["generated_text"] == expected


def test_a_chat_with_an_audio_part_generates_text(thinker_checkpoint, image_text_to_text):
    path, model, processor = thinker_checkpoint
    messages = audio_chat(sound())
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert inputs["feature_attention_mask"].sum().item() == 120
    assert int((inputs["input_ids"] == processor.audio_token_id).sum()) == 15  # 120 -> 30 -> 15
    new_ids = generate_new_ids(model, inputs)
    expected = processor.post_process_image_text_to_text(new_ids)[0]
    assert new_ids.shape[1] > 0 and len(expected) > 0

    # the same from the saved directory through the Auto classes
    loaded_processor = AutoProcessor.from_pretrained(path)
    loaded_model = AutoModelForMultimodalLM.from_pretrained(path).eval()
    loaded_inputs = loaded_processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert torch.equal(generate_new_ids(loaded_model, loaded_inputs), new_ids)

    # and through the image-text-to-text pipeline, whose chat path hands audio parts to the processor too;
    # the mel mask reaches the model's prefill
    seen = []
    handle = image_text_to_text.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("feature_attention_mask")), with_kwargs=True
    )
    try:
        (result,) = image_text_to_text(text=messages, generate_kwargs=GREEDY)
    finally:
        handle.remove()
    assert result["generated_text"][-1] == {"role": "assistant", "content": expected}
    assert torch.equal(seen[0], inputs["feature_attention_mask"]) and all(mask is None for mask in seen[1:])


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_any_to_any_pipeline_requires_torchvision_for_a_model_with_image_input(thinker_checkpoint):
    # transformers' AnyToAnyPipeline.__init__ calls requires_backends(self, "torchvision") whenever "image" is
    # in model.input_modalities; MuOmni itself stays free of torchvision
    with pytest.raises(ImportError, match="AnyToAnyPipeline requires the Torchvision library"):
        pipeline("any-to-any", model=str(thinker_checkpoint[0]))


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="pipeline('any-to-any') needs torchvision for a model whose input_modalities include 'image' "
    "(transformers AnyToAnyPipeline.__init__: requires_backends(self, 'torchvision')); it is not installed",
)
def test_any_to_any_pipeline_answers_an_audio_chat_like_generate(thinker_checkpoint):
    path, model, processor = thinker_checkpoint
    messages = audio_chat(sound())
    (result,) = pipeline("any-to-any", model=str(path))(text=messages, generate_kwargs=GREEDY)
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    expected = processor.post_process_image_text_to_text(generate_new_ids(model, inputs))[0]
    assert result["generated_text"][-1] == {"role": "assistant", "content": expected}


# ---------------------------------------------------------------- automatic speech recognition

TRANSCRIPT = "hi cat"


def utterance(text: str, seconds_per_character: float = 0.2) -> np.ndarray:
    """One steady tone per distinct character, so that a tiny CTC model can memorise the clip quickly."""
    t = np.arange(int(seconds_per_character * SR)) / SR
    frequency = {char: 250 * 1.3**index for index, char in enumerate(sorted(set(text)))}
    return np.concatenate([0.3 * np.sin(2 * np.pi * frequency[char] * t) for char in text]).astype(np.float32)


@pytest.fixture(scope="module")
def ctc_checkpoint(tmp_path_factory):
    """A tiny CTC encoder overfitted on one clip of TRANSCRIPT, saved with its feature extractor and tokenizer."""
    feature_extractor, tokenizer = MuOmniFeatureExtractor(), MuOmniCTCTokenizer()
    clip = utterance(TRANSCRIPT)
    features = feature_extractor(clip, sampling_rate=SR, return_tensors="pt")
    labels = torch.tensor([tokenizer(TRANSCRIPT)["input_ids"]])
    torch.manual_seed(0)
    config = MuOmniAudioEncoderConfig(
        d_model=64, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=128, initializer_range=0.1
    )
    model = MuOmniAudioEncoderForCTC(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(80):  # seed 0 decodes the transcript after ~20 steps
        model.train()
        loss = model(features["input_features"], feature_attention_mask=features["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            logits = model(features["input_features"]).logits
        if tokenizer.decode(logits.argmax(-1)[0]) == TRANSCRIPT:
            break
    assert losses[-1] < 0.2 * losses[0]
    path = tmp_path_factory.mktemp("muomni_ctc")
    model.save_pretrained(path)
    feature_extractor.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, clip


@pytest.fixture(scope="module")
def asr(ctc_checkpoint):
    return pipeline("automatic-speech-recognition", model=str(ctc_checkpoint[0]))


def greedy_transcript(model, clip) -> str:
    features = MuOmniFeatureExtractor()(clip, sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        logits = model(features["input_features"], feature_attention_mask=features["attention_mask"]).logits
    return MuOmniCTCTokenizer().decode(logits.argmax(-1)[0])


def test_asr_pipeline_transcribes_arrays_like_greedy_ctc(ctc_checkpoint, asr):
    _, model, clip = ctc_checkpoint
    assert type(asr.model) is MuOmniAudioEncoderForCTC and asr.type == "ctc"
    assert type(asr.tokenizer) is MuOmniCTCTokenizer and type(asr.feature_extractor) is MuOmniFeatureExtractor
    assert greedy_transcript(model, clip) == TRANSCRIPT
    # only "text": nothing the feature extractor returned (its attention_mask) leaks into the output
    assert asr(clip) == {"text": TRANSCRIPT}
    assert asr({"raw": clip, "sampling_rate": SR}) == {"text": TRANSCRIPT}
    assert asr({"array": clip, "sampling_rate": SR}) == {"text": TRANSCRIPT}
    # a different clip gives what the model itself decodes from it
    other = utterance("tac ih")
    assert asr(other) == {"text": greedy_transcript(model, other)}


def test_asr_pipeline_passes_the_mel_mask_to_the_model(ctc_checkpoint, asr):
    clip = ctc_checkpoint[2]
    seen = []
    handle = asr.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        asr(clip)
    finally:
        handle.remove()
    (kwargs,) = seen
    assert kwargs["input_features"].shape == (1, 128, 120)
    assert torch.equal(kwargs["attention_mask"], torch.ones(1, 120, dtype=torch.long))


@pytest.mark.skipif(
    shutil.which("ffmpeg") is None,
    reason="the ASR pipeline decodes file paths with the ffmpeg binary (transformers.pipelines.audio_utils."
    "ffmpeg_read), which is not installed",
)
def test_asr_pipeline_transcribes_a_wav_file(ctc_checkpoint, asr, tmp_path):
    path = tmp_path / "clip.wav"
    soundfile.write(path, ctc_checkpoint[2], SR, subtype="FLOAT")
    assert asr(str(path)) == {"text": TRANSCRIPT}


@pytest.mark.xfail(
    raises=RuntimeError,
    strict=True,
    reason="transformers' pipeline pad_collate_fn pads features along dim 1 (time-major (B, T, C) features); "
    "MuOmni's log-mel features are (B, M, F) like Whisper's, so clips of different lengths cannot be batched",
)
def test_asr_pipeline_batches_clips_of_different_lengths(ctc_checkpoint, asr):
    clip = ctc_checkpoint[2]
    assert asr([clip, clip[: SR // 2]], batch_size=2)[0] == {"text": TRANSCRIPT}
