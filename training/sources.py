"""Real data for the stage recipes: any `datasets` source, renamed to the built-in schema's column names.

    load_stage_dataset(source, column_mapping=None, streaming=False, split=None, ...)
                                                    -> DatasetDict | IterableDatasetDict
    check_splits(dataset_dict, required, stage)     ValueError for a missing or empty split
    check_columns(dataset_dict, required, stage)    ValueError naming a missing column and the available ones

A recipe (`run_stage_a`, `run_stage_b`, ...) takes the built-in dict or one DatasetDict whose columns
have the built-in names: `text` (stage A; or `messages` for chats), `audio` + `text` (stage B),
`image` + `caption` (stage C). `column_mapping` maps those names to the source's own columns:

    librispeech = load_stage_dataset("path/or/hub-id", {"audio": "audio", "text": "sentence"},
                                     split={"train": "train.clean.100", "validation": "validation.clean"})
    corpus = load_stage_dataset("json", {"text": "content"}, data_files={"train": ..., "validation": ...})
    clips = load_stage_dataset("audiofolder", {"text": "sentence"}, data_dir="my_clips", resample=True)

`source` is a folder written by `save_to_disk` (read with `load_from_disk`) or anything
`datasets.load_dataset` accepts (a builder name such as "json", "audiofolder", "imagefolder" with
`data_dir` / `data_files`, a local folder, a Hub id); extra keyword arguments go to `load_dataset`.

Checks, each a ValueError before any training: every mapped column exists (the message names it
and lists the available ones), no split is empty, and every `Audio` column is at `sampling_rate`
(16 kHz, the MuOmni front end) in its first `check_rows` rows per split unless `resample=True`.

Audio stays undecoded (`Audio(decode=False)`: `{"bytes", "path"}` cells); the stages decode it with
soundfile (`muomni.training.data.with_audio_arrays`), so torchcodec / FFmpeg are not needed. The
`Audio` feature's `sampling_rate` records the request: `None` means "must already be 16 kHz" (another
rate is an error when a clip is read), 16000 means "resample to 16 kHz" (`resample=True`), as in
`datasets`. Without torchcodec, `datasets` 5.x cannot even store an audio file's path while it
prepares a folder dataset (its `Audio.encode_example` imports torchcodec first), so the load runs
with an encoder that stores paths and bytes as they are and needs no torchcodec.

Streaming (`streaming=True`) gives an `IterableDatasetDict`; stage A trains from streams (with
`max_steps`), the other stages need map-style data.
"""

import contextlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from itertools import islice
from pathlib import Path

import soundfile
from datasets import (
    Audio,
    Dataset,
    DatasetDict,
    IterableDataset,
    IterableDatasetDict,
    config as datasets_config,
    load_dataset,
    load_from_disk,
)

SAMPLING_RATE = 16000


def _is_saved_dataset(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and any(
        os.path.isfile(os.path.join(source, name)) for name in ("dataset_dict.json", "state.json")
    )


@contextlib.contextmanager
def _audio_encoding_without_torchcodec():
    """Let `datasets` store audio paths / bytes without torchcodec (see the module docstring)."""
    if datasets_config.TORCHCODEC_AVAILABLE:
        yield
        return
    original = Audio.encode_example

    def encode_example(self, value):
        if isinstance(value, (str, Path)):
            return {"bytes": None, "path": str(value)}
        if isinstance(value, (bytes, bytearray)):
            return {"bytes": bytes(value), "path": None}
        if isinstance(value, dict) and "array" not in value and not str(value.get("path") or "").endswith("pcm"):
            if value.get("bytes") is not None or value.get("path") is not None:
                return {"bytes": value.get("bytes"), "path": value.get("path")}
        return original(self, value)  # arrays and raw PCM need an encoder: torchcodec's ImportError

    Audio.encode_example = encode_example
    try:
        yield
    finally:
        Audio.encode_example = original


def _column_names(dataset) -> list[str]:
    names = dataset.column_names
    if names is None and isinstance(dataset, IterableDataset):
        first = next(iter(dataset), None)
        names = list(first) if first is not None else []
    return list(names)


def _is_empty(dataset) -> bool:
    if isinstance(dataset, IterableDataset):
        return next(iter(dataset), None) is None
    return len(dataset) == 0


def check_splits(dataset_dict, required: Sequence[str] = ("train",), stage: str = "") -> None:
    """Raise a ValueError if a `required` split is missing or any split is empty."""
    prefix = f"stage {stage}: " if stage else ""
    if not isinstance(dataset_dict, (DatasetDict, IterableDatasetDict)):
        raise TypeError(f"{prefix}expected a DatasetDict or IterableDatasetDict, got {type(dataset_dict).__name__}")
    missing = [split for split in required if split not in dataset_dict]
    if missing:
        raise ValueError(
            f"{prefix}the data has no {missing} split (splits: {sorted(dataset_dict)}); load it with "
            "load_stage_dataset(..., split={'train': ..., 'validation': ...}) or validation_size=..."
        )
    for split, dataset in dataset_dict.items():
        if _is_empty(dataset):
            raise ValueError(f"{prefix}split {split!r} is empty")


def check_columns(dataset_dict, required: Sequence[str], stage: str = "") -> None:
    """Raise a ValueError naming the first `required` column missing from a split, with the available ones."""
    prefix = f"stage {stage}: " if stage else ""
    for split, dataset in dataset_dict.items():
        available = _column_names(dataset)
        for column in required:
            if column not in available:
                raise ValueError(
                    f"{prefix}split {split!r} has no column {column!r} (available: {available}); rename yours with "
                    f"load_stage_dataset(..., column_mapping={{{column!r}: 'your_column'}})"
                )


def audio_info(cell: dict) -> tuple[int, int]:
    """(samples, sampling rate) of an undecoded audio cell (`{"bytes", "path"}`), from the file header."""
    if not isinstance(cell, dict):
        raise TypeError(f"expected an undecoded audio cell {{'bytes', 'path'}}, got {type(cell).__name__}")
    if cell.get("array") is not None:
        return len(cell["array"]), int(cell["sampling_rate"])
    source = io.BytesIO(cell["bytes"]) if cell.get("bytes") is not None else cell.get("path")
    if source is None:
        raise ValueError(f"audio cell has neither 'bytes' nor 'path': {sorted(cell)}")
    info = soundfile.info(source)
    return int(info.frames), int(info.samplerate)


def check_sampling_rate(dataset, column: str, sampling_rate: int, split: str, rows: int | None) -> None:
    """ValueError if one of the first `rows` clips (all if None) of an undecoded audio column is not at
    `sampling_rate`."""
    cells = islice(iter(dataset.select_columns([column])), rows) if isinstance(dataset, IterableDataset) else (
        dataset.select_columns([column])[: len(dataset) if rows is None else rows][column]
    )
    for index, cell in enumerate(cells):
        cell = cell[column] if isinstance(dataset, IterableDataset) else cell
        if cell is None:
            continue
        _, rate = audio_info(cell)
        if rate != sampling_rate:
            raise ValueError(
                f"audio column {column!r} of split {split!r} is sampled at {rate} Hz (row {index}) but MuOmni "
                f"expects {sampling_rate} Hz; pass resample=True to resample it while training"
            )


def load_stage_dataset(
    source,
    column_mapping: Mapping[str, str] | None = None,
    streaming: bool = False,
    split: str | Sequence[str] | Mapping[str, str] | None = None,
    *,
    sampling_rate: int = SAMPLING_RATE,
    resample: bool = False,
    validation_size: float | int | None = None,
    check_rows: int | None = 64,
    seed: int = 0,
    **load_kwargs,
) -> DatasetDict | IterableDatasetDict:
    """Load `source` for a stage recipe, with its columns renamed to the built-in schema names.

    Args:
        source: a `save_to_disk` folder, or the first argument of `datasets.load_dataset`.
        column_mapping (`dict`, *optional*): `{built-in name: source column}`, e.g. `{"text": "sentence"}`.
            A source column already called like a mapped name and not mapped itself is dropped.
        streaming (`bool`): return an `IterableDatasetDict` (read lazily).
        split: None (all splits), a split name or list of names, or `{muomni split: source split}` to
            pick and rename splits (`{"train": "train.clean.100", "validation": "validation.clean"}`).
        sampling_rate (`int`): the rate audio must have (16000).
        resample (`bool`): accept audio at other rates and resample it to `sampling_rate` when read.
        validation_size (`float` or `int`, *optional*): without a "validation" split, hold out this
            fraction (or number of rows) of train as one (map-style only, shuffled with `seed`).
        check_rows (`int`, *optional*): clips per split whose sampling rate is checked (None: all).
        **load_kwargs: passed to `load_dataset` (`data_dir`, `data_files`, `name`, `cache_dir`, ...).

    Returns:
        `DatasetDict` or `IterableDatasetDict` keyed by split.
    """
    column_mapping = dict(column_mapping or {})
    for key, value in column_mapping.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"column_mapping must map column names to column names, got {key!r}: {value!r}")
    if isinstance(split, str):
        split = {split: split}
    elif isinstance(split, Sequence):
        split = {name: name for name in split}
    elif split is not None and not isinstance(split, Mapping):
        raise TypeError(f"split must be None, a name, a list of names or a mapping, got {type(split).__name__}")

    if _is_saved_dataset(source):
        if load_kwargs:
            raise ValueError(
                f"{source!r} is a save_to_disk folder; load_dataset arguments {sorted(load_kwargs)} do not apply"
            )
        loaded = load_from_disk(os.fspath(source))
        if isinstance(loaded, Dataset):
            loaded = DatasetDict({"train": loaded})
        if streaming:
            loaded = IterableDatasetDict({name: d.to_iterable_dataset() for name, d in loaded.items()})
    else:
        try:
            with _audio_encoding_without_torchcodec():
                loaded = load_dataset(source, streaming=streaming, **load_kwargs)
        except ValueError as err:  # datasets' own words for an empty split
            empty = re.search(r'Instruction "(.+)" corresponds to no data', str(err))
            if empty is None:
                raise
            raise ValueError(f"split {empty.group(1)!r} is empty (in {source!r})") from err
    if isinstance(loaded, (Dataset, IterableDataset)):
        loaded = (IterableDatasetDict if streaming else DatasetDict)({"train": loaded})

    if split is not None:
        missing = [name for name in split.values() if name not in loaded]
        if missing:
            raise ValueError(f"{source!r} has no split {missing}; its splits are {sorted(loaded)}")
        loaded = type(loaded)({ours: loaded[theirs] for ours, theirs in split.items()})

    if validation_size is not None and "validation" not in loaded:
        if streaming:
            raise ValueError("validation_size needs map-style data (streaming=False); give a validation split instead")
        if "train" not in loaded:
            raise ValueError(f"validation_size holds out part of 'train', but the splits are {sorted(loaded)}")
        held_out = loaded["train"].train_test_split(test_size=validation_size, seed=seed)
        loaded = DatasetDict({**loaded, "train": held_out["train"], "validation": held_out["test"]})

    renamed = {}
    for name, dataset in loaded.items():
        available = _column_names(dataset)
        for ours, theirs in column_mapping.items():
            if theirs not in available:
                raise ValueError(
                    f"split {name!r} of {source!r} has no column {theirs!r} (mapped to {ours!r}); available columns: "
                    f"{available}"
                )
        clashing = [c for c in column_mapping if c in available and c not in column_mapping.values()]
        if clashing:
            dataset = dataset.remove_columns(clashing)
        renames = {theirs: ours for ours, theirs in column_mapping.items() if theirs != ours}
        if renames:
            dataset = dataset.rename_columns(renames)
        renamed[name] = dataset
    result = type(loaded)(renamed)
    check_splits(result, required=())
    with _audio_encoding_without_torchcodec():  # a stream encodes its rows as they are read
        return _prepare_audio(result, sampling_rate, resample, check_rows)


def _prepare_audio(dataset_dict, sampling_rate: int, resample: bool, check_rows: int | None):
    """Cast every Audio column to undecoded cells, recording the resampling request; check the rates."""
    prepared = {}
    for name, dataset in dataset_dict.items():
        features = dataset.features or {}
        for column, feature in features.items():
            if not isinstance(feature, Audio):
                continue
            if not resample:
                check_sampling_rate(
                    dataset.cast_column(column, Audio(decode=False)), column, sampling_rate, name, check_rows
                )
            requested = sampling_rate if resample else None
            dataset = dataset.cast_column(column, Audio(sampling_rate=requested, decode=False))
        prepared[name] = dataset
    return type(dataset_dict)(prepared)


__all__ = [
    "SAMPLING_RATE",
    "audio_info",
    "check_columns",
    "check_sampling_rate",
    "check_splits",
    "load_stage_dataset",
]
