"""The base of every MuOmni training stage: a `transformers.Trainer` that knows what it trains.

A stage is mostly data (STYLE.md): which parameters train (`trainable_modules`), which submodules
are frozen *and* kept in eval mode (`frozen_eval_modules`: dropout off, norms fixed), and which
metric it reports on the validation split (`compute_stage_metrics`). Model math stays in the
models; the stages only feed them.

Everything else is `Trainer`'s: gradient accumulation (with `num_items_in_batch`), resume from
checkpoint, bf16/fp16, gradient checkpointing, distributed runs under `torchrun` / `accelerate`,
progress bars, logging. This base adds the stage metric to `evaluate()` and writes a PNG plot of
the loss and metric curves to the output directory (`training_curves.png`).
"""

import dataclasses
import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from .plotting import plot_training_curves


def _freeze_in_eval_mode(module: nn.Module) -> None:
    """Freeze `module` and pin it to eval mode: `Trainer` calls `model.train()` every step, which
    would otherwise turn dropout back on in a "frozen" encoder (a defect of the reference code)."""
    module.requires_grad_(False)
    module.eval()
    module.train = lambda mode=True: nn.Module.train(module, False)  # instance override, survives model.train()


def apply_stage_freezing(
    model: nn.Module, trainable_modules: tuple[str, ...], frozen_eval_modules: tuple[str, ...]
) -> dict[str, int]:
    """Make exactly the parameters under `trainable_modules` (dotted prefixes; empty = all) trainable,
    pin `frozen_eval_modules` to frozen eval mode, and return {"trainable": n, "frozen": m} counts."""
    names = dict(model.named_modules())
    for prefix in (*trainable_modules, *frozen_eval_modules):
        if prefix not in names:
            raise ValueError(
                f"{type(model).__name__} has no submodule {prefix!r}; top-level modules are "
                f"{sorted(n for n in names if n and '.' not in n)}"
            )
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(
            not trainable_modules or any(name == p or name.startswith(p + ".") for p in trainable_modules)
        )
    for prefix in frozen_eval_modules:
        _freeze_in_eval_mode(names[prefix])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    if trainable == 0:
        raise ValueError(f"Nothing to train in {type(model).__name__} with trainable_modules={trainable_modules}")
    return {"trainable": trainable, "frozen": frozen}


@dataclass
class StageResult:
    """What a stage recipe (`run_stage_a` ... `run_stage_e`) hands to the next stages and the CLI:
    the directories it saved (by artefact name, e.g. {"thinker_lm": ..., "tokenizer": ...}) and its
    final validation / test metrics (e.g. {"eval_perplexity": 12.3})."""

    stage: str
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class TrainingCurvesCallback(TrainerCallback):
    """Redraw `training_curves.png` (loss and stage metric against steps) at every evaluation and at the end."""

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_training_curves(state.log_history, os.path.join(args.output_dir, "training_curves.png"))

    def on_train_end(self, args, state, control, **kwargs):
        self.on_evaluate(args, state, control)


class MuOmniStageTrainer(Trainer):
    """Base class of the stage trainers (A-E).

    Subclasses set `stage`, `trainable_modules`, `frozen_eval_modules`, `metric_names` and implement
    `compute_stage_metrics(dataset) -> dict[str, float]` (computed on `metric_dataset`, by default
    the eval dataset, in eval mode without gradients). `evaluate()` logs them with the eval prefix;
    `evaluate(test_set, metric_key_prefix="test", metric_dataset=test_rows)` scores another split.
    """

    stage: str = ""
    trainable_modules: tuple[str, ...] = ()
    frozen_eval_modules: tuple[str, ...] = ()
    metric_names: tuple[str, ...] = ()

    def __init__(self, *args, metric_dataset=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.parameter_counts = apply_stage_freezing(self.model, self.trainable_modules, self.frozen_eval_modules)
        self.metric_dataset = metric_dataset
        self.add_callback(TrainingCurvesCallback())

    def compute_stage_metrics(self, dataset) -> dict[str, float]:
        return {}

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer.save_model`, without its push: with `push_to_hub`, a recipe uploads its whole output
        folder once everything is saved (`push_stage_to_hub`), never a stage half-written (the model
        without its tokenizer, one sub-model of stage D). Checkpoint pushes (`hub_strategy`) still happen."""
        super().save_model(output_dir, _internal_call=True)

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval", metric_dataset=None
    ) -> dict[str, float]:
        """`Trainer.evaluate` (loss on `eval_dataset`) plus the stage metrics on `metric_dataset`, else the
        trainer's `metric_dataset`, else `eval_dataset`, else the trainer's `eval_dataset`."""
        metrics = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            if "eval_loss" in metrics and "perplexity" in self.metric_names:
                metrics[f"{metric_key_prefix}_perplexity"] = math.exp(min(metrics[f"{metric_key_prefix}_loss"], 50))
        # evaluate() without arguments (what Trainer calls during training) scores the trainer's eval set
        candidates = (metric_dataset, self.metric_dataset, eval_dataset, self.eval_dataset)
        dataset = next((d for d in candidates if d is not None), None)
        if dataset is not None and self.args.process_index == 0:
            was_training = self.model.training
            self.model.eval()
            with torch.no_grad():
                stage_metrics = self.compute_stage_metrics(dataset)
            self.model.train(was_training)
            stage_metrics = {f"{metric_key_prefix}_{k}": float(v) for k, v in stage_metrics.items()}
            self.log(stage_metrics)
            metrics.update(stage_metrics)
        return metrics


def stage_training_arguments(
    output_dir: str,
    seed: int,
    defaults: dict,
    overrides: dict | None = None,
    options: dict | None = None,
) -> tuple[TrainingArguments, dict]:
    """A stage recipe's `TrainingArguments` and stage options from its defaults and the user's `overrides`.

    `overrides` may hold `TrainingArguments` fields (they replace `defaults`) and the keys of `options`,
    the stage's own settings that are not `TrainingArguments` fields (e.g. stage A's `block_size`), whose
    values in `options` are their defaults. Anything else is a ValueError that lists what is accepted;
    `output_dir` and `seed` are the recipe's own arguments and may not be overridden here.

    Returns:
        `(TrainingArguments, {option: value})`.
    """
    overrides = dict(overrides or {})
    options = dict(options or {})
    for reserved in ("output_dir", "seed"):
        if reserved in overrides:
            raise ValueError(f"pass {reserved} as the recipe's own argument, not in training_overrides")
    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    unknown = sorted(key for key in overrides if key not in fields and key not in options)
    if unknown:
        raise ValueError(
            f"unknown training_overrides {unknown}: expected TrainingArguments fields or the stage options "
            f"{sorted(options)}"
        )
    for key in options:
        if key in overrides:
            options[key] = overrides.pop(key)
    arguments = {**defaults, **overrides, "output_dir": output_dir, "seed": seed}
    return TrainingArguments(**arguments), options


# never uploaded by a stage push: checkpoints (their own `hub_strategy`), Trainer's private files and the
# pickled TrainingArguments (MuOmni repositories hold no pickle files)
HUB_IGNORE_PATTERNS = ["_*", "checkpoint-*", "*/checkpoint-*", "training_args.bin", "*/training_args.bin"]


def create_stage_repo(args: TrainingArguments, folder: str) -> str | None:
    """With `args.push_to_hub`, on the main process: create (or find) the stage's repository, `args.hub_model_id`
    or the folder's name, and the `hub_revision` branch; returns its repo id (None when nothing is pushed).
    A recipe whose Trainers do not push themselves (stage D) calls it before training, so that a rejected
    token fails at once."""
    if not args.push_to_hub or args.process_index != 0:
        return None
    from huggingface_hub import HfApi

    api = HfApi(token=args.hub_token)
    repo_id = args.hub_model_id or os.path.basename(os.path.abspath(folder))
    repo_id = api.create_repo(repo_id, private=args.hub_private_repo, exist_ok=True).repo_id
    if args.hub_revision:
        api.create_branch(repo_id, branch=args.hub_revision, exist_ok=True)
    return repo_id


def push_stage_to_hub(args: TrainingArguments, folder: str, stage: str) -> str | None:
    """With `args.push_to_hub` (`TrainingArguments(push_to_hub=True, hub_model_id=..., hub_token=...,
    hub_private_repo=..., hub_revision=...)`), upload a stage's whole output `folder` (every artefact its
    recipe saved, sub-folders included; not `HUB_IGNORE_PATTERNS`) in one commit, on the main process only.

    The repository is `args.hub_model_id`, else the folder's name, created if needed (the Trainer of a
    stage has already created it before training, so a bad token fails early); `hub_revision` is
    created as a branch if it does not exist. Returns the commit URL, or None when nothing is pushed.
    """
    repo_id = create_stage_repo(args, folder)
    if repo_id is None:
        return None
    from huggingface_hub import HfApi

    commit = HfApi(token=args.hub_token).upload_folder(
        repo_id=repo_id, folder_path=folder, commit_message=f"MuOmni stage {stage}", revision=args.hub_revision,
        ignore_patterns=HUB_IGNORE_PATTERNS,
    )  # fmt: skip
    return commit.commit_url


__all__ = [
    "HUB_IGNORE_PATTERNS",
    "create_stage_repo",
    "push_stage_to_hub",
    "MuOmniStageTrainer",
    "StageResult",
    "TrainingCurvesCallback",
    "apply_stage_freezing",
    "stage_training_arguments",
]
