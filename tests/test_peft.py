"""LoRA adapters from peft on `MuOmniForCausalLM`: training, saving, reloading, merging, targeting."""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn

from muomni import MuOmniForCausalLM

# peft 0.21 still calls transformers' deprecated `is_gradient_checkpointing`
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ATOL = 1e-5


def lora_config(**overrides) -> LoraConfig:
    # init_lora_weights=False: B is random too, so a fresh adapter already changes the outputs and the
    # save/load and merge checks compare something non-trivial
    fields = {"r": 4, "lora_alpha": 8, "target_modules": LLAMA_TARGETS, "task_type": "CAUSAL_LM"}
    return LoraConfig(**{**fields, **overrides})


def batch(seed: int = 3) -> torch.Tensor:
    return torch.randint(2, 99, (2, 10), generator=torch.Generator().manual_seed(seed))


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}


def test_model_provides_what_peft_uses(tiny_causal_lm):
    assert tiny_causal_lm.get_input_embeddings() is tiny_causal_lm.model.embed_tokens
    assert tiny_causal_lm.get_output_embeddings() is tiny_causal_lm.lm_head
    assert callable(tiny_causal_lm.prepare_inputs_for_generation)
    assert tiny_causal_lm.can_generate()


def test_lora_targets_the_llama_names(tiny_causal_lm):
    model = get_peft_model(tiny_causal_lm, lora_config())
    wrapped = {name.removeprefix("base_model.model.") for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    layers = tiny_causal_lm.config.num_hidden_layers
    attention, mlp = ("q_proj", "k_proj", "v_proj", "o_proj"), ("gate_proj", "up_proj", "down_proj")
    expected = {f"model.layers.{i}.self_attn.{name}" for i in range(layers) for name in attention}
    expected |= {f"model.layers.{i}.mlp.{name}" for i in range(layers) for name in mlp}
    assert wrapped == expected
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


def test_lora_training_changes_the_adapter_and_reduces_the_loss(tiny_causal_lm):
    model = get_peft_model(tiny_causal_lm, lora_config())
    model.train()
    input_ids = batch()
    before = lora_weights(model)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    after = lora_weights(model)
    assert all(not torch.equal(after[name], before[name]) for name in before)
    for name, p in model.named_parameters():  # the base model is frozen
        if name in base_before:
            assert torch.equal(p, base_before[name]), name


def test_adapter_save_load_reproduces_the_logits(make_causal_lm, tmp_path):
    model = get_peft_model(make_causal_lm(seed=0), lora_config(init_lora_weights=False)).eval()
    input_ids = batch()
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
        assert not torch.allclose(expected, make_causal_lm(seed=0)(input_ids).logits, atol=1e-3)

    model.save_pretrained(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert "adapter_model.safetensors" in files and not any(name.endswith(".bin") for name in files)

    reloaded = PeftModel.from_pretrained(make_causal_lm(seed=0), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=input_ids).logits, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("tie_word_embeddings", [True, False], ids=["tied", "untied"])
def test_merge_and_unload_gives_the_same_logits_and_a_plain_model(make_causal_lm, tie_word_embeddings):
    base = make_causal_lm(tie_word_embeddings=tie_word_embeddings)
    model = get_peft_model(base, lora_config(init_lora_weights=False)).eval()
    input_ids = batch()
    with torch.no_grad():
        expected = model(input_ids=input_ids).logits
        adapted_tokens = model.generate(input_ids=input_ids, max_new_tokens=5, do_sample=False, pad_token_id=1)
    merged = model.merge_and_unload()
    assert type(merged) is MuOmniForCausalLM
    assert not any(isinstance(m, LoraLayer) for m in merged.modules())
    assert type(merged.model.layers[0].self_attn.q_proj) is nn.Linear
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids).logits, expected, atol=ATOL, rtol=0)
        merged_tokens = merged.generate(input_ids, max_new_tokens=5, do_sample=False, pad_token_id=1)
    assert torch.equal(merged_tokens, adapted_tokens)


def test_all_linear_leaves_the_lm_head_alone(tiny_causal_lm):
    model = get_peft_model(tiny_causal_lm, lora_config(target_modules="all-linear"))
    base = model.base_model.model
    assert type(base.lm_head) is nn.Linear
    attention = base.model.layers[0].self_attn
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert isinstance(getattr(attention, name), LoraLayer), name
    for name in ("gate_proj", "up_proj", "down_proj"):
        assert isinstance(getattr(base.model.layers[0].mlp, name), LoraLayer), name


def test_lora_reaches_the_experts_of_a_moe_model(make_causal_lm, tiny_moe_text_config):
    model = get_peft_model(make_causal_lm(tiny_moe_text_config), lora_config())
    base = model.base_model.model
    for layer in base.model.layers:
        assert type(layer.mlp.gate) is nn.Linear  # the router is not a target
        for expert in layer.mlp.experts:
            for name in ("gate_proj", "up_proj", "down_proj"):
                assert isinstance(getattr(expert, name), LoraLayer), name

    model.train()
    input_ids = batch()
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    expert_grads = [
        p.grad for name, p in model.named_parameters() if "experts" in name and "lora_B" in name and p.grad is not None
    ]
    assert expert_grads and any(grad.abs().sum() > 0 for grad in expert_grads)

    model.eval()
    with torch.no_grad():
        generated = model.generate(input_ids=input_ids, max_new_tokens=4, do_sample=False, pad_token_id=1)
    assert generated.shape == (2, 14)


@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
def test_lora_with_gradient_checkpointing_matches_without(make_causal_lm):
    input_ids = batch()

    def adapter_grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = get_peft_model(make_causal_lm(seed=0), lora_config(init_lora_weights=False))
        if checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()  # frozen embeddings: the checkpointed layers still need grads
        model.train()
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = adapter_grads(False), adapter_grads(True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)
