"""Named MuOmni presets.

`tiny` is the scale of the tests and the built-in demo (trains on a laptop CPU in minutes);
`micro` has the seeds' thinker dimensions (hidden 256, vocabulary 5000, context 512, SwiGLU,
GQA, RoPE). A preset is a plain dict of config fields, so a user can inspect and override it:

    config = get_preset_config("micro", thinker_config={"text_config": {"num_experts": 4}})
"""

import copy

from .configuration_muomni import SPECIAL_TOKEN_IDS, MuOmniConfig

PRESETS: dict[str, dict] = {
    "tiny": {
        "thinker_config": {
            "text_config": {
                "vocab_size": 2048,
                "hidden_size": 128,
                "intermediate_size": 352,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
                "tie_word_embeddings": True,
                "eos_token_id": SPECIAL_TOKEN_IDS["eos_token_id"],
                "pad_token_id": SPECIAL_TOKEN_IDS["pad_token_id"],
            },
            "audio_config": {
                "d_model": 96,
                "encoder_layers": 2,
                "encoder_attention_heads": 2,
                "encoder_ffn_dim": 256,
            },
            "vision_config": {
                "hidden_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "intermediate_size": 192,
                "projection_dim": 64,
            },
        },
        "talker_config": {
            "hidden_size": 96,
            "intermediate_size": 256,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "thinker_hidden_size": 128,
        },
        "codec_config": {"hidden_size": 96},
        "vocoder_config": {"hidden_size": 128, "intermediate_size": 384, "num_layers": 4},
    },
    "micro": {
        "thinker_config": {
            "text_config": {
                "vocab_size": 5000,
                "hidden_size": 256,
                "intermediate_size": 768,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 512,
                "tie_word_embeddings": True,
                "eos_token_id": SPECIAL_TOKEN_IDS["eos_token_id"],
                "pad_token_id": SPECIAL_TOKEN_IDS["pad_token_id"],
            },
            "audio_config": {"d_model": 192, "encoder_layers": 4, "encoder_attention_heads": 3},
            "vision_config": {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4},
        },
        "talker_config": {
            "hidden_size": 128,
            "intermediate_size": 384,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "thinker_hidden_size": 256,
        },
        "codec_config": {"hidden_size": 128},
        "vocoder_config": {},
    },
}


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def get_preset(name: str, **overrides) -> dict:
    """The preset `name` as a dict of `MuOmniConfig` fields, with nested `overrides` merged in."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"Unknown MuOmni preset {name!r}; expected one of {sorted(PRESETS)}")
    return _merge(PRESETS[name], overrides)


def get_preset_config(name: str, **overrides) -> MuOmniConfig:
    """A `MuOmniConfig` built from the preset `name` (see `get_preset`)."""
    return MuOmniConfig(**get_preset(name, **overrides))
