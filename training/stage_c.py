"""Stage C: contrastive (CLIP-style) pretraining of the vision encoder on image-caption pairs.

    run_stage_c(config, datasets, output_dir, previous, training_overrides, seed) -> StageResult

What the stage is (STYLE.md: a stage is mostly data):
    model     `MuOmniVisionTextContrastiveModel`: the thinker's vision encoder (`config.thinker_config.
              vision_config`) + a small text tower over the thinker's BPE ids + a learnable temperature
    trains    everything in it (vision encoder, text tower, projections, logit scale); nothing is frozen
    feeds     `datasets["images"]` (columns `image`, `caption`): train for training, validation for the
              metric; optional image augmentation of the train split only (`ImageAugmentation`, PIL/numpy)
    loss      the model's symmetric InfoNCE
    metric    retrieval recall R@1 / R@5, image->caption and caption->image averaged, over the WHOLE
              validation split deduplicated by caption (one image per distinct caption, so every query
              has exactly one right answer); chance is k / N and is reported next to it
    saves     `vision_encoder/` (the `MuOmniVisionEncoder` alone + its image processor: what stage E
              loads into the thinker) and `contrastive/` (the whole model, for zero-shot use)

The tokenizer is stage A's (`previous["tokenizer"]`); without it a small one is trained on the train
captions with `muomni.train_tokenizer`, saved under `tokenizer/`, and the result says so
(`metrics["tokenizer_trained_in_stage"] = 1.0`).

Augmentation (opt-in: `augmentation=True`): flips are safe (captions never mention left or right) and
so are brightness, contrast and saturation jitter; hue is never jittered (captions name colours). The
crop keeps most of the image (`crop_scale`), because cutting an object out would make its caption wrong.
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import PIL.Image
import PIL.ImageEnhance
import torch
from datasets import Dataset, DatasetDict
from transformers import set_seed

from muomni.configuration import MuOmniConfig
from muomni.modeling_contrastive import MuOmniContrastiveConfig, MuOmniVisionTextContrastiveModel
from muomni.processing.image_processing_muomni import MuOmniImageProcessor
from muomni.processing.tokenization_muomni import MuOmniTokenizer, train_tokenizer

from .collators import MuOmniContrastiveCollator
from .metrics import retrieval_recall
from .trainer import MuOmniStageTrainer, StageResult, push_stage_to_hub, stage_training_arguments

logger = logging.getLogger(__name__)

RETRIEVAL_KS = (1, 5)


# ------------------------------------------------------------------------------------------------ recipe helpers
# (shared with stage E)


def check_splits(datasets: dict, name: str, columns: Sequence[str], splits: Sequence[str]) -> DatasetDict:
    """`datasets[name]` after checking that it has the `splits`, each non-empty with the `columns`."""
    if not isinstance(datasets, dict) or name not in datasets:
        given = sorted(datasets) if isinstance(datasets, dict) else type(datasets).__name__
        raise ValueError(f"datasets must hold a {name!r} DatasetDict (columns {list(columns)}), got {given}")
    dataset = datasets[name]
    for split in splits:
        if split not in dataset:
            raise ValueError(f"datasets[{name!r}] has no {split!r} split (splits: {sorted(dataset)})")
        missing = [c for c in columns if c not in dataset[split].column_names]
        if missing:
            raise ValueError(
                f"datasets[{name!r}][{split!r}] lacks the columns {missing} (has {dataset[split].column_names})"
            )
        if len(dataset[split]) == 0:
            raise ValueError(f"datasets[{name!r}][{split!r}] is empty")
    return dataset


def float_metrics(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ------------------------------------------------------------------------------------------------ data


@dataclass
class ImageAugmentation:
    """Random crop (a `crop_scale` fraction of the area, aspect ratio in `crop_ratio`, resized back),
    horizontal flip with probability `flip`, and brightness / contrast / saturation factors drawn
    uniformly in [1 - x, 1 + x]. PIL and numpy only. `__call__(image, rng)` -> an RGB image of the same size."""

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self):
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        for name in ("flip", "brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    def __call__(self, image: PIL.Image.Image, rng: np.random.Generator) -> PIL.Image.Image:
        image = image.convert("RGB")
        width, height = image.size
        area = width * height * rng.uniform(*self.crop_scale)
        ratio = np.exp(rng.uniform(np.log(self.crop_ratio[0]), np.log(self.crop_ratio[1])))
        crop_w = int(round(min(width, np.sqrt(area * ratio))))
        crop_h = int(round(min(height, np.sqrt(area / ratio))))
        left = int(rng.integers(0, width - crop_w + 1))
        top = int(rng.integers(0, height - crop_h + 1))
        image = image.resize((width, height), PIL.Image.BICUBIC, box=(left, top, left + crop_w, top + crop_h))
        if rng.uniform() < self.flip:
            image = image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        for enhancer, strength in (
            (PIL.ImageEnhance.Brightness, self.brightness),
            (PIL.ImageEnhance.Contrast, self.contrast),
            (PIL.ImageEnhance.Color, self.saturation),
        ):
            if strength:
                image = enhancer(image).enhance(rng.uniform(1 - strength, 1 + strength))
        return image


def augmented(dataset: Dataset, augmentation: ImageAugmentation, seed: int, column: str = "image") -> Dataset:
    """`dataset` whose `column` images are augmented on access (a fresh draw every time a row is read)."""
    rng = np.random.default_rng([seed, 3])

    def transform(batch: dict) -> dict:
        batch[column] = [augmentation(image, rng) for image in batch[column]]
        return batch

    return dataset.with_transform(transform)


# ------------------------------------------------------------------------------------------------ trainer


def retrieval_gallery(captions: Sequence[str]) -> list[int]:
    """Indices of the first row of every distinct caption (whitespace and case folded): the
    retrieval gallery, in which each caption has exactly one matching image."""
    seen, keep = set(), []
    for index, caption in enumerate(captions):
        key = " ".join(caption.lower().split())
        if key not in seen:
            seen.add(key)
            keep.append(index)
    return keep


class StageCTrainer(MuOmniStageTrainer):
    """Stage C: trains the whole `MuOmniVisionTextContrastiveModel`; metric: retrieval recall@1/@5
    (both directions averaged) over the whole metric split, deduplicated by caption, with chance k/N.

    The data collator must not augment (augmentation belongs to the train dataset): it also builds
    the retrieval batches.
    """

    stage = "C"
    trainable_modules = ()  # all of it: vision encoder, text tower, projections, logit_scale
    frozen_eval_modules = ()
    metric_names = tuple(f"recall_at_{k}" for k in RETRIEVAL_KS)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.args.remove_unused_columns = False  # the collator reads the raw image / caption columns

    def compute_stage_metrics(self, dataset) -> dict[str, float]:
        collator = self.data_collator
        rows = retrieval_gallery(dataset[collator.text_column])
        batch_size = self.args.per_device_eval_batch_size
        image_embeds, text_embeds = [], []
        for start in range(0, len(rows), batch_size):
            batch = self._prepare_inputs(collator([dataset[i] for i in rows[start : start + batch_size]]))
            output = self.model(**batch, return_loss=False)
            image_embeds.append(output.image_embeds)
            text_embeds.append(output.text_embeds)
        similarity = torch.cat(image_embeds) @ torch.cat(text_embeds).t()  # (N, N), images as rows
        metrics = retrieval_recall(similarity.float().cpu(), ks=RETRIEVAL_KS)
        metrics.update({f"chance_recall_at_{k}": min(k, len(rows)) / len(rows) for k in RETRIEVAL_KS})
        metrics["retrieval_gallery_size"] = len(rows)
        return metrics


# ------------------------------------------------------------------------------------------------ recipe

# Chosen for the `tiny` preset on the built-in tiny data (1500 train images, 480 steps): ~220 s on 2 CPU
# cores. Measured there (test split, 145-image gallery; chance R@1 0.007, R@5 0.034): batch 32 / lr 5e-4 /
# 10 epochs R@1 0.031, R@5 0.19; batch 64 / lr 1e-3 / 20 epochs 0.072, 0.345; batch 64 / lr 2e-3 / 20
# epochs 0.117, 0.483. The loss sits at log(batch) for the first epochs before it starts to fall: the
# warmup and the larger batch matter more than the exact rate.
STAGE_C_TRAINING_DEFAULTS = {
    "per_device_train_batch_size": 64,
    "per_device_eval_batch_size": 150,
    "num_train_epochs": 20,
    "learning_rate": 2e-3,
    "weight_decay": 0.0,  # decay would also pull logit_scale towards temperature 1
    "warmup_steps": 0.1,
    "lr_scheduler_type": "cosine",
    "max_grad_norm": 1.0,
    "logging_steps": 10,
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "report_to": "none",
    "remove_unused_columns": False,  # the collator reads the raw image / caption columns
}
# Stage options (not TrainingArguments fields), also accepted in `training_overrides`:
#   augmentation     False, True (the default ImageAugmentation), a dict of its fields or an instance; off
#                    by default: at 10 epochs (batch 32, lr 5e-4) it changed R@1 / R@5 by less than their noise and
#                    costs ~20% more CPU (it is there for longer runs, which start to overfit 1500 images)
#   text_config      text-tower fields (vocab_size and pad_token_id always follow the tokenizer)
#   max_text_length  captions are truncated to this many tokens (the text tower's positions)
STAGE_C_OPTIONS = {
    "augmentation": False,
    "text_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 192},
    "max_text_length": 64,
}


def load_or_train_tokenizer(
    previous: dict | None, captions: Sequence[str], vocab_size: int, output_dir: str
) -> tuple[MuOmniTokenizer, str | None]:
    """Stage A's tokenizer, or (returning its save path) one trained on `captions`."""
    if previous and previous.get("tokenizer"):
        path = previous["tokenizer"]
        if not os.path.isdir(path):
            raise ValueError(f"previous['tokenizer'] is not a directory: {path!r}")
        return MuOmniTokenizer.from_pretrained(path), None
    logger.warning(
        "Stage C: no previous['tokenizer'] (stage A); training a %d-token BPE tokenizer on the captions", vocab_size
    )
    tokenizer = train_tokenizer(captions, vocab_size=vocab_size)
    path = os.path.join(output_dir, "tokenizer")
    tokenizer.save_pretrained(path)
    return tokenizer, path


def _augmentation(value) -> ImageAugmentation | None:
    if isinstance(value, bool):
        return ImageAugmentation() if value else None
    if isinstance(value, dict):
        return ImageAugmentation(**value)
    if isinstance(value, ImageAugmentation):
        return value
    raise TypeError(f"augmentation must be a bool, a dict or an ImageAugmentation, got {type(value).__name__}")


def run_stage_c(
    config: MuOmniConfig,
    datasets: dict,
    output_dir: str,
    previous: dict[str, str] | None = None,
    training_overrides: dict | None = None,
    seed: int = 0,
) -> StageResult:
    """Train the vision encoder contrastively on `datasets["images"]` (columns `image`, `caption`).

    Args:
        config: the MuOmni config; the vision encoder is `config.thinker_config.vision_config`.
        datasets: {"images": DatasetDict with train and validation (and optionally test) splits}.
        output_dir: where `vision_encoder/`, `contrastive/`, `training_curves.png` (and `tokenizer/`) go.
        previous: earlier stages' outputs; `"tokenizer"` (stage A) is used when present.
        training_overrides: `TrainingArguments` fields replacing `STAGE_C_TRAINING_DEFAULTS`, and the
            stage options of `STAGE_C_OPTIONS` (`augmentation`, `text_config`, `max_text_length`).
        seed: model initialisation, data order and augmentation draws.

    Returns:
        `StageResult("C", outputs={"vision_encoder", "contrastive"} (+ "tokenizer" if trained here), metrics)`
        with `eval_recall_at_{1,5}` and `test_recall_at_{1,5}` (when there is a test split), their
        `*_chance_recall_at_k`, the gallery sizes, the losses and `tokenizer_trained_in_stage` (0 or 1).
    """
    if not isinstance(config, MuOmniConfig):
        raise TypeError(f"config must be a MuOmniConfig, got {type(config).__name__}")
    images = check_splits(datasets, "images", ("image", "caption"), ("train", "validation"))
    args, options = stage_training_arguments(
        output_dir, seed, STAGE_C_TRAINING_DEFAULTS, training_overrides, STAGE_C_OPTIONS
    )
    augmentation = _augmentation(options["augmentation"])
    max_text_length = options["max_text_length"]
    os.makedirs(output_dir, exist_ok=True)
    set_seed(seed)

    vision_config = config.thinker_config.vision_config
    tokenizer, trained_tokenizer = load_or_train_tokenizer(
        previous, images["train"]["caption"], min(config.thinker_config.text_config.vocab_size, 1024), output_dir
    )
    text_config = {**STAGE_C_OPTIONS["text_config"], **(options["text_config"] or {})}
    text_config.update(
        max_position_embeddings=max_text_length, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    model = MuOmniVisionTextContrastiveModel(
        MuOmniContrastiveConfig(vision_config=vision_config.to_dict(), text_config=text_config)
    )
    image_processor = MuOmniImageProcessor(size={"height": vision_config.image_size, "width": vision_config.image_size})
    collator = MuOmniContrastiveCollator(tokenizer, image_processor, max_length=max_text_length)
    train_dataset = images["train"] if augmentation is None else augmented(images["train"], augmentation, seed)

    trainer = StageCTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=images["validation"], data_collator=collator
    )
    train_output = trainer.train()
    metrics = {"train_loss": train_output.training_loss, "train_runtime": train_output.metrics["train_runtime"]}
    metrics.update(trainer.evaluate())
    if "test" in images and len(images["test"]):
        metrics.update(trainer.evaluate(images["test"], metric_key_prefix="test", metric_dataset=images["test"]))
    metrics["tokenizer_trained_in_stage"] = float(trained_tokenizer is not None)
    if augmentation is not None:
        logger.info("Stage C image augmentation: %s", asdict(augmentation))

    outputs = {
        "vision_encoder": os.path.join(output_dir, "vision_encoder"),
        "contrastive": os.path.join(output_dir, "contrastive"),
    }
    model.vision_model.save_pretrained(outputs["vision_encoder"])
    image_processor.save_pretrained(outputs["vision_encoder"])
    model.save_pretrained(outputs["contrastive"])
    tokenizer.save_pretrained(outputs["contrastive"])
    image_processor.save_pretrained(outputs["contrastive"])
    if trained_tokenizer is not None:
        outputs["tokenizer"] = trained_tokenizer
    push_stage_to_hub(trainer.args, output_dir, "C")
    return StageResult(stage="C", outputs=outputs, metrics=float_metrics(metrics))


__all__ = [
    "STAGE_C_OPTIONS",
    "STAGE_C_TRAINING_DEFAULTS",
    "ImageAugmentation",
    "MuOmniContrastiveCollator",
    "StageCTrainer",
    "augmented",
    "check_splits",
    "retrieval_gallery",
    "run_stage_c",
]
