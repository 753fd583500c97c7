"""A saved MuOmni checkpoint (model + processor) through `pipeline("text-to-speech")` and
`pipeline("any-to-any")` with speech output. Every pipeline answer is checked against the model loaded
on its own and called directly (`MuOmniForTextToSpeech.generate`, greedy `generate(return_audio=True)`)
on the processor's inputs."""

import importlib.util
import random

import numpy as np
import pytest
import torch
import transformers.pipelines.any_to_any
from transformers import AutoModel, pipeline

from muomni import (
    MuOmniFeatureExtractor,
    MuOmniForConditionalGeneration,
    MuOmniForTextToSpeech,
    MuOmniGenerateOutput,
    MuOmniImageProcessor,
    MuOmniProcessor,
    get_preset_config,
    train_tokenizer,
)

WORDS = "the a cat dog bird sat ran on under mat tree big small red blue happy and but where is what color".split()
SR = 16000
MAX_TEXT_TOKENS = 32
GREEDY = {"max_new_tokens": 4, "do_sample": False}
SAMPLES_PER_FRAME = 4 * 160  # codec downsample_factor x vocoder hop_length (checked below)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random MuOmni model whose talker never ends speech by itself (so the frame caps passed to the
    pipelines decide every length), saved with its processor; returns (directory, processor)."""
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "." for _ in range(300)]
    tokenizer = train_tokenizer(corpus, vocab_size=300)
    config = get_preset_config(
        "tiny",
        thinker_config={
            "text_config": {"vocab_size": len(tokenizer), "initializer_range": 0.2},
            "vision_config": {"image_size": 32, "patch_size": 8},
        },
        talker_config={"initializer_range": 0.5, "max_text_tokens": MAX_TEXT_TOKENS},
    )
    torch.manual_seed(1)
    model = MuOmniForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.talker.codebook_heads[0].bias[config.talker_config.end_of_speech_id] = -1e4
    processor = MuOmniProcessor.from_config(
        config, MuOmniImageProcessor(size={"height": 32, "width": 32}), MuOmniFeatureExtractor(), tokenizer
    )
    path = tmp_path_factory.mktemp("muomni_speech")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, processor


@pytest.fixture(scope="module")
def text_to_speech(checkpoint):
    return pipeline("text-to-speech", model=str(checkpoint[0]))


@pytest.fixture(scope="module")
def reference_tts(checkpoint):
    return MuOmniForTextToSpeech.from_pretrained(checkpoint[0]).eval()


def expected_speech(reference_tts, processor, text: str, **talker_kwargs) -> np.ndarray:
    inputs = processor(text=text, return_tensors="pt")
    out = reference_tts.generate(**inputs, **talker_kwargs)
    return out.audio[0].numpy()


# --- text-to-speech --------------------------------------------------------------------------------


def test_text_to_speech_pipeline_speaks_like_the_model(checkpoint, text_to_speech, reference_tts):
    processor = checkpoint[1]
    assert type(text_to_speech.model) is MuOmniForTextToSpeech
    config = reference_tts.config
    assert config.codec_config.downsample_factor * config.vocoder_config.hop_length == SAMPLES_PER_FRAME
    text = "the cat sat on the mat"
    # talker arguments arrive through forward_params and through generate_kwargs (which take precedence)
    result = text_to_speech(text, forward_params={"talker_max_frames": 7})
    assert set(result) == {"audio", "sampling_rate"} and result["sampling_rate"] == SR
    audio = result["audio"]
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.shape == (7 * SAMPLES_PER_FRAME,)
    np.testing.assert_array_equal(audio, expected_speech(reference_tts, processor, text, talker_max_frames=7))

    result = text_to_speech(text, forward_params={"talker_max_frames": 7}, generate_kwargs={"talker_max_frames": 5})
    assert result["audio"].shape == (5 * SAMPLES_PER_FRAME,)
    np.testing.assert_array_equal(result["audio"], expected_speech(reference_tts, processor, text, talker_max_frames=5))

    texts = ["a dog", "where is the big red bird"]
    results = text_to_speech(texts, generate_kwargs={"talker_max_frames": 3})
    assert len(results) == 2
    for text, result in zip(texts, results):
        assert result["sampling_rate"] == SR and result["audio"].shape == (3 * SAMPLES_PER_FRAME,)
        expected = expected_speech(reference_tts, processor, text, talker_max_frames=3)
        np.testing.assert_array_equal(result["audio"], expected)


def test_text_to_speech_pipeline_rejects_bad_text(text_to_speech):
    with pytest.raises(ValueError, match=r"text items \[0\] are empty strings"):
        text_to_speech("")
    with pytest.raises(ValueError, match=r"There is no text to speak for batch item\(s\) \[0\]"):
        text_to_speech("<|im_start|><|im_end|>")
    with pytest.raises(ValueError, match=rf"Text to speak is too long: .*max_text_tokens={MAX_TEXT_TOKENS}"):
        text_to_speech("the cat " * 40, forward_params={"talker_max_frames": 2})
    with pytest.raises(ValueError, match=r"Unknown talker generation arguments \['frames'\]"):
        text_to_speech("a cat", forward_params={"talker_frames": 2})


# --- any-to-any ------------------------------------------------------------------------------------


def skip_only_vision_backends(monkeypatch):
    """`AnyToAnyPipeline.__init__` calls `requires_backends(self, "vision")` and `requires_backends(self,
    "torchvision")` as soon as "image" is in `model.input_modalities`, even for chats without images.
    torchvision is not installed (and must not become a MuOmni dependency), so exactly those two checks
    are skipped; every other backend check and the rest of the real pipeline run unchanged."""
    check = transformers.pipelines.any_to_any.requires_backends

    def requires_backends(obj, backends):
        backends = [backends] if isinstance(backends, str) else list(backends)
        remaining = [backend for backend in backends if backend not in ("torchvision", "vision")]
        if remaining:
            check(obj, remaining)

    monkeypatch.setattr(transformers.pipelines.any_to_any, "requires_backends", requires_backends)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_any_to_any_pipeline_needs_the_backend_patch_without_torchvision(checkpoint):
    with pytest.raises(ImportError, match="AnyToAnyPipeline requires the Torchvision library"):
        pipeline("any-to-any", model=str(checkpoint[0]))


@pytest.fixture(scope="module")
def any_to_any(checkpoint):
    with pytest.MonkeyPatch.context() as monkeypatch:
        skip_only_vision_backends(monkeypatch)
        yield pipeline("any-to-any", model=str(checkpoint[0]))


@pytest.fixture(scope="module")
def reference_model(checkpoint):
    return AutoModel.from_pretrained(checkpoint[0]).eval()


def sound(seconds: float = 1.2, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def chat(with_audio: bool) -> list[dict]:
    content = [{"type": "text", "text": "where is the dog?"}]
    if with_audio:
        content.insert(0, {"type": "audio", "audio": sound()})
    return [{"role": "user", "content": content}]


def chat_inputs(processor, messages):
    return processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )


@pytest.mark.parametrize("with_audio", [False, True], ids=["text_in", "speech_in"])
def test_any_to_any_pipeline_answers_in_speech_like_generate(checkpoint, any_to_any, reference_model, with_audio):
    processor = checkpoint[1]
    assert type(any_to_any.model) is MuOmniForConditionalGeneration
    messages = chat(with_audio)
    (result,) = any_to_any(text=messages, generation_mode="audio", generate_kwargs={**GREEDY, "talker_max_frames": 6})
    assert set(result) == {"input_text", "generated_audio"} and result["input_text"] == messages
    audio = result["generated_audio"]
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.shape == (6 * SAMPLES_PER_FRAME,)

    inputs = chat_inputs(processor, messages)
    assert ("input_features" in inputs) == with_audio
    expected = reference_model.generate(**inputs, **GREEDY, return_audio=True, talker_max_frames=6)
    np.testing.assert_array_equal(audio, expected.audio[0].numpy())


@pytest.mark.parametrize("generation_mode", [None, "text"])
def test_any_to_any_pipeline_answers_a_text_chat_like_generate(
    checkpoint, any_to_any, reference_model, generation_mode
):
    processor = checkpoint[1]
    messages = chat(with_audio=False)
    mode = {} if generation_mode is None else {"generation_mode": generation_mode}
    (result,) = any_to_any(text=messages, generate_kwargs=GREEDY, **mode)

    inputs = chat_inputs(processor, messages)
    new_ids = reference_model.generate(**inputs, **GREEDY)[:, inputs["input_ids"].shape[1] :]
    expected = processor.post_process_image_text_to_text(new_ids)[0]
    assert len(expected) > 0
    assert result["generated_text"] == [*messages, {"role": "assistant", "content": expected}]


def test_post_process_multimodal_output(checkpoint):
    processor = checkpoint[1]
    ids = processor(text=["a cat", "the big dog"], return_tensors="pt")["input_ids"]
    texts = processor.batch_decode(ids, skip_special_tokens=True)
    waveforms = [torch.linspace(-1, 1, 640, dtype=torch.float64), torch.zeros(0)]
    output = MuOmniGenerateOutput(sequences=ids, audio=waveforms)
    for mode in (None, "text"):
        assert processor.post_process_multimodal_output(ids, generation_mode=mode) == texts
        assert processor.post_process_multimodal_output(output, generation_mode=mode) == texts
    audio = processor.post_process_multimodal_output(output, generation_mode="audio")
    assert [a.dtype for a in audio] == [np.float32, np.float32] and [a.shape for a in audio] == [(640,), (0,)]
    np.testing.assert_allclose(audio[0], np.linspace(-1, 1, 640), atol=1e-6)

    with pytest.raises(ValueError, match=r"generation_mode='audio' needs the output of generate\(.*got Tensor"):
        processor.post_process_multimodal_output(ids, generation_mode="audio")
    with pytest.raises(ValueError, match=r"generation_mode must be 'text' or 'audio' for MuOmni, got 'image'"):
        processor.post_process_multimodal_output(ids, generation_mode="image")
