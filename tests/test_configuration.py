"""MuOmni configs: cross-field validation, serialization round trips, presets, nesting."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import muomni
from muomni import MuOmniConfig, MuOmniForCausalLM, MuOmniTextConfig, get_preset, get_preset_config
from muomni.configuration import MuOmniAudioEncoderConfig, MuOmniThinkerConfig, MuOmniVisionEncoderConfig


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_attention_heads": 5}, r"hidden_size \(32\) is not a multiple of num_attention_heads \(5\)"),
        ({"num_key_value_heads": 3}, r"num_attention_heads \(4\) is not a multiple of num_key_value_heads \(3\)"),
        ({"num_experts": 2, "num_experts_per_tok": 3}, r"num_experts_per_tok \(3\) must not exceed num_experts \(2\)"),
        ({"num_experts": -1}, r"num_experts must be an integer >= 0.*got -1"),
        ({"num_experts": 4, "num_experts_per_tok": 0}, r"num_experts_per_tok must be a positive integer, got 0"),
        ({"num_experts": 4, "moe_intermediate_size": -3}, r"moe_intermediate_size must be a positive integer, got -3"),
        ({"num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 7}, r"head_dim \(7\) must be even"),
        ({"eos_token_id": 99}, r"eos_token_id \(99\) is outside the vocabulary \[0, 99\)"),
        ({"eos_token_id": [0, 120]}, r"eos_token_id \(120\) is outside the vocabulary \[0, 99\)"),
        ({"pad_token_id": 99}, r"pad_token_id \(99\) is outside the vocabulary \[0, 99\)"),
        ({"pad_token_id": -1}, r"pad_token_id \(-1\) is outside the vocabulary"),
        ({"bos_token_id": 200}, r"bos_token_id \(200\) is outside the vocabulary"),
        ({"attention_dropout": 1.0}, r"attention_dropout must be in \[0, 1\), got 1.0"),
        ({"rms_norm_eps": 0.0}, r"rms_norm_eps must be > 0, got 0.0"),
    ],
)
def test_text_config_rejects_inconsistent_fields(make_text_config, overrides, message):
    with pytest.raises(ValueError, match=message):
        make_text_config(**overrides)


@pytest.mark.parametrize(
    "name",
    [
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "head_dim",
    ],
)  # fmt: skip
@pytest.mark.parametrize("value", [0, -4])
def test_text_config_rejects_non_positive_sizes(make_text_config, name, value):
    with pytest.raises(ValueError, match=rf"MuOmniTextConfig\.{name} must be a positive integer, got {value}"):
        make_text_config(**{name: value})


def test_text_config_rejects_float_size(make_text_config):
    with pytest.raises(ValueError, match=r"hidden_size must be a positive integer, got 32.0"):
        make_text_config(hidden_size=32.0)


def test_unknown_preset_name():
    with pytest.raises(ValueError, match=r"Unknown MuOmni preset 'nope'; expected one of \['micro', 'tiny'\]"):
        muomni.get_preset_config("nope")
    with pytest.raises(ValueError, match=r"Unknown MuOmni preset"):
        get_preset("nope")


# --- derived fields ----------------------------------------------------------------------------


def test_text_config_derived_fields(make_text_config):
    config = make_text_config(num_key_value_heads=None, rope_theta=500.0)
    assert config.num_key_value_heads == config.num_attention_heads == 4  # None means MHA, like Qwen2
    assert config.head_dim == 32 // 4
    assert config.moe_intermediate_size == config.intermediate_size == 37
    assert config.rope_parameters == {"rope_type": "default", "rope_theta": 500.0}
    explicit = make_text_config(num_attention_heads=6, num_key_value_heads=3, head_dim=6)  # 6 * 6 != 32 is allowed
    assert explicit.head_dim == 6


# --- round trips -------------------------------------------------------------------------------


def _fields(config) -> dict:
    """`to_dict()` without `_name_or_path`, which records where a config was loaded from."""
    as_dict = config.to_dict()
    as_dict.pop("_name_or_path", None)
    return as_dict


def test_text_config_dict_and_disk_round_trip(make_text_config, tmp_path):
    config = make_text_config(num_experts=4, rope_theta=500.0, attention_bias=True, tie_word_embeddings=False)
    as_dict = _fields(config)
    assert _fields(MuOmniTextConfig.from_dict(as_dict)) == as_dict

    config.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["model_type"] == "muomni_text"
    assert on_disk["rope_parameters"] == {"rope_type": "default", "rope_theta": 500.0}
    for field in ("temperature", "top_p", "max_length"):  # generation settings live in generation_config.json
        assert field not in on_disk
    for loaded in (MuOmniTextConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        assert type(loaded) is MuOmniTextConfig
        assert _fields(loaded) == as_dict


def test_composite_config_round_trip(tmp_path):
    config = get_preset_config("tiny", thinker_config={"text_config": {"num_experts": 4}})
    as_dict = _fields(config)
    rebuilt = MuOmniConfig.from_dict(as_dict)
    assert _fields(rebuilt) == as_dict
    assert isinstance(rebuilt.thinker_config.text_config, MuOmniTextConfig)
    assert rebuilt.get_text_config().num_experts == 4

    config.save_pretrained(tmp_path)
    for loaded in (MuOmniConfig.from_pretrained(tmp_path), AutoConfig.from_pretrained(tmp_path)):
        assert type(loaded) is MuOmniConfig
        assert _fields(loaded) == as_dict


def test_get_text_config_returns_the_thinkers_language_model():
    config = get_preset_config("tiny")
    text_config = config.get_text_config()
    assert isinstance(text_config, MuOmniTextConfig)
    assert text_config is config.thinker_config.text_config
    assert config.thinker_config.get_text_config() is text_config
    assert config.get_text_config(decoder=True) is text_config
    assert config.tie_word_embeddings == text_config.tie_word_embeddings


# --- presets -----------------------------------------------------------------------------------


def test_micro_preset_has_the_seeds_dimensions():
    text_config = get_preset_config("micro").get_text_config()
    assert (text_config.hidden_size, text_config.vocab_size, text_config.max_position_embeddings) == (256, 5000, 512)
    assert text_config.num_key_value_heads < text_config.num_attention_heads  # GQA
    assert text_config.hidden_act == "silu"  # SwiGLU


@pytest.mark.parametrize("name", ["tiny", "micro"])
def test_presets_build_a_working_language_model(name):
    text_config = get_preset_config(name).get_text_config()
    torch.manual_seed(0)
    model = MuOmniForCausalLM(text_config).eval()
    input_ids = torch.randint(0, text_config.vocab_size, (1, 5))
    with torch.no_grad():
        logits = model(input_ids).logits
    assert logits.shape == (1, 5, text_config.vocab_size)
    assert torch.isfinite(logits).all()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # presets tie


def test_preset_overrides_merge_and_leave_the_preset_untouched():
    config = get_preset_config("micro", thinker_config={"text_config": {"num_experts": 4}})
    assert config.get_text_config().num_experts == 4
    assert config.get_text_config().hidden_size == 256  # the rest of the nested dict is kept
    assert get_preset_config("micro").get_text_config().num_experts == 0


def test_auto_classes_know_the_text_model(tiny_text_config):
    model = AutoModelForCausalLM.from_config(tiny_text_config)
    assert type(model) is MuOmniForCausalLM


# --- what a config must not take silently --------------------------------------------------------


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: MuOmniThinkerConfig(text_config={"hiden_size": 64}), ValueError,
         r"MuOmniTextConfig has no field 'hiden_size'; did you mean 'hidden_size'\?"),
        (lambda: get_preset_config("tiny", talker={"hidden_size": 64}), ValueError,
         r"MuOmniConfig has no field 'talker'; did you mean 'talker_config'\?"),
        (lambda: get_preset_config("tiny", talker_config={"num_hiden_layers": 2}), ValueError,
         r"MuOmniTalkerConfig has no field 'num_hiden_layers'; did you mean 'num_hidden_layers'\?"),
        (lambda: MuOmniConfig(enable_audio_output="no"), TypeError,
         r"MuOmniConfig.enable_audio_output must be True or False, got 'no'"),
        (lambda: MuOmniVisionEncoderConfig(dropout=1.5), ValueError,
         r"MuOmniVisionEncoderConfig.dropout must be a probability in \[0, 1\), got 1.5"),
        (lambda: MuOmniAudioEncoderConfig(attention_dropout=-0.1), ValueError,
         r"MuOmniAudioEncoderConfig.attention_dropout must be a probability in \[0, 1\), got -0.1"),
    ],
    ids=["nested-typo", "preset-key", "preset-nested-typo", "bool-string", "vision-dropout", "audio-dropout"],
)
def test_typos_wrong_types_and_impossible_values_are_refused(build, error, match):
    with pytest.raises(error, match=match):
        build()


def test_saved_metadata_and_legacy_rope_keys_still_load(tmp_path):
    get_preset_config("tiny").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    saved["thinker_config"]["audio_config"]["use_cache"] = False  # what Trainer writes into a config it saves
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = MuOmniConfig.from_pretrained(tmp_path, attn_implementation="eager")
    assert loaded.thinker_config.audio_config.d_model == get_preset_config("tiny").thinker_config.audio_config.d_model
    assert MuOmniTextConfig(rope_theta=500.0).rope_parameters["rope_theta"] == 500.0
