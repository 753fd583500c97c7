"""A saved MuOmni language model + tokenizer through the Auto classes and `pipeline("text-generation")`.

The pipeline's answers are checked against `model.generate` on `tokenizer.apply_chat_template(...,
add_generation_prompt=True)`, and a model that has memorised one chat must stop at `<|im_end|>`
(`eos_token_id=[0, 3]`) with the control token stripped from the answer.
"""

import random

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer, pipeline

from muomni import MuOmniForCausalLM, MuOmniTextConfig, MuOmniTextModel, MuOmniTokenizer, train_tokenizer

WORDS = "the a cat dog bird sat ran on under mat tree big small red blue happy and but where is".split()
CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Where is the cat?"},
]
MAX_NEW_TOKENS = 12


def tiny_config(vocab_size: int) -> MuOmniTextConfig:
    return MuOmniTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=[0, 3],  # <|endoftext|> and <|im_end|>
        pad_token_id=1,
    )


@pytest.fixture(scope="module")
def tokenizer() -> MuOmniTokenizer:
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "." for _ in range(300)]
    return train_tokenizer(corpus, vocab_size=300)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    model = MuOmniForCausalLM(tiny_config(len(tokenizer))).eval()
    path = tmp_path_factory.mktemp("muomni_text")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def generator(checkpoint):
    return pipeline("text-generation", model=str(checkpoint[0]))


def reference_answer(model, tokenizer, messages, max_new_tokens=MAX_NEW_TOKENS) -> tuple[list[int], str]:
    """What the chat path of the pipeline must reproduce: greedy `generate` on the ChatML prompt."""
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new_ids = output[0, inputs["input_ids"].shape[1] :].tolist()
    return new_ids, tokenizer.decode(new_ids, skip_special_tokens=True)


def test_auto_classes_load_the_checkpoint(checkpoint, tokenizer):
    path, model = checkpoint
    config = AutoConfig.from_pretrained(path)
    assert type(config) is MuOmniTextConfig and config.eos_token_id == [0, 3] and config.vocab_size == len(tokenizer)
    assert type(AutoModel.from_pretrained(path)) is MuOmniTextModel
    loaded = AutoModelForCausalLM.from_pretrained(path).eval()
    assert type(loaded) is MuOmniForCausalLM
    assert loaded.generation_config.eos_token_id == [0, 3] and loaded.generation_config.pad_token_id == 1
    input_ids = torch.tensor([tokenizer.encode("the cat sat on the mat.")])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids).logits, model(input_ids).logits, rtol=0, atol=0)
    loaded_tokenizer = AutoTokenizer.from_pretrained(path)
    assert type(loaded_tokenizer) is MuOmniTokenizer
    assert loaded_tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=False) == (
        tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=False)
    )


def test_chat_pipeline_answers_like_generate(checkpoint, tokenizer, generator):
    model = checkpoint[1]
    assert type(generator.tokenizer) is MuOmniTokenizer and type(generator.model) is MuOmniForCausalLM
    (result,) = generator(CHAT, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    conversation = result["generated_text"]
    assert conversation[:-1] == CHAT
    new_ids, expected = reference_answer(model, tokenizer, CHAT)
    assert len(new_ids) > 0
    assert conversation[-1] == {"role": "assistant", "content": expected}


def test_text_pipeline_continues_like_generate(checkpoint, tokenizer, generator):
    model = checkpoint[1]
    (result,) = generator("the big cat", max_new_tokens=MAX_NEW_TOKENS, do_sample=False, return_full_text=False)
    inputs = tokenizer("the big cat", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    new_ids = output[0, inputs["input_ids"].shape[1] :]
    assert result["generated_text"] == tokenizer.decode(new_ids, skip_special_tokens=True)


def test_batched_chats_match_one_at_a_time(checkpoint, tokenizer, generator):
    model = checkpoint[1]
    chats = [CHAT, [{"role": "user", "content": "a dog and a red bird ran under the big tree?"}]]
    batched = generator(chats, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, batch_size=2)
    for messages, (result,) in zip(chats, batched):
        assert result["generated_text"][-1]["content"] == reference_answer(model, tokenizer, messages)[1]


@pytest.fixture(scope="module")
def memorised_checkpoint(tmp_path_factory, tokenizer):
    """A model trained (assistant tokens only, as in SFT) until it answers one chat exactly, <|im_end|> included."""
    answer = "The cat sat on the mat."
    messages = [*CHAT, {"role": "assistant", "content": answer}]
    batch = tokenizer.apply_chat_template(
        messages, return_dict=True, return_tensors="pt", return_assistant_tokens_mask=True
    )
    labels = batch["input_ids"].masked_fill(batch["assistant_masks"] == 0, -100)
    torch.manual_seed(0)
    model = MuOmniForCausalLM(tiny_config(len(tokenizer))).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    for _ in range(300):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    model.eval()
    path = tmp_path_factory.mktemp("muomni_memorised")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, answer


def test_generation_stops_at_im_end_and_the_answer_is_clean(memorised_checkpoint, tokenizer):
    path, model, answer = memorised_checkpoint
    new_ids, text = reference_answer(model, tokenizer, CHAT, max_new_tokens=30)
    assert new_ids[-1] == tokenizer.im_end_token_id and len(new_ids) < 30  # stopped by eos_token_id=[0, 3]
    assert text == answer
    (result,) = pipeline("text-generation", model=str(path))(CHAT, max_new_tokens=30, do_sample=False)
    assert result["generated_text"] == [*CHAT, {"role": "assistant", "content": answer}]
