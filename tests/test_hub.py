"""Publishing: `save_for_hub` (directory, auto_map, model card), safetensors-only loading, the
version check, and `muomni-publish` against a stand-in for the Hub API on 127.0.0.1 (`hub_stub`):
what it uploads arrives intact and downloads again, and bad directories upload nothing."""

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import huggingface_hub
import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from hub_stub import HubStub
from omni_checkpoint import METRICS, build_tiny_omni
from transformers import AutoModel

from muomni import MuOmniConfig, MuOmniForConditionalGeneration, MuOmniThinkerForConditionalGeneration, __version__
from muomni.export_remote_code import PROCESSING_AUTO_CLASSES, remote_code_auto_map, render_remote_code
from muomni.hub import HubValidationError, publish_main, save_for_hub, validate_for_hub
from muomni.model_card import build_model_card
from muomni.version import TRANSFORMERS_REQUIREMENT

# huggingface_hub's own LFS upload passes `data=` to httpx2, which deprecates it; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")
TOKEN = "hf_stub_token_for_tests"
REPO = "alice/muomni-tiny"
DATASETS = ["alice/muomni-builtin"]
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, processor, exported directory) of the tiny model, with the training-run metrics."""
    model, processor = build_tiny_omni()
    directory = save_for_hub(
        model,
        processor,
        str(tmp_path_factory.mktemp("export") / "muomni-tiny"),
        metrics=METRICS,
        datasets=DATASETS,
        repo_id=REPO,
    )
    return model, processor, directory


@pytest.fixture
def copy_of(tiny, tmp_path):
    """A fresh copy of the exported directory to break."""
    target = tmp_path / "muomni-tiny"
    shutil.copytree(tiny[2], target)
    return target


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reference_logits(model, processor) -> np.ndarray:
    inputs = processor(text="the cat sat on the mat", return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits.numpy()


# ---------------------------------------------------------------- save_for_hub


def test_save_for_hub_writes_safetensors_configs_remote_code_and_card(tiny):
    model, _, directory = tiny
    files = set(os.listdir(directory))
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "README.md",
        "auto_muomni.py",
        "configuration_muomni.py",
        "modeling_muomni.py",
        "processing_muomni.py",
        "tokenization_muomni.py",
        "feature_extraction_muomni.py",
        "image_processing_muomni.py",
    } <= files
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
    # the remote code is rendered from the package sources at save time: exactly that bundle, nothing else
    bundle = render_remote_code()
    assert {name for name in files if name.endswith(".py")} == set(bundle)
    for name, text in bundle.items():
        assert open(os.path.join(directory, name), encoding="utf-8").read() == text, name
    assert f"muomni {__version__}'s `muomni.hub.save_for_hub`" in bundle["modeling_muomni.py"].splitlines()[2]
    auto_map = remote_code_auto_map()
    config = json.loads(open(os.path.join(directory, "config.json")).read())
    assert config["auto_map"] == auto_map and config["muomni_version"] == __version__
    processing_map = {name: auto_map[name] for name in PROCESSING_AUTO_CLASSES}
    processor_config = json.loads(open(os.path.join(directory, "processor_config.json")).read())
    assert processor_config["auto_map"] == processing_map
    assert processor_config["image_processor"]["auto_map"] == processing_map
    assert processor_config["feature_extractor"]["auto_map"] == processing_map
    tokenizer_config = json.loads(open(os.path.join(directory, "tokenizer_config.json")).read())
    assert tokenizer_config["auto_map"]["AutoTokenizer"] == ["auto_muomni.MuOmniTokenizer", None]
    # with the package imported, its own classes load the directory (no trust_remote_code prompt)
    loaded = AutoModel.from_pretrained(directory)
    assert type(loaded) is MuOmniForConditionalGeneration
    np.testing.assert_array_equal(reference_logits(loaded, tiny[1]), reference_logits(model, tiny[1]))


def test_save_for_hub_shards_past_max_shard_size(tiny, tmp_path):
    model, processor, _ = tiny
    directory = save_for_hub(model, processor, str(tmp_path / "sharded"), max_shard_size="3MB")
    index = json.loads(open(os.path.join(directory, "model.safetensors.index.json")).read())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and "model.safetensors" not in os.listdir(directory)
    assert validate_for_hub(directory, run_model=False)
    loaded = MuOmniForConditionalGeneration.from_pretrained(directory)
    np.testing.assert_array_equal(reference_logits(loaded, processor), reference_logits(model, processor))


def test_save_for_hub_rejects_other_models_and_a_used_directory(tiny, tmp_path):
    model, processor, directory = tiny
    with pytest.raises(TypeError, match="publishes a full MuOmni model .*MuOmniThinkerForConditionalGeneration"):
        save_for_hub(model.thinker, processor, str(tmp_path / "thinker"))
    with pytest.raises(TypeError, match="needs the model's MuOmniProcessor, got MuOmniTokenizer"):
        save_for_hub(model, processor.tokenizer, str(tmp_path / "tokenizer"))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "pytorch_model.bin").write_bytes(b"old")
    with pytest.raises(ValueError, match="is not empty \\(1 entries\\).*overwrite=True"):
        save_for_hub(model, processor, str(tmp_path / "used"))
    save_for_hub(model, processor, str(tmp_path / "used"), overwrite=True)
    assert "pytorch_model.bin" not in os.listdir(tmp_path / "used")


def test_save_for_hub_renders_the_remote_code_before_writing_anything(tiny, tmp_path, monkeypatch):
    def unrenderable():
        raise ValueError("muomni.x: `from muomni.y import *` is not supported by the remote-code export")

    monkeypatch.setattr("muomni.hub.render_remote_code", unrenderable)
    with pytest.raises(ValueError, match="is not supported by the remote-code export"):
        save_for_hub(tiny[0], tiny[1], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- model card


def test_model_card_metadata_parses_and_holds_the_measured_metrics(tiny):
    directory = tiny[2]
    text = open(os.path.join(directory, "README.md"), encoding="utf-8").read()
    metadata = yaml.safe_load(text.split("---\n")[1])  # valid YAML front matter
    card = ModelCard.load(os.path.join(directory, "README.md"))
    assert card.data.library_name == "transformers" == metadata["library_name"]
    assert card.data.pipeline_tag == "any-to-any"
    assert card.data.license == "apache-2.0"
    assert card.data.datasets == DATASETS
    assert {"muomni", "image-text-to-text", "text-to-speech", "automatic-speech-recognition"} <= set(card.data.tags)
    _, results = model_index_to_eval_results(metadata["model-index"])
    measured = {result.metric_name: (result.task_type, result.metric_value) for result in results}
    assert measured == {
        "stage_a/eval_perplexity": ("text-generation", 17.25),
        "stage_a/eval_bits_per_byte": ("text-generation", 1.375),
        "stage_b/eval_cer": ("automatic-speech-recognition", 0.4125),
        "stage_e/eval_image_qa_accuracy": ("any-to-any", 0.625),
    }
    # the same numbers as a table, and how to load with and without the package
    for row in ("| `stage_a/eval_perplexity` | 17.25 |", "| `stage_b/eval_cer` | 0.4125 |", "| 0.625 |"):
        assert row in card.text
    assert f'AutoModel.from_pretrained("{REPO}", trust_remote_code=True)' in card.text
    assert "import muomni" in card.text and "| `text-to-speech` |" in card.text
    # the transformers range the card states is the one setup.py declares (muomni.version)
    assert f"It needs `transformers{TRANSFORMERS_REQUIREMENT}`" in card.text


@pytest.mark.parametrize(
    ("metrics", "error", "match"),
    [
        ({"stage_a": {"eval_perplexity": math.nan}}, ValueError, "'stage_a/eval_perplexity' must be a finite number"),
        ({"eval_cer": "low"}, ValueError, "'eval_cer' must be a finite number, got 'low'"),
        ([("eval_cer", 0.1)], TypeError, "metrics must be a dict"),
    ],
)
def test_model_card_rejects_metrics_that_are_not_numbers(tiny, metrics, error, match):
    with pytest.raises(error, match=match):
        build_model_card(tiny[0].config, metrics)


# ---------------------------------------------------------------- loading guards


def pickled_checkpoint(model, directory) -> str:
    """`directory` with the model's config and its weights as a pickle only (what MuOmni must refuse)."""
    model.save_pretrained(directory)
    os.remove(os.path.join(directory, "model.safetensors"))
    torch.save(model.state_dict(), os.path.join(directory, "pytorch_model.bin"))
    return str(directory)


def test_loading_refuses_pickled_weights(tiny, tmp_path):
    """transformers 5.x itself would load `pytorch_model.bin` (torch.load); MuOmni's from_pretrained does not."""
    directory = pickled_checkpoint(tiny[0].thinker, tmp_path / "thinker")
    for load in (MuOmniThinkerForConditionalGeneration.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(ValueError, match="holds pickled weights \\(pytorch_model.bin\\) and no model.safetensors"):
            load(directory)
    with pytest.raises(ValueError, match="loads safetensors weights only .*use_safetensors=False"):
        MuOmniThinkerForConditionalGeneration.from_pretrained(tiny[2], use_safetensors=False)


def test_loading_refuses_pickled_weights_of_the_full_model(tiny, tmp_path):
    directory = pickled_checkpoint(tiny[0], tmp_path / "full")
    with pytest.raises(ValueError, match="holds pickled weights"):
        AutoModel.from_pretrained(directory)


def truncate(path) -> None:
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def test_loading_a_truncated_safetensors_file_is_a_clear_error(tiny, tmp_path):
    tiny[0].thinker.save_pretrained(tmp_path / "thinker")
    truncate(tmp_path / "thinker" / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors is truncated or corrupt: its header describes \\d+ bytes"):
        MuOmniThinkerForConditionalGeneration.from_pretrained(tmp_path / "thinker")


def test_loading_a_truncated_full_checkpoint_is_a_clear_error(copy_of):
    truncate(copy_of / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors is truncated or corrupt"):
        MuOmniForConditionalGeneration.from_pretrained(copy_of)


# ---------------------------------------------------------------- versions


def bump(version: str, part: int) -> str:
    numbers = [int(n) for n in version.split(".")[:3]]
    numbers[part] += 1
    numbers[part + 1 :] = [0] * (2 - part)
    return ".".join(map(str, numbers))


def set_checkpoint_version(directory, version: str) -> None:
    path = os.path.join(directory, "config.json")
    config = json.load(open(path))
    config["muomni_version"] = version
    json.dump(config, open(path, "w"), indent=2)


@pytest.mark.parametrize(
    ("version", "match"),
    [
        (bump(__version__, 0), f"written by muomni {bump(__version__, 0)}, but muomni {__version__} is installed: "
         "checkpoints load only within one major version"),
        (bump(__version__, 1), f"written by muomni {bump(__version__, 1)}, newer than the installed muomni "
         f"{__version__}; upgrade muomni"),
        ("not-a-version", "muomni_version 'not-a-version' in the config is not a valid version number"),
    ],
)  # fmt: skip
def test_a_checkpoint_of_another_major_or_a_newer_version_is_refused(tiny, tmp_path, version, match):
    tiny[0].config.save_pretrained(tmp_path)
    set_checkpoint_version(tmp_path, version)
    with pytest.raises(ValueError, match=match):
        MuOmniConfig.from_pretrained(tmp_path)


def test_a_checkpoint_of_an_older_compatible_version_loads_and_is_restamped(copy_of):
    set_checkpoint_version(copy_of, "0.0.1" if __version__.startswith("0.") else __version__.split(".")[0] + ".0.0")
    model = AutoModel.from_pretrained(copy_of)
    assert model.config.muomni_version == __version__


def test_publishing_a_checkpoint_of_another_major_version_fails_validation(copy_of):
    set_checkpoint_version(copy_of, bump(__version__, 0))
    with pytest.raises(HubValidationError, match="config.json does not load: ValueError: .*one major version"):
        validate_for_hub(copy_of, run_model=False)


# ---------------------------------------------------------------- muomni-publish


def cli_env(hub: HubStub, hf_home, token: str | None = TOKEN) -> dict:
    """A child process talking to the stub only: HF_ENDPOINT, no Xet (plain LFS), its own HF_HOME."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env.pop("PYTHONPATH", None)
    env.update(
        HF_ENDPOINT=hub.endpoint,
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        TOKENIZERS_PARALLELISM="false",
    )
    if token:
        env["HF_TOKEN"] = token
    return env


DOWNLOAD_SCRIPT = r"""
import sys
sys.modules["muomni"] = None  # load the bundled code from the "Hub", not the package
import numpy as np, torch
from transformers import AutoModel, AutoProcessor

torch.set_num_threads(1)
repo, out = sys.argv[1], sys.argv[2]
model = AutoModel.from_pretrained(repo, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
with torch.no_grad():
    logits = model(**processor(text="the cat sat on the mat", return_tensors="pt")).logits
np.save(out, logits.numpy())
print(type(model).__module__)
"""


def test_muomni_publish_uploads_intact_files_that_download_and_load(tiny, tmp_path):
    model, processor, directory = tiny
    command = shutil.which("muomni-publish")
    assert command, "the muomni-publish console script is not installed; reinstall with `pip install -e .`"
    with HubStub(token=TOKEN) as hub:
        result = subprocess.run(
            [command, directory, REPO, "--private", "--commit-message", "MuOmni tiny"],
            env=cli_env(hub, tmp_path / "publisher_home"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        assert "Published: " in result.stdout and "Validating" in result.stdout
        uploaded = hub.files(REPO)
        local = {name: open(os.path.join(directory, name), "rb").read() for name in os.listdir(directory)}
        assert set(uploaded) == set(local)
        assert {name: sha256(data) for name, data in uploaded.items()} == {name: sha256(d) for name, d in local.items()}
        assert hub.repos[REPO].private
        assert len(hub.commit_requests()) == 1
        assert ("PUT", "/__lfs__/" + sha256(local["model.safetensors"])) in hub.requests  # weights went through LFS

        script = tmp_path / "download.py"
        script.write_text(DOWNLOAD_SCRIPT)
        downloaded = subprocess.run(
            [sys.executable, str(script), REPO, str(tmp_path / "logits.npy")],
            env=cli_env(hub, tmp_path / "downloader_home"),  # an empty cache: everything comes from the stub
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert downloaded.returncode == 0, downloaded.stderr[-4000:]
    assert downloaded.stdout.strip().startswith("transformers_modules.alice.")
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), reference_logits(model, processor), atol=1e-5)


@pytest.fixture
def hub(monkeypatch):
    """The stub, with this process's huggingface_hub pointed at it (CI runs with HF_HUB_OFFLINE=1)."""
    with HubStub(token=TOKEN) as stub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", stub.endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
        yield stub


def publish(directory, capsys, *extra) -> tuple[int, str]:
    status = publish_main([str(directory), REPO, "--token", TOKEN, *extra])
    return status, capsys.readouterr().err


def test_publish_refuses_a_directory_with_missing_files(copy_of, hub, capsys):
    os.remove(copy_of / "tokenizer.json")
    os.remove(copy_of / "modeling_text.py")
    status, err = publish(copy_of, capsys)
    assert status == 1
    assert "is not ready to publish" in err and "missing files: tokenizer.json" in err
    assert "remote-code file modeling_text.py (named by auto_map or imported) is missing" in err
    assert hub.requests == []


def test_publish_refuses_a_broken_config(copy_of, hub, capsys):
    (copy_of / "config.json").write_text('{"model_type": "muomni", "thinker_config": ')
    status, err = publish(copy_of, capsys)
    assert status == 1 and "config.json does not load: JSONDecodeError" in err
    assert hub.requests == []


def test_publish_refuses_pickle_weights(copy_of, hub, capsys):
    torch.save({"w": torch.zeros(2)}, copy_of / "pytorch_model.bin")
    (copy_of / "extra").mkdir()
    torch.save({"w": torch.zeros(2)}, copy_of / "extra" / "optimizer.state")  # pickled, whatever the name
    status, err = publish(copy_of, capsys)
    assert status == 1
    pickles = f"extra{os.sep}optimizer.state, pytorch_model.bin"
    assert f"pickle files are not published (unpickling can run arbitrary code): {pickles}" in err
    assert hub.requests == []


def test_publish_refuses_a_truncated_safetensors_file(copy_of, hub, capsys):
    truncate(copy_of / "model.safetensors")
    status, err = publish(copy_of, capsys)
    assert status == 1 and "model.safetensors is truncated or corrupt" in err
    assert hub.requests == []


def test_publish_without_a_token_says_how_to_get_one(copy_of, hub, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    status = publish_main([str(copy_of), REPO])
    err = capsys.readouterr().err
    assert status == 1 and "No Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login`" in err
    assert hub.requests == []


def test_publish_reports_a_rejected_upload_with_the_status_and_the_server_text(tiny, hub, capsys):
    hub.reject_commits = (403, "You don't have the rights to push to alice/muomni-tiny")
    status, err = publish(tiny[2], capsys)
    assert status == 1
    assert "The Hub refused to accept the upload to alice/muomni-tiny: HTTP 403 Forbidden" in err
    assert "You don't have the rights to push to alice/muomni-tiny" in err
    assert hub.commit_requests() and hub.files(REPO) == {}  # the repository exists, the commit does not


def test_publish_to_a_revision_creates_the_branch_and_leaves_main_alone(tiny, hub, capsys):
    status, err = publish(tiny[2], capsys, "--revision", "v1")
    assert status == 0, err
    assert hub.files(REPO, "main") == {}
    assert set(hub.files(REPO, "v1")) == set(os.listdir(tiny[2]))
    assert ("POST", f"/api/models/{REPO}/branch/v1") in hub.requests


def test_publish_dry_run_validates_and_uploads_nothing(tiny, hub, capsys):
    assert publish_main([tiny[2], REPO, "--dry-run"]) == 0
    assert "the model loads and generates" in capsys.readouterr().out
    assert hub.requests == []


def test_publish_rejects_a_malformed_repo_id_and_a_missing_directory(tiny, hub, tmp_path, capsys):
    assert publish_main([tiny[2], "a/b/c", "--token", TOKEN]) == 1
    assert "repo_id must look like 'user/name' or 'name', got 'a/b/c'" in capsys.readouterr().err
    assert publish_main([str(tmp_path / "nowhere"), REPO, "--token", TOKEN]) == 1
    assert f"{tmp_path / 'nowhere'} is not a directory" in capsys.readouterr().err
    assert hub.requests == []


def test_publish_reports_an_unreachable_hub(tiny, monkeypatch, capsys):
    with HubStub(token=TOKEN) as stopped:
        pass  # its port is closed again
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", stopped.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    status, err = publish(tiny[2], capsys)
    assert status == 1
    assert f"Could not reach {stopped.endpoint} to create the repository {REPO}" in err
