"""The thinker language model (`MuOmniTextModel`, `MuOmniForCausalLM`).

References: `transformers.Qwen2ForCausalLM` with the same weights (logits, attentions, hidden
states, greedy tokens), uncached full forward passes (KV cache), one-by-one runs (batching),
`torch.nn.functional.cross_entropy` (loss), a hand-written top-k router (MoE), and transformers'
Qwen2-MoE `load_balancing_loss_func` (aux loss).
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, Qwen2ForCausalLM
from transformers.models.qwen2_moe.modeling_qwen2_moe import load_balancing_loss_func

from muomni import MuOmniForCausalLM
from muomni.modeling_text import MuOmniMLP, MuOmniSparseMoeBlock, load_balancing_loss

ATOL = 1e-5


def paired_models(make_text_config, to_qwen2_config, seed: int = 0, **overrides):
    """(ours, Qwen2ForCausalLM) in eval mode with identical weights loaded with strict=True."""
    config = make_text_config(attention_bias=True, **overrides)
    torch.manual_seed(seed)
    reference = Qwen2ForCausalLM(to_qwen2_config(config)).eval()
    ours = MuOmniForCausalLM(config).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return ours, reference


def prompts(lengths, vocab_size: int = 99, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(2, vocab_size, (length,), generator=generator) for length in lengths]


def greedy(model, input_ids, new_tokens: int, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            input_ids, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs
        )


# --- parity with Qwen2 -------------------------------------------------------------------------

ATTENTION_LAYOUTS = {
    "gqa": {"num_attention_heads": 4, "num_key_value_heads": 2},
    "mha": {"num_attention_heads": 4, "num_key_value_heads": 4},
    "mqa": {"num_attention_heads": 4, "num_key_value_heads": 1},
    "explicit_head_dim": {"num_attention_heads": 6, "num_key_value_heads": 3, "head_dim": 6},
}


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("tie_word_embeddings", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("layout", list(ATTENTION_LAYOUTS))
def test_logits_match_qwen2(
    make_text_config, to_qwen2_config, left_padded_batch, layout, tie_word_embeddings, attn_implementation
):
    ours, reference = paired_models(
        make_text_config,
        to_qwen2_config,
        rope_theta=500.0,
        tie_word_embeddings=tie_word_embeddings,
        attn_implementation=attn_implementation,
        **ATTENTION_LAYOUTS[layout],
    )
    assert reference.config.rope_parameters["rope_theta"] == ours.config.rope_parameters["rope_theta"] == 500.0
    assert ours.config._attn_implementation == reference.config._attn_implementation == attn_implementation
    assert set(ours.state_dict()) == set(reference.state_dict())
    tied = ours.lm_head.weight.data_ptr() == ours.model.embed_tokens.weight.data_ptr()
    assert tied == tie_word_embeddings

    input_ids, attention_mask = left_padded_batch(prompts([9, 4, 6]), pad_token_id=1)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids).logits, reference(input_ids).logits, atol=ATOL, rtol=0)
        masked = ours(input_ids, attention_mask=attention_mask).logits
        torch.testing.assert_close(
            masked, reference(input_ids, attention_mask=attention_mask).logits, atol=ATOL, rtol=0
        )
    # the padding changed the padded rows: the mask is really applied
    assert not torch.allclose(masked[1], ours(input_ids[1:2]).logits[0], atol=1e-3)


def test_qwen2_state_dict_needs_the_qkv_biases(make_text_config, to_qwen2_config):
    config = make_text_config(attention_bias=True)
    reference = Qwen2ForCausalLM(to_qwen2_config(config))
    no_bias = MuOmniForCausalLM(make_text_config(attention_bias=False))
    with pytest.raises(RuntimeError, match=r"Unexpected key\(s\).*self_attn\.q_proj\.bias"):
        no_bias.load_state_dict(reference.state_dict(), strict=True)
    assert MuOmniForCausalLM(config).model.layers[0].self_attn.o_proj.bias is None  # like Qwen2


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_greedy_tokens_match_qwen2_with_left_padding(
    make_text_config, to_qwen2_config, left_padded_batch, attn_implementation
):
    ours, reference = paired_models(make_text_config, to_qwen2_config, attn_implementation=attn_implementation)
    input_ids, attention_mask = left_padded_batch(prompts([3, 8, 5]), pad_token_id=1)
    expected = greedy(reference, input_ids, 10, attention_mask=attention_mask, pad_token_id=1)
    assert torch.equal(greedy(ours, input_ids, 10, attention_mask=attention_mask, pad_token_id=1), expected)


def test_eager_attentions_and_hidden_states_match_qwen2(make_text_config, to_qwen2_config, left_padded_batch):
    ours, reference = paired_models(make_text_config, to_qwen2_config, attn_implementation="eager")
    input_ids, attention_mask = left_padded_batch(prompts([7, 4]), pad_token_id=1)
    batch, length = input_ids.shape
    kwargs = {"attention_mask": attention_mask, "output_attentions": True, "output_hidden_states": True}
    with torch.no_grad():
        out, ref = ours(input_ids, **kwargs), reference(input_ids, **kwargs)

    config = ours.config
    assert len(out.attentions) == config.num_hidden_layers
    for attentions, ref_attentions in zip(out.attentions, ref.attentions):
        assert attentions.shape == (batch, config.num_attention_heads, length, length)
        torch.testing.assert_close(attentions.sum(-1), torch.ones(batch, config.num_attention_heads, length))
        assert torch.all(attentions[0].triu(diagonal=1) == 0)  # causal
        real_queries = attentions[1, :, length - 4 :]  # (H, 4, T); padded queries' rows are meaningless
        assert torch.all(real_queries[..., : length - 4] == 0)  # nobody attends to left padding
        assert torch.all(real_queries[..., length - 4 :].triu(diagonal=1) == 0)
        torch.testing.assert_close(attentions, ref_attentions, atol=ATOL, rtol=0)

    assert len(out.hidden_states) == config.num_hidden_layers + 1
    torch.testing.assert_close(out.hidden_states[0], ours.model.embed_tokens(input_ids))
    for hidden, ref_hidden in zip(out.hidden_states, ref.hidden_states):
        assert hidden.shape == (batch, length, config.hidden_size)
        torch.testing.assert_close(hidden, ref_hidden, atol=ATOL, rtol=0)


def test_sdpa_hidden_states_count(tiny_causal_lm):
    out = tiny_causal_lm(torch.tensor([[5, 6, 7]]), output_hidden_states=True)
    assert len(out.hidden_states) == tiny_causal_lm.config.num_hidden_layers + 1


# --- KV cache, generation, batching ------------------------------------------------------------

MODEL_VARIANTS = {
    "dense_sdpa": {},
    "dense_eager": {"attn_implementation": "eager"},
    "moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 19},
}


@pytest.mark.parametrize("variant", list(MODEL_VARIANTS))
def test_cached_greedy_generation_equals_uncached_argmax(make_causal_lm, variant):
    # no eos: both runs decode every step
    model = make_causal_lm(eos_token_id=None, **MODEL_VARIANTS[variant])
    input_ids = torch.stack(prompts([6, 6]))
    new_tokens = 12

    sequence = input_ids
    with torch.no_grad():
        for _ in range(new_tokens):  # the reference: full forward over the growing sequence, no cache
            next_token = model(sequence, use_cache=False).logits[:, -1].argmax(-1)
            sequence = torch.cat([sequence, next_token[:, None]], dim=-1)

    cached = greedy(model, input_ids, new_tokens)
    assert torch.equal(cached, sequence)
    assert len(set(sequence[0, 6:].tolist())) > 1  # a non-degenerate continuation
    assert torch.equal(greedy(model, input_ids, new_tokens, use_cache=False), sequence)
    assert torch.equal(greedy(model, input_ids, new_tokens, cache_implementation="static"), sequence)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["dense_sdpa", "moe"])
def test_compiled_decoding_equals_the_dynamic_cache(make_causal_lm, variant):
    """A fullgraph-compiled forward (static cache: no graph break, no host sync) decodes the same tokens."""
    model = make_causal_lm(eos_token_id=None, **MODEL_VARIANTS[variant])
    input_ids = torch.stack(prompts([6, 6]))
    dynamic = greedy(model, input_ids, 10)
    model.forward = torch.compile(model.forward, fullgraph=True, dynamic=False)
    assert torch.equal(greedy(model, input_ids, 10, cache_implementation="static"), dynamic)


@pytest.mark.parametrize("variant", list(MODEL_VARIANTS))
def test_incremental_decoding_logits_match_full_forward(make_causal_lm, variant):
    model = make_causal_lm(**MODEL_VARIANTS[variant])
    input_ids = torch.stack(prompts([11, 11]))
    with torch.no_grad():
        full = model(input_ids).logits
        cache = DynamicCache(config=model.config)
        prefill = model(input_ids[:, :4], cache=cache, use_cache=True)  # a 4-token chunk first
        torch.testing.assert_close(prefill.logits, full[:, :4], atol=ATOL, rtol=0)
        for step in range(4, input_ids.shape[1]):
            out = model(input_ids[:, step : step + 1], cache=cache, use_cache=True)
            assert out.cache is cache and cache.get_seq_length() == step + 1
            torch.testing.assert_close(out.logits[:, 0], full[:, step], atol=ATOL, rtol=0)


def test_incremental_decoding_with_left_padding(make_causal_lm, left_padded_batch):
    model = make_causal_lm()
    input_ids, attention_mask = left_padded_batch(prompts([10, 5]), pad_token_id=1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)  # what generate() passes
    real = attention_mask.bool()
    with torch.no_grad():
        full = model(input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        cache = DynamicCache(config=model.config)
        for step in range(input_ids.shape[1]):
            out = model(
                input_ids[:, step : step + 1],
                attention_mask=attention_mask[:, : step + 1],
                position_ids=position_ids[:, step : step + 1],
                cache=cache,
                use_cache=True,
            )
            keep = real[:, step]
            torch.testing.assert_close(out.logits[keep, 0], full[keep, step], atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", ["dense_sdpa", "dense_eager", "moe"])
def test_batched_left_padded_generation_equals_one_by_one(make_causal_lm, left_padded_batch, variant):
    model = make_causal_lm(eos_token_id=None, **MODEL_VARIANTS[variant])
    batch_prompts = prompts([3, 9, 6])
    input_ids, attention_mask = left_padded_batch(batch_prompts, pad_token_id=1)
    batched = greedy(model, input_ids, 8, attention_mask=attention_mask, pad_token_id=1)
    for row, prompt in enumerate(batch_prompts):
        single = greedy(model, prompt[None], 8, pad_token_id=1)
        assert torch.equal(batched[row, input_ids.shape[1] :], single[0, len(prompt) :]), f"row {row}"


# --- save / load -------------------------------------------------------------------------------


@pytest.mark.parametrize("tie_word_embeddings", [True, False], ids=["tied", "untied"])
def test_save_load_round_trip(make_causal_lm, tmp_path, tie_word_embeddings):
    model = make_causal_lm(tie_word_embeddings=tie_word_embeddings, rope_theta=500.0)
    model.save_pretrained(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith(".bin") for name in files)

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is MuOmniForCausalLM
    input_ids = torch.stack(prompts([7, 7]))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, atol=0, rtol=0)

    # inv_freq is a non-persistent buffer: it must be recomputed, not left uninitialised
    head_dim = loaded.config.head_dim
    expected = 1.0 / (500.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
    torch.testing.assert_close(loaded.model.rotary_emb.inv_freq, expected)
    torch.testing.assert_close(loaded.model.rotary_emb.original_inv_freq, expected)

    embed, head = loaded.model.embed_tokens.weight, loaded.lm_head.weight
    assert (head.data_ptr() == embed.data_ptr()) == tie_word_embeddings
    assert torch.equal(head, embed) == tie_word_embeddings

    # one training step keeps the tie (or the independence)
    loaded.train()
    optimizer = torch.optim.SGD(loaded.parameters(), lr=0.5)
    embed_before = embed.detach().clone()
    loaded(input_ids, labels=input_ids).loss.backward()
    optimizer.step()
    assert not torch.equal(embed, embed_before)
    assert (head.data_ptr() == embed.data_ptr()) == tie_word_embeddings
    assert torch.equal(head, embed) == tie_word_embeddings


def test_moe_save_load_round_trip(make_causal_lm, tiny_moe_text_config, tmp_path):
    model = make_causal_lm(tiny_moe_text_config)
    model.save_pretrained(tmp_path)
    loaded = MuOmniForCausalLM.from_pretrained(tmp_path).eval()
    input_ids = torch.stack(prompts([7, 7]))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, atol=0, rtol=0)


# --- mixture of experts ------------------------------------------------------------------------


def reference_moe(block: MuOmniSparseMoeBlock, hidden_states: torch.Tensor, norm_topk_prob: bool) -> torch.Tensor:
    """Token by token: softmax over experts, keep the top k, (renormalise), mix the experts' outputs."""
    flat = hidden_states.reshape(-1, hidden_states.shape[-1])
    outputs = []
    for token in flat:
        probs = torch.softmax(block.gate(token), dim=-1)
        weights, experts = probs.topk(block.top_k)
        if norm_topk_prob:
            weights = weights / weights.sum()
        outputs.append(sum(w * block.experts[int(e)](token) for w, e in zip(weights, experts)))
    return torch.stack(outputs).reshape(hidden_states.shape)


@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_moe_block_matches_reference_routing(make_text_config, norm_topk_prob):
    config = make_text_config(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=19, norm_topk_prob=norm_topk_prob
    )
    torch.manual_seed(0)
    block = MuOmniSparseMoeBlock(config)
    for parameter in block.parameters():
        nn.init.normal_(parameter, std=0.3)
    assert isinstance(block.experts, nn.ModuleList) and len(block.experts) == 4
    for expert in block.experts:
        assert isinstance(expert, MuOmniMLP)
        assert expert.gate_proj.weight.shape == (19, 32) and expert.up_proj.weight.shape == (19, 32)
        assert expert.down_proj.weight.shape == (32, 19)
    hidden_states = torch.randn(2, 5, 32)
    with torch.no_grad():
        output, router_logits = block(hidden_states)
        torch.testing.assert_close(output, reference_moe(block, hidden_states, norm_topk_prob), atol=ATOL, rtol=0)
    assert router_logits.shape == (10, 4)


def test_moe_model_layout_and_backward(make_causal_lm, tiny_moe_text_config):
    model = make_causal_lm(tiny_moe_text_config).train()
    for layer in model.model.layers:
        assert isinstance(layer.mlp, MuOmniSparseMoeBlock)
    input_ids = torch.stack(prompts([12, 12, 12]))
    model(input_ids, labels=input_ids).loss.backward()
    for layer in model.model.layers:
        assert layer.mlp.gate.weight.grad is not None and layer.mlp.gate.weight.grad.abs().sum() > 0
        used = [expert for expert in layer.mlp.experts if expert.gate_proj.weight.grad is not None]
        assert len(used) >= 2  # top-2 routing over 36 tokens reaches several experts


def test_moe_training_loss_adds_the_aux_loss(make_causal_lm, make_text_config, left_padded_batch):
    config = make_text_config(num_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.5)
    model = make_causal_lm(config).train()
    input_ids, attention_mask = left_padded_batch(prompts([9, 5, 7]), pad_token_id=1)
    labels = input_ids.masked_fill(attention_mask == 0, -100)

    out = model(input_ids, attention_mask=attention_mask, labels=labels, output_router_logits=True)
    vocab = config.vocab_size
    ce = F.cross_entropy(out.logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert len(out.router_logits) == config.num_hidden_layers
    # Qwen2-MoE's loss counts top_k slots per token (uniform routing -> top_k); ours is normalised to 1
    reference_aux = load_balancing_loss_func(out.router_logits, 4, 2, attention_mask) / 2
    torch.testing.assert_close(out.aux_loss, reference_aux)
    torch.testing.assert_close(out.loss, ce + 0.5 * out.aux_loss)
    out.loss.backward()

    model.eval()
    with torch.no_grad():
        evaluated = model(input_ids, attention_mask=attention_mask, labels=labels)
        ce = F.cross_entropy(evaluated.logits[:, :-1].reshape(-1, vocab), labels[:, 1:].reshape(-1))
    assert evaluated.aux_loss is None
    torch.testing.assert_close(evaluated.loss, ce)


def test_load_balancing_loss_uniform_and_collapsed():
    num_experts, top_k = 4, 2
    uniform = (torch.zeros(8, num_experts), torch.zeros(8, num_experts))  # two layers, equal probabilities
    torch.testing.assert_close(load_balancing_loss(uniform, num_experts, top_k), torch.tensor(1.0))

    # balanced but confident: token i prefers experts i and i+1 (mod 4), every expert gets a quarter
    balanced = torch.full((8, num_experts), -4.0)
    for token in range(8):
        balanced[token, [token % 4, (token + 1) % 4]] = 4.0
    torch.testing.assert_close(load_balancing_loss((balanced,), num_experts, top_k), torch.tensor(1.0))

    collapsed = torch.tensor([[4.0, 4.0, -4.0, -4.0]]).repeat(8, 1)  # everyone picks experts 0 and 1
    half_collapsed = torch.tensor([[1.0, 1.0, 0.0, 0.0]]).repeat(8, 1)
    collapsed_loss = load_balancing_loss((collapsed,), num_experts, top_k)
    assert collapsed_loss > load_balancing_loss((half_collapsed,), num_experts, top_k) > 1.0
    torch.testing.assert_close(collapsed_loss, torch.tensor(2.0), atol=1e-3, rtol=0)  # E * 2 * (1/2 * 1/2)

    for logits in (balanced, collapsed, torch.randn(8, num_experts)):
        reference = load_balancing_loss_func((logits,), num_experts, top_k) / top_k
        torch.testing.assert_close(load_balancing_loss((logits,), num_experts, top_k), reference)


def test_load_balancing_loss_excludes_padding():
    num_experts, top_k = 4, 2
    torch.manual_seed(0)
    attention_mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    layers = tuple(torch.randn(10, num_experts) for _ in range(2))  # (B*T, E) per layer
    layers[0][:2] = torch.tensor([9.0, 9.0, -9.0, -9.0])  # padding rows route to a collapsed pair
    layers[1][:2] = torch.tensor([9.0, 9.0, -9.0, -9.0])

    real = attention_mask.reshape(-1).bool()
    masked = load_balancing_loss(layers, num_experts, top_k, attention_mask)
    torch.testing.assert_close(masked, load_balancing_loss(tuple(layer[real] for layer in layers), num_experts, top_k))
    torch.testing.assert_close(masked, load_balancing_loss_func(layers, num_experts, top_k, attention_mask) / top_k)
    assert not torch.allclose(masked, load_balancing_loss(layers, num_experts, top_k))

    # with a KV cache the mask covers past + new tokens; the last T columns belong to the new ones
    longer_mask = torch.cat([torch.ones(2, 3, dtype=torch.long), attention_mask], dim=1)
    torch.testing.assert_close(load_balancing_loss(layers, num_experts, top_k, longer_mask), masked)


# --- training ----------------------------------------------------------------------------------


def test_loss_matches_cross_entropy_and_ignores_minus_100(tiny_causal_lm):
    input_ids = torch.stack(prompts([10, 10]))
    labels = input_ids.clone()
    labels[0, :4] = -100
    labels[1, 7] = -100
    out = tiny_causal_lm(input_ids, labels=labels)
    shifted_logits = out.logits[:, :-1].reshape(-1, tiny_causal_lm.config.vocab_size)
    shifted_labels = labels[:, 1:].reshape(-1)
    keep = shifted_labels != -100
    torch.testing.assert_close(out.loss, F.cross_entropy(shifted_logits[keep], shifted_labels[keep]))
    # changing the label of an ignored position changes nothing
    labels_changed = labels.clone()
    labels_changed[0, :4] = 5
    assert not torch.allclose(tiny_causal_lm(input_ids, labels=labels_changed).loss, out.loss)


@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
@pytest.mark.parametrize("variant", ["dense", "moe"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(
    make_causal_lm, make_text_config, monkeypatch, variant
):
    moe = {"num_experts": 4, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.1} if variant == "moe" else {}
    model = make_causal_lm(make_text_config(attention_dropout=0.0, **moe)).train()
    input_ids = torch.stack(prompts([10, 10]))

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss = model(input_ids, labels=input_ids).loss
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    loss, grads = loss_and_grads()
    # count MLP forwards (module hooks do not fire inside the checkpoint's recomputation)
    mlp_class = type(model.model.layers[0].mlp)
    calls = []

    def counting_forward(self, *args, _forward=mlp_class.forward, **kwargs):
        calls.append(self)
        return _forward(self, *args, **kwargs)

    monkeypatch.setattr(mlp_class, "forward", counting_forward)
    model.gradient_checkpointing_enable()
    assert model.model.gradient_checkpointing
    checkpointed_loss, checkpointed_grads = loss_and_grads()

    # every layer ran again during backward: checkpointing is really on
    assert len(calls) == 2 * model.config.num_hidden_layers
    torch.testing.assert_close(checkpointed_loss, loss)
    assert checkpointed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)


def test_inputs_embeds_equal_input_ids(tiny_causal_lm):
    input_ids = torch.stack(prompts([6, 6]))
    with torch.no_grad():
        expected = tiny_causal_lm(input_ids).logits
        embeds = tiny_causal_lm.get_input_embeddings()(input_ids)
        torch.testing.assert_close(tiny_causal_lm(inputs_embeds=embeds).logits, expected)
        torch.testing.assert_close(tiny_causal_lm(input_ids, logits_to_keep=1).logits, expected[:, -1:])
        as_tuple = tiny_causal_lm(input_ids, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], expected)


# --- bad input ---------------------------------------------------------------------------------


def test_exactly_one_of_input_ids_and_inputs_embeds(tiny_causal_lm):
    input_ids = torch.tensor([[3, 4, 5]])
    with pytest.raises(ValueError, match="Pass exactly one of input_ids or inputs_embeds, got both"):
        tiny_causal_lm(input_ids, inputs_embeds=torch.zeros(1, 3, 32))
    with pytest.raises(ValueError, match="Pass exactly one of input_ids or inputs_embeds, got neither"):
        tiny_causal_lm()


def test_sequence_longer_than_max_position_embeddings(make_causal_lm):
    model = make_causal_lm(max_position_embeddings=16)
    assert model(torch.full((1, 16), 5)).logits.shape == (1, 16, 99)  # exactly at the limit is fine
    with pytest.raises(ValueError, match=r"Sequence too long: position 16 .*max_position_embeddings \(16\)"):
        model(torch.full((1, 17), 5))
    with pytest.raises(ValueError, match=r"Sequence too long: position 16 \(cached 16 \+ new 1 tokens\)"):
        greedy(model, torch.full((1, 10), 5), 8, pad_token_id=1)  # the cache grows past the limit
    with pytest.raises(ValueError, match=r"Sequence too long"):
        greedy(model, torch.full((1, 10), 5), 8, pad_token_id=1, use_cache=False)


@pytest.mark.parametrize(
    "rope_parameters",
    [
        {"rope_type": "linear", "factor": 2.0},
        {"rope_type": "dynamic", "factor": 2.0},
        {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 16},
    ],
    ids=lambda parameters: parameters["rope_type"],
)
def test_rope_scaling_allows_longer_sequences_and_matches_qwen2(make_text_config, to_qwen2_config, rope_parameters):
    """With a scaling rope type the length guard steps aside; the scaled positions are Qwen2's."""
    rope_parameters = {"rope_theta": 10000.0, **rope_parameters}
    ours, reference = paired_models(
        make_text_config, to_qwen2_config, max_position_embeddings=16, rope_parameters=rope_parameters
    )
    input_ids = torch.stack(prompts([28, 28]))  # past max_position_embeddings
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids).logits, reference(input_ids).logits, atol=ATOL, rtol=0)
    assert torch.equal(greedy(ours, input_ids[:, :10], 14), greedy(reference, input_ids[:, :10], 14))


def test_resized_embeddings_accept_the_new_ids(make_causal_lm):
    model = make_causal_lm()
    model.resize_token_embeddings(110)
    with torch.no_grad():
        out = model(torch.tensor([[3, 109]]), labels=torch.tensor([[3, 109]]))
    assert out.logits.shape == (1, 2, 110) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 110\): min 3, max 110"):
        model(torch.tensor([[3, 110]]))


def test_tensor_parallel_plan_shards_the_experts(make_causal_lm, caplog):
    from transformers.distributed.tensor_parallel import verify_tp_plan

    dense = make_causal_lm()
    moe = make_causal_lm(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=19)
    assert dense.config.base_model_tp_plan is type(dense.config).base_model_tp_plan  # the class plan, untouched
    for model in (dense, moe):
        caplog.clear()
        verify_tp_plan(list(model.state_dict()), model._tp_plan)
        unused = [record.message for record in caplog.records if "not applied" in record.message]
        unsharded = " ".join(record.message for record in caplog.records if "not sharded" in record.message)
        assert not unused, unused  # every rule reaches a layer
        assert "proj" not in unsharded  # every projection, experts' included, is sharded
    assert "model.layers.*.mlp.experts.*.down_proj" in moe._tp_plan
    assert "mlp.gate.weight" in unsharded  # the router stays replicated: every rank routes alike
    assert "base_model_tp_plan" not in moe.config.to_dict()


@pytest.mark.parametrize(
    "input_ids, attention_mask, error, match",
    [
        (torch.tensor([5, 6, 7]), None, ValueError, r"input_ids must have shape \(batch, seq_len\), got \(3,\).*input_ids\[None\]"),
        (torch.zeros(1, 0, dtype=torch.long), None, ValueError, r"empty prompt"),
        ([[5, 6]], None, TypeError, r"input_ids must be a torch.Tensor of token ids, got list"),
        (torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1]]), ValueError, r"attention_mask must have the shape of input_ids \(1, 3\), got \(1, 2\)"),
        (torch.tensor([[5, 6], [7, 8]]), torch.tensor([[1, 1], [0, 0]]), ValueError, r"attention_mask rows \[1\] are all zeros"),
    ],
    ids=["1-D", "empty", "list", "short-mask", "empty-row"],
)
def test_generate_refuses_malformed_prompts(tiny_causal_lm, input_ids, attention_mask, error, match):
    with pytest.raises(error, match=match):
        tiny_causal_lm.generate(input_ids, attention_mask=attention_mask, max_new_tokens=2)


def test_labels_of_the_wrong_length_are_a_clear_error(tiny_causal_lm):
    with pytest.raises(ValueError, match=r"labels must have the shape of the input \(batch, seq_len\) \(1, 4\), got \(1, 3\)"):
        tiny_causal_lm(torch.tensor([[3, 4, 5, 6]]), labels=torch.tensor([[3, 4, 5]]))


def test_ids_outside_the_vocabulary(tiny_causal_lm):
    with pytest.raises(ValueError, match=r"input_ids contain ids outside the vocabulary \[0, 99\): min 1, max 99"):
        tiny_causal_lm(torch.tensor([[1, 99]]))
    with pytest.raises(ValueError, match=r"outside the vocabulary \[0, 99\): min -1, max 4"):
        tiny_causal_lm(torch.tensor([[4, -1]]))
    with pytest.raises(TypeError, match=r"input_ids must be an integer tensor, got dtype torch.float32"):
        tiny_causal_lm(torch.zeros(1, 3))


def test_inputs_embeds_with_the_wrong_shape(tiny_causal_lm):
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(batch, seq_len, 32\), got \(1, 3, 31\)"):
        tiny_causal_lm(inputs_embeds=torch.zeros(1, 3, 31))
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(batch, seq_len, 32\), got \(3, 32\)"):
        tiny_causal_lm(inputs_embeds=torch.zeros(3, 32))
