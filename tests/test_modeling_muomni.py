"""`MuOmniForConditionalGeneration` speaking its answer, and `MuOmniForTextToSpeech` speaking its input.

References: the thinker's text-only `generate` (sequences); the talker, codec and vocoder called one
by one on the answer's spoken tokens (codes and waveforms); one-by-one runs (batching); a model built
without its speech side (parameter counts); a saved and reloaded checkpoint (logits, codes, audio);
`speak` (streaming); the adapter model before merging (peft).
"""

import copy
import json
import os
import random
import re
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import AutoModel, LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from muomni import (
    LANGUAGE_MODEL_LORA_TARGETS,
    MuOmniFeatureExtractor,
    MuOmniForConditionalGeneration,
    MuOmniForTextToSpeech,
    MuOmniGenerateOutput,
    MuOmniImageProcessor,
    MuOmniNeuralVocoder,
    MuOmniProcessor,
    MuOmniThinkerForConditionalGeneration,
    get_preset_config,
    train_tokenizer,
    vocode,
)
from muomni.configuration import SPECIAL_TOKEN_IDS

WORDS = "the a cat dog bird sat ran on under mat tree big small red blue happy and but where is what color".split()
# left-padded to three different lengths
PROMPTS = ["the cat sat on the mat", "a dog", "where is the big red bird"]
GREEDY = {"max_new_tokens": 6, "do_sample": False}
MAX_TEXT_TOKENS = 32
EOS = SPECIAL_TOKEN_IDS["eos_token_id"]
SPECIAL = torch.tensor(sorted(SPECIAL_TOKEN_IDS.values()))


def make_tokenizer():
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "." for _ in range(300)]
    return train_tokenizer(corpus, vocab_size=300)


def make_config(tokenizer, **overrides):
    """The tiny preset with this vocabulary, a 32x32 vision encoder and a 32-token talker limit. Larger
    init ranges than the preset's make a random model's greedy tokens and codes vary from step to step,
    and (seed 1) its talker end speech by itself after different numbers of frames per item."""
    thinker = {"text_config": {"vocab_size": len(tokenizer), "initializer_range": 0.2}}
    thinker["vision_config"] = {"image_size": 32, "patch_size": 8}
    talker = {"initializer_range": 0.5, "max_text_tokens": MAX_TEXT_TOKENS}
    return get_preset_config("tiny", thinker_config=thinker, talker_config=talker, **overrides)


def make_model(config, model_class=MuOmniForConditionalGeneration):
    torch.manual_seed(1)
    return model_class(config).eval()


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return make_model(make_config(tokenizer))


@pytest.fixture(scope="module")
def processor(tokenizer, model):
    image_processor = MuOmniImageProcessor(size={"height": 32, "width": 32})
    return MuOmniProcessor.from_config(model.config, image_processor, MuOmniFeatureExtractor(), tokenizer)


@pytest.fixture(scope="module")
def batch(processor):
    return processor(text=PROMPTS, return_tensors="pt")


@pytest.fixture(scope="module")
def answer(model, batch):
    """The greedy text-only answer and the spoken one of the batch."""
    text = model.generate(**batch, **GREEDY)
    speech = model.generate(**batch, **GREEDY, return_audio=True)
    return text, speech


def samples_per_code(model) -> int:
    return model.config.codec_config.downsample_factor * model.config.vocoder_config.hop_length


def spoken_tokens(token_ids: torch.Tensor) -> torch.Tensor:
    """The (L,) tokens of a (T,) row that are spoken: all but the special ones."""
    return token_ids[~torch.isin(token_ids, SPECIAL)]


def reference_speech(model, text_ids: torch.Tensor, **talker_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (Nq, n) and waveform (S,) of one text (L,) from the talker, codec and vocoder one by one."""
    with torch.no_grad():
        text_embeds = model.thinker.get_input_embeddings()(text_ids[None])  # (1, L, D)
        talker_out = model.talker.generate(text_embeds, **talker_kwargs)
        n = int(talker_out.lengths[0])
        codes = talker_out.codes[:, :, :n]  # (1, Nq, n)
        if n == 0:
            return codes[0], torch.zeros(0)
        mel = model.codec.decode(codes)  # (1, M, n * downsample_factor)
        waveform = vocode(mel, model.config.vocoder_config, model.vocoder)[0, : n * samples_per_code(model)]
    return codes[0], waveform


@contextmanager
def endless_talker(model):
    """The talker never chooses end of speech, so the frame caps decide the lengths."""
    bias = model.talker.codebook_heads[0].bias
    saved = bias.detach().clone()
    with torch.no_grad():
        bias[model.config.talker_config.end_of_speech_id] = -1e4
    try:
        yield model
    finally:
        with torch.no_grad():
            bias.copy_(saved)


# --- generate(return_audio=True) -------------------------------------------------------------------


def test_generate_speaks_the_answer_of_every_item(model, batch, answer):
    text, speech = answer
    assert isinstance(speech, MuOmniGenerateOutput)
    assert torch.equal(speech.sequences, text)
    prompt_length = batch["input_ids"].shape[1]
    lengths = speech.code_lengths.tolist()
    assert len(set(lengths)) == 3 and min(lengths) > 0  # the talker ended each item at its own frame
    assert speech.codes.shape == (3, 2, max(lengths))
    assert len(speech.audio) == 3
    for row in range(3):
        waveform = speech.audio[row]
        assert waveform.dtype == torch.float32 and waveform.dim() == 1
        assert waveform.shape[0] == lengths[row] * samples_per_code(model)  # downsample_factor x hop_length
        codes, expected = reference_speech(model, spoken_tokens(text[row, prompt_length:]))
        assert torch.equal(speech.codes[row, :, : lengths[row]], codes)
        assert (speech.codes[row, :, lengths[row] :] == 0).all()  # right padding
        torch.testing.assert_close(waveform, expected, atol=1e-6, rtol=0)
        assert waveform.abs().max() > 0


def test_batched_speech_equals_one_by_one(model, batch, answer):
    _, speech = answer
    for row in range(len(PROMPTS)):
        single_inputs = {key: value[row : row + 1] for key, value in batch.items()}
        real = single_inputs["attention_mask"][0].bool()
        single_inputs = {key: value[:, real] for key, value in single_inputs.items()}  # drop the left padding
        single = model.generate(**single_inputs, **GREEDY, return_audio=True)
        pad = batch["input_ids"].shape[1] - int(real.sum())
        assert torch.equal(single.sequences[0], speech.sequences[row, pad:])
        n = int(single.code_lengths[0])
        assert n == int(speech.code_lengths[row])
        assert torch.equal(single.codes[0], speech.codes[row, :, :n])
        assert torch.equal(single.audio[0], speech.audio[row])


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_text_generation_with_an_image_equals_uncached_argmax(model, processor, cache_implementation):
    """The top-level generate (thinker inside, its generation_config passed on) against a manual loop of
    full uncached forwards of the top-level model; with the dynamic and the static cache."""
    image = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    prompt = "<|im_start|>user\n<|vision_start|><|image|><|vision_end|>the cat?<|im_end|>\n<|im_start|>assistant\n"
    inputs = processor(text=prompt, images=[image], return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(
            **inputs, max_new_tokens=6, do_sample=False, eos_token_id=None, cache_implementation=cache_implementation
        )
        sequence = inputs["input_ids"]
        for _ in range(6):
            logits = model(input_ids=sequence, pixel_values=inputs["pixel_values"], use_cache=False).logits
            sequence = torch.cat([sequence, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert len(set(sequence[0, inputs["input_ids"].shape[1] :].tolist())) > 1
    assert torch.equal(generated, sequence)


def test_generation_mode_selects_text_or_speech(model, batch, answer):
    text, speech = answer
    assert torch.equal(model.generate(**batch, **GREEDY, generation_mode="text"), text)
    by_mode = model.generate(**batch, **GREEDY, generation_mode="audio", talker_max_frames=4)
    by_flag = model.generate(**batch, **GREEDY, return_audio=True, talker_max_frames=4)
    assert torch.equal(by_mode.sequences, text) and torch.equal(by_mode.codes, by_flag.codes)
    assert all(torch.equal(a, b) for a, b in zip(by_mode.audio, by_flag.audio))
    with pytest.raises(ValueError, match=r"generation_mode must be 'text' or 'audio', got 'image'"):
        model.generate(**batch, **GREEDY, generation_mode="image")
    with pytest.raises(ValueError, match=r"generation_mode='text' contradicts return_audio=True"):
        model.generate(**batch, **GREEDY, generation_mode="text", return_audio=True)


def test_prefixes_route_arguments_to_thinker_and_talker(model, batch):
    prompt_length = batch["input_ids"].shape[1]
    out = model.generate(
        **batch, max_new_tokens=5, thinker_max_new_tokens=2, do_sample=False, return_audio=True, talker_max_frames=3
    )
    assert torch.equal(out.sequences, model.generate(**batch, max_new_tokens=2, do_sample=False))  # the prefix wins
    assert out.code_lengths.tolist() == [3, 3, 3]
    assert [len(waveform) for waveform in out.audio] == [3 * samples_per_code(model)] * 3
    for row in range(3):
        codes, _ = reference_speech(model, spoken_tokens(out.sequences[row, prompt_length:]), max_frames=3)
        assert torch.equal(out.codes[row], codes)

    # the talker samples only when told with its prefix; unprefixed sampling arguments are the thinker's
    sampled = model.generate(
        **batch, **GREEDY, return_audio=True, talker_max_frames=3, talker_do_sample=True, talker_top_k=5,
        talker_generator=torch.Generator().manual_seed(7),
    )  # fmt: skip
    text_ids, text_mask = model.speech_text_ids(sampled.sequences[:, prompt_length:])
    with torch.no_grad():
        text_embeds = model.get_input_embeddings()(text_ids)
        expected = model.talker.generate(
            text_embeds, text_mask, max_frames=3, do_sample=True, top_k=5, generator=torch.Generator().manual_seed(7)
        )
        greedy = model.talker.generate(text_embeds, text_mask, max_frames=3)
    assert torch.equal(sampled.codes, expected.codes) and not torch.equal(sampled.codes, greedy.codes)

    with pytest.raises(ValueError, match=r"Unknown talker generation arguments \['foo'\]; expected some of"):
        model.generate(**batch, **GREEDY, return_audio=True, talker_foo=1)


class EndItems(LogitsProcessor):
    """Forces end of text at every step for the given rows: their answers are empty."""

    def __init__(self, rows):
        self.rows = rows

    def __call__(self, input_ids, scores):
        scores[self.rows] = float("-inf")
        scores[self.rows, EOS] = 0.0
        return scores


def test_an_item_with_nothing_to_say_gets_empty_audio(model, batch, answer):
    _, speech = answer
    out = model.generate(**batch, **GREEDY, return_audio=True, logits_processor=LogitsProcessorList([EndItems([1])]))
    assert out.code_lengths[1] == 0 and out.audio[1].shape == (0,) and out.audio[1].dtype == torch.float32
    for row in (0, 2):  # the others speak as before
        n = int(speech.code_lengths[row])
        assert int(out.code_lengths[row]) == n
        assert torch.equal(out.codes[row, :, :n], speech.codes[row, :, :n])
        assert torch.equal(out.audio[row], speech.audio[row])

    all_end = LogitsProcessorList([EndItems([0, 1, 2])])
    silent = model.generate(**batch, **GREEDY, return_audio=True, logits_processor=all_end)
    assert silent.codes.shape == (3, 2, 0) and silent.code_lengths.tolist() == [0, 0, 0]
    assert [len(waveform) for waveform in silent.audio] == [0, 0, 0]


# --- text only: no speech side ---------------------------------------------------------------------


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_without_audio_output_there_is_no_talker_codec_or_vocoder(tokenizer, model, batch, answer):
    text, _ = answer
    config = make_config(tokenizer, vocoder_config={"vocoder_type": "neural"})
    full = make_model(config)
    assert count_parameters(full) == count_parameters(full.thinker) + sum(
        count_parameters(part) for part in (full.talker, full.codec, full.vocoder)
    )
    text_only_config = copy.deepcopy(config)
    text_only_config.enable_audio_output = False
    text_only = make_model(text_only_config)
    full.disable_talker()
    with pytest.raises(ValueError, match=r"Audio output is disabled for this model"):
        MuOmniForTextToSpeech(text_only_config).generate(**batch)
    for candidate in (text_only, full):
        assert candidate.talker is None and candidate.codec is None and candidate.vocoder is None
        assert count_parameters(candidate) == count_parameters(candidate.thinker) == count_parameters(model.thinker)
        assert all(name.startswith("thinker.") for name in candidate.state_dict())
        assert candidate.config.enable_audio_output is False
        assert torch.equal(candidate.generate(**batch, **GREEDY), text)  # same seed, same thinker
        message = r"Audio output is disabled for this model \(config.enable_audio_output=False"
        with pytest.raises(ValueError, match=message):
            candidate.generate(**batch, **GREEDY, return_audio=True)
        with pytest.raises(ValueError, match=message):
            candidate.generate(**batch, **GREEDY, generation_mode="audio")
        with pytest.raises(ValueError, match=message):
            candidate.speak(batch["input_ids"], batch["attention_mask"])
        with pytest.raises(ValueError, match=message):
            candidate.codes_to_audio(torch.zeros(1, 2, 3, dtype=torch.long), torch.tensor([3]))


# --- embeddings and peft ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_on_the_whole_model_reaches_the_language_model_and_merges(tokenizer, batch):
    model = make_model(make_config(tokenizer))
    language_model = model.thinker.language_model
    assert model.get_input_embeddings() is language_model.model.embed_tokens
    assert model.get_output_embeddings() is language_model.lm_head
    with torch.no_grad():
        base_logits = model(**batch).logits

    lora = LoraConfig(
        r=4, lora_alpha=8, target_modules=LANGUAGE_MODEL_LORA_TARGETS, task_type="CAUSAL_LM", init_lora_weights=False
    )
    peft_model = get_peft_model(model, lora).eval()
    wrapped = {
        name.removeprefix("base_model.model.") for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)
    }
    layers = model.config.thinker_config.text_config.num_hidden_layers
    projections = [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    expected = {f"thinker.language_model.model.layers.{i}.{p}" for i in range(layers) for p in projections}
    assert wrapped == expected  # not the talker's, not the encoders' q/k/v
    with torch.no_grad():
        adapted_logits = peft_model(**batch).logits
    assert not torch.allclose(adapted_logits, base_logits, atol=1e-3)
    speech = peft_model.generate(**batch, **GREEDY, return_audio=True, talker_max_frames=2)
    assert torch.equal(speech.sequences, peft_model.generate(**batch, **GREEDY))

    merged = peft_model.merge_and_unload()
    assert type(merged) is MuOmniForConditionalGeneration
    assert not any("lora_" in name for name in merged.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapted_logits, atol=1e-4, rtol=1e-4)


# --- save / load -----------------------------------------------------------------------------------


def test_loading_refuses_missing_and_unexpected_weights(tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    model = make_model(make_config(tokenizer))
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    missing = "talker.layers.0.mlp.up_proj.weight"
    save_file({k: v for k, v in weights.items() if k != missing}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"missing from the checkpoint: {re.escape(missing)}.*strict=False"):
        AutoModel.from_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, strict=False)  # the opt-out: loads, the lost weight re-initialised
    assert type(loaded) is MuOmniForConditionalGeneration

    # a config with one talker layer fewer than its weights: the extra layer's weights are not silently dropped
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    config["talker_config"]["num_hidden_layers"] -= 1
    last = config["talker_config"]["num_hidden_layers"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"not in the model: talker\.layers\.{last}\."):
        AutoModel.from_pretrained(tmp_path)


def test_a_failed_save_keeps_the_previous_checkpoint_byte_identical(tokenizer, processor, tmp_path, monkeypatch):
    import transformers.modeling_utils
    from safetensors.torch import save_file

    def snapshot():
        return {path.name: path.read_bytes() for path in sorted(tmp_path.iterdir())}

    model = make_model(make_config(tokenizer))
    model.save_pretrained(tmp_path, max_shard_size="2MB")
    processor.save_pretrained(tmp_path)
    before = snapshot()
    assert any(name.startswith("model-00002") for name in before) and "processor_config.json" in before

    changed = make_model(make_config(tokenizer, enable_audio_output=False))  # another config, other weights
    written = []

    def fail_after_the_first_shard(tensors, filename, metadata=None):
        if written:
            raise OSError("No space left on device")  # the second shard's write fails half way
        written.append(filename)
        save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", fail_after_the_first_shard)
    with pytest.raises(OSError, match="No space left"):
        changed.save_pretrained(tmp_path, max_shard_size="1MB")
    monkeypatch.undo()
    assert snapshot() == before and not [p for p in tmp_path.parent.iterdir() if ".saving-" in p.name]
    assert type(AutoModel.from_pretrained(tmp_path)) is MuOmniForConditionalGeneration

    # a later successful single-file save replaces the shards (no stale ones left) and keeps the processor
    changed.save_pretrained(tmp_path)
    names = set(snapshot())
    assert "model.safetensors" in names and not any(name.startswith("model-0") for name in names)
    assert "processor_config.json" in names and "tokenizer.json" in names
    assert AutoModel.from_pretrained(tmp_path).talker is None
    with pytest.raises(ValueError, match=r"is a file; expected a directory"):
        changed.save_pretrained(tmp_path / "model.safetensors")

    # the processor likewise: a failure while writing the tokenizer leaves the earlier processor files
    before = snapshot()
    altered = copy.deepcopy(processor)
    altered.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # written before the config
    seen = []

    def failing_config_write(self, path):
        seen.append(sorted(os.listdir(os.path.dirname(path))))  # what the save had written when it failed
        raise OSError("disk")

    monkeypatch.setattr(type(altered), "to_json_file", failing_config_write)
    with pytest.raises(OSError, match="disk"):
        altered.save_pretrained(tmp_path)
    assert "chat_template.jinja" in seen[0] and "tokenizer.json" in seen[0]
    assert snapshot() == before


def test_checkpoint_round_trip_keeps_logits_codes_and_audio(tokenizer, batch, tmp_path):
    model = make_model(make_config(tokenizer, vocoder_config={"vocoder_type": "neural"}))
    model.generation_config.max_new_tokens = 3
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    assert json.loads((tmp_path / "generation_config.json").read_text())["max_new_tokens"] == 3

    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is MuOmniForConditionalGeneration and type(loaded.vocoder) is MuOmniNeuralVocoder
    expected_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert expected_state.keys() == loaded_state.keys()
    assert all(torch.equal(expected_state[key], loaded_state[key]) for key in expected_state)
    with torch.no_grad():
        logits = model(**batch).logits
        assert torch.equal(loaded(**batch).logits, logits)
    expected = model.generate(**batch, **GREEDY, return_audio=True, talker_max_frames=8)
    speech = loaded.generate(**batch, **GREEDY, return_audio=True, talker_max_frames=8)
    assert torch.equal(speech.sequences, expected.sequences) and torch.equal(speech.codes, expected.codes)
    assert all(torch.equal(a, b) for a, b in zip(speech.audio, expected.audio))

    # the thinker alone out of the full checkpoint, as a thinker or as a text-only MuOmni model
    thinker = MuOmniThinkerForConditionalGeneration.from_pretrained(tmp_path).eval()
    text_only, info = AutoModel.from_pretrained(tmp_path, enable_audio_output=False, output_loading_info=True)
    assert text_only.talker is None and not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        assert torch.equal(thinker(**batch).logits, logits)
        assert torch.equal(text_only.eval()(**batch).logits, logits)

    # generation_config.json applies to the top-level generate unless overridden
    prompt_length = batch["input_ids"].shape[1]
    assert loaded.generation_config.max_new_tokens == 3
    default = loaded.generate(**batch, do_sample=False)
    assert default.shape[1] == prompt_length + 3
    assert torch.equal(default, loaded.thinker.generate(**batch, max_new_tokens=3, do_sample=False))
    assert loaded.generate(**batch, max_new_tokens=5, do_sample=False).shape[1] == prompt_length + 5
    assert loaded.generate(**batch, do_sample=False, return_audio=True, talker_max_frames=2).sequences.shape[1] == (
        prompt_length + 3
    )


# --- streaming -------------------------------------------------------------------------------------


class RecordingStreamer(BaseStreamer):
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.shape[-1])

    def end(self):
        self.ended = True


def test_speak_stream_yields_audio_while_the_talker_is_generating(model, processor):
    inputs = processor(text=["the cat sat on the mat", "a dog"], return_tensors="pt")
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    frames_sampled = []
    hook = model.talker.codebook_heads[0].register_forward_hook(lambda *args: frames_sampled.append(1))
    streamer = RecordingStreamer()
    try:
        with endless_talker(model):
            full = model.speak(ids, mask, max_frames=10)
            frames_sampled.clear()
            frames_at_yield, chunks = [], []
            for chunk in model.speak_stream(ids, mask, chunk_frames=4, max_frames=10, streamer=streamer):
                frames_at_yield.append(len(frames_sampled))
                chunks.append(chunk)
            (whole,) = list(model.speak_stream(ids, mask, chunk_frames=10, max_frames=10))
    finally:
        hook.remove()

    assert full.code_lengths.tolist() == [10, 10]
    assert frames_at_yield == [4, 8, 10]  # the first chunk came after 4 of the 10 frames
    assert streamer.chunks == [4, 4, 2] and streamer.ended
    assert torch.equal(torch.cat([chunk.codes for chunk in chunks], dim=-1), full.codes)
    assert [chunk.code_lengths.tolist() for chunk in chunks] == [[4, 4], [8, 8], [10, 10]]
    step = samples_per_code(model)
    for row in range(2):
        assert [len(chunk.audio[row]) for chunk in chunks] == [4 * step, 4 * step, 2 * step]
        streamed = torch.cat([chunk.audio[row] for chunk in chunks])
        assert streamed.dtype == torch.float32 and streamed.shape == full.audio[row].shape
        # with the whole utterance in one chunk the codec and vocoder see what `speak` gives them
        assert torch.equal(whole.audio[row], full.audio[row])


def test_speak_stream_checks_its_input_before_it_is_iterated(model, processor):
    long_ids = processor(text="the cat " * 40, return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match=r"Text to speak is too long"):
        model.speak_stream(long_ids)
    with pytest.raises(ValueError, match=r"chunk_frames must be a positive integer, got 0"):
        model.speak_stream(long_ids[:, :3], chunk_frames=0)


# --- bad input -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_to_speech(model):
    tts = MuOmniForTextToSpeech(model.config).eval()
    tts.load_state_dict(model.state_dict())
    return tts


def test_text_to_speech_speaks_its_input(model, processor, text_to_speech):
    inputs = processor(text=["the cat sat", "<|im_start|>a big dog"], return_tensors="pt")
    out = text_to_speech.generate(**inputs, max_new_tokens=256, talker_max_frames=6)  # thinker arguments: ignored
    for row in range(2):
        real = inputs["input_ids"][row][inputs["attention_mask"][row].bool()]
        codes, waveform = reference_speech(model, spoken_tokens(real), max_frames=6)
        assert torch.equal(out.codes[row, :, : out.code_lengths[row]], codes)
        assert torch.equal(out.audio[row], waveform)


def test_text_to_speech_rejects_empty_and_too_long_text(processor, text_to_speech):
    with pytest.raises(ValueError, match=r"Text-to-speech needs input_ids"):
        text_to_speech.generate(input_ids=None)
    for text in ("", "<|im_start|><|im_end|>"):  # nothing left once special tokens are dropped
        with pytest.raises(ValueError, match=r"There is no text to speak for batch item\(s\) \[0\]"):
            text_to_speech.generate(**processor(text=text, return_tensors="pt"))
    with pytest.raises(ValueError, match=r"There is no text to speak for batch item\(s\) \[1\]"):
        text_to_speech.generate(**processor(text=["a cat", ""], return_tensors="pt"))

    long_inputs = processor(text=["a cat", "the cat " * 40], return_tensors="pt")
    n = int(long_inputs["attention_mask"][1].sum())
    message = (
        rf"Text to speak is too long: \(item, tokens\) \[\(1, {n}\)\]; the talker accepts at most "
        rf"max_text_tokens={MAX_TEXT_TOKENS} tokens per utterance"
    )
    with pytest.raises(ValueError, match=message):
        text_to_speech.generate(**long_inputs)
    with pytest.raises(ValueError, match=message):
        text_to_speech.speak(long_inputs["input_ids"], long_inputs["attention_mask"])
    with pytest.raises(ValueError, match=r"Unknown talker generation arguments \['max_new_tokens'\]"):
        text_to_speech.generate(**processor(text="a cat", return_tensors="pt"), talker_max_new_tokens=3)


def test_codes_to_audio_rejects_codes_outside_the_codebook(model):
    codes = torch.randint(0, 128, (2, 2, 5), generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([5, 3])
    audio = model.codes_to_audio(codes, lengths)
    step = samples_per_code(model)
    assert [len(waveform) for waveform in audio] == [5 * step, 3 * step]
    padded = codes.clone()
    padded[1, :, 3:] = 999  # past the item's length: padding, never read
    assert all(torch.equal(a, b) for a, b in zip(model.codes_to_audio(padded, lengths), audio))

    for bad, low, high in ((128, 5, 128), (-1, -1, 5)):
        broken = torch.full((1, 2, 3), 5)
        broken[0, 1, 2] = bad
        message = rf"codes must lie in \[0, 128\) \(codebook_size\), got min {low}, max {high}"
        with pytest.raises(ValueError, match=message):
            model.codes_to_audio(broken, torch.tensor([3]))
    with pytest.raises(ValueError, match=r"lengths must hold one frame count in \[0, 5\] per item .* got \[6, 3\]"):
        model.codes_to_audio(codes, torch.tensor([6, 3]))
    with pytest.raises(ValueError, match=r"lengths must hold one frame count in \[0, 5\] per item .* got \[5\]"):
        model.codes_to_audio(codes, torch.tensor([5]))
    with pytest.raises(ValueError, match=r"codes must be a tensor of shape \(B, Nq, F'\), got \(2, 5\)"):
        model.codes_to_audio(codes[:, 0], lengths)


def test_vocoder_path_rejects_a_mel_with_the_wrong_number_of_bins(tokenizer, model):
    mel = torch.zeros(1, 80, 8)
    message = r"mel has 80 mel bins \(shape \(1, 80, 8\)\), the vocoder expects num_mel_bins=128"
    with pytest.raises(ValueError, match=message):
        vocode(mel, model.config.vocoder_config)  # Griffin-Lim
    neural_config = copy.deepcopy(model.config.vocoder_config)
    neural_config.vocoder_type = "neural"
    with pytest.raises(ValueError, match=message):
        vocode(mel, neural_config, MuOmniNeuralVocoder(neural_config))
    # a codec that writes 80-bin mels cannot feed the model's 128-bin vocoder
    mismatched = make_model(make_config(tokenizer, codec_config={"num_mel_bins": 80}))
    with pytest.raises(ValueError, match=r"mel has 80 mel bins \(shape \(1, 80, 12\)\), the vocoder expects"):
        mismatched.codes_to_audio(torch.zeros(1, 2, 3, dtype=torch.long), torch.tensor([3]))
