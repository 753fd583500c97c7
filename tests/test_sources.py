"""Real-data loading for the stage recipes: local audiofolder / json / imagefolder / save_to_disk sources,
column mapping, split selection, streaming (stage A trains from a stream), and clear errors for a
missing column, an empty split and audio at the wrong sampling rate."""

import csv
import json
import os

import numpy as np
import pytest
import soundfile
from datasets import Audio, Dataset, DatasetDict, Image, IterableDatasetDict
from PIL import Image as PILImage

from muomni import MuOmniTextConfig
from muomni.training.data import with_audio_arrays
from muomni.training.sources import check_columns, load_stage_dataset
from muomni.training.stage_a import run_stage_a


def write_audiofolder(root, rates: dict[str, list[int]]) -> str:
    """root/<split>/clip<i>.wav (a 0.5 s tone at the given rates) + metadata.csv with a `sentence` column."""
    for split, split_rates in rates.items():
        os.makedirs(os.path.join(root, split))
        with open(os.path.join(root, split, "metadata.csv"), "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "sentence"])
            for index, rate in enumerate(split_rates):
                t = np.arange(rate // 2) / rate
                soundfile.write(os.path.join(root, split, f"clip{index}.wav"), 0.3 * np.sin(2 * np.pi * 300 * t), rate)
                writer.writerow([f"clip{index}.wav", f"Clip number {index}."])
    return str(root)


def write_json(path, rows: list[dict]) -> str:
    with open(path, "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    words = "the cat sat on the mat while the dog ran to the park".split()
    rows = [{"content": " ".join(words[i % 6 : i % 6 + 6]) + ".", "id": i} for i in range(120)]
    return {
        "train": write_json(tmp_path / "train.jsonl", rows),
        "validation": write_json(tmp_path / "val.jsonl", rows[:12]),
    }


def test_audiofolder_with_column_mapping(tmp_path):
    root = write_audiofolder(tmp_path / "clips", {"train": [16000, 16000], "validation": [16000]})
    encode_example = Audio.encode_example
    data = load_stage_dataset("audiofolder", {"text": "sentence"}, data_dir=root, cache_dir=str(tmp_path / "cache"))
    assert Audio.encode_example is encode_example  # the torchcodec-free encoder was only lent for the load
    assert isinstance(data, DatasetDict) and sorted(data) == ["train", "validation"]
    assert data["train"].column_names == ["audio", "text"] and data["train"][0]["text"] == "Clip number 0."
    assert data["train"].features["audio"] == Audio(sampling_rate=None, decode=False)  # must already be 16 kHz
    decoded = with_audio_arrays(data["train"])[0]["audio"]
    assert decoded["sampling_rate"] == 16000 and decoded["array"].shape == (8000,)


def test_audio_at_the_wrong_rate_is_an_error_unless_resampling(tmp_path):
    root = write_audiofolder(tmp_path / "clips", {"train": [16000, 8000], "validation": [16000]})
    with pytest.raises(ValueError, match="split 'train' is sampled at 8000 Hz \\(row 1\\).*pass resample=True"):
        load_stage_dataset("audiofolder", {"text": "sentence"}, data_dir=root, cache_dir=str(tmp_path / "cache"))
    data = load_stage_dataset(
        "audiofolder", {"text": "sentence"}, data_dir=root, cache_dir=str(tmp_path / "cache"), resample=True
    )
    assert data["train"].features["audio"].sampling_rate == 16000  # the request, as datasets.Audio reads it


def test_json_text_corpus_split_selection_and_missing_column(tmp_path, corpus):
    data = load_stage_dataset("json", {"text": "content"}, data_files=corpus, cache_dir=str(tmp_path / "cache"))
    assert data["train"].column_names == ["text", "id"] and data["validation"].num_rows == 12
    renamed = load_stage_dataset(
        "json", {"text": "content"}, split={"train": "train", "test": "validation"}, data_files=corpus,
        cache_dir=str(tmp_path / "cache"),
    )
    assert sorted(renamed) == ["test", "train"]
    missing = "has no column 'sentence' \\(mapped to 'text'\\); available columns: \\['content', 'id'\\]"
    with pytest.raises(ValueError, match=missing):
        load_stage_dataset("json", {"text": "sentence"}, data_files=corpus, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="has no split \\['dev'\\]; its splits are \\['train', 'validation'\\]"):
        load_stage_dataset("json", split={"validation": "dev"}, data_files=corpus, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="split 'train' has no column 'audio' \\(available: \\['text', 'id'\\]\\)"):
        check_columns(data, ("audio", "text"), stage="B")


def test_empty_split_is_an_error(tmp_path, corpus):
    files = {**corpus, "test": write_json(tmp_path / "empty.jsonl", [])}
    with pytest.raises(ValueError, match="split 'test' is empty"):
        load_stage_dataset("json", {"text": "content"}, data_files=files, cache_dir=str(tmp_path / "cache"))


def test_imagefolder_captions(tmp_path):
    root = tmp_path / "images"
    for split in ("train", "validation"):
        os.makedirs(root / split)
        with open(root / split / "metadata.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file_name", "text"])
            for index, colour in enumerate(["red", "blue"]):
                PILImage.new("RGB", (8, 8), colour).save(root / split / f"{colour}.png")
                writer.writerow([f"{colour}.png", f"a {colour} square"])
    data = load_stage_dataset("imagefolder", {"caption": "text"}, data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    assert data["train"].column_names == ["image", "caption"] and isinstance(data["train"].features["image"], Image)
    row = data["validation"][0]
    assert row["caption"].startswith("a ") and row["image"].size == (8, 8)


def test_save_to_disk_folder_and_validation_size(tmp_path):
    Dataset.from_dict({"body": [f"document {i}" for i in range(20)]}).save_to_disk(str(tmp_path / "saved"))
    data = load_stage_dataset(str(tmp_path / "saved"), {"text": "body"}, validation_size=5)
    assert (data["train"].num_rows, data["validation"].num_rows) == (15, 5) and data["train"].column_names == ["text"]
    with pytest.raises(ValueError, match="load_dataset arguments \\['data_dir'\\] do not apply"):
        load_stage_dataset(str(tmp_path / "saved"), data_dir="x")


def test_stage_a_trains_from_a_stream(tmp_path, corpus):
    stream = load_stage_dataset(
        "json", {"text": "content"}, streaming=True, data_files=corpus, cache_dir=str(tmp_path / "cache")
    )
    assert isinstance(stream, IterableDatasetDict)
    config = MuOmniTextConfig(
        vocab_size=300, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32, pad_token_id=1, eos_token_id=0,
    )
    overrides = {"per_device_train_batch_size": 2, "eval_strategy": "no", "disable_tqdm": True}
    with pytest.raises(ValueError, match="a streamed train split has no length: set training_overrides=\\{'max_steps'"):
        run_stage_a(config, stream, str(tmp_path / "a"), training_overrides=overrides)
    result = run_stage_a(config, stream, str(tmp_path / "a"), training_overrides={**overrides, "max_steps": 2})
    assert result.metrics["epoch"] > 0 and np.isfinite(result.metrics["eval_bits_per_byte"])
    assert os.path.isfile(tmp_path / "a" / "model.safetensors")
