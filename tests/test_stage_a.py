"""Stage A (thinker pretraining): packing, which parameters a step changes, gradient accumulation,
resume from a checkpoint, the recipe's metrics and artefacts, bad input, and a 2-process torchrun."""

import math
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import TrainerCallback, TrainingArguments

from muomni import MuOmniForCausalLM, MuOmniTextConfig, MuOmniTokenizer
from muomni.training.collators import CausalLMPackingCollator, document_position_ids, pack_token_blocks
from muomni.training.stage_a import StageATrainer, run_stage_a, unigram_baseline

EOS = 0


def text_config(**overrides) -> MuOmniTextConfig:
    fields = {
        "vocab_size": 300, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "pad_token_id": 1, "eos_token_id": EOS,
    }  # fmt: skip
    return MuOmniTextConfig(**{**fields, **overrides})


def tiny_model(seed: int = 0, **overrides) -> MuOmniForCausalLM:
    torch.manual_seed(seed)
    return MuOmniForCausalLM(text_config(vocab_size=99, **overrides))


def random_blocks(count: int, block_size: int = 16, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset.from_dict({"input_ids": rng.integers(2, 99, size=(count, block_size)).tolist()})


def trainer_args(tmp_path, **overrides) -> TrainingArguments:
    fields = {
        "output_dir": str(tmp_path), "per_device_train_batch_size": 4, "learning_rate": 1e-2, "max_steps": 2,
        "report_to": "none", "save_strategy": "no", "logging_steps": 1, "disable_tqdm": True, "seed": 0,
        "dataloader_pin_memory": False,
    }  # fmt: skip
    return TrainingArguments(**{**fields, **overrides})


def parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.fixture(scope="module")
def builtin_shaped():
    """The two parts of the built-in dict that stage A reads (`text` documents, `chat` conversations)."""
    words = "the red ball is on the green table and a small dog sits next to it".split()
    documents = [" ".join(words[i % 9 : i % 9 + 7]).capitalize() + "." for i in range(60)]
    chats = [[{"role": "user", "content": f"what is {i} plus one"}, {"role": "assistant", "content": f"{i + 1}."}]
             for i in range(30)]  # fmt: skip
    return {
        "text": DatasetDict({"train": Dataset.from_dict({"text": documents[:40]}),
                             "validation": Dataset.from_dict({"text": documents[40:50]}),
                             "test": Dataset.from_dict({"text": documents[50:]})}),
        "chat": DatasetDict({"train": Dataset.from_dict({"messages": chats[:20]}),
                             "validation": Dataset.from_dict({"messages": chats[20:25]}),
                             "test": Dataset.from_dict({"messages": chats[25:]})}),
    }  # fmt: skip


# ---- packing -------------------------------------------------------------------------------------


def test_pack_token_blocks_concatenates_and_drops_the_tail():
    packed = pack_token_blocks({"input_ids": [[5, 6, EOS], [7, EOS], [8, 9, 10, EOS]]}, block_size=4)
    assert packed == {"input_ids": [[5, 6, EOS, 7], [EOS, 8, 9, 10]]}  # the final EOS is the dropped tail
    with pytest.raises(ValueError, match="block_size must be an integer >= 2"):
        pack_token_blocks({"input_ids": [[1]]}, block_size=1)


def test_packing_collator_labels_and_document_positions():
    batch = CausalLMPackingCollator(EOS)([{"input_ids": [5, 6, EOS, 7]}, {"input_ids": [EOS, 8, 9, 10]}])
    assert torch.equal(batch["labels"], batch["input_ids"]) and sorted(batch) == ["input_ids", "labels"]
    positions = document_position_ids(torch.tensor([[5, 6, EOS, 7, 8, EOS, 9], [EOS, 1, 2, 3, EOS, EOS, 4]]), EOS)
    assert positions.tolist() == [[0, 1, 2, 0, 1, 2, 0], [0, 0, 1, 2, 3, 0, 0]]
    with pytest.raises(ValueError, match="same length, got lengths \\[3, 4\\]"):
        CausalLMPackingCollator(EOS)([{"input_ids": [1, 2, 3]}, {"input_ids": [1, 2, 3, 4]}])
    with pytest.raises(ValueError, match="document_attention=True needs eos_token_id"):
        CausalLMPackingCollator(document_attention=True)


def test_document_attention_keeps_documents_apart():
    model = tiny_model().eval()
    first, second = [5, 6, 7, EOS], [8, 9, 10, 11, EOS]
    batch = CausalLMPackingCollator(EOS, document_attention=True)([{"input_ids": first + second}])
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0, len(first) :]
        alone = model(input_ids=torch.tensor([second])).logits[0]
        crossing = model(input_ids=batch["input_ids"]).logits[0, len(first) :]  # default: attention crosses
    torch.testing.assert_close(packed, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(crossing, alone, atol=1e-3)


# ---- the trainer ----------------------------------------------------------------------------------


def test_two_steps_change_every_parameter_and_log_metrics(tmp_path):
    model = tiny_model()
    before = parameters(model)
    documents = Dataset.from_dict({"input_ids": [[5, 6, 7, EOS], [8, 9, EOS]], "num_bytes": [7, 5]})
    trainer = StageATrainer(
        model=model, args=trainer_args(tmp_path, eval_strategy="steps", eval_steps=2),
        train_dataset=random_blocks(8), eval_dataset=random_blocks(2, seed=1), metric_dataset=documents,
        data_collator=CausalLMPackingCollator(EOS),
    )
    trainer.train()
    after = parameters(model)
    assert trainer.parameter_counts["frozen"] == 0
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert unchanged == [], f"stage A trains everything, but {unchanged} did not change"
    logged = {key for entry in trainer.state.log_history for key in entry}
    assert {"loss", "eval_loss", "eval_perplexity", "eval_bits_per_byte"} <= logged
    assert os.path.isfile(tmp_path / "training_curves.png")

    # the metrics are the summed token loss of each document after an EOS, over its tokens / bytes
    metrics = trainer.evaluate()
    model.eval()
    with torch.no_grad():
        nll = sum(
            float(model(input_ids=torch.tensor([[EOS, *ids]]), labels=torch.tensor([[EOS, *ids]])).loss) * len(ids)
            for ids in documents["input_ids"]
        )
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(nll / 7), rel=1e-4)
    assert metrics["eval_bits_per_byte"] == pytest.approx(nll / math.log(2) / 12, rel=1e-4)


def test_gradient_accumulation_gives_the_update_of_one_large_batch(tmp_path):
    def one_update(batch_size: int, accumulation: int) -> dict[str, torch.Tensor]:
        model = tiny_model()
        args = trainer_args(
            tmp_path / f"b{batch_size}", per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd", learning_rate=0.5,
            weight_decay=0.0, max_grad_norm=0.0, warmup_steps=0, lr_scheduler_type="constant",
        )
        collator = CausalLMPackingCollator(EOS)
        StageATrainer(model=model, args=args, train_dataset=random_blocks(8), data_collator=collator).train()
        return parameters(model)

    initial = parameters(tiny_model())
    large, accumulated = one_update(8, 1), one_update(4, 2)
    for name in initial:
        assert not torch.equal(large[name], initial[name])
        torch.testing.assert_close(accumulated[name], large[name], rtol=1e-5, atol=1e-6, msg=name)


class _Crash(Exception):
    pass


class CrashAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise _Crash


def test_resume_from_checkpoint_reaches_the_uninterrupted_run(tmp_path):
    def trainer(path, seed_of_init: int, callbacks=()):
        args = trainer_args(path, max_steps=4, save_strategy="steps", save_steps=2, lr_scheduler_type="linear")
        return StageATrainer(
            model=tiny_model(seed_of_init), args=args, train_dataset=random_blocks(12),
            data_collator=CausalLMPackingCollator(EOS), callbacks=list(callbacks),
        )

    uninterrupted = trainer(tmp_path / "full", 0)
    uninterrupted.train()
    crashed = trainer(tmp_path / "crash", 0, [CrashAfterCheckpoint()])
    with pytest.raises(_Crash):
        crashed.train()
    assert sorted(os.listdir(tmp_path / "crash")) == ["checkpoint-2"]
    resumed = trainer(tmp_path / "crash", 1)  # another init: the checkpoint must restore everything
    resumed.train(resume_from_checkpoint=str(tmp_path / "crash" / "checkpoint-2"))
    expected, got = parameters(uninterrupted.model), parameters(resumed.model)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    losses = [[e["loss"] for e in t.state.log_history if "loss" in e] for t in (uninterrupted, resumed)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


# ---- the recipe -------------------------------------------------------------------------------------


def test_run_stage_a_on_builtin_shaped_data(tmp_path, builtin_shaped):
    config = text_config()
    overrides = {"max_steps": 2, "block_size": 32, "eval_steps": 1, "disable_tqdm": True}
    result = run_stage_a(config, builtin_shaped, str(tmp_path), training_overrides=overrides)
    assert result.stage == "A" and result.outputs == {"thinker_lm": str(tmp_path), "tokenizer": str(tmp_path)}
    for key in ("eval_loss", "eval_perplexity", "eval_bits_per_byte", "test_perplexity", "test_bits_per_byte",
                "eval_unigram_perplexity", "eval_unigram_bits_per_byte", "train_loss"):
        assert math.isfinite(result.metrics[key]) and result.metrics[key] > 0, key
    assert os.path.isfile(tmp_path / "training_curves.png")

    tokenizer = MuOmniTokenizer.from_pretrained(str(tmp_path))
    model = MuOmniForCausalLM.from_pretrained(str(tmp_path))
    assert config.vocab_size == len(tokenizer) == model.config.vocab_size <= 300
    # ChatML control tokens stay single tokens in rendered chats
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.im_start_token_id and tokenizer.im_end_token_id in ids


def test_unigram_baseline_of_uniform_counts():
    documents = Dataset.from_dict({"input_ids": [[3, 4, EOS]], "num_bytes": [2]})
    baseline = unigram_baseline(np.zeros(8), documents)  # add-one smoothing over 8 tokens: uniform
    assert baseline["perplexity"] == pytest.approx(8.0)
    assert baseline["bits_per_byte"] == pytest.approx(3 * 3 / 2)


def texts(rows: dict[str, list[str]]) -> DatasetDict:
    return DatasetDict({split: Dataset.from_dict({"text": values}) for split, values in rows.items()})


def test_bad_input_is_a_clear_error_before_training(tmp_path):
    corpus = texts({"train": ["one two three four"] * 20, "validation": ["four three two one"] * 5})
    with pytest.raises(ValueError, match="unknown training_overrides \\['block_sise'\\]"):
        run_stage_a(text_config(), corpus, str(tmp_path), training_overrides={"block_sise": 8})
    with pytest.raises(ValueError, match="pass seed as the recipe's own argument"):
        run_stage_a(text_config(), corpus, str(tmp_path), training_overrides={"seed": 3})
    with pytest.raises(ValueError, match="block_size must be an integer in \\[2, max_position_embeddings=64\\]"):
        run_stage_a(text_config(), corpus, str(tmp_path), training_overrides={"block_size": 65})
    renamed = DatasetDict({split: d.rename_column("text", "body") for split, d in corpus.items()})
    with pytest.raises(ValueError, match="a 'text' or 'messages' column, but split 'train' has only \\['body'\\]"):
        run_stage_a(text_config(), renamed, str(tmp_path))
    with pytest.raises(ValueError, match="no \\['validation'\\] split"):
        run_stage_a(text_config(), DatasetDict({"train": corpus["train"]}), str(tmp_path))
    with pytest.raises(ValueError, match="split 'validation' is empty"):
        run_stage_a(text_config(), texts({"train": ["a b"] * 4, "validation": []}), str(tmp_path))
    with pytest.raises(ValueError, match="validation text is shorter than one block of 64 tokens"):
        run_stage_a(text_config(), corpus, str(tmp_path))
    with pytest.raises(TypeError, match="datasets must be the built-in dict"):
        run_stage_a(text_config(), ["some text"], str(tmp_path))


TORCHRUN_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from datasets import Dataset, DatasetDict
    from muomni import MuOmniTextConfig
    from muomni.training.stage_a import run_stage_a

    words = "the cat sat on the mat and the dog ran to the park".split()
    docs = [" ".join(words[i % 7 : i % 7 + 5]) + "." for i in range(200)]
    data = DatasetDict({"train": Dataset.from_dict({"text": docs}),
                        "validation": Dataset.from_dict({"text": docs[:20]})})
    config = MuOmniTextConfig(vocab_size=300, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                              pad_token_id=1, eos_token_id=0)
    result = run_stage_a(config, data, sys.argv[1], training_overrides={
        "max_steps": 2, "per_device_train_batch_size": 2, "eval_strategy": "no", "ddp_backend": "gloo",
        "use_cpu": True, "disable_tqdm": True})
    rank = torch.distributed.get_rank()
    print(f"rank {rank} world {torch.distributed.get_world_size()} steps 2 ppl {result.metrics.get('eval_perplexity')}")
    """
)


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    script = tmp_path / "train_a.py"
    script.write_text(TORCHRUN_SCRIPT)
    with socket.socket() as probe:  # a free port (torchrun's --master_port 0 hangs)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(script), str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "rank 0 world 2 steps 2" in completed.stdout and "rank 1 world 2 steps 2" in completed.stdout
    assert os.path.isfile(tmp_path / "out" / "model.safetensors")
