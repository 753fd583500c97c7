"""Shared fixtures: tiny, odd-sized configs (vocab 99, hidden 32, intermediate 37) that expose shape
bugs and keep the suite fast on a 2-core CPU.

Fixtures other test files may rely on (keep their names and meaning stable):
    tiny_text_config_kwargs  dict of `MuOmniTextConfig` fields (GQA: 4 heads, 2 kv heads, 2 layers)
    make_text_config         factory: make_text_config(**overrides) -> MuOmniTextConfig
    tiny_text_config         the dense tiny config
    tiny_moe_text_config     the same with 4 experts, top-2
    make_causal_lm           factory: make_causal_lm(config=None, seed=0, **overrides) -> MuOmniForCausalLM (eval)
    tiny_causal_lm           a seeded MuOmniForCausalLM in eval mode
    to_qwen2_config          function mapping a dense MuOmniTextConfig to the equivalent Qwen2Config
    left_padded_batch        function(prompts, pad_token_id) -> (input_ids, attention_mask), left padding
"""

import pytest
import torch
import transformers
from transformers import Qwen2Config

from muomni import MuOmniForCausalLM, MuOmniTextConfig
from muomni.version import TRANSFORMERS_REQUIREMENT

TINY_TEXT_CONFIG = {
    "vocab_size": 99,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "pad_token_id": 1,
    "eos_token_id": 0,
    # larger than the default 0.02 so that a random model's greedy continuations vary from step to
    # step (generation tests would otherwise compare runs of one repeated token)
    "initializer_range": 0.2,
}


def pytest_report_header(config):
    # CI runs the suite on two transformers releases; the header says which one this run used
    return (
        f"transformers {transformers.__version__} (muomni declares transformers{TRANSFORMERS_REQUIREMENT}), "
        f"torch {torch.__version__}"
    )


@pytest.fixture(autouse=True, scope="session")
def _single_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a loaded 2-core machine the thread
    hand-offs make them ~10x slower; the whole suite runs single-threaded."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def qwen2_config_from(config: MuOmniTextConfig, **overrides) -> Qwen2Config:
    """The `Qwen2Config` with the same dimensions, RoPE base, special ids and attention kernel as a
    dense `MuOmniTextConfig`. Qwen2 always has q/k/v biases: pair it with `attention_bias=True`."""
    if config.num_experts:
        raise ValueError("Qwen2 has no mixture of experts; use a dense config (num_experts=0)")
    fields = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "hidden_act": config.hidden_act,
        "max_position_embeddings": config.max_position_embeddings,
        "initializer_range": config.initializer_range,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_parameters": dict(config.rope_parameters),
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_dropout": config.attention_dropout,
        "pad_token_id": config.pad_token_id,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "attn_implementation": config._attn_implementation,
    }
    fields.update(overrides)
    return Qwen2Config(**fields)


def pad_left(prompts: list[torch.Tensor], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 1-D prompts of different lengths into left-padded (B, T) ids and attention mask."""
    length = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, length - len(prompt) :] = prompt
        attention_mask[row, length - len(prompt) :] = 1
    return input_ids, attention_mask


@pytest.fixture
def tiny_text_config_kwargs() -> dict:
    return dict(TINY_TEXT_CONFIG)


@pytest.fixture
def make_text_config():
    def make(**overrides) -> MuOmniTextConfig:
        return MuOmniTextConfig(**{**TINY_TEXT_CONFIG, **overrides})

    return make


@pytest.fixture
def tiny_text_config(make_text_config) -> MuOmniTextConfig:
    return make_text_config()


@pytest.fixture
def tiny_moe_text_config(make_text_config) -> MuOmniTextConfig:
    return make_text_config(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=19)


@pytest.fixture
def make_causal_lm(make_text_config):
    def make(config: MuOmniTextConfig | None = None, seed: int = 0, **overrides) -> MuOmniForCausalLM:
        if config is None:
            config = make_text_config(**overrides)
        elif overrides:
            raise TypeError("pass either a config or field overrides, not both")
        torch.manual_seed(seed)
        return MuOmniForCausalLM(config).eval()

    return make


@pytest.fixture
def tiny_causal_lm(make_causal_lm) -> MuOmniForCausalLM:
    return make_causal_lm()


@pytest.fixture
def to_qwen2_config():
    return qwen2_config_from


@pytest.fixture
def left_padded_batch():
    return pad_left
