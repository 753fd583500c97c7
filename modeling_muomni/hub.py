"""Publishing MuOmni checkpoints: a Hub-ready directory, its validation, and the upload.

    save_for_hub(model, processor, directory, metrics=..., datasets=...)
        model + processor `save_pretrained` (safetensors, sharded past `max_shard_size`), the flat
        remote code rendered from the installed package sources (`muomni.export_remote_code`) with
        `auto_map` entries in every config, and a `README.md` model card (`muomni.model_card`).
    validate_for_hub(directory)
        required files, loadable config, complete safetensors, no pickles, a 1-token generation.
    publish_to_hub(directory, repo_id, ...)   (the `muomni-publish` command)
        `validate_for_hub`, then `create_repo(exist_ok=True)` + `upload_folder`. Nothing is uploaded
        when validation fails or no token is available.

Command line:

    muomni-publish DIR REPO_ID [--private] [--revision REV] [--token TOKEN] [--commit-message MSG] [--dry-run]
    python -m muomni.hub publish ...            (the same)
"""

import argparse
import ast
import importlib
import json
import os
import shutil
import sys

from muomni.configuration import MuOmniConfig

from .export_remote_code import (
    PROCESSING_AUTO_CLASSES,
    registered_classes,
    remote_code_auto_map,
    render_remote_code,
)
from .modeling_utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    check_local_weights,
    is_pickle_file,
)

CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "README.md",
)
# configs whose `auto_map` names the processing classes; nested dicts inside processor_config.json too
PROCESSING_CONFIG_FILES = ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json")
NESTED_PROCESSING_CONFIGS = ("image_processor", "feature_extractor")
VALIDATION_PROMPT = "Hello"


class HubValidationError(ValueError):
    """A directory is not ready to publish; `problems` lists every reason."""

    def __init__(self, directory: str, problems: list[str]):
        self.directory, self.problems = directory, problems
        super().__init__(f"{directory} is not ready to publish:\n  - " + "\n  - ".join(problems))


class HubPublishError(RuntimeError):
    """The upload failed on the way: the Hub (or the server at HF_ENDPOINT) answered with an HTTP error,
    could not be reached, or offline mode is on."""


# --------------------------------------------------------------------------------------------------
# export


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _add_auto_map(path: str, auto_map: dict, nested: tuple[str, ...] = ()) -> None:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    data["auto_map"] = {**data.get("auto_map", {}), **auto_map}
    for key in nested:
        if isinstance(data.get(key), dict):
            data[key]["auto_map"] = {**data[key].get("auto_map", {}), **auto_map}
    _write_json(path, data)


def save_for_hub(
    model,
    processor,
    save_directory: str,
    metrics: dict | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    eval_dataset: str | None = None,
    language: str | list[str] | None = "en",
    tags: list[str] | None = None,
    base_model: str | list[str] | None = None,
    max_shard_size: int | str = "2GB",
    overwrite: bool = False,
) -> str:
    """Write a directory that `muomni-publish` uploads as is and that loads with or without `muomni`.

    Args:
        model (`MuOmniForConditionalGeneration`): the full model (config `model_type="muomni"`).
        processor (`MuOmniProcessor`): its processor.
        save_directory (`str`): created if needed; must be empty unless `overwrite=True`, which
            deletes everything in it first (stale shards or pickles would otherwise be published).
        metrics (`dict`, *optional*): `{name: value}` or `{stage: {name: value}}` of the training run,
            written to the card's `model-index` and as a table.
        datasets (`list[str]`, *optional*): Hub ids of the training datasets.
        license (`str`): the card's license id.
        model_name / repo_id / eval_dataset / language / tags / base_model: model card fields
            (`repo_id` is what the card's code examples load).
        max_shard_size: safetensors shard size (`save_pretrained`'s argument).

    Returns the directory. Files: `model.safetensors` (or shards + index), `config.json`,
    `generation_config.json`, `processor_config.json`, `tokenizer.json`, `tokenizer_config.json`,
    `chat_template.jinja`, the flat remote-code `.py` files and `README.md`.
    """
    from transformers import PreTrainedModel, ProcessorMixin

    from .model_card import build_model_card

    if not isinstance(model, PreTrainedModel) or getattr(model.config, "model_type", None) != "muomni":
        found = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise TypeError(
            "save_for_hub publishes a full MuOmni model (MuOmniForConditionalGeneration, config model_type "
            f"'muomni'), got {type(model).__name__} ({found}); merge peft adapters first (merge_and_unload)"
        )
    if not isinstance(processor, ProcessorMixin) or type(processor).__name__ != "MuOmniProcessor":
        raise TypeError(f"save_for_hub needs the model's MuOmniProcessor, got {type(processor).__name__}")
    save_directory = str(save_directory)
    if os.path.isdir(save_directory) and os.listdir(save_directory):
        if not overwrite:
            raise ValueError(
                f"{save_directory} is not empty ({len(os.listdir(save_directory))} entries); a Hub directory must "
                "contain only this export (pass overwrite=True to delete its contents first)"
            )
        shutil.rmtree(save_directory)
    remote_code = render_remote_code()  # from the sources of this muomni; fails before anything is written
    os.makedirs(save_directory, exist_ok=True)

    model.save_pretrained(save_directory, max_shard_size=max_shard_size)
    processor.save_pretrained(save_directory)
    for name, text in remote_code.items():
        with open(os.path.join(save_directory, name), "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)

    auto_map = remote_code_auto_map()
    processing_map = {name: auto_map[name] for name in PROCESSING_AUTO_CLASSES if name in auto_map}
    _add_auto_map(os.path.join(save_directory, "config.json"), auto_map)
    for name in PROCESSING_CONFIG_FILES:
        path = os.path.join(save_directory, name)
        if os.path.isfile(path):
            _add_auto_map(path, processing_map, nested=NESTED_PROCESSING_CONFIGS)

    card = build_model_card(
        model.config,
        metrics,
        datasets,
        license,
        model=model,
        model_name=model_name or os.path.basename(os.path.abspath(save_directory)),
        repo_id=repo_id,
        eval_dataset=eval_dataset,
        language=language,
        tags=tags,
        base_model=base_model,
    )
    card.save(os.path.join(save_directory, "README.md"))
    return save_directory


# --------------------------------------------------------------------------------------------------
# validation


def _parse(path: str, problems: list[str]) -> ast.Module | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return ast.parse(handle.read())
    except (SyntaxError, UnicodeDecodeError) as error:
        problems.append(f"remote-code file {os.path.basename(path)} is not valid Python: {error}")
        return None


def _check_remote_code(directory: str, config: dict, problems: list[str]) -> None:
    """Every `auto_map` target (and what it imports relatively) is a file that defines the class."""
    auto_map = config.get("auto_map")
    missing_classes = sorted(set(registered_classes()) - set(auto_map or {}))
    if missing_classes:
        problems.append(f"config.json auto_map lacks {missing_classes} (loading without muomni needs them)")
    for name in ("processor_config.json", "tokenizer_config.json"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                if "auto_map" not in json.load(handle):
                    problems.append(f"{name} has no auto_map (loading without muomni needs it)")
    references = []
    for value in (auto_map or {}).values():
        references.extend(v for v in (value if isinstance(value, list) else [value]) if v)
    pending = {reference.rpartition(".")[0] for reference in references}
    trees, seen = {}, set()
    while pending:
        module = pending.pop()
        seen.add(module)
        path = os.path.join(directory, module + ".py")
        if not os.path.isfile(path):
            problems.append(f"remote-code file {module}.py (named by auto_map or imported) is missing")
            continue
        trees[module] = tree = _parse(path, problems)
        if tree is not None:
            imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
            pending |= imported - seen
    for reference in references:
        module, _, class_name = reference.rpartition(".")
        tree = trees.get(module)
        if tree is not None:
            names = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
            for node in tree.body:
                if isinstance(node, ast.ImportFrom):
                    names.update(alias.asname or alias.name for alias in node.names)
            if class_name not in names:
                problems.append(f"auto_map names {reference}, but {module}.py does not define {class_name}")


def _try_generation(directory: str) -> None:
    import torch
    from transformers import AutoModel, AutoProcessor

    # the package's own classes (importing muomni.hub imported muomni, which registered them)
    model = AutoModel.from_pretrained(directory).eval()
    processor = AutoProcessor.from_pretrained(directory)
    inputs = processor(text=VALIDATION_PROMPT, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=1, min_new_tokens=1, do_sample=False)
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    if sequences.shape[1] != inputs["input_ids"].shape[1] + 1:
        raise ValueError(
            f"a 1-token generation returned {sequences.shape[1] - inputs['input_ids'].shape[1]} new tokens"
        )


def validate_for_hub(directory: str, run_model: bool = True) -> list[str]:
    """Check that `directory` is a complete, safe, loadable MuOmni checkpoint; return its files.

    Raises `HubValidationError` (a ValueError) listing every problem: missing files, a config that
    does not load (including a muomni version this installation refuses), missing remote code or
    `auto_map` entries, pickle files anywhere, unreadable or truncated safetensors, a model card whose
    metadata does not parse, and (with `run_model`) a model that does not load and generate one token.
    """
    directory = str(directory)
    if not os.path.isdir(directory):
        raise HubValidationError(directory, [f"{directory} is not a directory"])
    files = []
    for root, dirnames, names in os.walk(directory):
        dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))  # .git, .cache: not uploaded
        files.extend(os.path.relpath(os.path.join(root, name), directory) for name in names)
    files.sort()
    problems = []
    missing = [name for name in CONFIG_FILES if name not in files]
    if SAFE_WEIGHTS_NAME not in files and SAFE_WEIGHTS_INDEX_NAME not in files:
        missing.append(f"{SAFE_WEIGHTS_NAME} (or {SAFE_WEIGHTS_INDEX_NAME} and its shards)")
    if missing:
        problems.append(f"missing files: {', '.join(missing)}")
    pickles = [name for name in files if is_pickle_file(os.path.join(directory, name))]
    if pickles:
        problems.append(
            f"pickle files are not published (unpickling can run arbitrary code): {', '.join(pickles)}; "
            "save weights as safetensors and delete these"
        )
    try:
        check_local_weights(directory)
    except ValueError as error:
        problems.append(str(error))

    config = None
    if "config.json" in files:
        try:
            with open(os.path.join(directory, "config.json"), encoding="utf-8") as handle:
                config = json.load(handle)
            if not isinstance(config, dict) or config.get("model_type") != "muomni":
                found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
                raise ValueError(f"model_type must be 'muomni', got {found!r}")
            MuOmniConfig.from_pretrained(directory)
        except Exception as error:  # any failure here means the checkpoint does not load
            problems.append(f"config.json does not load: {type(error).__name__}: {error}")
            config = None
    if config is not None:
        _check_remote_code(directory, config, problems)
    if "README.md" in files:
        try:
            from huggingface_hub import ModelCard

            metadata = ModelCard.load(os.path.join(directory, "README.md")).data.to_dict()
            if metadata.get("library_name") != "transformers":
                found = metadata.get("library_name")
                problems.append(f"README.md metadata has library_name {found!r}, expected 'transformers'")
        except Exception as error:
            problems.append(f"README.md metadata does not parse: {type(error).__name__}: {error}")

    if not problems and run_model:
        try:
            _try_generation(directory)
        except Exception as error:
            problems.append(f"the model does not load and generate one token: {type(error).__name__}: {error}")
    if problems:
        raise HubValidationError(directory, problems)
    return files


# --------------------------------------------------------------------------------------------------
# upload


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of the HTTP client huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    errors = []
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _http_error_message(error, repo_id: str, step: str) -> str:
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", "?")
    reason = getattr(response, "reason_phrase", "") or ""
    server = getattr(error, "server_message", None) or (getattr(response, "text", "") or "").strip()
    return f"The Hub refused to {step} {repo_id}: HTTP {status} {reason}".rstrip() + (f": {server}" if server else "")


def publish_to_hub(
    directory: str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    log=print,
):
    """Validate `directory` (`validate_for_hub`), then create `repo_id` if needed and upload the
    directory in one `upload_folder` call. Returns the `CommitInfo` (None for `dry_run`).

    The token is `token`, else `HF_TOKEN`, else the stored login; without one this is a ValueError
    before anything is sent. `endpoint` defaults to `HF_ENDPOINT` (the Hub). An HTTP error from the
    server is a `HubPublishError` with the status and the server's message.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if not isinstance(repo_id, str) or repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise ValueError(f"repo_id must look like 'user/name' or 'name', got {repo_id!r}")
    if not dry_run:
        token = token or get_token()
        if not token:
            raise ValueError(
                "No Hugging Face token: pass --token, set HF_TOKEN, or log in with `hf auth login` "
                "(the token needs write access to the repository's namespace)"
            )
    log(f"Validating {directory} ...")
    files = validate_for_hub(directory)
    size = sum(os.path.getsize(os.path.join(directory, name)) for name in files)
    log(f"  ok: {len(files)} files, {size / 1e6:.1f} MB; the model loads and generates")
    if dry_run:
        return None
    api = HfApi(endpoint=endpoint, token=token)
    step = "create the repository"
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        repo_id = url.repo_id or repo_id
        if revision and revision != "main":
            step = f"create the branch {revision!r} in"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = "accept the upload to"
        log(f"Uploading {len(files)} files to {api.endpoint}/{repo_id}" + (f" ({revision})" if revision else ""))
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=directory,
            revision=revision,
            commit_message=commit_message or f"Upload MuOmni checkpoint ({len(files)} files)",
        )
    except HfHubHTTPError as error:
        raise HubPublishError(_http_error_message(error, repo_id, step)) from error
    except OfflineModeIsEnabled as error:
        raise HubPublishError(f"Cannot upload: offline mode is enabled (unset HF_HUB_OFFLINE): {error}") from error
    except _transport_errors() as error:
        raise HubPublishError(f"Could not reach {api.endpoint} to {step} {repo_id}: {error}") from error
    log(f"Published: {commit.commit_url}")
    return commit


def _publish_parser(prog: str = "muomni-publish") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Validate a MuOmni checkpoint directory (written by muomni.hub.save_for_hub) and upload "
        "it to the Hugging Face Hub (or the server at HF_ENDPOINT). Nothing is uploaded if validation fails.",
    )
    parser.add_argument("directory", help="the checkpoint directory")
    parser.add_argument("repo_id", help="target repository, e.g. user/muomni-tiny")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", default=None, help="branch to upload to (created if needed; default main)")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    parser.add_argument("--commit-message", default=None, help="commit message of the upload")
    parser.add_argument("--dry-run", action="store_true", help="validate only, upload nothing")
    return parser


def publish_main(argv: list[str] | None = None) -> int:
    """`muomni-publish`: exit status 0 on success, 1 on a validation, token or upload error."""
    args = _publish_parser().parse_args(argv)
    try:
        publish_to_hub(
            args.directory,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            token=args.token,
            commit_message=args.commit_message,
            dry_run=args.dry_run,
        )
    except (ValueError, HubPublishError) as error:
        print(f"muomni-publish: error: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m muomni.hub publish ...`: the same as `muomni-publish`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "publish":
        print("usage: python -m muomni.hub publish DIR REPO_ID [options]", file=sys.stderr)
        return 2
    return publish_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
