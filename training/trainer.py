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

import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import Trainer, TrainerCallback

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
    the eval dataset, in eval mode without gradients). `evaluate()` logs them with the eval prefix.
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

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        metrics = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            if "eval_loss" in metrics and "perplexity" in self.metric_names:
                metrics[f"{metric_key_prefix}_perplexity"] = math.exp(min(metrics[f"{metric_key_prefix}_loss"], 50))
        dataset = self.metric_dataset if self.metric_dataset is not None else eval_dataset
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


__all__ = ["MuOmniStageTrainer", "StageResult", "TrainingCurvesCallback", "apply_stage_freezing"]
