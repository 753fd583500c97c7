"""`TrainingArguments(push_to_hub=True)` in every stage: each stage recipe uploads its whole output folder
(model, tokenizer / processor, stage D's sub-folders) to its repository, in one commit at its end, on a
stand-in for the Hub API served on 127.0.0.1 (`hub_stub`; the real Hub is unreachable from tests).

The five stages run for real, a few steps each on the built-in `test` data, through `muomni-train all`
with per-stage `hub_model_id`s."""

import hashlib
import json
import os

import huggingface_hub
import pytest
import transformers.utils.hub
from huggingface_hub import ModelCard
from hub_stub import HubStub

from muomni.training import cli

TOKEN = "hf_stub_token_for_tests"
FAST = [  # `muomni demo --quick`'s settings: a few steps per stage, no evaluation during training
    "--set", "max_steps=2", "--set", "eval_strategy=no", "--set", "a:block_size=64",
    "--set", "d:talker.roundtrip_sentences=2",
]  # fmt: skip
# what each stage's folder must hold on the Hub (besides what the recipe may add)
EXPECTED = {
    "a": {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"},
    "b": {"model.safetensors", "config.json", "vocab.json", "preprocessor_config.json"},
    "c": {"vision_encoder/model.safetensors", "vision_encoder/config.json", "contrastive/model.safetensors"},
    "d": {"codec/model.safetensors", "codec/config.json", "talker/model.safetensors", "talker/config.json"},
    "e": {"model.safetensors", "config.json", "processor_config.json", "tokenizer.json", "chat_template.jinja"},
}


@pytest.fixture
def hub(monkeypatch):
    """The stub, with this process's huggingface_hub pointed at it (CI runs with HF_HUB_OFFLINE=1)."""
    with HubStub(token=TOKEN, lifetime=900) as stub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", stub.endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)  # Trainer's shared HfApi binds the endpoint
        yield stub


def local_files(folder) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            files[os.path.relpath(path, folder).replace(os.sep, "/")] = open(path, "rb").read()
    return files


def test_every_stage_pushes_its_whole_output_folder(tmp_path, hub, capsys):
    out = tmp_path / "run"
    repos = {stage: f"alice/muomni-stage-{stage}" for stage in "abcde"}
    hub_settings = ["--set", "push_to_hub=true", "--set", f"hub_token={TOKEN}"]
    for stage, repo in repos.items():
        hub_settings += ["--set", f"{stage}:hub_model_id={repo}"]
    assert cli.main(["all", "--dataset", "builtin:test", "--output-dir", str(out), *FAST, *hub_settings]) == 0

    for stage, repo in repos.items():
        uploaded = hub.files(repo)
        assert EXPECTED[stage] <= set(uploaded), (stage, sorted(uploaded))
        folder = out / f"stage_{stage}"
        local = local_files(folder)
        for path, data in uploaded.items():  # every uploaded file is the recipe's file, byte for byte
            assert hashlib.sha256(data).hexdigest() == hashlib.sha256(local[path]).hexdigest(), (stage, path)
        # nothing pickled, no checkpoints, no Trainer internals
        pickled_or_checkpoints = [p for p in uploaded if p.endswith((".bin", ".pt", ".pkl")) or "checkpoint-" in p]
        assert not pickled_or_checkpoints, sorted(uploaded)
        # one commit of the finished stage, not a push per sub-model or per save_model call
        commit_path = f"/api/models/{repo}/commit/"
        commits = [path for method, path in hub.requests if method == "POST" and path.startswith(commit_path)]
        assert len(commits) == 1, (stage, commits)
    # stage D: the codec and the talker of one stage in one repository, each under its own folder
    assert not {"config.json", "model.safetensors"} & set(hub.files(repos["d"]))

    # the assembled model's card carries the metrics this very run measured, as parseable YAML
    card = ModelCard.load(out / "muomni" / "README.md")
    carded = {result.metric_name: result.metric_value for result in card.data.eval_results}
    measured = json.loads((out / "metrics.json").read_text())
    for stage, name in (("a", "eval_perplexity"), ("b", "eval_cer"), ("c", "eval_recall_at_5"),
                        ("d", "talker_roundtrip_cer"), ("e", "eval_image_qa_accuracy")):  # fmt: skip
        assert carded[f"stage_{stage}/{name}"] == pytest.approx(measured[stage][name]), (stage, name)


def test_a_rejected_token_stops_the_stage_before_training_with_a_clear_message(tmp_path, hub, capsys):
    out = tmp_path / "run"
    argv = ["a", "--dataset", "builtin:test", "--output-dir", str(out), *FAST[:4], *FAST[4:6],
            "--set", "push_to_hub=true", "--set", "hub_token=hf_wrong", "--set", "hub_model_id=alice/stage-a"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "the Hugging Face Hub refused a request" in err and "401" in err and "check hub_token" in err
    assert not (out / "model.safetensors").exists()  # the Trainer checked the repository before training
    assert hub.repos == {}


def test_stage_d_checks_its_repository_before_training_too(tmp_path, hub, capsys):
    """Stage D's three Trainers do not push themselves (the recipe pushes the whole folder), so the recipe
    creates the repository first: a rejected token fails before the codec trains."""
    out = tmp_path / "run"
    argv = ["all", "--dataset", "builtin:test", "--output-dir", str(out), *FAST,
            "--set", "d:push_to_hub=true", "--set", "d:hub_token=hf_wrong",
            "--set", "d:hub_model_id=alice/stage-d"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "the Hugging Face Hub refused a request" in err and "401" in err
    assert (out / "stage_c" / "stage_result.json").is_file()  # A-C ran and finished
    assert not (out / "stage_d" / "codec" / "model.safetensors").exists()  # D stopped before training
    assert hub.repos == {}
