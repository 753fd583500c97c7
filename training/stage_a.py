"""Stage A: pretrain the thinker language model (`MuOmniForCausalLM`) on text.

    run_stage_a(config, datasets, output_dir, previous=None, training_overrides=None, seed=0) -> StageResult
    StageATrainer   trains every parameter; reports perplexity and bits per byte on the validation text

Data. `datasets` is the built-in dict (`build_builtin_dataset`: its `text` documents and its `chat`
conversations) or one `DatasetDict` / `IterableDatasetDict` (e.g. from `load_stage_dataset`) with a
`text` column, a `messages` column, or both. Conversations are rendered with the ChatML template, so
the model learns `<|im_start|>`/`<|im_end|>` as control tokens (plain text that spells them stays
bytes). Every document gets EOS appended, so the model learns to stop.

Recipe. Train the byte-level BPE tokenizer on the train documents (`vocab_size` of the config; the
config's `vocab_size` is then set to `len(tokenizer)`, in place, so later stages see it), tokenize,
pack into blocks of `block_size` tokens (default `max_position_embeddings`; attention crosses
document boundaries unless `document_attention=True`, see `collators.py`), train with `Trainer`,
then score the validation and test text and save model + tokenizer to `output_dir`.
`previous={"tokenizer": dir}` reuses a tokenizer instead of training one; `previous={"thinker_lm":
dir}` continues from a saved model.

Metrics (on the `text` documents of a split, or its conversations when it has no text): every
document is scored on its own, after an EOS as context, predicting all its tokens and its final EOS.
perplexity = exp(total NLL / predicted tokens); bits per byte = total NLL / ln 2 / UTF-8 bytes of
the documents (the EOS costs bits but has no bytes). The result also holds the same two numbers for
a unigram model of the training tokens (add-one smoothed) as a baseline.

Streaming: a streamed train split (`IterableDataset`) is supported and needs `max_steps` in
`training_overrides`; the tokenizer and the unigram baseline see its first
`tokenizer_max_documents` documents; streamed validation / test splits are scored on their first
`max_eval_documents` documents.
"""

import math
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice

import numpy as np
import torch
from datasets import (
    Dataset,
    DatasetDict,
    IterableDataset,
    IterableDatasetDict,
    concatenate_datasets,
    interleave_datasets,
)
from transformers import PreTrainedConfig, set_seed
from transformers.utils import logging

from muomni.configuration import MuOmniTextConfig
from muomni.modeling_text import MuOmniForCausalLM
from muomni.processing import MuOmniTokenizer, tokenize_for_pretraining, train_tokenizer

from .collators import CausalLMPackingCollator, pack_token_blocks
from .sources import check_splits
from .trainer import MuOmniStageTrainer, StageResult, push_stage_to_hub, stage_training_arguments

logger = logging.get_logger(__name__)

# Defaults for the tiny preset on 2 CPU cores (~3 minutes on the built-in `tiny` data); every key can
# be overridden through `training_overrides`.
STAGE_A_TRAINING_DEFAULTS = {
    "num_train_epochs": 3,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 16,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "weight_decay": 0.1,
    "adam_beta2": 0.98,
    "max_grad_norm": 1.0,
    "logging_steps": 10,
    "eval_strategy": "steps",
    "eval_steps": 0.25,
    "save_strategy": "no",
    "report_to": "none",
    "dataloader_pin_memory": False,
    "dataloader_num_workers": 0,
}
# Stage settings that are not TrainingArguments fields (also given through `training_overrides`).
STAGE_A_OPTIONS = {
    "block_size": None,  # tokens per packed block; None = max_position_embeddings
    "document_attention": False,  # True: attention stays inside each document of a block
    "tokenizer_min_frequency": 2,
    "tokenizer_max_documents": 200_000,  # documents the tokenizer (and the unigram baseline) is trained on
    "max_eval_documents": 2_000,  # cap of a streamed validation / test split
}
TEXT_COLUMNS = ("text", "messages")


class StageATrainer(MuOmniStageTrainer):
    """Stage A: causal-LM pretraining of the whole `MuOmniForCausalLM`.

    `metric_dataset` rows are documents: `input_ids` (the document's ids with EOS appended) and
    `num_bytes` (its UTF-8 length). `compute_stage_metrics` returns `perplexity` and `bits_per_byte`
    (see the module docstring); `eval_loss` is `Trainer`'s, over the packed validation blocks.
    """

    stage = "A"
    trainable_modules = ()  # everything
    metric_names = ("perplexity", "bits_per_byte")

    def compute_stage_metrics(self, dataset) -> dict[str, float]:
        model = self.model
        eos = model.config.eos_token_id
        eos = eos[0] if isinstance(eos, (list, tuple)) else eos
        window = model.config.max_position_embeddings
        rows = dataset[:] if isinstance(dataset, Dataset) else {k: [r[k] for r in dataset] for k in dataset[0]}
        # each document after an EOS as context; a document longer than the context is scored in windows
        # that overlap by one token, so every token is predicted exactly once
        windows = []
        for ids in rows["input_ids"]:
            sequence = [eos, *ids]
            windows += [sequence[start : start + window] for start in range(0, len(sequence) - 1, window - 1)]
        windows.sort(key=len)
        total_nll, total_tokens = 0.0, 0
        batch_size = self.args.per_device_eval_batch_size
        device = next(model.parameters()).device
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            length = max(len(w) for w in chunk)
            input_ids = torch.full((len(chunk), length), eos, dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), length), dtype=torch.long)
            for row, ids in enumerate(chunk):
                input_ids[row, : len(ids)] = torch.as_tensor(ids)
                attention_mask[row, : len(ids)] = 1
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100).to(device)
            total_nll += float(
                torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
                )
            )
            total_tokens += int((targets != -100).sum())
        total_bytes = int(sum(rows["num_bytes"]))
        if total_tokens == 0 or total_bytes == 0:
            raise ValueError("the metric dataset has no tokens to score")
        return {
            "perplexity": math.exp(min(total_nll / total_tokens, 50.0)),
            "bits_per_byte": total_nll / math.log(2) / total_bytes,
        }


def stage_a_data(datasets) -> DatasetDict | IterableDatasetDict:
    """The text of stage A as one DatasetDict: a `DatasetDict`/`IterableDatasetDict` with `text` and/or
    `messages` columns as is, or the built-in dict's `text` and `chat` (kept as a dict of the two)."""
    if isinstance(datasets, (DatasetDict, IterableDatasetDict)):
        return datasets
    if isinstance(datasets, Mapping) and "text" in datasets and isinstance(datasets["text"], Mapping):
        return datasets  # the built-in dict
    raise TypeError(
        "datasets must be the built-in dict (build_builtin_dataset / load_builtin_dataset) or a DatasetDict with "
        f"a 'text' and/or 'messages' column, got {type(datasets).__name__}"
        + (f" with keys {sorted(datasets)}" if isinstance(datasets, Mapping) else "")
    )


def _parts(data, split: str) -> list[Dataset | IterableDataset]:
    """The datasets holding `split`'s documents: the built-in text and chat, or the one DatasetDict's split."""
    if isinstance(data, (DatasetDict, IterableDatasetDict)):
        return [data[split]] if split in data else []
    return [data[name][split] for name in ("text", "chat") if name in data and split in data[name]]


def _columns(dataset) -> list[str]:
    """Column names; of a stream without declared features, those of its first row."""
    names = dataset.column_names
    if names is None and isinstance(dataset, IterableDataset):  # a stream without known features
        names = list(next(iter(dataset)).keys())
    return list(names)


def check_stage_a_data(data, streaming_ok: bool = True) -> None:
    """ValueErrors before any work: a text column in every part, train and validation splits, no empty split."""
    parts = [data] if isinstance(data, (DatasetDict, IterableDatasetDict)) else [data["text"]] + (
        [data["chat"]] if "chat" in data else []
    )
    for part in parts:
        check_splits(part, required=("train", "validation"), stage="A")
        for split, dataset in part.items():
            columns = _columns(dataset)
            if not any(column in columns for column in TEXT_COLUMNS):
                raise ValueError(
                    f"stage A needs a 'text' or 'messages' column, but split {split!r} has only {columns}; "
                    "map yours with load_stage_dataset(..., column_mapping={'text': 'your_column'})"
                )


def _rows(dataset) -> Iterator[dict]:
    """The rows of a Dataset (read in slices of 1000, only the text columns) or of a stream / list of dicts."""
    if not isinstance(dataset, Dataset):
        yield from dataset
        return
    present = [c for c in TEXT_COLUMNS if c in dataset.column_names]
    for start in range(0, len(dataset), 1000):
        batch = dataset.select_columns(present)[start : start + 1000]
        yield from (dict(zip(present, values)) for values in zip(*(batch[c] for c in present)))


def iter_documents(rows: Iterable[dict], chat_renderer: MuOmniTokenizer) -> Iterator[tuple[str, bool]]:
    """(document, is_chat) for every row: its `text`, and its `messages` rendered with the chat template."""
    for row in rows:
        if row.get("text"):
            yield row["text"], False
        if row.get("messages"):
            yield chat_renderer.apply_chat_template(row["messages"], tokenize=False), True


def _encode(tokenizer: MuOmniTokenizer, documents: Iterable[tuple[str, bool]]) -> list[list[int]]:
    """Token ids with EOS appended; control tokens are parsed in rendered chats, kept as bytes in plain text."""
    documents = list(documents)
    texts = [d for d, chat in documents if not chat]
    chats = [d for d, chat in documents if chat]
    encoded_texts = iter(tokenize_for_pretraining(tokenizer, texts) if texts else [])
    encoded_chats = iter(tokenize_for_pretraining(tokenizer, chats, split_special_tokens=False) if chats else [])
    return [next(encoded_chats) if chat else next(encoded_texts) for _, chat in documents]


def _tokenized_blocks(parts, tokenizer: MuOmniTokenizer, block_size: int) -> Dataset | IterableDataset:
    """The parts' documents tokenized and packed into blocks of `block_size` (map-style or streamed)."""

    def tokenize_and_pack(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        documents = iter_documents(rows, tokenizer)
        return pack_token_blocks({"input_ids": _encode(tokenizer, documents)}, block_size)

    packed = []
    for dataset in parts:
        present = [c for c in TEXT_COLUMNS if c in _columns(dataset)]
        kwargs = {"keep_in_memory": True, "desc": "tokenize + pack"} if isinstance(dataset, Dataset) else {}
        packed.append(
            dataset.select_columns(present).map(
                tokenize_and_pack, batched=True, batch_size=2000, remove_columns=present, **kwargs
            )
        )
    if len(packed) == 1:
        return packed[0]
    if all(isinstance(p, Dataset) for p in packed):
        return concatenate_datasets(packed)
    return interleave_datasets(packed, stopping_strategy="all_exhausted")


def _metric_documents(data, split: str, tokenizer: MuOmniTokenizer, limit: int) -> Dataset | None:
    """Documents of `split` to score: its text documents (or its conversations if it has no text)."""
    parts = _parts(data, split)
    if not parts:
        return None
    with_text = [p for p in parts if "text" in _columns(p)]
    documents = []
    for part in with_text or parts:
        rows = _rows(part) if isinstance(part, Dataset) else islice(iter(part), limit)
        documents += [d for d in iter_documents(rows, tokenizer) if not with_text or not d[1]]
    if not documents:
        raise ValueError(f"stage A: split {split!r} has no non-empty document to evaluate on")
    return Dataset.from_dict(
        {"input_ids": _encode(tokenizer, documents), "num_bytes": [len(d.encode("utf-8")) for d, _ in documents]}
    )


def unigram_baseline(token_counts: np.ndarray, documents: Dataset) -> dict[str, float]:
    """Perplexity and bits per byte of an add-one-smoothed unigram model of `token_counts` (V,) on the
    metric `documents` (the same predicted tokens as `StageATrainer.compute_stage_metrics`)."""
    probabilities = (token_counts + 1.0) / (token_counts.sum() + len(token_counts))
    targets = np.concatenate([np.asarray(ids) for ids in documents["input_ids"]])
    nll = float(-np.log(probabilities[targets]).sum())
    return {
        "perplexity": math.exp(nll / len(targets)),
        "bits_per_byte": nll / math.log(2) / float(sum(documents["num_bytes"])),
    }


def _text_config(config: PreTrainedConfig) -> MuOmniTextConfig:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if not isinstance(text_config, MuOmniTextConfig):
        raise TypeError(
            f"config must be a MuOmniConfig, MuOmniThinkerConfig or MuOmniTextConfig, got {type(config).__name__}"
        )
    return text_config


def run_stage_a(
    config: PreTrainedConfig,
    datasets,
    output_dir: str,
    previous: dict[str, str] | None = None,
    training_overrides: dict | None = None,
    seed: int = 0,
) -> StageResult:
    """Pretrain the thinker LM (see the module docstring) and save it with its tokenizer to `output_dir`.

    Args:
        config: a `MuOmniConfig` (or its thinker / text config); its text config's `vocab_size` is the
            tokenizer's target size and is set to `len(tokenizer)` in place.
        datasets: the built-in dict, or a `DatasetDict` / `IterableDatasetDict` with `text` and/or `messages`.
        output_dir (`str`): model, tokenizer, `training_curves.png` (and checkpoints, if saving is on).
        previous (`dict`, *optional*): `{"tokenizer": dir}` and/or `{"thinker_lm": dir}` to start from.
        training_overrides (`dict`, *optional*): `TrainingArguments` fields and `STAGE_A_OPTIONS` keys.
        seed (`int`): seeds the model init, the data order and dropout.

    Returns:
        [`StageResult`] with `outputs={"thinker_lm": output_dir, "tokenizer": output_dir}` and metrics
        `eval_loss`, `eval_perplexity`, `eval_bits_per_byte` (+ `test_*` if there is a test split),
        `eval_unigram_perplexity`, `eval_unigram_bits_per_byte`, `train_loss`, `train_runtime`.
    """
    previous = dict(previous or {})
    text_config = _text_config(config)
    defaults = dict(STAGE_A_TRAINING_DEFAULTS)
    args, options = stage_training_arguments(output_dir, seed, defaults, training_overrides, STAGE_A_OPTIONS)
    data = stage_a_data(datasets)
    check_stage_a_data(data)
    block_size = options["block_size"] or text_config.max_position_embeddings
    if not isinstance(block_size, int) or not 2 <= block_size <= text_config.max_position_embeddings:
        raise ValueError(
            f"block_size must be an integer in [2, max_position_embeddings={text_config.max_position_embeddings}], "
            f"got {block_size!r}"
        )
    train_parts = _parts(data, "train")
    streaming = any(isinstance(p, IterableDataset) for p in train_parts)
    if streaming and args.max_steps <= 0:
        raise ValueError(
            "a streamed train split has no length: set training_overrides={'max_steps': N} (N > 0) for stage A"
        )

    # tokenizer: trained on (the first tokenizer_max_documents) train documents, or reused
    renderer = MuOmniTokenizer()  # merge-free: only its chat template is used to render conversations
    sample = [
        document
        for part in train_parts
        for document in islice(iter_documents(_rows(part), renderer), options["tokenizer_max_documents"])
    ]
    if not sample:
        raise ValueError("stage A: the train split has no non-empty document")
    if "tokenizer" in previous:
        tokenizer = MuOmniTokenizer.from_pretrained(previous["tokenizer"])
    else:
        tokenizer = train_tokenizer(
            (text for text, _ in sample), vocab_size=text_config.vocab_size,
            min_frequency=options["tokenizer_min_frequency"], length=len(sample),
        )
    text_config.vocab_size = len(tokenizer)

    train_blocks = _tokenized_blocks(train_parts, tokenizer, block_size)
    eval_blocks = _tokenized_blocks(_parts(data, "validation"), tokenizer, block_size)
    if isinstance(eval_blocks, IterableDataset):
        eval_blocks = Dataset.from_list(list(islice(iter(eval_blocks), options["max_eval_documents"])))
    for name, blocks in (("train", train_blocks), ("validation", eval_blocks)):
        if isinstance(blocks, Dataset) and len(blocks) == 0:
            raise ValueError(
                f"stage A: the {name} text is shorter than one block of {block_size} tokens; "
                "use more text or a smaller block_size in training_overrides"
            )
    limit = options["max_eval_documents"]
    metric_sets = {split: _metric_documents(data, split, tokenizer, limit) for split in ("validation", "test")}
    # unigram baseline: the training tokens (streamed: the tokenizer's sample)
    counted = (
        np.asarray(train_blocks["input_ids"]).ravel() if isinstance(train_blocks, Dataset)
        else np.concatenate([np.asarray(ids) for ids in _encode(tokenizer, sample)])
    )
    token_counts = np.bincount(counted, minlength=len(tokenizer)).astype(np.float64)
    baseline = unigram_baseline(token_counts, metric_sets["validation"])

    set_seed(seed)
    if "thinker_lm" in previous:
        model = MuOmniForCausalLM.from_pretrained(previous["thinker_lm"])
        if model.config.vocab_size != len(tokenizer):
            raise ValueError(
                f"previous thinker_lm has vocab_size {model.config.vocab_size} but the tokenizer has {len(tokenizer)} "
                "tokens; pass the tokenizer it was trained with as previous['tokenizer']"
            )
    else:
        model = MuOmniForCausalLM(text_config)
    trainer = StageATrainer(
        model=model,
        args=args,
        train_dataset=train_blocks,
        eval_dataset=eval_blocks,
        metric_dataset=metric_sets["validation"],
        data_collator=CausalLMPackingCollator(tokenizer.eos_token_id, options["document_attention"]),
        processing_class=tokenizer,
    )
    train_output = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    metrics = {"train_loss": train_output.training_loss, "train_runtime": train_output.metrics["train_runtime"]}
    metrics.update(trainer.evaluate())
    if metric_sets["test"] is not None:
        test_blocks = _tokenized_blocks(_parts(data, "test"), tokenizer, block_size)
        if isinstance(test_blocks, IterableDataset):
            test_blocks = Dataset.from_list(list(islice(iter(test_blocks), options["max_eval_documents"])))
        if len(test_blocks) > 0:
            metrics.update(
                trainer.evaluate(test_blocks, metric_key_prefix="test", metric_dataset=metric_sets["test"])
            )
        else:
            logger.warning(f"stage A: the test text is shorter than one block of {block_size} tokens; not scored")
    metrics.update({f"eval_unigram_{k}": v for k, v in baseline.items()})
    trainer.save_model(output_dir)
    push_stage_to_hub(trainer.args, output_dir, "A")
    return StageResult(stage="A", outputs={"thinker_lm": output_dir, "tokenizer": output_dir}, metrics=metrics)


__all__ = [
    "STAGE_A_OPTIONS",
    "STAGE_A_TRAINING_DEFAULTS",
    "StageATrainer",
    "run_stage_a",
    "stage_a_data",
    "unigram_baseline",
]
