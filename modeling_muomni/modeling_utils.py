"""Loading and saving guards shared by every MuOmni `PreTrainedModel`: safetensors weights only, strict
loading (missing or unexpected weights are an error naming them), and atomic saves.

Pickled weights (`pytorch_model.bin`, `*.pt`, …) can run arbitrary code when unpickled, and
transformers 5.x still loads a `pytorch_model.bin` when a directory has no safetensors file
(`use_safetensors=None`, its default). MuOmni never writes pickles, so its `from_pretrained`
forces `use_safetensors=True` and, for a local directory, checks the weights before building the
model: a directory with pickled weights and no safetensors, or a truncated safetensors file, is a
`ValueError` that says what was found and what to do instead of a deep deserialisation error.
"""

import json
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable

# File name endings of pickle-based weight / checkpoint formats.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


def is_pickle_file(path: str) -> bool:
    """True for a file that holds pickled data: by its name, or by its content (pickle protocol 2-5
    starts with 0x80 and the protocol number; `torch.save` writes a zip archive around `data.pkl`)."""
    if path.endswith(PICKLE_SUFFIXES):
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            return True
        if head == b"PK\x03\x04" and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(name.endswith(".pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return False


def check_safetensors_file(path: str) -> None:
    """Raise a ValueError unless `path` is a complete safetensors file: a readable JSON header and
    exactly as many data bytes as the header's tensors need (a truncated download fails here)."""
    size = os.path.getsize(path)
    name = os.path.basename(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{name} is truncated or not a safetensors file: {size} bytes, no header")
        (header_size,) = struct.unpack("<Q", prefix)
        if header_size > size - 8:
            raise ValueError(
                f"{name} is truncated or not a safetensors file: its header claims {header_size} bytes but the "
                f"file has {size} bytes; re-download or re-save it"
            )
        try:
            header = json.loads(handle.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{name} has an unreadable safetensors header ({error}); re-download or re-save it")
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_size + max(ends, default=0)
    if size != expected:
        raise ValueError(
            f"{name} is truncated or corrupt: its header describes {expected} bytes, the file has {size}; "
            "re-download or re-save it"
        )


def _add_variant(name: str, variant: str | None) -> str:
    """transformers' variant naming: model.safetensors -> model.fp16.safetensors."""
    if not variant:
        return name
    parts = name.split(".")
    return ".".join(parts[:-1] + [variant] + parts[-1:])


def local_weight_files(directory: str, variant: str | None = None) -> tuple[list[str], list[str]]:
    """(safetensors weight files, pickle files) of a local checkpoint directory (not recursive).
    The safetensors files are the single `model.safetensors` or the shards its index lists."""
    names = sorted(os.listdir(directory))
    pickles = [name for name in names if os.path.isfile(os.path.join(directory, name))]
    pickles = [name for name in pickles if is_pickle_file(os.path.join(directory, name))]
    single, index = _add_variant(SAFE_WEIGHTS_NAME, variant), _add_variant(SAFE_WEIGHTS_INDEX_NAME, variant)
    if single in names:
        return [single], pickles
    if index in names:
        with open(os.path.join(directory, index), encoding="utf-8") as handle:
            try:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
            except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as error:
                raise ValueError(f"{index} in {directory} is not a valid safetensors index: {error!r}")
        return shards, pickles
    return [], pickles


def check_local_weights(directory: str, variant: str | None = None) -> None:
    """The checks `from_pretrained` runs on a local checkpoint directory before loading it."""
    safetensors_files, pickles = local_weight_files(directory, variant)
    if not safetensors_files and pickles:
        raise ValueError(
            f"{directory} holds pickled weights ({', '.join(pickles)}) and no "
            f"{_add_variant(SAFE_WEIGHTS_NAME, variant)}: "
            "MuOmni only loads safetensors, because unpickling a file can run arbitrary code. Convert the weights "
            "in a trusted environment (load the state dict, then `model.save_pretrained(...)`) and delete the pickles"
        )
    for name in safetensors_files:
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise ValueError(f"{directory} is missing the weight shard {name} listed in its safetensors index")
        check_safetensors_file(path)


WEIGHT_FILE_PREFIXES = ("model.", "model-")


def save_atomically(save: Callable[[str], object], save_directory, replaces_weights: bool = False):
    """Run `save(directory)` into a fresh sibling folder, then move its files over `save_directory`.

    A failure while saving (a full disk, an interrupted write, a bad argument found half way) leaves a
    checkpoint already in `save_directory` untouched; only the final renames touch it. Files of the folder
    that the save does not write (a processor's, a README) are kept; with `replaces_weights` (a model's save),
    weight files of an earlier save that this one does not write again (old shards) are removed, as
    `save_pretrained` itself does. Returns what `save` returned, with staging paths mapped to the target.
    """
    target = os.path.abspath(os.fspath(save_directory))
    if os.path.isfile(target):
        raise ValueError(f"save_directory {target} is a file; expected a directory (existing or new)")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.saving-", dir=parent)
    try:
        result = save(staging)
        os.makedirs(target, exist_ok=True)
        written = set(os.listdir(staging))
        # weights first, the config last: a reader never sees a new config over old weights
        for name in sorted(written, key=lambda name: name.endswith(".json")):
            os.replace(os.path.join(staging, name), os.path.join(target, name))
        for name in os.listdir(target) if replaces_weights else ():
            stale_weights = name.startswith(WEIGHT_FILE_PREFIXES) and name.endswith((".safetensors", ".index.json"))
            if stale_weights and name not in written:
                os.remove(os.path.join(target, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if isinstance(result, (list, tuple)):
        return type(result)(p.replace(staging, target) if isinstance(p, str) else p for p in result)
    return result


class MuOmniSafetensorsLoadingMixin:
    """Put first in the bases of a MuOmni `PreTrainedModel`: `from_pretrained` loads safetensors only.

    `use_safetensors=False` is refused; `None` (the transformers default) means True. Local
    directories are checked with `check_local_weights` before the model is built.
    """

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, atomically (`save_atomically`): a failed save keeps the previous
        checkpoint in `save_directory` loadable and byte-identical."""
        if kwargs.get("push_to_hub") and "repo_id" not in kwargs:
            kwargs["repo_id"] = os.path.basename(os.path.abspath(os.fspath(save_directory)))  # not the staging name
        parent_save = super().save_pretrained
        return save_atomically(
            lambda staging: parent_save(staging, *args, **kwargs), save_directory, replaces_weights=True
        )

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path, *model_args, use_safetensors=None, strict: bool = True, **kwargs
    ):
        r"""`PreTrainedModel.from_pretrained`, safetensors only, and strict: a checkpoint that lacks weights of
        this model, or holds weights it has no place for (beyond the class's documented ignore patterns), is a
        `ValueError` naming the keys. `strict=False` loads anyway (missing weights freshly initialised)."""
        if use_safetensors is False:
            raise ValueError(
                f"{cls.__name__} loads safetensors weights only (pickled weights can run arbitrary code); "
                "got use_safetensors=False"
            )
        if pretrained_model_name_or_path is not None and kwargs.get("gguf_file") is None:
            directory = str(pretrained_model_name_or_path)
            if kwargs.get("subfolder"):
                directory = os.path.join(directory, kwargs["subfolder"])
            if os.path.isdir(directory):
                check_local_weights(directory, kwargs.get("variant"))
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, use_safetensors=True, output_loading_info=True, **kwargs
        )
        if strict:
            problems = []
            checks = [("missing_keys", "missing from the checkpoint")]
            # a checkpoint saved by another class (a bare encoder out of its CTC model, say) may hold parts this
            # class has no place for; one saved by this very class may not
            if cls.__name__ in (getattr(model.config, "architectures", None) or [cls.__name__]):
                checks.append(("unexpected_keys", "not in the model"))
            for key, what in checks:
                if names := sorted(info[key]):
                    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
                    problems.append(f"{what}: {shown}")
            if problems:
                raise ValueError(
                    f"The checkpoint {pretrained_model_name_or_path} does not match {cls.__name__} built from its "
                    f"config: {'; '.join(problems)}. Was the config edited, or are weights lost? Pass strict=False "
                    "to load anyway (missing weights are then freshly initialised)"
                )
        return (model, info) if want_info else model
