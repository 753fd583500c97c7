"""MuOmniProcessor: placeholder expansion (against the encoders' length arithmetic), left-padded batches,
the chat template with image and audio parts, decoding, save/load through AutoProcessor, bad input."""

import io
import random

import numpy as np
import PIL.Image
import pytest
import soundfile
import torch
from transformers import AutoProcessor

from muomni import (
    MuOmniFeatureExtractor,
    MuOmniImageProcessor,
    MuOmniProcessor,
    MuOmniThinkerConfig,
    MuOmniTokenizer,
    train_tokenizer,
)
from muomni.configuration import MuOmniAudioEncoderConfig, get_preset
from muomni.modeling_audio_encoder import audio_encoder_output_lengths, audio_token_count

WORDS = "the a cat dog bird sat ran on under mat tree big small red blue happy and but where is what color".split()
SR = 16000


@pytest.fixture(scope="module")
def tokenizer() -> MuOmniTokenizer:
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "." for _ in range(300)]
    return train_tokenizer(corpus, vocab_size=300)


def make_processor(tokenizer, max_length_seconds: float = 30.0, **kwargs) -> MuOmniProcessor:
    return MuOmniProcessor(
        MuOmniImageProcessor(size={"height": 32, "width": 32}),
        MuOmniFeatureExtractor(max_length_seconds=max_length_seconds),
        tokenizer,
        **kwargs,
    )


@pytest.fixture(scope="module")
def processor(tokenizer) -> MuOmniProcessor:
    return make_processor(tokenizer)


def image(height: int, width: int, seed: int) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(round(seconds * SR)))).astype(np.float32)


def count(inputs, token_id: int) -> list[int]:
    return (inputs["input_ids"] == token_id).sum(-1).tolist()


# ---------------------------------------------------------------- expansion


def test_ten_second_clip_expands_to_125_audio_tokens(processor):
    inputs = processor(text="hear <|audio|> now", audio=[clip(10)], sampling_rate=SR, return_tensors="pt")
    # 160000 samples -> 1000 mel frames (100 Hz) -> 250 encoder frames (25 Hz) -> 125 tokens (12.5 Hz)
    assert inputs["input_features"].shape == (1, 128, 1000)
    assert inputs["feature_attention_mask"].sum().item() == 1000
    assert count(inputs, processor.audio_token_id) == [125]
    expected = processor.tokenizer("hear " + "<|audio|>" * 125 + " now")["input_ids"]
    assert inputs["input_ids"][0].tolist() == expected


@pytest.mark.parametrize(("downsample_factor", "stack_factor"), [(4, 2), (2, 3), (8, 1)])
def test_audio_expansion_follows_the_encoder_length_arithmetic(tokenizer, downsample_factor, stack_factor):
    processor = make_processor(
        tokenizer, max_length_seconds=60, audio_downsample_factor=downsample_factor, audio_stack_factor=stack_factor
    )
    config = MuOmniAudioEncoderConfig(downsample_factor=downsample_factor, stack_factor=stack_factor)
    seconds = [0.1, 0.37, 1.0, 2.5, 10.0, 30.0, 45.0]
    inputs = processor(
        text="".join("<|audio|>" for _ in seconds), audio=[clip(s, i) for i, s in enumerate(seconds)],
        sampling_rate=SR, return_tensors="pt",
    )  # fmt: skip
    frames = inputs["feature_attention_mask"].sum(-1)
    assert frames.tolist() == [10, 37, 100, 250, 1000, 3000, 4500]
    encoder_frames = audio_encoder_output_lengths(config, frames)
    expected = (-(-encoder_frames // stack_factor)).tolist()  # ceil(F' / s)
    assert [processor.audio_token_count(int(n)) for n in frames] == expected
    assert audio_token_count(config, frames).tolist() == expected
    assert sum(count(inputs, processor.audio_token_id)) == sum(expected)
    if (downsample_factor, stack_factor) == (4, 2):
        assert expected == [2, 5, 13, 32, 125, 375, 563]


def test_each_clip_expands_in_reading_order(processor):
    # a short clip first and a long one second: placeholder groups must follow the text, not the clip sizes
    text = ["<|audio|> and <|audio|>", "only <|audio|>"]
    inputs = processor(text=text, audio=[clip(0.3), clip(2.0), clip(1.0)], sampling_rate=SR)
    groups = []
    for ids in inputs["input_ids"]:
        runs, run = [], 0
        for token in ids + [None]:
            if token == processor.audio_token_id:
                run += 1
            elif run:
                runs.append(run)
                run = 0
        groups.append(runs)
    assert groups == [[4, 25], [13]]  # 30, 200 and 100 mel frames


def test_image_expansion_is_image_seq_length(tokenizer):
    for output_tokens, expected in (("cls_grid", 5), ("cls", 1)):
        config = MuOmniThinkerConfig(**get_preset("tiny", thinker_config={
            "text_config": {"vocab_size": len(tokenizer)},
            "vision_config": {"image_size": 32, "patch_size": 8, "output_tokens": output_tokens},
        })["thinker_config"])  # fmt: skip
        processor = MuOmniProcessor.from_config(
            config, MuOmniImageProcessor(size={"height": 32, "width": 32}), MuOmniFeatureExtractor(), tokenizer
        )
        assert processor.image_seq_length == config.vision_config.num_output_tokens == expected
        inputs = processor(text=["<|image|>a<|image|>", "<|image|>"], images=[[image(9, 7, 0), image(5, 5, 1)],
                           [image(40, 20, 2)]], return_tensors="pt")  # fmt: skip
        assert count(inputs, processor.image_token_id) == [2 * expected, expected]
        assert inputs["pixel_values"].shape == (3, 3, 32, 32)


def test_batches_are_left_padded_and_the_masks_have_their_own_names(processor):
    inputs = processor(
        text=["<|audio|>", "the big red dog sat under the tree <|audio|><|image|>"],
        images=[image(20, 30, 0)], audio=[clip(0.5), clip(0.2)], sampling_rate=SR, return_tensors="pt",
    )  # fmt: skip
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values", "input_features", "feature_attention_mask"}
    assert set(inputs) == set(processor.model_input_names)
    short = inputs["attention_mask"][0]
    assert short[0] == 0 and short[-1] == 1 and inputs["attention_mask"][1].all()  # text: left padding
    padded = inputs["input_ids"][0][short == 0]
    assert (padded == processor.tokenizer.pad_token_id).all()
    # mel frames: right padding, zeros in the padded frames
    assert inputs["feature_attention_mask"].sum(-1).tolist() == [50, 20]
    assert inputs["feature_attention_mask"][1, 20:].sum() == 0 and inputs["input_features"][1, :, 20:].abs().sum() == 0


def test_audio_file_paths_give_the_same_features_as_arrays(processor, tmp_path):
    samples = clip(0.8, seed=5)
    soundfile.write(tmp_path / "clip.wav", samples, SR, subtype="FLOAT")
    from_file = processor(text="<|audio|>", audio=[str(tmp_path / "clip.wav")], return_tensors="pt")
    from_array = processor(text="<|audio|>", audio=[samples], sampling_rate=SR, return_tensors="pt")
    for key in from_array:
        assert torch.equal(from_file[key], from_array[key]), key


def test_return_attention_mask_false_keeps_the_mel_mask(processor):
    inputs = processor(
        text="<|audio|>", audio=[clip(0.5)], sampling_rate=SR, return_attention_mask=False, return_tensors="pt"
    )
    assert "attention_mask" not in inputs
    assert inputs["feature_attention_mask"].sum().item() == 50


# ---------------------------------------------------------------- chat template and decoding


def multimodal_chat(picture, sound) -> list[dict]:
    return [
        {"role": "system", "content": "Answer briefly."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": picture},
                {"type": "text", "text": "what color is the cat? and what is"},
                {"type": "audio", "audio": sound},
                {"type": "text", "text": "?"},
            ],
        },
    ]


def test_apply_chat_template_equals_the_processor_on_the_rendered_text(processor):
    picture, sound = image(40, 50, 0), clip(1.7)
    messages = multimodal_chat(picture, sound)
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image|><|vision_end|>"
        "what color is the cat? and what is<|audio_start|><|audio|><|audio_end|>?<|im_end|>\n<|im_start|>assistant\n"
    )
    tensors = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    expected = processor(text=text, images=[picture], audio=[sound], sampling_rate=SR, return_tensors="pt")
    assert tensors.keys() == expected.keys()
    for key in expected:
        assert torch.equal(tensors[key], expected[key]), key
    assert count(tensors, processor.image_token_id) == [5] and count(tensors, processor.audio_token_id) == [22]


def test_apply_chat_template_on_a_batch_of_chats(processor):
    chats = [multimodal_chat(image(40, 50, 0), clip(1.7)), [{"role": "user", "content": [
        {"type": "audio", "audio": clip(0.4, 1)}, {"type": "text", "text": "where is the dog?"}]}]]  # fmt: skip
    tensors = processor.apply_chat_template(
        chats, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    texts = processor.apply_chat_template(chats, add_generation_prompt=True)
    expected = processor(
        text=texts, images=[image(40, 50, 0)], audio=[clip(1.7), clip(0.4, 1)], sampling_rate=SR, return_tensors="pt"
    )
    for key in expected:
        assert torch.equal(tensors[key], expected[key]), key
    assert tensors["input_ids"].shape[0] == 2 and tensors["attention_mask"][1, 0] == 0


def test_post_process_and_batch_decode(processor):
    tokenizer = processor.tokenizer
    answers = ["the cat sat on the mat.", "a big dog"]
    ids = [tokenizer(answer)["input_ids"] + [tokenizer.im_end_token_id] for answer in answers]
    padded = torch.full((2, max(map(len, ids))), tokenizer.pad_token_id)
    for row, row_ids in enumerate(ids):
        padded[row, padded.shape[1] - len(row_ids) :] = torch.tensor(row_ids)  # left padding, like generate
    assert processor.post_process_image_text_to_text(padded) == answers
    assert processor.batch_decode(padded, skip_special_tokens=True) == answers
    assert processor.post_process_image_text_to_text(padded[1]) == answers[1:]  # one sequence (T,)
    assert processor.post_process_image_text_to_text(ids[0]) == answers[:1]
    assert processor.decode(ids[0], skip_special_tokens=False) == answers[0] + "<|im_end|>"
    assert processor.post_process_image_text_to_text(padded, skip_special_tokens=False)[0] == answers[0] + "<|im_end|>"


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip_through_auto_processor(tokenizer, tmp_path):
    processor = make_processor(tokenizer, image_seq_length=3, audio_downsample_factor=2, audio_stack_factor=3)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is MuOmniProcessor
    assert (loaded.image_seq_length, loaded.audio_downsample_factor, loaded.audio_stack_factor) == (3, 2, 3)
    assert type(loaded.tokenizer) is MuOmniTokenizer and type(loaded.feature_extractor) is MuOmniFeatureExtractor
    assert type(loaded.image_processor) is MuOmniImageProcessor
    assert loaded.chat_template == processor.chat_template == tokenizer.chat_template
    messages = multimodal_chat(image(30, 20, 3), clip(0.9))
    assert loaded.apply_chat_template(messages) == processor.apply_chat_template(messages)
    kwargs = {"text": ["<|image|> a cat <|audio|>", "<|audio|>"], "images": [image(30, 20, 3)],
              "audio": [clip(0.9), clip(2.2, 1)], "sampling_rate": SR, "return_tensors": "pt"}  # fmt: skip
    expected, reloaded = processor(**kwargs), loaded(**kwargs)
    assert reloaded.keys() == expected.keys()
    for key in expected:
        assert torch.equal(reloaded[key], expected[key]), key
    assert count(expected, processor.image_token_id) == [3, 0]


# ---------------------------------------------------------------- bad input


def corrupt_png() -> bytes:
    buffer = io.BytesIO()
    image(64, 64, 0).save(buffer, format="PNG")
    return buffer.getvalue()[:400]  # the header survives, most of the pixel data does not


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        ({"text": "<|audio|>", "audio": [clip(1)], "sampling_rate": 8000}, ValueError,
         r"audio clip 0 is sampled at 8000 Hz but MuOmniFeatureExtractor expects 16000 Hz"),
        ({"text": "<|audio|>", "audio": [np.zeros(0, np.float32)]}, ValueError, r"audio clip 0 is empty \(0 samples\)"),
        ({"text": "<|audio|><|audio|>", "audio": [clip(1), np.r_[clip(1), np.nan].astype(np.float32)]}, ValueError,
         r"audio clip 1 has 1 NaN or infinite samples"),
        ({"text": "<|audio|>", "audio": [np.r_[clip(1), np.inf, -np.inf].astype(np.float32)]}, ValueError,
         r"audio clip 0 has 2 NaN or infinite samples"),
        ({"text": "<|audio|>", "audio": [clip(30.5)]}, ValueError,
         r"audio clip 0 lasts 30\.50 s, longer than max_length_seconds=30\.0; split it"),
        ({"text": "<|image|>", "images": [corrupt_png()]}, ValueError,
         r"image 0 \(400 bytes\) could not be decoded \(truncated or corrupt\)"),
        ({"text": "<|image|>", "images": [b"not an image at all"]}, ValueError,
         r"image 0 \(19 bytes\) is not a readable image \(corrupt or unsupported format\)"),
        ({"text": "<|image|>", "images": [PIL.Image.new("RGB", (0, 0))]}, ValueError,
         r"image 0 is empty: 0x0 pixels"),
        ({"text": "<|image|>", "images": [np.zeros((0, 7, 3), np.uint8)]}, ValueError, r"image 0 is empty: 0x7 pixels"),
        ({"text": "<|image|>", "images": [image(8, 8, 0), image(8, 8, 1)]}, ValueError,
         r"Found total 1 <\|image\|> tokens and 2 images"),
        ({"text": ["<|image|>", "<|image|>"], "images": [image(8, 8, 0)]}, ValueError,
         r"Found total 2 <\|image\|> tokens and 1 images"),
        ({"text": "<|audio|>", "audio": [clip(1), clip(1)]}, ValueError,
         r"Found total 1 <\|audio\|> tokens and 2 audio inputs"),
        ({"text": "<|audio|> and <|audio|>", "audio": [clip(1)]}, ValueError,
         r"Found total 2 <\|audio\|> tokens and 1 audio inputs"),
        ({"text": "what is <|image|>?"}, ValueError,
         r"Found 1 <\|image\|> tokens in the text but no images were passed"),
        ({"text": ["hi", "listen: <|audio|><|audio|>"]}, ValueError,
         r"Found 2 <\|audio\|> tokens in the text but no audio inputs were passed"),
        ({"text": "<|image|> <|audio|>", "audio": [clip(1)]}, ValueError,
         r"Found 1 <\|image\|> tokens in the text but no images were passed"),
        ({"text": "<|image|> the big red dog", "images": [image(8, 8, 0)], "truncation": True, "max_length": 3},
         ValueError, r"Mismatch in `image` token count between text and `input_ids`"),
        ({}, ValueError, r"MuOmniProcessor needs at least one of text, images or audio"),
        ({"text": 3}, TypeError, r"text must be a string or a list of strings, got int"),
        ({"text": ["ok", None]}, TypeError, r"text must be a string or a list of strings, got list"),
    ],
)  # fmt: skip
def test_bad_input(processor, call, error, match):
    if "audio" in call:
        call = {"sampling_rate": SR, **call}
    with pytest.raises(error, match=match):
        processor(**call)


def test_bad_constructor_arguments_and_counts(tokenizer, processor):
    with pytest.raises(ValueError, match=r"image_seq_length must be a positive integer, got 0"):
        make_processor(tokenizer, image_seq_length=0)
    with pytest.raises(ValueError, match=r"audio_stack_factor must be a positive integer, got 1\.5"):
        make_processor(tokenizer, audio_stack_factor=1.5)
    with pytest.raises(ValueError, match=r"downsample_factor must be 1, 2, 4 or 8 \(stride-2 convs\), got 3"):
        make_processor(tokenizer, audio_downsample_factor=3)
    with pytest.raises(ValueError, match=r"an audio clip needs at least one mel frame, got 0"):
        processor.audio_token_count(0)


def test_empty_prompts_and_injected_chat_turns_are_refused(processor):
    with pytest.raises(ValueError, match=r"text items \[0\] are empty strings"):
        processor(text="")
    with pytest.raises(ValueError, match=r"text is an empty list"):
        processor(text=[])
    with pytest.raises(ValueError, match=r"contains the control string '<\|im_end\|>'"):
        processor.apply_chat_template([{"role": "user", "content": "hi<|im_end|>"}], tokenize=False)
