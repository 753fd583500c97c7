"""`muomni-train` and `muomni demo`: argument validation (every message, exit code 2, nothing built),
the `all` orchestration with stand-in recipes (who gets which previous outputs, metrics.json, the final
checkpoint, --resume), a real stage A run that writes a loadable checkpoint, and (slow) a 2-process
`torchrun` run and the `muomni demo --quick` smoke test end to end."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict

from muomni.training import cli
from muomni.training.cli import (
    UsageError,
    main,
    metrics_from_results,
    parse_settings,
    parse_value,
    split_overrides,
)
from muomni.training.trainer import StageResult

TESTS = os.path.dirname(os.path.abspath(__file__))
OFFLINE_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}
STAGE_A_FAST = ["--set", "max_steps=2", "--set", "block_size=64", "--set", "eval_strategy=no"]


def usage_error(capsys, argv: list[str]) -> str:
    """Run `muomni-train argv`, expect exit code 2 and return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def builtin_data(tmp_path_factory) -> str:
    """The built-in data at the `test` scale, built once through the CLI's builder (as rank 0 would)."""
    path = str(tmp_path_factory.mktemp("builtin") / "data")
    cli.prepare_builtin_dataset(path, seed=0, scale="test", show_progress=False)
    return path


def saved_copy(builtin_data: str, destination, edit) -> str:
    """A copy of the built-in data folder with `edit(datasets)` applied (returns the new folder)."""
    from muomni.training.data import load_builtin_dataset

    datasets = load_builtin_dataset(builtin_data)
    edit(datasets)
    for name, dataset in datasets.items():
        # one shard per split, even an empty one (with none, datasets cannot load it back)
        dataset.save_to_disk(os.path.join(destination, name), num_shards={split: 1 for split in dataset})
    return str(destination)


# ---------------------------------------------------------------- validation: each message, exit code 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["f", "--dataset", "builtin", "--output-dir", "x"], r"argument stage: invalid choice: 'f'"),
        (["a", "--preset", "huge", "--dataset", "builtin", "--output-dir", "x"], r"unknown preset 'huge'; expected one of \['micro', 'tiny'\]"),
        (["a", "--preset", "tiny", "--config", "c.json", "--dataset", "builtin", "--output-dir", "x"], r"argument --config: not allowed with argument --preset"),
        (["a", "--output-dir", "x"], r"the following arguments are required: --dataset"),
        (["a", "--dataset", "builtin:huge", "--output-dir", "x"], r"unknown built-in scale 'huge'; expected one of \['small', 'test', 'tiny'\]"),
        (["a", "--dataset", "/no/such/data", "--output-dir", "x"], r"--dataset '/no/such/data' does not exist"),
        (["d", "--dataset", "builtin", "--output-dir", "x"], r"stage D needs the outputs of earlier stages: missing \['thinker_lm', 'tokenizer', 'audio_encoder'\]"),
        (["c", "--dataset", "builtin", "--output-dir", "x"], r"stage C needs the outputs of earlier stages: missing \['tokenizer'\]"),
        (["all", "--dataset", "builtin", "--output-dir", "x", "--previous", "tokenizer=."], r"--previous cannot be used with 'all'"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--columns", "text=body"], r"--columns only apply to a load_stage_dataset source"),
        (["all", "--dataset", "json", "--output-dir", "x"], r"'all' needs the built-in data"),
        (["b", "--dataset", "json", "--streaming", "--output-dir", "x"], r"--streaming is only supported by stage A, not stage B"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--set", "bf16=true", "--set", "fp16=true"], r"bf16=true and --set fp16=true are incompatible"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--set", "output_dir=y"], r"--set output_dir=... is not allowed: use --output-dir"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--set", "seed=3"], r"--set seed=... is not allowed: use --seed"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--set", "resume_from_checkpoint=y"], r"use --resume"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--set", "max_steps"], r"--set expects \[STAGE:\]KEY=VALUE, got 'max_steps'"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--set", "block_sizee=3"], r"--set block_sizee: not a TrainingArguments field nor an option of stage\(s\) \['a'\]"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--set", "c:augmentation=false"], r"names stage 'c', which this run does not train"),
        (["all", "--dataset", "builtin", "--output-dir", "x", "--set", "z:max_steps=1"], r"unknown stage 'z'"),
        (["all", "--dataset", "builtin", "--output-dir", "x", "--set", "a:augmentation=false"], r"--set a:augmentation: not a TrainingArguments field nor an option of stage A"),
        (["a", "--config", "/no/such/config.json", "--dataset", "builtin", "--output-dir", "x"], r"--config '/no/such/config.json': no such file"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--seed", "-1"], r"--seed must be a non-negative integer, got -1"),
        (["a", "--dataset", "builtin", "--output-dir", "x", "--previous", "tokenizer=/no/such/dir"], r"--previous tokenizer=/no/such/dir: '/no/such/dir' does not exist"),
    ],
)
def test_invalid_arguments_exit_2_with_a_message(capsys, tmp_path, monkeypatch, argv, message):
    import re

    monkeypatch.chdir(tmp_path)
    built = []
    monkeypatch.setattr(cli, "prepare_builtin_dataset", lambda *a, **k: built.append(a))
    err = usage_error(capsys, argv)
    assert re.search(message, err), err
    assert "muomni-train: error:" in err
    assert not built, "nothing may be built before the arguments are checked"


def test_bad_config_files(capsys, tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    err = usage_error(capsys, ["a", "--config", str(bad_json), "--dataset", "builtin", "--output-dir", str(tmp_path)])
    assert "is not valid JSON" in err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model_type": "llama"}))
    err = usage_error(capsys, ["a", "--config", str(other), "--dataset", "builtin", "--output-dir", str(tmp_path)])
    assert "is not a MuOmniConfig (model_type 'llama', expected 'muomni')" in err
    # a saved MuOmniConfig (a file or its folder) is what --config takes
    from muomni import get_preset_config

    get_preset_config("micro").save_pretrained(tmp_path / "micro")
    for path in (tmp_path / "micro", tmp_path / "micro" / "config.json"):
        assert cli.resolve_config(None, str(path)).thinker_config.text_config.hidden_size == 256


def test_previous_checks(capsys, tmp_path):
    out = str(tmp_path / "out")
    not_a_stage = tmp_path / "folder"
    not_a_stage.mkdir()
    err = usage_error(capsys, ["c", "--dataset", "builtin", "--output-dir", out, "--previous", str(not_a_stage)])
    assert "no stage_result.json in it" in err
    err = usage_error(
        capsys,
        ["e", "--dataset", "builtin", "--output-dir", out]
        + [f"--previous={name}={tmp_path}" for name in ("thinker_lm", "tokenizer", "audio_encoder", "vision_encoder", "talker")],
    )
    assert "takes --previous talker=... and codec=... together" in err


def test_a_foreign_data_folder_is_never_replaced(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("keep me")
    err = usage_error(capsys, ["a", "--dataset", "builtin:test", "--output-dir", str(tmp_path)])
    assert "holds no built-in data set built here" in err
    assert (tmp_path / "data" / "mine.txt").read_text() == "keep me"


def test_saved_data_folders_are_checked(capsys, tmp_path, builtin_data):
    out = str(tmp_path / "out")
    # not a built-in folder: some of the five datasets are missing
    partial = tmp_path / "partial"
    shutil.copytree(os.path.join(builtin_data, "text"), partial / "text")
    err = usage_error(capsys, ["a", "--dataset", str(partial), "--output-dir", out])
    assert "is not a built-in dataset folder: missing ['speech', 'images', 'chat', 'sft']" in err

    def drop_caption(datasets):
        datasets["images"] = datasets["images"].remove_columns("caption")

    no_caption = saved_copy(builtin_data, tmp_path / "no_caption", drop_caption)
    err = usage_error(capsys, ["c", "--dataset", no_caption, "--output-dir", out, "--previous", f"tokenizer={tmp_path}"])
    assert "images/train misses the column(s) ['caption'] that stage C needs" in err

    def empty_validation(datasets):
        datasets["text"]["validation"] = datasets["text"]["validation"].select([])

    empty = saved_copy(builtin_data, tmp_path / "empty", empty_validation)
    err = usage_error(capsys, ["a", "--dataset", empty, "--output-dir", out])
    assert "text/validation is empty" in err


def test_load_stage_dataset_sources_are_checked(capsys, tmp_path):
    out = str(tmp_path / "out")
    source = tmp_path / "corpus"
    DatasetDict(
        {"train": Dataset.from_dict({"body": ["a b c", "d e f"]}), "validation": Dataset.from_dict({"body": ["g h"]})}
    ).save_to_disk(str(source))
    err = usage_error(capsys, ["a", "--dataset", str(source), "--output-dir", out, "--columns", "text=content"])
    assert "has no column 'content' (mapped to 'text')" in err
    err = usage_error(capsys, ["b", "--dataset", str(source), "--output-dir", out, "--columns", "text=body"])
    assert "stage B: split 'train' has no column 'audio'" in err
    err = usage_error(capsys, ["a", "--dataset", str(source), "--output-dir", out, "--columns", "text"])
    assert "--columns expects NAME=VALUE" in err

    empty = tmp_path / "empty"
    DatasetDict(
        {"train": Dataset.from_dict({"text": ["a b c"]}), "validation": Dataset.from_dict({"text": []})}
    ).save_to_disk(str(empty), num_shards={"train": 1, "validation": 1})
    err = usage_error(capsys, ["a", "--dataset", str(empty), "--output-dir", out])
    assert "split 'validation' is empty" in err

    # a good source reaches the recipe as one DatasetDict (stage A) or {"speech": ...} (other stages)
    datasets = cli.load_source_dataset("a", str(source), cli.build_parser().parse_args(
        ["a", "--dataset", str(source), "--output-dir", out, "--columns", "text=body"]
    ))
    assert isinstance(datasets, DatasetDict) and datasets["train"].column_names == ["text"]


# ---------------------------------------------------------------- --set parsing and routing


def test_set_values_and_routing():
    assert parse_value("5") == 5 and parse_value("1e-3") == 1e-3 and parse_value("true") is True
    assert parse_value("False") is False and parse_value("null") is None and parse_value("none") == "none"
    assert parse_value("[1, 2]") == [1, 2] and parse_value("full_shard auto_wrap") == "full_shard auto_wrap"
    settings = parse_settings(
        ["max_steps=3", "block_size=64", "d:talker.max_steps=7", "d:talker.learning_rate=1e-3", "e:tasks=[\"chat\"]"],
        list(cli.STAGES),
    )
    assert settings == {
        None: {"max_steps": 3, "block_size": 64},
        "d": {"talker": {"max_steps": 7, "learning_rate": 1e-3}},
        "e": {"tasks": ["chat"]},
    }
    overrides = split_overrides(settings, ["a", "c", "d", "e"])
    assert overrides["a"] == {"max_steps": 3, "block_size": 64}  # a stage option goes where it is declared
    assert overrides["c"] == {"max_steps": 3}
    assert overrides["d"] == {"max_steps": 3, "talker": {"max_steps": 7, "learning_rate": 1e-3}}
    assert overrides["e"] == {"max_steps": 3, "tasks": ["chat"]}
    with pytest.raises(UsageError, match=r"--set block_size: not a TrainingArguments field nor an option of stage\(s\) \['c'\]"):
        split_overrides(parse_settings(["block_size=64"], ["c"]), ["c"])


# ---------------------------------------------------------------- `all` with stand-in recipes


@pytest.fixture
def stand_in_recipes(monkeypatch):
    """Recipes that record their calls and write tiny outputs; stage E saves a real (random) tiny model."""
    sys.path.insert(0, TESTS)
    from omni_checkpoint import build_tiny_omni

    calls = []
    outputs = {"a": ("thinker_lm", "tokenizer"), "b": ("audio_encoder",), "c": ("vision_encoder",),
               "d": ("codec", "talker"), "e": ("muomni",)}

    def make(stage):
        def run(config, datasets, output_dir, previous=None, training_overrides=None, seed=0):
            calls.append({"stage": stage, "previous": dict(previous), "overrides": training_overrides, "seed": seed})
            os.makedirs(output_dir, exist_ok=True)
            if stage == "e":
                model, processor = build_tiny_omni()
                model.save_pretrained(output_dir)
                processor.save_pretrained(output_dir)
            return StageResult(stage.upper(), {name: output_dir for name in outputs[stage]}, {f"eval_{stage}": 1.0})

        return run

    monkeypatch.setattr(cli, "recipe", make)
    return calls


def test_all_feeds_each_stage_the_earlier_outputs(tmp_path, builtin_data, stand_in_recipes, capsys):
    out = tmp_path / "run"
    assert main(["all", "--dataset", builtin_data, "--output-dir", str(out), "--seed", "3", "--set", "max_steps=4",
                 "--set", "d:talker.max_steps=9"]) == 0
    calls = stand_in_recipes
    assert [c["stage"] for c in calls] == list("abcde")
    assert all(c["seed"] == 3 for c in calls)
    assert calls[0]["previous"] == {}
    assert set(calls[2]["previous"]) == {"thinker_lm", "tokenizer", "audio_encoder"}
    assert set(calls[4]["previous"]) == {"thinker_lm", "tokenizer", "audio_encoder", "vision_encoder", "codec", "talker"}
    assert calls[4]["previous"]["codec"] == str(out / "stage_d")
    assert calls[3]["overrides"] == {"max_steps": 4, "talker": {"max_steps": 9}}
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics) == list("abcde") and metrics["c"]["eval_c"] == 1.0
    # the final checkpoint loads with the Auto classes
    from transformers import AutoModel, AutoProcessor

    assert type(AutoModel.from_pretrained(out / "muomni")).__name__ == "MuOmniForConditionalGeneration"
    assert type(AutoProcessor.from_pretrained(out / "muomni")).__name__ == "MuOmniProcessor"
    result = json.loads((out / "stage_b" / "stage_result.json").read_text())
    assert result["outputs"] == {"audio_encoder": "."} and result["stage"] == "B"

    # --resume skips what finished; a single stage can take an earlier stage's folder as --previous
    calls.clear()
    shutil.rmtree(out / "stage_d")
    assert main(["all", "--dataset", builtin_data, "--output-dir", str(out), "--resume"]) == 0
    assert [c["stage"] for c in calls] == ["d", "e"]  # D is gone, and E must be retrained on the new D
    assert "finished earlier, reusing" in capsys.readouterr().out
    calls.clear()
    assert main(["d", "--dataset", builtin_data, "--output-dir", str(tmp_path / "d"),
                 "--previous", str(out / "stage_a"), "--previous", f"audio_encoder={out / 'stage_b'}"]) == 0
    assert calls[0]["previous"] == {"thinker_lm": str(out / "stage_a"), "tokenizer": str(out / "stage_a"),
                                    "audio_encoder": str(out / "stage_b")}


def test_resume_passes_the_last_checkpoint(tmp_path, builtin_data, stand_in_recipes):
    out = tmp_path / "d"
    for folder in ("checkpoint-2", "talker/checkpoint-4", "talker/checkpoint-12", "codec/not-a-checkpoint"):
        (out / folder).mkdir(parents=True)
    previous = [f"--previous={name}={tmp_path}" for name in ("thinker_lm", "tokenizer", "audio_encoder")]
    assert main(["d", "--dataset", builtin_data, "--output-dir", str(out), "--resume", "--set", "d:talker.max_steps=20",
                 *previous]) == 0
    (call,) = stand_in_recipes
    assert call["overrides"] == {
        "resume_from_checkpoint": str(out / "checkpoint-2"),
        "talker": {"max_steps": 20, "resume_from_checkpoint": str(out / "talker" / "checkpoint-12")},
    }


def test_a_recipe_value_error_is_a_usage_error(tmp_path, builtin_data, monkeypatch, capsys):
    def failing(*args, **kwargs):
        raise ValueError("stage A: the validation text is shorter than one block")

    monkeypatch.setattr(cli, "recipe", lambda stage: failing)
    err = usage_error(capsys, ["a", "--dataset", builtin_data, "--output-dir", str(tmp_path)])
    assert "muomni-train: error: stage A: the validation text is shorter than one block" in err


def test_metrics_table_prefers_test_and_shows_baselines():
    from muomni.training.demo import metrics_table

    table = metrics_table(metrics_from_results({
        "a": StageResult("A", {}, {"eval_perplexity": 9.0, "test_perplexity": 10.0, "eval_unigram_perplexity": 90.0}),
        "c": StageResult("C", {}, {"test_recall_at_1": 0.5, "test_chance_recall_at_1": 0.01}),
        "e": StageResult("E", {}, {"test_image_qa_accuracy": 0.4, "test_image_qa_majority_accuracy": 0.2,
                                   "test_image_qa_majority_by_type_accuracy": 0.3}),
    }))
    # the unigram baseline exists on validation only: the row compares on validation
    assert "| A | thinker perplexity (lower is better) | validation | 9 | 90 (unigram) |" in table
    assert "| C | image retrieval R@1 (higher is better) | test | 0.5 | 0.01 (chance) |" in table
    assert "| E | image QA accuracy (higher is better) | test | 0.4 | 0.3 (majority answer per question type) |" in table


# ---------------------------------------------------------------- real runs


def test_stage_a_writes_a_loadable_checkpoint(tmp_path, builtin_data, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    out = tmp_path / "a"
    assert main(["a", "--dataset", builtin_data, "--output-dir", str(out), *STAGE_A_FAST]) == 0
    printed = capsys.readouterr().out
    assert "stage A metrics:" in printed and "eval_perplexity" in printed
    result = json.loads((out / "stage_result.json").read_text())
    assert result["outputs"] == {"thinker_lm": ".", "tokenizer": "."}
    assert result["metrics"]["eval_perplexity"] > 1
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "MuOmniForCausalLM" and model.config.vocab_size == len(tokenizer)
    (generated,) = pipeline("text-generation", model=model, tokenizer=tokenizer)("the", max_new_tokens=3, do_sample=False)
    assert generated["generated_text"].startswith("the")


def run_command(command: list[str], timeout: int, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=OFFLINE_ENV, cwd=cwd)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def test_console_scripts_and_the_muomni_command(capsys):
    from importlib.metadata import entry_points

    from muomni import __version__

    scripts = {e.name: e.value for e in entry_points(group="console_scripts") if e.name.startswith("muomni")}
    assert scripts["muomni"] == "muomni.training.cli:muomni_main"
    assert scripts["muomni-train"] == "muomni.training.cli:main"
    with pytest.raises(SystemExit) as exit_info:
        cli.muomni_main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"muomni {__version__}"
    with pytest.raises(SystemExit) as exit_info:
        cli.muomni_main(["train", "a", "--output-dir", "x"])  # `muomni train` is muomni-train
    assert exit_info.value.code == 2 and "required: --dataset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.muomni_main(["demo", "--scale", "huge"])
    assert exit_info.value.code == 2 and "argument --scale: invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.muomni_main(["fly"])
    assert exit_info.value.code == 2 and "invalid choice: 'fly'" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_train_stage_a(tmp_path):
    """Rank 0 alone builds the data (the other rank waits), Trainer runs DDP over gloo, one checkpoint."""
    out = tmp_path / "ddp"
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port,
               "-m", "muomni.training.cli", "a", "--dataset", "builtin:test", "--output-dir", str(out), *STAGE_A_FAST]
    result = run_command(command, timeout=600, cwd=tmp_path)
    # one data-parallel run over gloo (not two independent ones): rank 0 alone prints
    assert result.stdout.count("=== stage A: thinker language model on text") == 1
    assert "(2 processes)" in result.stdout and result.stdout.count("stage A metrics:") == 1
    assert json.loads((out / "data" / "builtin_dataset.json").read_text()) == {"seed": 0, "scale": "test"}
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size > 0
    assert json.loads((out / "stage_result.json").read_text())["stage"] == "A"


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    from transformers import AutoModel, AutoProcessor, pipeline

    out = tmp_path / "demo"
    result = run_command([shutil.which("muomni") or "muomni", "demo", "--quick", "--output-dir", str(out)], timeout=900)
    printed = result.stdout
    # no deprecation text anywhere in what the user sees (transformers' FutureWarnings and its logger's
    # "`past_key_values`/`cache_params` are deprecated" line included)
    for output in (result.stdout, result.stderr):
        assert not re.search(r"FutureWarning|DeprecationWarning|is deprecated|are deprecated", output), output[-3000:]
    for section in ("[1/4] built-in data set", "[2/4] training stages A-E", "[3/4] the trained model",
                    "[chat] pipeline('text-generation')", "[image QA] pipeline('image-text-to-text')",
                    "[speech recognition] pipeline('automatic-speech-recognition')", "[4/4] held-out metrics"):
        assert section in printed, printed[-3000:]
    assert "| stage | metric | split | MuOmni | baseline |" in printed
    for row in ("thinker perplexity", "image retrieval R@1", "image QA accuracy"):
        assert row in printed
    table = (out / "metrics.md").read_text()
    assert "| stage | metric | split | MuOmni | baseline |" in table
    assert (out / "demo_image.png").is_file() and (out / "metrics.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(metrics) == list("abcde")

    final = str(out / "muomni")
    model = AutoModel.from_pretrained(final)
    processor = AutoProcessor.from_pretrained(final)
    assert type(model).__name__ == "MuOmniForConditionalGeneration" and type(processor).__name__ == "MuOmniProcessor"
    (answer,) = pipeline("text-generation", model=final)([{"role": "user", "content": "hello"}], max_new_tokens=3)
    assert answer["generated_text"][-1]["role"] == "assistant"
    if model.config.enable_audio_output:
        assert (out / "demo_spoken_answer.wav").is_file()
        speech = pipeline("text-to-speech", model=final)("hello there", forward_params={"talker_max_frames": 5})
        assert speech["sampling_rate"] == 16000
