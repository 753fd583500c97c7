"""The flat remote code: rendered from the package sources, complete for transformers' module loader,
and loading a checkpoint saved with it (`save_for_hub`) with `trust_remote_code=True` in a process
where `import muomni` is impossible, with the same outputs as the package."""

import ast
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from omni_checkpoint import PROMPT, SR, build_tiny_omni, picture, sound
from transformers import pipeline
from transformers.dynamic_module_utils import get_imports, get_relative_import_files

from muomni.export_remote_code import (
    ENTRY_MODULE,
    flat_module_names,
    registered_classes,
    remote_code_auto_map,
    render_remote_code,
)
from muomni.hub import save_for_hub

MAX_NEW_TOKENS = 4
GREEDY = {"max_new_tokens": MAX_NEW_TOKENS, "do_sample": False}
TALKER = {"talker_max_frames": 5, "talker_do_sample": False}
EXPECTED_AUTO_CLASSES = {
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForImageTextToText",
    "AutoModelForMultimodalLM",
    "AutoModelForTextToWaveform",
    "AutoModelForCTC",
    "AutoProcessor",
    "AutoTokenizer",
    "AutoFeatureExtractor",
    "AutoImageProcessor",
}


# ---------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """(directory, {file name: text}) of the remote code rendered from the package sources, written out."""
    files = render_remote_code()
    directory = tmp_path_factory.mktemp("remote_code")
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory, files


def test_generated_files_are_flat_and_never_import_muomni(rendered):
    files = rendered[1]
    assert files == render_remote_code()  # deterministic: every save writes the same bundle
    for name, text in files.items():
        assert text.startswith("# GENERATED FILE - DO NOT EDIT."), name
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(alias.name.split(".")[0] == "muomni" for alias in node.names), name
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert (node.module or "").split(".")[0] != "muomni", f"{name}: from {node.module} import"
                else:
                    # flat: one level, a sibling file that exists
                    assert node.level == 1 and f"{node.module}.py" in files, f"{name}: relative import {node.module}"
    # the package's own imports were rewritten, e.g. across folders
    assert "from .configuration_muomni import MuOmniAudioEncoderConfig" in files["processing_muomni.py"]
    assert "from .modeling_audio_encoder import audio_token_count" in files["processing_muomni.py"]


def test_transformers_collects_every_generated_file_from_the_entry_module(rendered):
    """transformers copies the entry module and, recursively, its `from .x import` files; the bundle
    must be exactly that closure, and its third-party imports must all be installed packages."""
    tmp_path = rendered[0]
    entry = str(tmp_path / f"{ENTRY_MODULE}.py")
    collected = {os.path.basename(path) for path in get_relative_import_files(entry)} | {f"{ENTRY_MODULE}.py"}
    assert collected == set(os.listdir(tmp_path))
    imported = set()
    for name in os.listdir(tmp_path):
        imported |= set(get_imports(str(tmp_path / name)))
    third_party = imported - set(sys.stdlib_module_names)
    # what the model card tells users to install (packaging comes with transformers)
    assert third_party == {"numpy", "PIL", "soundfile", "tokenizers", "torch", "transformers", "packaging"}


def test_flat_module_names_rename_clashing_basenames_deterministically():
    modules = ["muomni.processing.utils", "muomni.configuration.utils", "muomni.modeling_text"]
    assert flat_module_names(modules) == {
        "muomni.configuration.utils": "configuration_utils",
        "muomni.processing.utils": "processing_utils",
        "muomni.modeling_text": "modeling_text",
    }
    assert flat_module_names(list(reversed(modules))) == flat_module_names(modules)
    with pytest.raises(ValueError, match="still clash after renaming: \\['x_y'\\]"):
        flat_module_names(["muomni.x.y", "muomni.z.y", "muomni.x_y"])


def test_auto_map_covers_every_auto_class_registered_for_muomni():
    assert set(registered_classes()) == EXPECTED_AUTO_CLASSES
    auto_map = remote_code_auto_map()
    assert set(auto_map) == EXPECTED_AUTO_CLASSES
    assert auto_map["AutoModelForTextToWaveform"] == f"{ENTRY_MODULE}.MuOmniForTextToSpeech"
    assert auto_map["AutoModelForCTC"] == f"{ENTRY_MODULE}.MuOmniForSpeechRecognition"
    assert auto_map["AutoTokenizer"] == [f"{ENTRY_MODULE}.MuOmniTokenizer", None]


# ---------------------------------------------------------------- loading without the package

REMOTE_SCRIPT = r"""
import json, sys
sys.modules["muomni"] = None  # `import muomni` must fail in this process
try:
    import muomni
except ImportError:
    pass
else:
    raise SystemExit("muomni is importable in the remote-code process")

import numpy as np, PIL.Image, torch
from transformers import AutoModel, AutoProcessor, pipeline

torch.set_num_threads(1)
directory, work = sys.argv[1], sys.argv[2]
request = json.load(open(f"{work}/request.json"))
image = PIL.Image.fromarray(np.load(f"{work}/image.npy"))
audio = np.load(f"{work}/audio.npy")

model = AutoModel.from_pretrained(directory, trust_remote_code=True)
processor = AutoProcessor.from_pretrained(directory, trust_remote_code=True)
inputs = processor(text=request["prompt"], images=[image], audio=[audio], sampling_rate=16000, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits
    generated = model.generate(**inputs, **request["greedy"])

chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "what color"}]}]
vqa = pipeline("image-text-to-text", model=directory, trust_remote_code=True)
answer = vqa(text=chat, generate_kwargs=request["greedy"])[0]["generated_text"][-1]["content"]
tts = pipeline("text-to-speech", model=directory, trust_remote_code=True)
speech = tts(request["speech"], forward_params=request["talker"])
asr = pipeline("automatic-speech-recognition", model=directory, trust_remote_code=True)
transcript = asr(audio)["text"]

np.savez(
    f"{work}/remote.npz",
    input_ids=inputs["input_ids"].numpy(), pixel_values=inputs["pixel_values"].numpy(),
    input_features=inputs["input_features"].numpy(), logits=logits.numpy(), generated=generated.numpy(),
    speech=np.asarray(speech["audio"]).reshape(-1),
)
classes = [type(model), type(processor), type(processor.tokenizer), type(vqa.model), type(tts.model), type(asr.model)]
json.dump(
    {
        "answer": answer, "transcript": transcript, "sampling_rate": speech["sampling_rate"],
        "modules": [cls.__module__ for cls in classes],
        "muomni_imported": sorted(
            name for name, module in sys.modules.items() if name.split(".")[0] == "muomni" and module is not None
        ),
    },
    open(f"{work}/remote.json", "w"),
)
"""


def subprocess_env(hf_home) -> dict:
    """The environment of a child process that cannot see the repository: no PYTHONPATH, its own HF_HOME
    (transformers' module cache) and offline."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "TRANSFORMERS_"))}
    env.pop("PYTHONPATH", None)
    env.update(
        HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false"
    )
    return env


def test_exported_checkpoint_loads_without_muomni_and_matches_the_package(tmp_path):
    model, processor = build_tiny_omni()
    directory = save_for_hub(model, processor, str(tmp_path / "muomni-tiny"), repo_id="alice/muomni-tiny")
    work = tmp_path / "work"
    work.mkdir()
    image, audio = picture(), sound()
    np.save(work / "image.npy", np.asarray(image))
    np.save(work / "audio.npy", audio)
    speech_text = "the cat sat on the mat"
    request = {"prompt": PROMPT, "greedy": GREEDY, "talker": TALKER, "speech": speech_text}
    (work / "request.json").write_text(json.dumps(request))

    # the package's answers (its Auto classes win over the bundled code when muomni is imported)
    inputs = processor(text=PROMPT, images=[image], audio=[audio], sampling_rate=SR, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
        generated = model.generate(**inputs, **GREEDY)
    chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "what color"}]}]
    vqa = pipeline("image-text-to-text", model=directory)
    answer = vqa(text=chat, generate_kwargs=GREEDY)[0]["generated_text"][-1]["content"]
    tts = pipeline("text-to-speech", model=directory)
    speech = tts(speech_text, forward_params=TALKER)
    transcript = pipeline("automatic-speech-recognition", model=directory)(audio)["text"]
    assert type(vqa.model).__module__ == "muomni.modeling_muomni"

    script = tmp_path / "remote_load.py"
    script.write_text(REMOTE_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), directory, str(work)],
        cwd=tmp_path,
        env=subprocess_env(tmp_path / "hf_home"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    remote = np.load(work / "remote.npz")
    report = json.loads((work / "remote.json").read_text())

    assert report["muomni_imported"] == []
    assert all(module.startswith("transformers_modules.") for module in report["modules"]), report["modules"]
    # one copy of the bundle: every class comes from the same cached folder
    assert len({module.rsplit(".", 1)[0] for module in report["modules"]}) == 1, report["modules"]
    for name in ("input_ids", "pixel_values", "input_features"):
        np.testing.assert_array_equal(remote[name], inputs[name].numpy(), err_msg=name)
    np.testing.assert_allclose(remote["logits"], logits.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(remote["generated"], generated.numpy())
    assert generated.shape[1] == inputs["input_ids"].shape[1] + MAX_NEW_TOKENS
    assert report["answer"] == answer
    assert report["sampling_rate"] == speech["sampling_rate"] == SR
    expected_speech = np.asarray(speech["audio"]).reshape(-1)
    assert expected_speech.size > 0
    np.testing.assert_allclose(remote["speech"], expected_speech, rtol=1e-4, atol=1e-5)
    assert report["transcript"] == transcript
