"""`muomni-train`: run one training stage, or all five, from the command line.

    muomni-train {a,b,c,d,e,all} [--preset tiny|micro | --config CONFIG] --dataset DATA --output-dir DIR
                 [--previous NAME=PATH | STAGE_DIR ...] [--seed N] [--set [STAGE:]KEY=VALUE ...] [--resume]
                 [--columns OURS=THEIRS,...] [--splits OURS=THEIRS,...] [--data-dir D] [--data-files SPLIT=FILE,...]
                 [--dataset-name NAME] [--validation-size X] [--resample] [--streaming] [--num-proc N] [--traceback]

DATA is `builtin` or `builtin:<scale>` (generated, `test` / `tiny` / `small`, saved under `DIR/data`), a
folder written by `build_builtin_dataset(output_dir=...)`, or, for a single stage, any source that
`muomni.training.sources.load_stage_dataset` reads (a `save_to_disk` folder, a builder name such as
`json` / `audiofolder` with `--data-dir` / `--data-files`, a Hub id), its columns renamed to the built-in
names with `--columns` (e.g. `--columns text=sentence`).

A single stage saves into DIR and writes `DIR/stage_result.json` (its outputs and metrics). `all` runs
A..E into `DIR/stage_a` ... `DIR/stage_e`, each fed the outputs of the earlier ones, writes
`DIR/metrics.json` ({stage: metrics}) and the final `MuOmniForConditionalGeneration` + `MuOmniProcessor`
checkpoint at `DIR/muomni` (stage E's model, saved for the Hub with remote code and a model card).

`--set KEY=VALUE` overrides a `TrainingArguments` field (`max_steps`, `learning_rate`, `bf16`,
`gradient_checkpointing`, `report_to`, `push_to_hub`, `fsdp`, `deepspeed`, ...) or a stage option
(`block_size` of stage A, ...). Values are JSON (`5`, `1e-3`, `true`, `"text"`, `[1, 2]`, `null`) or a
plain string. `STAGE:` limits a setting to one stage of `all` (`--set d:talker.max_steps=200`; dots
nest, as stage D's sub-stages take dicts). `--resume` skips the stages of `all` that already finished
(their `stage_result.json`) and resumes a stage from its last `checkpoint-*` folder, if it saved any
(`--set save_strategy=steps --set save_steps=200`).

Every check on the arguments runs before anything is built or trained, and fails like argparse:
a message on stderr and exit code 2 (so does a ValueError / TypeError a recipe raises; `--traceback`
shows it in full). Distributed runs need nothing extra: under `torchrun` or `accelerate launch`,
`Trainer` runs data parallel, rank 0 alone builds the data set and writes the shared files, and the
other ranks wait for it (see `distributed_state` for CPU-only machines).
"""

import argparse
import dataclasses
import importlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence

from huggingface_hub.errors import HfHubHTTPError

STAGES = ("a", "b", "c", "d", "e")
STAGE_TITLES = {
    "a": "thinker language model on text",
    "b": "audio encoder + CTC head (speech recognition)",
    "c": "vision encoder, contrastive image-caption training",
    "d": "codec, talker and vocoder (speech output)",
    "e": "supervised fine-tuning of the assembled model",
}
# outputs of earlier stages that each stage needs (`--previous NAME=PATH` for a single stage)
REQUIRED_PREVIOUS = {
    "a": (),
    "b": (),
    "c": ("tokenizer",),
    "d": ("thinker_lm", "tokenizer", "audio_encoder"),
    "e": ("thinker_lm", "tokenizer", "audio_encoder", "vision_encoder"),  # + talker and codec for speech output
}
# the built-in dataset each stage reads, and the columns every split of it must have
STAGE_DATA = {
    "a": {"text": ("text",)},
    "b": {"speech": ("audio", "text")},
    "c": {"images": ("image", "caption")},
    "d": {"speech": ("audio", "text", "voice")},
    "e": {"sft": ("task", "messages", "image", "audio", "target")},
}
REQUIRED_SPLITS = ("train", "validation")
# stage options (not TrainingArguments fields) each recipe module declares, by attribute name
STAGE_OPTION_ATTRIBUTES = {
    "a": ("STAGE_A_OPTIONS",),
    "b": ("STAGE_B_OPTIONS",),
    "c": ("STAGE_C_OPTIONS",),
    "d": ("DEFAULTS", "DATA_FIELDS"),
    "e": ("STAGE_E_OPTIONS",),
}
BUILTIN = "builtin"
DATA_FOLDER = "data"
FINAL_MODEL = "muomni"
RESULT_FILE = "stage_result.json"
BUILTIN_MARKER = "builtin_dataset.json"
HF_DATA_FLAGS = ("columns", "splits", "data_dir", "data_files", "dataset_name", "validation_size", "resample", "streaming")


class UsageError(ValueError):
    """A command-line mistake found before any work: reported like argparse (exit code 2)."""


# --------------------------------------------------------------------------------------------------
# parsing


def build_parser(prog: str = "muomni-train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train MuOmni, one stage (a-e) or all of them, with transformers' Trainer.",
        epilog="Examples:\n"
        "  muomni-train all --preset tiny --dataset builtin --output-dir runs/tiny\n"
        "  muomni-train a --dataset builtin:test --output-dir runs/a --set max_steps=20\n"
        "  muomni-train b --dataset json --data-files train=tr.jsonl,validation=va.jsonl "
        "--columns audio=path,text=sentence --output-dir runs/b\n"
        "  torchrun --nproc_per_node 2 -m muomni.training.cli a --dataset builtin --output-dir runs/a",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("stage", choices=(*STAGES, "all"), help="the stage to train, or all of them in order")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--preset", help="named config: tiny (default) or micro")
    model.add_argument("--config", help="a MuOmniConfig: config.json file or a folder holding one")
    parser.add_argument(
        "--dataset",
        required=True,
        help="builtin[:scale] (generated; scale test, tiny or small), a folder saved by build_builtin_dataset, "
        "or (single stage) a source for load_stage_dataset",
    )
    parser.add_argument("--output-dir", required=True, help="where the stage (or every stage of all) saves")
    parser.add_argument(
        "--previous",
        action="append",
        default=[],
        metavar="NAME=PATH|STAGE_DIR",
        help="an earlier stage's output (thinker_lm, tokenizer, audio_encoder, vision_encoder, codec, talker, "
        "vocoder), or a folder written by muomni-train (all outputs listed in its stage_result.json)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds model init, data order and the built-in data")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[STAGE:]KEY=VALUE",
        dest="settings",
        help="TrainingArguments field or stage option, e.g. max_steps=100, bf16=true, d:talker.max_steps=50",
    )
    parser.add_argument("--resume", action="store_true", help="skip finished stages, resume from checkpoints")
    parser.add_argument("--num-proc", type=int, default=1, help="processes that generate the built-in data")
    parser.add_argument("--traceback", action="store_true", help="show the traceback of an error a recipe raises")
    real = parser.add_argument_group("real data (single stage, through load_stage_dataset)")
    real.add_argument("--columns", help="OURS=THEIRS,... rename the source's columns to the built-in names")
    real.add_argument("--splits", help="OURS=THEIRS,... pick and rename splits, e.g. validation=dev")
    real.add_argument("--data-dir", help="data_dir of load_dataset")
    real.add_argument("--data-files", help="SPLIT=FILE,... data_files of load_dataset")
    real.add_argument("--dataset-name", help="the configuration name of load_dataset")
    real.add_argument("--validation-size", type=float, help="hold out this fraction (or count, if >= 1) of train")
    real.add_argument("--resample", action="store_true", help="resample audio that is not at 16 kHz")
    real.add_argument("--streaming", action="store_true", help="stream the data (stage A only)")
    return parser


def parse_value(text: str):
    """A `--set` value: JSON if it parses (numbers, true/false, null, lists, dicts, quoted strings),
    Python's True / False / None, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    return {"True": True, "False": False, "None": None}.get(text, text)


def parse_settings(settings: Sequence[str], stages: Sequence[str]) -> dict[str | None, dict]:
    """`--set [STAGE:]KEY=VALUE` -> {None: shared settings, stage: that stage's settings}; dotted keys nest."""
    parsed: dict[str | None, dict] = {}
    for item in settings:
        if "=" not in item:
            raise UsageError(f"--set expects [STAGE:]KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        stage = None
        if ":" in key:
            stage, key = key.split(":", 1)
            stage = stage.strip().lower()
            if stage not in STAGES:
                raise UsageError(f"--set {item!r}: unknown stage {stage!r}; expected one of {list(STAGES)}")
            if stage not in stages:
                raise UsageError(f"--set {item!r} names stage {stage!r}, which this run does not train ({list(stages)})")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UsageError(f"--set expects [STAGE:]KEY=VALUE, got {item!r}")
        if key.split(".")[0] in ("output_dir", "seed"):
            raise UsageError(f"--set {key}=... is not allowed: use --{key.replace('_', '-')}")
        if key.split(".")[0] == "resume_from_checkpoint":
            raise UsageError("--set resume_from_checkpoint=... is not allowed: use --resume")
        target = parsed.setdefault(stage, {})
        *parents, leaf = key.split(".")
        for parent in parents:
            node = target.setdefault(parent, {})
            if not isinstance(node, dict):
                raise UsageError(f"--set {item!r}: {parent!r} was already set to a value, not a dict")
            target = node
        target[leaf] = parse_value(value)
    return parsed


def parse_pairs(text: str | None, flag: str) -> dict[str, str]:
    """`a=b,c=d` -> {"a": "b", "c": "d"}."""
    if not text:
        return {}
    pairs = {}
    for item in text.split(","):
        if item.count("=") != 1 or not all(part.strip() for part in item.split("=")):
            raise UsageError(f"{flag} expects NAME=VALUE[,NAME=VALUE...], got {text!r}")
        name, value = (part.strip() for part in item.split("="))
        pairs[name] = value
    return pairs


def _training_argument_fields() -> set[str]:
    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def recipe(stage: str):
    """The `run_stage_<stage>` function (imported on first use)."""
    try:
        module = importlib.import_module(f"muomni.training.stage_{stage}")
    except ModuleNotFoundError as error:
        if error.name == f"muomni.training.stage_{stage}":
            raise UsageError(f"stage {stage.upper()} is not available: muomni.training.stage_{stage} is missing")
        raise
    return getattr(module, f"run_stage_{stage}")


def stage_options(stage: str) -> set[str] | None:
    """Setting names a stage accepts besides TrainingArguments fields, or None if its recipe declares none."""
    try:
        module = importlib.import_module(f"muomni.training.stage_{stage}")
    except ModuleNotFoundError:
        return None
    names, found = set(), False
    for attribute in STAGE_OPTION_ATTRIBUTES[stage]:
        value = getattr(module, attribute, None)
        if isinstance(value, Mapping):
            found = True
            for key, inner in value.items():
                names.add(key)
                if isinstance(inner, (tuple, list)):  # stage D's DATA_FIELDS: sub-stage -> names
                    names.update(inner)
    return names if found else None


def split_overrides(settings: dict[str | None, dict], stages: Sequence[str]) -> dict[str, dict]:
    """Each stage's `training_overrides`: TrainingArguments fields apply to every stage, a stage option
    to the stages that declare it; a key no stage of the run accepts is a UsageError."""
    fields = _training_argument_fields()
    per_stage = {stage: {} for stage in stages}
    options = {stage: stage_options(stage) for stage in stages}
    for key, value in settings.get(None, {}).items():
        takers = [s for s in stages if key in fields or options[s] is None or key in options[s]]
        if not takers:
            accepted = sorted(set().union(*(options[s] or set() for s in stages)))
            raise UsageError(
                f"--set {key}: not a TrainingArguments field nor an option of stage(s) {list(stages)} "
                f"(stage options: {accepted})"
            )
        for stage in takers:
            per_stage[stage][key] = value
    for stage in stages:
        for key, value in settings.get(stage, {}).items():
            if key not in fields and options[stage] is not None and key not in options[stage]:
                raise UsageError(
                    f"--set {stage}:{key}: not a TrainingArguments field nor an option of stage {stage.upper()} "
                    f"(its options: {sorted(options[stage])})"
                )
            if isinstance(value, dict) and isinstance(per_stage[stage].get(key), dict):
                per_stage[stage][key] = {**per_stage[stage][key], **value}
            else:
                per_stage[stage][key] = value
    for stage, overrides in per_stage.items():
        flat = {**overrides, **{k: v for sub in overrides.values() if isinstance(sub, dict) for k, v in sub.items()}}
        if flat.get("bf16") and flat.get("fp16"):
            raise UsageError("--set bf16=true and --set fp16=true are incompatible: pick one mixed precision")
        if flat.get("fsdp") and flat.get("deepspeed"):
            raise UsageError("--set fsdp=... and --set deepspeed=... are incompatible: pick one sharding backend")
    return per_stage


# --------------------------------------------------------------------------------------------------
# config, data, previous outputs


def resolve_config(preset: str | None, config_path: str | None):
    """The `MuOmniConfig` of `--preset` (default tiny) or `--config`."""
    from muomni.configuration import PRESETS, MuOmniConfig, get_preset_config

    if config_path is None:
        name = preset or "tiny"
        if name not in PRESETS:
            raise UsageError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
        return get_preset_config(name)
    path = os.path.join(config_path, "config.json") if os.path.isdir(config_path) else config_path
    if not os.path.isfile(path):
        raise UsageError(f"--config {config_path!r}: no such file (expected a config.json or a folder holding one)")
    try:
        with open(path, encoding="utf-8") as handle:
            fields = json.load(handle)
    except ValueError as error:
        raise UsageError(f"--config {config_path!r} is not valid JSON: {error}") from None
    if not isinstance(fields, dict) or fields.get("model_type", "muomni") != "muomni":
        found = fields.get("model_type") if isinstance(fields, dict) else type(fields).__name__
        raise UsageError(f"--config {config_path!r} is not a MuOmniConfig (model_type {found!r}, expected 'muomni')")
    try:
        return MuOmniConfig.from_dict({k: v for k, v in fields.items() if k != "model_type"})
    except (TypeError, ValueError) as error:
        raise UsageError(f"--config {config_path!r}: {error}") from None


def parse_dataset_spec(spec: str) -> tuple[str, str | None]:
    """("builtin", scale) for builtin[:scale], ("saved", path) for a build_builtin_dataset folder,
    ("source", spec) for anything else (load_stage_dataset)."""
    from .data import DATASET_NAMES, SCALES

    if spec == BUILTIN or spec.startswith(BUILTIN + ":"):
        scale = spec.split(":", 1)[1] if ":" in spec else "tiny"
        if scale not in SCALES:
            raise UsageError(f"--dataset {spec!r}: unknown built-in scale {scale!r}; expected one of {sorted(SCALES)}")
        return "builtin", scale
    if os.path.isdir(spec) and any(os.path.isdir(os.path.join(spec, name)) for name in DATASET_NAMES):
        return "saved", spec
    if os.sep in spec or spec.startswith("."):
        if not os.path.exists(spec):
            raise UsageError(f"--dataset {spec!r} does not exist")
    return "source", spec


def check_builtin_datasets(datasets: Mapping, stages: Sequence[str], where: str) -> None:
    """UsageError unless the datasets the `stages` read exist with their columns and non-empty splits."""
    for stage in stages:
        for name, columns in STAGE_DATA[stage].items():
            if name not in datasets:
                raise UsageError(f"{where}: stage {stage.upper()} needs the {name!r} dataset, found {sorted(datasets)}")
            dataset = datasets[name]
            for split in REQUIRED_SPLITS:
                if split not in dataset:
                    raise UsageError(f"{where}: {name!r} has no {split!r} split (splits: {sorted(dataset)})")
            for split, rows in dataset.items():
                missing = [c for c in columns if c not in rows.column_names]
                if missing:
                    raise UsageError(
                        f"{where}: {name}/{split} misses the column(s) {missing} that stage {stage.upper()} needs "
                        f"(columns: {rows.column_names})"
                    )
                if len(rows) == 0:
                    raise UsageError(f"{where}: {name}/{split} is empty")


def load_source_dataset(stage: str, spec: str, args) -> dict:
    """A single stage's real data through `load_stage_dataset`, wrapped as the recipes expect."""
    from .sources import check_columns, check_splits, load_stage_dataset

    kwargs = {}
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    if args.data_files:
        kwargs["data_files"] = parse_pairs(args.data_files, "--data-files")
    if args.dataset_name:
        kwargs["name"] = args.dataset_name
    validation_size = args.validation_size
    if validation_size is not None and validation_size >= 1:
        validation_size = int(validation_size)
    try:
        dataset = load_stage_dataset(
            spec,
            parse_pairs(args.columns, "--columns"),
            streaming=args.streaming,
            split=parse_pairs(args.splits, "--splits") or None,
            resample=args.resample,
            validation_size=validation_size,
            seed=args.seed,
            **kwargs,
        )
        check_splits(dataset, REQUIRED_SPLITS, stage.upper())
        ((name, columns),) = STAGE_DATA[stage].items()
        if stage == "a":
            columns = [c for c in ("text", "messages") if all(c in (d.column_names or []) for d in dataset.values())]
            if not columns:
                check_columns(dataset, ("text",), "A")
            return dataset
        check_columns(dataset, columns, stage.upper())
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise UsageError(f"--dataset {spec!r}: {error}") from None
    except Exception as error:  # e.g. datasets cannot read back a split saved with no shard (an empty split)
        raise UsageError(f"--dataset {spec!r} cannot be loaded ({type(error).__name__}: {error}); an empty split?") from None
    return {name: dataset}


def builtin_is_current(path: str, seed: int, scale: str) -> bool:
    marker = os.path.join(path, BUILTIN_MARKER)
    if not os.path.isfile(marker):
        return False
    with open(marker, encoding="utf-8") as handle:
        return json.load(handle) == {"seed": seed, "scale": scale}


def prepare_builtin_dataset(path: str, seed: int, scale: str, num_proc: int = 1, show_progress: bool = True) -> str:
    """Build the built-in data set into `path` (unless a build with this seed and scale is there), on the
    main process only; the other processes wait and then load it. Returns `path`."""
    from .data import build_builtin_dataset

    state = distributed_state()
    ours = os.path.isfile(os.path.join(path, BUILTIN_MARKER))
    if os.path.isfile(path) or (os.path.isdir(path) and not ours and os.listdir(path)):
        raise UsageError(f"{path} exists and holds no built-in data set built here ({BUILTIN_MARKER}); "
                         "pick another --output-dir, or pass the folder itself as --dataset")
    with state.main_process_first():
        if state.is_main_process and not builtin_is_current(path, seed, scale):
            if os.path.isdir(path):  # our own build, for another seed or scale
                shutil.rmtree(path)
            build_builtin_dataset(path, seed=seed, scale=scale, num_proc=num_proc, show_progress=show_progress)
            with open(os.path.join(path, BUILTIN_MARKER), "w", encoding="utf-8") as handle:
                json.dump({"seed": seed, "scale": scale}, handle)
    return path


def load_saved_builtin(path: str, stages: Sequence[str]) -> dict:
    from .data import load_builtin_dataset

    try:
        datasets = load_builtin_dataset(path)
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(f"--dataset {path!r}: {error}") from None
    except Exception as error:  # e.g. datasets cannot read back a split saved with no shard (an empty split)
        raise UsageError(f"--dataset {path!r} cannot be loaded ({type(error).__name__}: {error}); an empty split?") from None
    check_builtin_datasets(datasets, stages, f"--dataset {path!r}")
    return datasets


def read_stage_result(directory: str):
    """The `StageResult` a previous run wrote to `directory/stage_result.json` (paths made absolute), or None."""
    from .trainer import StageResult

    path = os.path.join(directory, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    outputs = {name: os.path.normpath(os.path.join(directory, value)) for name, value in data["outputs"].items()}
    return StageResult(stage=data["stage"], outputs=outputs, metrics=data.get("metrics", {}))


def write_stage_result(directory: str, result) -> None:
    """`directory/stage_result.json`: the stage, its outputs (relative to `directory`) and its metrics."""
    outputs = {name: os.path.relpath(os.path.abspath(path), directory) for name, path in result.outputs.items()}
    data = {"stage": result.stage, "outputs": outputs, "metrics": clean_metrics(result.metrics)}
    _write_json(os.path.join(directory, RESULT_FILE), data)


def _write_json(path: str, data) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


def clean_metrics(metrics: Mapping) -> dict[str, float]:
    """Numeric metrics as floats (non-finite ones as None, which JSON can hold)."""
    cleaned = {}
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
        cleaned[name] = float(value) if math.isfinite(value) else None
    return cleaned


def metrics_from_results(results: Mapping) -> dict[str, dict[str, float]]:
    """{stage: cleaned metrics} of {stage: StageResult} (what `metrics.json` holds)."""
    return {stage: clean_metrics(result.metrics) for stage, result in results.items()}


def parse_previous(items: Sequence[str]) -> dict[str, str]:
    """`--previous NAME=PATH` items and stage folders (their stage_result.json) -> {name: path}."""
    previous = {}
    for item in items:
        if "=" in item and not os.path.isdir(item):
            name, path = (part.strip() for part in item.split("=", 1))
            if not name or not path:
                raise UsageError(f"--previous expects NAME=PATH or a stage folder, got {item!r}")
            if not os.path.exists(path):
                raise UsageError(f"--previous {name}={path}: {path!r} does not exist")
            previous[name] = os.path.abspath(path)
            continue
        if not os.path.isdir(item):
            raise UsageError(f"--previous {item!r}: not NAME=PATH and not an existing stage folder")
        result = read_stage_result(item)
        if result is None:
            raise UsageError(
                f"--previous {item!r}: no {RESULT_FILE} in it (a folder written by muomni-train); "
                "name its outputs instead: --previous thinker_lm=PATH"
            )
        previous.update(result.outputs)
    return previous


def check_previous(stage: str, previous: Mapping[str, str]) -> None:
    missing = [name for name in REQUIRED_PREVIOUS[stage] if name not in previous]
    if missing:
        raise UsageError(
            f"stage {stage.upper()} needs the outputs of earlier stages: missing {missing}; pass them with "
            f"--previous NAME=PATH (or --previous DIR/stage_x), or run 'all'"
        )
    if stage == "e" and ("talker" in previous) != ("codec" in previous):
        raise UsageError("stage E takes --previous talker=... and codec=... together (stage D's outputs) or neither")


def sync_vocab_size(config, previous: Mapping[str, str]) -> None:
    """Stage A sets the thinker's vocab_size to its tokenizer's size in place; when stage A ran earlier
    (or in another process), read it back from the saved language model."""
    path = previous.get("thinker_lm")
    if path and os.path.isfile(os.path.join(path, "config.json")):
        with open(os.path.join(path, "config.json"), encoding="utf-8") as handle:
            saved = json.load(handle)
        vocab_size = saved.get("vocab_size") or saved.get("text_config", {}).get("vocab_size")
        if vocab_size:
            config.thinker_config.text_config.vocab_size = vocab_size


def last_checkpoint(directory: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(directory) if os.path.isdir(directory) else None


# --------------------------------------------------------------------------------------------------
# running


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def distributed_state():
    """accelerate's `PartialState`, for the checks "am I rank 0" and "wait for the others".

    On a machine without an accelerator, a multi-process launch (`torchrun`, WORLD_SIZE > 1) only
    becomes data parallel over gloo if accelerate is told to use the CPU: `Trainer` builds its state
    with `cpu=True` only for `use_cpu=True` or `ACCELERATE_USE_CPU`; without it every process would
    train its own copy of the model. So this sets `ACCELERATE_USE_CPU=true` in that case (it leaves a
    value the user set alone)."""
    from accelerate import PartialState

    cpu_only = not _has_accelerator()
    if cpu_only and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    return PartialState(cpu=cpu_only or use_cpu)


def _log(message: str) -> None:
    if distributed_state().is_main_process:
        print(message, flush=True)


def format_metrics(metrics: Mapping, title: str = "") -> str:
    rows = [(name, value) for name, value in sorted(metrics.items())]
    width = max([len(name) for name, _ in rows] + [6])
    lines = [title] if title else []
    for name, value in rows:
        shown = "n/a" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))
        lines.append(f"  {name:<{width}}  {shown}")
    return "\n".join(lines)


def run_stage(
    stage: str,
    config,
    datasets,
    output_dir: str,
    previous: Mapping[str, str] | None = None,
    training_overrides: dict | None = None,
    seed: int = 0,
    resume: bool = False,
):
    """Run one stage recipe into `output_dir`, write its `stage_result.json` (main process) and return
    its `StageResult`; every process waits until the files are written."""
    overrides = dict(training_overrides or {})
    if resume:
        checkpoint = last_checkpoint(output_dir)
        if checkpoint is not None:
            _log(f"resuming stage {stage.upper()} from {checkpoint}")
            overrides["resume_from_checkpoint"] = checkpoint
        # a stage that trains several models (D) declares them, each in its own sub-folder and settings dict
        for sub_stage in getattr(importlib.import_module(f"muomni.training.stage_{stage}"), "SUB_STAGES", ()):
            checkpoint = last_checkpoint(os.path.join(output_dir, sub_stage))
            if checkpoint is not None:
                _log(f"resuming stage {stage.upper()} ({sub_stage}) from {checkpoint}")
                overrides[sub_stage] = {**overrides.get(sub_stage, {}), "resume_from_checkpoint": checkpoint}
    processes = distributed_state().num_processes
    where = f" ({processes} processes)" if processes > 1 else ""
    _log(f"\n=== stage {stage.upper()}: {STAGE_TITLES[stage]} -> {output_dir}{where}")
    started = time.perf_counter()
    result = recipe(stage)(
        config, datasets, output_dir, previous=dict(previous or {}), training_overrides=overrides, seed=seed
    )
    result.metrics = {**result.metrics, "stage_seconds": time.perf_counter() - started}
    state = distributed_state()
    if state.is_main_process:
        write_stage_result(output_dir, result)
    state.wait_for_everyone()
    _log(format_metrics(clean_metrics(result.metrics), f"stage {stage.upper()} metrics:"))
    return result


def assemble_final_model(stage_e_result, directory: str, metrics: Mapping[str, Mapping]) -> str:
    """`directory`: stage E's model and processor saved for the Hub (remote code, model card with the
    metrics), or, if that export refuses, plainly with `save_pretrained`."""
    from transformers import AutoModel, AutoProcessor

    source = stage_e_result.outputs.get(FINAL_MODEL)
    if not source or not os.path.isdir(source):
        raise RuntimeError(f"stage E returned no {FINAL_MODEL!r} output directory: {stage_e_result.outputs}")
    if os.path.abspath(source) == os.path.abspath(directory):
        return directory
    model = AutoModel.from_pretrained(source)
    processor = AutoProcessor.from_pretrained(source)
    timing = ("runtime", "per_second", "seconds", "epoch")  # the card lists model quality, not timings
    finite = {
        f"stage_{stage}": {k: v for k, v in m.items() if v is not None and not any(t in k for t in timing)}
        for stage, m in metrics.items()
    }
    try:
        from muomni.hub import save_for_hub

        save_for_hub(model, processor, directory, metrics=finite, overwrite=True)
    except Exception as error:  # the Hub export is a bonus: a plain checkpoint is still complete
        _log(f"warning: the Hub export failed ({type(error).__name__}: {error}); saving a plain checkpoint")
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
    return directory


def train_all(
    config,
    datasets,
    output_dir: str,
    overrides: Mapping[str, dict] | None = None,
    seed: int = 0,
    resume: bool = False,
) -> dict:
    """Stages A..E into `output_dir/stage_<x>`, each fed the earlier outputs; `output_dir/metrics.json`;
    the final checkpoint at `output_dir/muomni`. Returns {stage: StageResult}."""
    overrides = dict(overrides or {})
    state = distributed_state()
    previous, results = {}, {}
    reuse = resume  # once a stage runs again, the later ones must run on its new outputs
    for stage in STAGES:
        stage_dir = os.path.join(output_dir, f"stage_{stage}")
        done = read_stage_result(stage_dir) if reuse else None
        reuse = done is not None and all(os.path.exists(p) for p in done.outputs.values())
        if reuse:
            _log(f"\n=== stage {stage.upper()}: finished earlier, reusing {stage_dir}")
            result = done
        else:
            sync_vocab_size(config, previous)
            result = run_stage(stage, config, datasets, stage_dir, previous, overrides.get(stage), seed, resume)
        results[stage] = result
        previous.update(result.outputs)
        sync_vocab_size(config, previous)
    metrics = metrics_from_results(results)
    final_dir = os.path.join(output_dir, FINAL_MODEL)
    if state.is_main_process:
        _write_json(os.path.join(output_dir, "metrics.json"), metrics)
        assemble_final_model(results["e"], final_dir, metrics)
    state.wait_for_everyone()
    _log(f"\nall stages done: metrics in {os.path.join(output_dir, 'metrics.json')}, final model in {final_dir}")
    return results


def prepare(args, parser: argparse.ArgumentParser) -> tuple:
    """Every check of the arguments (UsageError), then the data set (built on rank 0 if needed).
    Returns (stages, config, datasets, previous, overrides by stage, absolute output directory)."""
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.num_proc < 1:
        raise UsageError(f"--num-proc must be a positive integer, got {args.num_proc}")
    if args.stage == "all" and args.previous:
        raise UsageError("--previous cannot be used with 'all': it feeds every stage the outputs of the earlier ones")
    kind, location = parse_dataset_spec(args.dataset)
    given_hf_flags = [f"--{f.replace('_', '-')}" for f in HF_DATA_FLAGS if getattr(args, f) not in (None, False)]
    if kind != "source" and given_hf_flags:
        raise UsageError(f"{', '.join(given_hf_flags)} only apply to a load_stage_dataset source, not to --dataset {args.dataset!r}")
    if kind == "source" and args.stage == "all":
        raise UsageError(
            "'all' needs the built-in data (--dataset builtin[:scale] or a folder saved by build_builtin_dataset): "
            "one source cannot feed every stage; train stages one by one with their own data instead"
        )
    if args.streaming and args.stage != "a":
        raise UsageError(f"--streaming is only supported by stage A, not stage {args.stage.upper()}")
    config = resolve_config(args.preset, args.config)
    settings = parse_settings(args.settings, stages)
    overrides = split_overrides(settings, stages)
    previous = parse_previous(args.previous)
    if args.stage != "all":
        check_previous(args.stage, previous)
    for stage in stages:
        recipe(stage)  # a missing recipe is reported before any data is built
    output_dir = os.path.abspath(args.output_dir)
    if os.path.isfile(output_dir):
        raise UsageError(f"--output-dir {args.output_dir!r} is a file")

    if kind == "source":
        datasets = load_source_dataset(args.stage, location, args)
    else:
        if kind == "builtin":
            location = prepare_builtin_dataset(
                os.path.join(output_dir, DATA_FOLDER), args.seed, location, num_proc=args.num_proc
            )
            _log(f"built-in data set in {location} (reuse it with --dataset {location})")
        datasets = load_saved_builtin(location, stages)
    sync_vocab_size(config, previous)
    return stages, config, datasets, previous, overrides, output_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        stages, config, datasets, previous, overrides, output_dir = prepare(args, parser)
    except UsageError as error:
        parser.error(str(error))
    try:
        if args.stage == "all":
            train_all(config, datasets, output_dir, overrides, seed=args.seed, resume=args.resume)
        else:
            run_stage(args.stage, config, datasets, output_dir, previous, overrides[args.stage], args.seed, args.resume)
    except (ValueError, TypeError) as error:
        # the recipes raise ValueError / TypeError for bad input they find in the data or the settings
        if args.traceback:
            raise
        parser.exit(2, f"{parser.prog}: error: {error}\n(--traceback shows where it was raised)\n")
    except HfHubHTTPError as error:
        # push_to_hub: the Trainer creates the repository before training, the recipe uploads at its end
        if args.traceback:
            raise
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        parser.exit(
            1, f"{parser.prog}: error: the Hugging Face Hub refused a request: {reason}\n(push_to_hub: check "
            "hub_token (or `hf auth login`), hub_model_id and your rights on that repository)\n",
        )
    return 0


# --------------------------------------------------------------------------------------------------
# `muomni`: demo, train, --version


def muomni_main(argv: Sequence[str] | None = None) -> int:
    """`muomni demo ...` (see `muomni.training.demo`), `muomni train ...` (= muomni-train), `muomni --version`."""
    from muomni.version import __version__

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="muomni", description="MuOmni: a tiny Thinker-Talker omni model.")
    parser.add_argument("--version", action="version", version=f"muomni {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{demo,train}")
    commands.add_parser("demo", help="build the built-in data, train every stage, show the model", add_help=False)
    commands.add_parser("train", help="the same as muomni-train", add_help=False)
    if not argv or argv[0] not in ("demo", "train"):
        args = parser.parse_args(argv)  # --version / -h / an unknown command: argparse answers and exits
        parser.print_help()
        return 2
    if argv[0] == "train":
        return main(argv[1:])
    from .demo import main as demo_main

    return demo_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
