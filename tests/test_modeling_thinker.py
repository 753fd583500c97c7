"""The multimodal thinker: padding invariance with media, audio token counts against the processor,
generation with media (cached vs uncached, batched vs one by one, media consumed on prefill only),
save/load and the Auto classes, count-mismatch errors, and LoRA on the language model only."""

import copy
import random
import re

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
)

from muomni import (
    LANGUAGE_MODEL_LORA_TARGETS,
    MuOmniFeatureExtractor,
    MuOmniImageProcessor,
    MuOmniProcessor,
    MuOmniThinkerConfig,
    MuOmniThinkerForConditionalGeneration,
    train_tokenizer,
)
from muomni.configuration import get_preset
from muomni.modeling_audio_encoder import audio_encoder_output_lengths

# peft 0.21 still calls transformers' deprecated `is_gradient_checkpointing`
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

WORDS = "the a cat dog bird sat ran on under mat tree big small red blue happy and but where is what color".split()
SAMPLING_RATE = 16000
ATOL = 1e-5


def thinker_config(
    vocab_size: int, initializer_range: float = 0.2, max_position_embeddings: int = 512, **audio_overrides
) -> MuOmniThinkerConfig:
    """The `tiny` preset's thinker with a 32 x 32 image (4 x 4 patches -> CLS + 2 x 2 pooled = 5 tokens).

    A random language model initialised with the default 0.02 repeats one token; 0.2 makes greedy
    continuations vary (and its large activations make float32 rounding differences reach ~3e-5)."""
    overrides = {
        "text_config": {
            "vocab_size": vocab_size,
            "initializer_range": initializer_range,
            "max_position_embeddings": max_position_embeddings,
        },
        "vision_config": {"image_size": 32, "patch_size": 8},
        "audio_config": audio_overrides,
    }
    return MuOmniThinkerConfig(**get_preset("tiny", thinker_config=overrides)["thinker_config"])


def make_thinker(config: MuOmniThinkerConfig, seed: int = 0) -> MuOmniThinkerForConditionalGeneration:
    torch.manual_seed(seed)
    return MuOmniThinkerForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "." for _ in range(300)]
    return train_tokenizer(corpus, vocab_size=300)


@pytest.fixture(scope="module")
def config(tokenizer) -> MuOmniThinkerConfig:
    return thinker_config(len(tokenizer))


@pytest.fixture(scope="module")
def model(config) -> MuOmniThinkerForConditionalGeneration:
    return make_thinker(config)


@pytest.fixture(scope="module")
def preset_model(tokenizer) -> MuOmniThinkerForConditionalGeneration:
    """The same thinker at the preset's initialisation (0.02): activations small enough for float32 checks at 1e-5."""
    return make_thinker(thinker_config(len(tokenizer), initializer_range=0.02))


@pytest.fixture(scope="module")
def processor(config, tokenizer) -> MuOmniProcessor:
    image_processor = MuOmniImageProcessor(size={"height": 32, "width": 32})
    return MuOmniProcessor.from_config(config, image_processor, MuOmniFeatureExtractor(), tokenizer)


def image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def clip(seconds: float, seed: int) -> np.ndarray:
    """A chirp plus noise, so that every mel frame differs."""
    t = np.arange(int(round(seconds * SAMPLING_RATE))) / SAMPLING_RATE
    noise = np.random.default_rng(seed).standard_normal(t.shape[0])
    return (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t) + 0.05 * noise).astype(np.float32)


def encode(processor, text, images=None, audio=None):
    return processor(text=text, images=images, audio=audio, sampling_rate=SAMPLING_RATE, return_tensors="pt")


IMAGE_PROMPT = "<|vision_start|><|image|><|vision_end|>what color is the cat?"
AUDIO_PROMPT = "<|audio_start|><|audio|><|audio_end|>where is the dog?"
OMNI_PROMPTS = [
    "<|im_start|>user\n<|vision_start|><|image|><|vision_end|><|audio_start|><|audio|><|audio_end|>"
    "what is this?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nthe big red dog sat under the tree and the small cat ran<|audio_start|><|audio|><|audio_end|>"
    "<|vision_start|><|image|><|vision_end|>where is it?<|im_end|>\n<|im_start|>assistant\n",
]
OMNI_IMAGES = [image(40, 50, seed=1), image(64, 20, seed=2)]
OMNI_AUDIO = [clip(1.3, seed=3), clip(0.6, seed=4)]


# ---------------------------------------------------------------- padding invariance


@pytest.fixture(scope="module", params=["float32", "float64"], ids=["float32-init-0.02", "float64-init-0.2"])
def padding_model(request, preset_model, model):
    """(model, atol): float32 at the preset's initialisation, where 1e-5 holds with rounding to spare, and the
    generation model in float64, where a padded item must match itself alone to rounding (1e-10)."""
    if request.param == "float32":
        return preset_model, ATOL
    return copy.deepcopy(model).double(), 1e-10


def test_short_clip_alone_and_batched_with_a_longer_clip_gives_the_same_logits(padding_model, processor):
    model, atol = padding_model
    short, long = clip(0.55, seed=0), clip(2.3, seed=1)
    batch = encode(processor, [AUDIO_PROMPT, "a cat " + AUDIO_PROMPT], audio=[short, long])
    alone = encode(processor, AUDIO_PROMPT, audio=[short])
    assert batch["input_features"].shape[-1] == 230 and alone["input_features"].shape[-1] == 55
    assert batch["feature_attention_mask"].sum(-1).tolist() == [55, 230]
    with torch.no_grad():
        batched = model(**batch).logits
        single = model(**alone).logits
    real = batch["attention_mask"][0].bool()  # the short item is left-padded in the batch
    assert int(real.sum()) == alone["input_ids"].shape[1] < batch["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"][0, real], alone["input_ids"][0])
    torch.testing.assert_close(batched[0, real], single[0], atol=atol, rtol=0)


def test_image_prompts_of_different_lengths_in_a_left_padded_batch_give_the_same_logits(padding_model, processor):
    model, atol = padding_model
    prompts = [IMAGE_PROMPT, "the small dog ran under the big tree. " + IMAGE_PROMPT + " and this one?<|image|>"]
    images = [[image(40, 50, seed=0)], [image(33, 31, seed=1), image(64, 64, seed=2)]]
    batch = encode(processor, prompts, images=images)
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][1].all()  # left padding
    with torch.no_grad():
        batched = model(**batch).logits
        for row, (prompt, row_images) in enumerate(zip(prompts, images)):
            alone = encode(processor, prompt, images=row_images)
            real = batch["attention_mask"][row].bool()
            assert torch.equal(batch["input_ids"][row, real], alone["input_ids"][0])
            torch.testing.assert_close(batched[row, real], model(**alone).logits[0], atol=atol, rtol=0)


def test_left_padded_forward_counts_positions_from_the_attention_mask(model, processor):
    """Without position_ids, forward numbers real tokens from 0 as generate() does, so left padding shifts nothing."""
    batch = encode(processor, [IMAGE_PROMPT, "the small dog ran under the big tree. " + IMAGE_PROMPT],
                   images=OMNI_IMAGES)  # fmt: skip
    position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    assert position_ids[0, 0] == 0 and position_ids[0, -1] < batch["input_ids"].shape[1] - 1
    with torch.no_grad():
        torch.testing.assert_close(
            model(**batch).logits, model(**batch, position_ids=position_ids).logits, atol=0, rtol=0
        )


# ---------------------------------------------------------------- audio token counts


def test_processor_expansion_equals_the_encoder_output_count(model, processor):
    # `get_audio_features` runs the real encoder; its per-clip counts must equal the processor's expansion
    seconds = [0.1, 0.37, 2.5, 10.0]
    clips = [clip(s, seed=i) for i, s in enumerate(seconds)]
    prompt = "".join(AUDIO_PROMPT for _ in clips)
    inputs = encode(processor, prompt, audio=clips)
    frames = inputs["feature_attention_mask"].sum(-1)
    assert frames.tolist() == [10, 37, 250, 1000]
    with torch.no_grad():
        audio = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])
    features, counts = audio.pooler_output, audio.token_counts
    assert counts.tolist() == [processor.audio_token_count(int(n)) for n in frames] == [2, 5, 32, 125]
    assert int((inputs["input_ids"] == processor.audio_token_id).sum()) == int(counts.sum())
    assert features.shape == (4, 125, model.config.text_config.hidden_size)
    stack = model.config.audio_config.stack_factor
    assert counts.tolist() == (-(-audio_encoder_output_lengths(model.config.audio_config, frames) // stack)).tolist()


def test_thirty_and_forty_five_second_clips(tokenizer):
    """30 s is the default limit; 45 s works once the feature extractor's and the encoder's limits are raised."""
    # 375 + 563 audio tokens: more than the preset's 512 positions
    config = thinker_config(len(tokenizer), max_source_seconds=60, max_position_embeddings=1024)
    model = make_thinker(config)
    processor = MuOmniProcessor.from_config(
        config, MuOmniImageProcessor(size={"height": 32, "width": 32}), MuOmniFeatureExtractor(max_length_seconds=60),
        tokenizer,
    )  # fmt: skip
    inputs = encode(processor, AUDIO_PROMPT + AUDIO_PROMPT, audio=[clip(30, seed=0), clip(45, seed=1)])
    assert inputs["feature_attention_mask"].sum(-1).tolist() == [3000, 4500]
    with torch.no_grad():
        counts = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"]).token_counts
        logits = model(**inputs).logits
    assert counts.tolist() == [375, 563]  # 3000 -> 750 -> 375; 4500 -> 1125 -> 563
    assert int((inputs["input_ids"] == processor.audio_token_id).sum()) == 375 + 563
    assert torch.isfinite(logits).all()


# ---------------------------------------------------------------- generation with media


def greedy_without_cache(model, inputs, max_new_tokens: int) -> torch.Tensor:
    """Reference decoding: the full forward, media included, on the growing sequence at every step."""
    input_ids = inputs["input_ids"]
    media = {k: inputs[k] for k in ("pixel_values", "input_features", "feature_attention_mask")}
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=input_ids, use_cache=False, **media).logits  # (1, T, V)
            input_ids = torch.cat([input_ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return input_ids


def test_cached_greedy_generation_with_media_equals_uncached_argmax(model, processor):
    inputs = encode(processor, OMNI_PROMPTS[0], images=OMNI_IMAGES[:1], audio=OMNI_AUDIO[:1])
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=8, do_sample=False, eos_token_id=None)
    new = generated[0, inputs["input_ids"].shape[1] :]
    assert len(new) == 8 and len(set(new.tolist())) > 2  # a real continuation, not one repeated token
    # the reference re-embeds generated ids: a generated placeholder id would be a (legitimate) count error there
    assert not {processor.image_token_id, processor.audio_token_id} & set(new.tolist())
    assert torch.equal(generated, greedy_without_cache(model, inputs, 8))


def test_generate_passes_media_on_the_prefill_step_only(model, processor):
    inputs = encode(processor, OMNI_PROMPTS[1], images=OMNI_IMAGES[1:], audio=OMNI_AUDIO[1:])
    calls = []

    def record(module, args, kwargs):
        names = ("pixel_values", "input_features", "feature_attention_mask")
        calls.append(({name for name in names if kwargs.get(name) is not None}, kwargs["input_ids"].shape[1]))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None)
    finally:
        handle.remove()
    media = {"pixel_values", "input_features", "feature_attention_mask"}
    assert calls == [(media, inputs["input_ids"].shape[1])] + [(set(), 1)] * 3


def test_batched_generation_with_media_equals_one_by_one(model, processor):
    batch = encode(processor, OMNI_PROMPTS, images=OMNI_IMAGES, audio=OMNI_AUDIO)
    max_new_tokens = 6
    with torch.no_grad():
        batched = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False)
    new_batched = batched[:, batch["input_ids"].shape[1] :]
    for row in range(2):
        alone = encode(processor, OMNI_PROMPTS[row], images=OMNI_IMAGES[row : row + 1], audio=OMNI_AUDIO[row : row + 1])
        with torch.no_grad():
            single = model.generate(**alone, max_new_tokens=max_new_tokens, do_sample=False)
        new_single = single[0, alone["input_ids"].shape[1] :].tolist()
        # an item that stopped early is padded with pad_token_id in the batch
        padded = new_single + [model.generation_config.pad_token_id] * (max_new_tokens - len(new_single))
        assert new_batched[row].tolist() == padded
        assert len(set(new_single)) > 2  # a real continuation, not one repeated token


@pytest.mark.parametrize("cache_implementation", ["dynamic", "static"])
def test_greedy_generation_with_media_equals_uncached_argmax_for_each_cache(model, processor, cache_implementation):
    inputs = encode(processor, OMNI_PROMPTS[1], images=OMNI_IMAGES[1:], audio=OMNI_AUDIO[1:])
    with torch.no_grad():
        generated = model.generate(
            **inputs, max_new_tokens=8, do_sample=False, eos_token_id=None, cache_implementation=cache_implementation
        )
    assert len(set(generated[0, inputs["input_ids"].shape[1] :].tolist())) > 2
    assert torch.equal(generated, greedy_without_cache(model, inputs, 8))


@pytest.mark.slow
def test_compiled_decoding_with_media_equals_the_dynamic_cache(processor, config):
    """generate's own compile path: static cache, decoding steps through torch.compile(fullgraph=True)."""
    from transformers import CompileConfig

    compiled_model = make_thinker(copy.deepcopy(config))
    inputs = encode(processor, OMNI_PROMPTS[0], images=OMNI_IMAGES[:1], audio=OMNI_AUDIO[:1])
    arguments = {"max_new_tokens": 6, "do_sample": False, "eos_token_id": None}
    with torch.no_grad():
        dynamic = compiled_model.generate(**inputs, **arguments)
        compile_config = CompileConfig(fullgraph=True, dynamic=False)
        compile_config._compile_all_devices = True  # transformers' switch for compiling on CPU
        compiled = compiled_model.generate(
            **inputs, **arguments, cache_implementation="static", compile_config=compile_config
        )
    assert compiled_model._compiled_call is not None  # the decoding steps really ran compiled
    assert torch.equal(compiled, dynamic)


def test_generate_takes_a_cache_under_either_name(model, processor):
    from transformers import DynamicCache

    inputs = encode(processor, OMNI_PROMPTS[0], images=OMNI_IMAGES[:1], audio=OMNI_AUDIO[:1])
    arguments = {"max_new_tokens": 5, "do_sample": False, "eos_token_id": None}
    with torch.no_grad():
        plain = model.generate(**inputs, **arguments)
        given = model.generate(**inputs, **arguments, cache=DynamicCache(config=model.config.text_config))
        with pytest.warns(FutureWarning, match="past_key_values"):
            old_name = model.generate(
                **inputs, **arguments, past_key_values=DynamicCache(config=model.config.text_config)
            )
    assert torch.equal(given, plain) and torch.equal(old_name, plain)


def test_media_features_are_model_outputs_with_hidden_states_and_attentions(processor, config):
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    eager = make_thinker(copy.deepcopy(config))  # the attention switch writes into the config
    eager.set_attn_implementation("eager")
    inputs = encode(processor, OMNI_PROMPTS, images=OMNI_IMAGES, audio=OMNI_AUDIO)
    hidden = config.text_config.hidden_size
    with torch.no_grad():
        image = eager.get_image_features(inputs["pixel_values"], output_hidden_states=True, output_attentions=True)
        audio = eager.get_audio_features(
            inputs["input_features"], inputs["feature_attention_mask"], output_hidden_states=True
        )
        image_tuple = eager.get_image_features(inputs["pixel_values"], return_dict=False)
    assert isinstance(image, BaseModelOutputWithPooling) and isinstance(audio, BaseModelOutputWithPooling)
    assert image.pooler_output.shape == (2, config.vision_config.num_output_tokens, hidden)
    assert len(image.hidden_states) == config.vision_config.num_hidden_layers + 1
    assert len(image.attentions) == config.vision_config.num_hidden_layers
    assert len(audio.hidden_states) == config.audio_config.encoder_layers + 1 and audio.attentions is None
    assert isinstance(image_tuple, tuple) and torch.equal(image_tuple[1], image.pooler_output)
    # the pooled audio tokens are what the forward scatters into the placeholders, zero past each clip
    assert audio.token_counts.tolist() == [int((ids == processor.audio_token_id).sum()) for ids in inputs["input_ids"]]
    assert audio.pooler_output.shape[:2] == (2, int(audio.token_counts.max()))
    assert not audio.pooler_output[1, int(audio.token_counts[1]) :].any()


def test_forward_returns_the_language_models_attentions_and_hidden_states(processor, config):
    eager = make_thinker(copy.deepcopy(config))  # the attention switch writes into the config
    eager.set_attn_implementation("eager")
    inputs = encode(processor, OMNI_PROMPTS[0], images=OMNI_IMAGES[:1], audio=OMNI_AUDIO[:1])
    with torch.no_grad():
        out = eager(**inputs, output_attentions=True, output_hidden_states=True)
    length, layers = inputs["input_ids"].shape[1], config.text_config.num_hidden_layers
    heads = config.text_config.num_attention_heads
    assert len(out.attentions) == layers and out.attentions[0].shape == (1, heads, length, length)
    assert len(out.hidden_states) == layers + 1


def test_resized_embeddings_accept_the_new_ids(processor, config):
    resized = make_thinker(copy.deepcopy(config))  # resizing writes the new vocab_size into the config
    old_size = resized.get_input_embeddings().num_embeddings
    resized.resize_token_embeddings(old_size + 7)
    inputs = encode(processor, OMNI_PROMPTS[0], images=OMNI_IMAGES[:1], audio=OMNI_AUDIO[:1])
    input_ids = torch.cat([inputs["input_ids"], torch.tensor([[old_size + 6]])], dim=1)
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        logits = resized(**{**inputs, "input_ids": input_ids, "attention_mask": attention_mask}).logits
    assert logits.shape[-1] == old_size + 7 == resized.config.text_config.vocab_size
    with pytest.raises(ValueError, match=rf"outside the vocabulary \[0, {old_size + 7}\)"):
        resized(input_ids=torch.tensor([[old_size + 7]]))


def test_generation_never_emits_media_placeholders(model, processor):
    """`<|image|>`/`<|audio|>` are input-only: suppressed at every step (also on top of a user's own
    suppress_tokens), so an uncached run over the growing sequence never meets a stray placeholder."""
    inputs = encode(processor, OMNI_PROMPTS[0], images=OMNI_IMAGES[:1], audio=OMNI_AUDIO[:1])
    media = [processor.image_token_id, processor.audio_token_id]
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=4, do_sample=False, eos_token_id=None, suppress_tokens=[7],
            output_scores=True, return_dict_in_generate=True,
        )  # fmt: skip
        uncached = model.generate(**inputs, max_new_tokens=4, do_sample=False, eos_token_id=None, use_cache=False)
    for scores in out.scores:
        assert torch.isinf(scores[:, media + [7]]).all() and torch.isfinite(scores[:, 8]).all()
    assert torch.equal(uncached, greedy_without_cache(model, inputs, 4))
    assert model.generation_config.suppress_tokens is None  # the model's own config is left alone


# ---------------------------------------------------------------- save / load and the Auto classes


def test_save_load_round_trip_and_auto_classes(model, processor, tmp_path):
    inputs = encode(processor, OMNI_PROMPTS, images=OMNI_IMAGES, audio=OMNI_AUDIO)
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    assert type(AutoConfig.from_pretrained(tmp_path)) is MuOmniThinkerConfig
    for loader in (MuOmniThinkerForConditionalGeneration, AutoModel, AutoModelForImageTextToText,
                   AutoModelForMultimodalLM):  # fmt: skip
        loaded = loader.from_pretrained(tmp_path).eval()
        assert type(loaded) is MuOmniThinkerForConditionalGeneration, loader
        with torch.no_grad():
            torch.testing.assert_close(loaded(**inputs).logits, expected, atol=0, rtol=0)
    # the tied head survives the round trip
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight

    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded_processor) is MuOmniProcessor
    reencoded = encode(loaded_processor, OMNI_PROMPTS, images=OMNI_IMAGES, audio=OMNI_AUDIO)
    assert reencoded.keys() == inputs.keys()
    for key in inputs:
        assert torch.equal(reencoded[key], inputs[key]), key
    feature_extractor = AutoFeatureExtractor.from_pretrained(tmp_path)
    image_processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(feature_extractor) is MuOmniFeatureExtractor and type(image_processor) is MuOmniImageProcessor
    assert (image_processor.size.height, image_processor.size.width) == (32, 32)
    assert torch.equal(image_processor(OMNI_IMAGES, return_tensors="pt")["pixel_values"], inputs["pixel_values"])


# ---------------------------------------------------------------- errors


def test_placeholder_and_feature_count_mismatches_name_both_counts(model, processor):
    inputs = encode(processor, OMNI_PROMPTS[0], images=OMNI_IMAGES[:1], audio=OMNI_AUDIO[:1])
    ids = inputs["input_ids"]
    first_image = int((ids[0] == processor.image_token_id).nonzero()[0])
    first_audio = int((ids[0] == processor.audio_token_id).nonzero()[0])
    one_image_token_short = ids.clone()
    one_image_token_short[0, first_image] = processor.tokenizer.pad_token_id
    media = {k: inputs[k] for k in ("pixel_values", "input_features", "feature_attention_mask")}
    with pytest.raises(
        ValueError, match=r"Image features and image tokens do not match, tokens: 4, features: 5 \(1 images x 5"
    ):
        model(input_ids=one_image_token_short, **media)
    with pytest.raises(ValueError, match=r"tokens: 5, features: 10 \(2 images x 5 tokens each\)"):
        model(input_ids=ids, **{**media, "pixel_values": inputs["pixel_values"].repeat(2, 1, 1, 1)})
    audio_short = ids.clone()
    audio_short[0, first_audio] = processor.tokenizer.pad_token_id
    with pytest.raises(
        ValueError, match=r"Audio features and audio tokens do not match, tokens: 16, features: 17 \(per clip: \[17\]\)"
    ):
        model(input_ids=audio_short, **media)


def test_media_errors(model, processor):
    inputs = encode(processor, OMNI_PROMPTS[0], images=OMNI_IMAGES[:1], audio=OMNI_AUDIO[:1])
    with pytest.raises(ValueError, match="input_ids contain 5 image tokens but no pixel_values were given"):
        model(input_ids=inputs["input_ids"], input_features=inputs["input_features"])
    with pytest.raises(ValueError, match="input_ids contain 17 audio tokens but no input_features were given"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"])
    with pytest.raises(ValueError, match=r"pixel_values / input_features need input_ids \(not inputs_embeds\)"):
        model(input_ids=None, pixel_values=inputs["pixel_values"])
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with pytest.raises(ValueError, match=r"pixel_values / input_features need input_ids \(not inputs_embeds\)"):
        model(inputs_embeds=embeds, input_features=inputs["input_features"])
    # a text-only prompt that contains a typed placeholder id is an error too, not a silently embedded token
    text_ids = processor.tokenizer("what is <|image|>?", return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match="input_ids contain 1 image tokens but no pixel_values"):
        model(input_ids=text_ids)


# ---------------------------------------------------------------- LoRA


def test_language_model_lora_targets_is_a_full_match_regex(model):
    lora = LoraConfig(target_modules=LANGUAGE_MODEL_LORA_TARGETS)
    assert isinstance(lora.target_modules, str)  # peft keeps a string as one regex, matched with re.fullmatch
    names = [name for name, _ in model.named_modules()]
    matched = {name for name in names if check_target_module_exists(lora, name)}
    assert matched == {name for name in names if re.fullmatch(LANGUAGE_MODEL_LORA_TARGETS, name)}
    assert "language_model.model.layers.0.self_attn.q_proj" in matched
    assert "audio_tower.audio_encoder.layers.0.self_attn.q_proj" not in matched
    # a full match, not a search: a longer name that merely contains a target does not match
    assert not check_target_module_exists(lora, "language_model.model.layers.0.self_attn.q_proj.base_layer")


def test_lora_wraps_only_language_model_projections_trains_and_merges(preset_model, processor):
    model = preset_model
    base = copy.deepcopy(model)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=LANGUAGE_MODEL_LORA_TARGETS))
    wrapped = {
        name.removeprefix("base_model.model.") for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)
    }
    layers = model.config.text_config.num_hidden_layers
    expected = {
        f"language_model.model.layers.{i}.{part}"
        for i in range(layers)
        for part in [f"self_attn.{p}_proj" for p in "qkvo"] + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]
    }
    assert wrapped == expected
    inner = peft_model.base_model.model
    for encoder in (inner.audio_tower, inner.visual, inner.audio_projector, inner.vision_projector):
        assert not any(isinstance(m, LoraLayer) for m in encoder.modules())
    assert type(inner.language_model.lm_head) is nn.Linear
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name and ".language_model." in name for name in trainable)

    batch = encode(processor, OMNI_PROMPTS, images=OMNI_IMAGES, audio=OMNI_AUDIO)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for token_id in (processor.image_token_id, processor.audio_token_id):
        labels = labels.masked_fill(labels == token_id, -100)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    losses = []
    for _ in range(4):
        loss = peft_model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]

    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(**batch).logits
        assert not torch.allclose(adapted, model(**batch).logits, atol=1e-3)  # the adapter changed something
    merged = peft_model.merge_and_unload()
    assert type(merged) is MuOmniThinkerForConditionalGeneration
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapted, atol=ATOL, rtol=0)
