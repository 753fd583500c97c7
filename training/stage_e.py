"""Stage E: multimodal supervised fine-tuning of the thinker on matched image / speech / text pairs.

    assemble_muomni(config, previous, allow_random_init) -> (MuOmniForConditionalGeneration, MuOmniProcessor)
    run_stage_e(config, datasets, output_dir, previous, training_overrides, seed) -> StageResult

What the stage is (STYLE.md: a stage is mostly data):
    model     `MuOmniForConditionalGeneration` assembled from the earlier stages' checkpoints, loaded
              strictly (a missing, unexpected or mis-shaped key is a ValueError naming it)
    trains    `thinker.language_model`, `thinker.vision_projector`, `thinker.audio_projector`
    frozen    `thinker.audio_tower`, `thinker.visual` (frozen AND pinned in eval mode: no dropout, the
              same features every epoch) and the talker / codec / vocoder when present (not run here)
    feeds     `datasets["sft"]` (task, messages, image, audio, target) plus, optionally, the questions of
              `datasets["images"]` (`include_image_questions`); `<image>` / `<audio>` markers in a user turn
              become image / audio parts of the chat, and the processor expands them to the encoders' counts
    loss      the thinker's LM loss on assistant tokens only: labels are -100 on system / user / media /
              padding tokens; the assistant's text and the `<|im_end|>` closing its turn are targets
    metric    greedy generation on the validation split, scored per task against the row's `target`:
                image_qa, speech_qa, tts  exact match (`metrics.accuracy`: case, surrounding space and
                                          final punctuation ignored); image_qa also per question type
                image_caption, chat       exact match and bag-of-words token F1 (SQuAD-style, lowercased,
                                          punctuation stripped; mean over rows)
                asr                       CER on normalised transcripts (and exact match)
              next to each, the majority baseline: the most frequent train answer of the task (for
              image_qa: of the question type) scored the same way on the same rows

Decisions:
- `tts` rows: their audio is the assistant's OUTPUT speech, so for the thinker a tts row is a text
  task, "repeat this text": the prompt "Say this out loud: X" must produce X, the text the talker
  will speak. The audio is dropped, the row is kept (stage D trains the speaking).
- Batches are RIGHT-padded for training (no fully masked query rows; the thinker derives positions
  from the attention mask, so the side does not change the logits) and LEFT-padded for generation.
- Question types (for the per-type image-QA scores) come from `datasets["images"]`, whose
  questions the SFT image_qa rows reuse; without it every image_qa row has type "".
"""

import logging
import os
import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset, Features, concatenate_datasets
from datasets import Image as ImageFeature
from transformers import set_seed

from muomni.configuration import MuOmniConfig
from muomni.modeling_audio_encoder import MuOmniAudioEncoderForCTC
from muomni.modeling_codec import MuOmniCodec
from muomni.modeling_muomni import MuOmniForConditionalGeneration
from muomni.modeling_talker import MuOmniTalkerForConditionalGeneration
from muomni.modeling_text import MuOmniForCausalLM
from muomni.modeling_vision_encoder import MuOmniVisionEncoder
from muomni.modeling_vocoder import MuOmniNeuralVocoder
from muomni.processing.feature_extraction_muomni import MuOmniFeatureExtractor
from muomni.processing.image_processing_muomni import MuOmniImageProcessor
from muomni.processing.processing_muomni import MuOmniProcessor
from muomni.processing.tokenization_muomni import MuOmniTokenizer

from .collators import MuOmniSFTCollator, sft_conversation
from .data import with_audio_arrays
from .data.speech import normalize_transcript
from .metrics import accuracy, character_error_rate
from .stage_c import check_splits, float_metrics
from .trainer import MuOmniStageTrainer, StageResult, push_stage_to_hub, stage_training_arguments

logger = logging.getLogger(__name__)

SFT_COLUMNS = ("task", "messages", "image", "audio", "target")
TOKEN_F1_TASKS = ("image_caption", "chat")
REQUIRED_STAGES = ("thinker_lm", "tokenizer", "audio_encoder", "vision_encoder")


# ------------------------------------------------------------------------------------------------ data


def question_type_lookup(images) -> dict[str, str]:
    """{question (lowercased): question type} over every split of an `images` DatasetDict (or Dataset)."""
    splits = images.values() if hasattr(images, "values") else [images]
    lookup = {}
    for split in splits:
        if "questions" not in split.column_names or "question_types" not in split.column_names:
            return {}
        for questions, types in zip(split["questions"], split["question_types"]):
            lookup.update({q.strip().lower(): t for q, t in zip(questions, types)})
    return lookup


def _question(messages: list[dict]) -> str:
    user = next((m["content"] for m in messages if m["role"] == "user"), "")
    return re.sub(r"<image>|<audio>", "", user).strip().lower()


def build_sft_split(
    sft: Dataset, images: Dataset | None = None, type_lookup: dict[str, str] | None = None,
    include_image_questions: bool = False, tasks: Sequence[str] | None = None,
) -> Dataset:  # fmt: skip
    """The rows stage E trains or scores on: `sft` (restricted to `tasks`) with a `question_type` column,
    plus, with `include_image_questions`, every question of `images` that no sft row already asks of
    the same image. Audio comes decoded (`with_audio_arrays`), images as PIL images."""
    if tasks is not None:
        sft = sft.filter(lambda task: task in tasks, input_columns="task")
    lookup = type_lookup or {}
    sft = sft.select_columns(list(SFT_COLUMNS)).map(
        lambda task, messages: {"question_type": lookup.get(_question(messages), "") if task == "image_qa" else ""},
        input_columns=["task", "messages"],
    )
    if include_image_questions and images is not None and (tasks is None or "image_qa" in tasks):
        extra = _image_question_rows(sft, images, sft.features)
        if len(extra):
            sft = concatenate_datasets([sft, extra])
    if len(sft) == 0:
        raise ValueError(f"no SFT rows left for the tasks {list(tasks or [])}")
    return with_audio_arrays(sft)


def _image_question_rows(sft: Dataset, images: Dataset, features: Features) -> Dataset:
    raw_images = images.cast_column("image", ImageFeature(decode=False))
    sft_images = sft.select_columns(["task", "messages", "image"]).cast_column("image", ImageFeature(decode=False))
    asked = {
        (row["image"]["bytes"], _question(row["messages"])) for row in sft_images if row["task"] == "image_qa"
    }
    rows = {name: [] for name in features}
    for row in raw_images:
        for question, answer, kind in zip(row["questions"], row["answers"], row["question_types"]):
            if (row["image"]["bytes"], question.strip().lower()) in asked:
                continue
            user = "<image>\n" + question[:1].upper() + question[1:]
            rows["task"].append("image_qa")
            rows["messages"].append([{"role": "user", "content": user}, {"role": "assistant", "content": answer}])
            rows["image"].append(row["image"])
            rows["audio"].append(None)
            rows["target"].append(answer)
            rows["question_type"].append(kind)
    return Dataset.from_dict(rows, features=features)


# ------------------------------------------------------------------------------------------------ scoring


def _words(text: str) -> list[str]:
    return text.lower().translate(str.maketrans("", "", string.punctuation)).split()


def token_f1(reference: str, prediction: str) -> float:
    """Bag-of-words F1 (SQuAD-style): lowercased, punctuation stripped."""
    ref, hyp = _words(reference), _words(prediction)
    if not ref or not hyp:
        return float(ref == hyp)
    common = sum((Counter(ref) & Counter(hyp)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def task_scores(references: Sequence[str], predictions: Sequence[str], task: str) -> dict[str, float]:
    """{"accuracy", and "token_f1" (caption, chat) or "cer" (asr)} for one task's rows."""
    scores = {"accuracy": accuracy(references, predictions)}
    if task in TOKEN_F1_TASKS:
        scores["token_f1"] = float(np.mean([token_f1(r, p) for r, p in zip(references, predictions)]))
    if task == "asr":
        refs = [normalize_transcript(r) for r in references]
        if sum(len(r) for r in refs):
            scores["cer"] = character_error_rate(refs, [normalize_transcript(p) for p in predictions])
    return scores


def majority_answers(tasks: Sequence[str], question_types: Sequence[str], targets: Sequence[str]) -> dict[str, str]:
    """The most frequent target per task and per "image_qa/<question type>" (ties: the first seen)."""
    groups: dict[str, Counter] = {}
    for task, kind, target in zip(tasks, question_types, targets):
        key = target.strip()
        groups.setdefault(task, Counter())[key] += 1
        if task == "image_qa" and kind:
            groups.setdefault(f"image_qa/{kind}", Counter())[key] += 1
    return {group: counts.most_common(1)[0][0] for group, counts in groups.items()}


def sft_metrics(
    tasks: Sequence[str], question_types: Sequence[str], references: Sequence[str], predictions: Sequence[str],
    majority: dict[str, str] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Per-task scores (`{task}_{score}`), image-QA per question type (`image_qa_{type}_accuracy`), the
    majority baselines on the same rows (`..._majority_{score}`; for all of image QA also
    `image_qa_majority_by_type_accuracy`, each question answered with its type's majority) and the row
    counts (`{task}_rows`)."""
    majority = majority or {}
    metrics = {}
    groups: dict[tuple[str, str], list[int]] = {}
    for index, (task, kind) in enumerate(zip(tasks, question_types)):
        groups.setdefault((task, task), []).append(index)
        if task == "image_qa" and kind:
            groups.setdefault((task, f"image_qa_{kind}"), []).append(index)
    for (task, name), rows in sorted(groups.items()):
        refs = [references[i] for i in rows]
        metrics.update({f"{name}_{k}": v for k, v in task_scores(refs, [predictions[i] for i in rows], task).items()})
        baseline = majority.get(task if name == task else f"image_qa/{name[len('image_qa_'):]}")
        if baseline is not None:
            scores = task_scores(refs, [baseline] * len(refs), task)
            metrics.update({f"{name}_majority_{k}": v for k, v in scores.items()})
        if name == task:
            metrics[f"{task}_rows"] = len(rows)
        if name == "image_qa" and any(question_types[i] for i in rows):
            # the stronger baseline: each question answered with its own type's majority answer
            guesses = [majority.get(f"image_qa/{question_types[i]}", baseline or "") for i in rows]
            metrics["image_qa_majority_by_type_accuracy"] = accuracy(refs, guesses)
    return metrics


# ------------------------------------------------------------------------------------------------ trainer


class StageETrainer(MuOmniStageTrainer):
    """Stage E on a `MuOmniForConditionalGeneration` (or a bare `MuOmniThinkerForConditionalGeneration`):
    trains the thinker's language model and projectors, keeps its encoders frozen in eval mode (and the
    talker, codec and vocoder frozen too). Metric: per-task scores of greedy generations (`sft_metrics`).

    Args (beyond `Trainer`'s):
        data_collator: a `MuOmniSFTCollator` (its `prompts` builds the generation batches).
        majority: `majority_answers(...)` of the train split, for the baselines.
        max_new_tokens: {task: cap} for generation (`default_max_new_tokens` for other tasks).
    """

    stage = "E"
    trainable_modules = ("thinker.language_model", "thinker.vision_projector", "thinker.audio_projector")
    frozen_eval_modules = ("thinker.audio_tower", "thinker.visual")
    metric_names = ("image_qa_accuracy", "image_caption_accuracy", "asr_cer", "speech_qa_accuracy", "chat_token_f1")

    def __init__(
        self, *args, majority: dict[str, str] | None = None, max_new_tokens: dict[str, int] | None = None,
        default_max_new_tokens: int = 48, projector_learning_rate: float | None = None, **kwargs,
    ):  # fmt: skip
        model = kwargs.get("model", args[0] if args else None)
        if not hasattr(model, "thinker"):  # a bare thinker: the same modules without the prefix
            self.trainable_modules = tuple(name.removeprefix("thinker.") for name in self.trainable_modules)
            self.frozen_eval_modules = tuple(name.removeprefix("thinker.") for name in self.frozen_eval_modules)
        else:
            speech = tuple(name for name in ("talker", "codec", "vocoder") if getattr(model, name, None) is not None)
            self.frozen_eval_modules = self.frozen_eval_modules + speech
        self.majority = majority or {}
        self.max_new_tokens = max_new_tokens or {}
        self.default_max_new_tokens = default_max_new_tokens
        if projector_learning_rate is not None and not (
            isinstance(projector_learning_rate, (int, float)) and projector_learning_rate > 0
        ):
            raise ValueError(f"projector_learning_rate must be a positive number, got {projector_learning_rate!r}")
        self.projector_learning_rate = projector_learning_rate
        super().__init__(*args, **kwargs)
        self.args.remove_unused_columns = False  # the collator reads the raw task / messages / image / audio columns
        if self.args.label_names is None:  # `forward(*args, **kwargs)` hides `labels` from Trainer's signature check
            self.label_names = ["labels"]

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """`Trainer.create_optimizer`, with the projectors' parameters in their own groups at
        `projector_learning_rate` when it is set (the projectors start from scratch, the language model
        does not); the scheduler scales every group alike."""
        optimizer = super().create_optimizer(model)
        if self.projector_learning_rate is None:
            return optimizer
        prefixes = tuple(name + "." for name in self.trainable_modules if name.endswith("_projector"))
        projector = {id(p) for name, p in self.model.named_parameters() if name.startswith(prefixes)}
        groups = []
        for group in optimizer.param_groups:
            moved = [p for p in group["params"] if id(p) in projector]
            kept = [p for p in group["params"] if id(p) not in projector]
            settings = {key: value for key, value in group.items() if key != "params"}
            groups += [{**settings, "params": kept}] if kept else []
            groups += [{**settings, "params": moved, "lr": self.projector_learning_rate}] if moved else []
        optimizer.param_groups[:] = groups
        return optimizer

    def generate_answers(self, dataset) -> list[str]:
        """Greedy answers to every row of `dataset` (batched by task, left-padded prompts)."""
        tokenizer = self.data_collator.processor.tokenizer
        stop = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(tokenizer.im_end_token)]
        tasks = list(dataset["task"])
        answers = [""] * len(tasks)
        order = sorted(range(len(tasks)), key=lambda i: tasks[i])
        batch_size = self.args.per_device_eval_batch_size
        for task in dict.fromkeys(tasks[i] for i in order):
            rows = [i for i in order if tasks[i] == task]
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                inputs = self._prepare_inputs(self.data_collator.prompts([dataset[i] for i in chunk]))
                cap = self.max_new_tokens.get(task, self.default_max_new_tokens)
                output = self.model.generate(
                    **inputs, do_sample=False, max_new_tokens=cap, eos_token_id=stop,
                    pad_token_id=tokenizer.pad_token_id, use_cache=True,
                )  # fmt: skip
                new_tokens = output[:, inputs["input_ids"].shape[1] :]
                for i, text in zip(chunk, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                    answers[i] = text.strip()
        return answers

    def compute_stage_metrics(self, dataset) -> dict[str, float]:
        predictions = self.generate_answers(dataset)
        return sft_metrics(
            list(dataset["task"]), list(dataset["question_type"]), list(dataset["target"]), predictions, self.majority
        )


# ------------------------------------------------------------------------------------------------ assembly


def load_strictly(model_class, path: str, name: str):
    """`model_class.from_pretrained(path)`, refusing any missing, unexpected or mis-shaped key."""
    if not isinstance(path, (str, os.PathLike)) or not os.path.isdir(path):
        raise ValueError(f"previous[{name!r}] must be a saved {model_class.__name__} directory, got {path!r}")
    # MuOmni's own strict loading would refuse first; this message names the stage input instead
    model, info = model_class.from_pretrained(path, output_loading_info=True, strict=False)
    problems = [f"{kind}: {sorted(map(str, keys))}" for kind, keys in sorted(info.items()) if keys]
    if problems:
        raise ValueError(
            f"previous[{name!r}] ({path}) does not load strictly into {model_class.__name__}: " + "; ".join(problems)
        )
    return model


def install_weights(target: torch.nn.Module, source: torch.nn.Module, name: str) -> None:
    """Copy `source`'s state dict into `target` (a submodule of the assembled model), every key exactly."""
    expected, given = target.state_dict(), source.state_dict()
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(given) if expected[k].shape != given[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError(
            f"the {name} checkpoint does not fit the assembled model: missing {missing}, unexpected {unexpected}, "
            f"shape mismatches {[(k, tuple(given[k].shape), tuple(expected[k].shape)) for k in mismatched]}"
        )
    target.load_state_dict(given, strict=True)


# previous[key] -> (class to load, the MuOmniConfig / thinker sub-config it defines, the assembled model's module)
COMPONENTS = {
    "thinker_lm": (MuOmniForCausalLM, "thinker.text_config", "thinker.language_model"),
    "audio_encoder": (MuOmniAudioEncoderForCTC, "thinker.audio_config", "thinker.audio_tower"),
    "vision_encoder": (MuOmniVisionEncoder, "thinker.vision_config", "thinker.visual"),
    "talker": (MuOmniTalkerForConditionalGeneration, "talker_config", "talker"),
    "codec": (MuOmniCodec, "codec_config", "codec"),
    "vocoder": (MuOmniNeuralVocoder, "vocoder_config", "vocoder"),
}


def assemble_muomni(
    config: MuOmniConfig, previous: dict[str, str] | None, allow_random_init: bool = False
) -> tuple[MuOmniForConditionalGeneration, MuOmniProcessor, list[str]]:
    """Build a `MuOmniForConditionalGeneration` from the earlier stages' checkpoints and its processor.

    `previous` keys: "thinker_lm" (a `MuOmniForCausalLM` dir), "tokenizer", "audio_encoder" (a
    `MuOmniAudioEncoderForCTC` dir), "vision_encoder" (a `MuOmniVisionEncoder` dir) are required;
    "talker" + "codec" (+ "vocoder" for `vocoder_type="neural"`) give the speech side, without which
    the model is text-output only (`enable_audio_output=False`). Each component's config is its
    checkpoint's (what was trained); the rest (media token ids, projectors) is `config`'s. Every
    weight must load: missing, unexpected or mis-shaped keys are a ValueError naming them.

    `allow_random_init=True` (tests only) leaves the missing required components randomly initialised
    with `config`'s sub-configs; the tokenizer is required regardless.

    Returns:
        (model, processor, names of randomly initialised components).
    """
    previous = dict(previous or {})
    missing = [key for key in REQUIRED_STAGES if not previous.get(key)]
    if missing and not allow_random_init:
        raise ValueError(
            f"stage E needs the outputs of earlier stages, missing previous[...] keys: {missing} "
            f"(required: {list(REQUIRED_STAGES)}; only tests may pass allow_random_init=True to skip the weights)"
        )
    if "tokenizer" in missing:
        raise ValueError("previous['tokenizer'] (stage A's tokenizer) is required, even with allow_random_init=True")
    if bool(previous.get("talker")) != bool(previous.get("codec")):
        raise ValueError("previous['talker'] and previous['codec'] come together (stage D): give both or neither")
    loaded = {key: load_strictly(cls, previous[key], key) for key, (cls, *_) in COMPONENTS.items() if previous.get(key)}

    settings = config.to_dict()
    for key, model in loaded.items():
        path = COMPONENTS[key][1].split(".")
        section = settings if len(path) == 1 else settings["thinker_config"]
        section[path[-1]] = model.config.to_dict()
    speech = "talker" in loaded
    vocoder_type = settings["vocoder_config"].get("vocoder_type", "griffin_lim")
    if speech and vocoder_type == "neural" and "vocoder" not in loaded:
        raise ValueError("vocoder_type='neural' needs previous['vocoder'] (stage D's neural vocoder)")
    if config.enable_audio_output and not speech:
        logger.warning("Stage E: no talker / codec from stage D; the assembled model is text-output only")
    settings["enable_audio_output"] = speech
    # a Trainer-saved language model says use_cache=False (TrainingArguments.use_cache); inference wants the cache
    settings["thinker_config"]["text_config"]["use_cache"] = True
    if not speech:  # no talker is built, but its config must still agree with the thinker
        settings["talker_config"]["thinker_hidden_size"] = settings["thinker_config"]["text_config"]["hidden_size"]
    model = MuOmniForConditionalGeneration(MuOmniConfig.from_dict(settings))
    for key, source in loaded.items():
        install_weights(model.get_submodule(COMPONENTS[key][2]), source, key)
    random_init = [key for key in REQUIRED_STAGES if key != "tokenizer" and key not in loaded]
    if random_init:
        logger.warning("Stage E: randomly initialised %s (allow_random_init=True)", random_init)

    processor = build_processor(model.config, previous)
    tokenizer = processor.tokenizer
    if len(tokenizer) > model.config.thinker_config.text_config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the thinker's vocabulary only "
            f"{model.config.thinker_config.text_config.vocab_size}"
        )
    stop = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(tokenizer.im_end_token)]
    for generation_config in (model.generation_config, model.thinker.generation_config):
        generation_config.eos_token_id, generation_config.pad_token_id = stop, tokenizer.pad_token_id
        generation_config.use_cache = True
    return model, processor, random_init


def build_processor(config: MuOmniConfig, previous: dict[str, str]) -> MuOmniProcessor:
    """The processor of the assembled model: stage A's tokenizer, the image processor saved with the
    vision encoder and the feature extractor saved with the audio encoder (defaults when absent),
    checked against the encoders' image size and mel bins."""
    thinker = config.thinker_config
    tokenizer = MuOmniTokenizer.from_pretrained(previous["tokenizer"])
    side = thinker.vision_config.image_size
    vision_dir, audio_dir = previous.get("vision_encoder"), previous.get("audio_encoder")
    if vision_dir and os.path.isfile(os.path.join(vision_dir, "preprocessor_config.json")):
        image_processor = MuOmniImageProcessor.from_pretrained(vision_dir)
    else:
        image_processor = MuOmniImageProcessor(size={"height": side, "width": side})
    if audio_dir and os.path.isfile(os.path.join(audio_dir, "preprocessor_config.json")):
        feature_extractor = MuOmniFeatureExtractor.from_pretrained(audio_dir)
    else:
        feature_extractor = MuOmniFeatureExtractor(feature_size=thinker.audio_config.num_mel_bins)
    if (image_processor.size["height"], image_processor.size["width"]) != (side, side):
        raise ValueError(f"the image processor makes {image_processor.size} images, the vision encoder takes {side}")
    if feature_extractor.feature_size != thinker.audio_config.num_mel_bins:
        raise ValueError(
            f"the feature extractor makes {feature_extractor.feature_size} mel bins, the audio encoder takes "
            f"{thinker.audio_config.num_mel_bins}"
        )
    return MuOmniProcessor.from_config(config, image_processor, feature_extractor, tokenizer)


# ------------------------------------------------------------------------------------------------ recipe

# Chosen for the `tiny` preset on the built-in tiny data (4200 SFT rows): ~3-4 minutes on 2 CPU cores.
STAGE_E_TRAINING_DEFAULTS = {
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32,
    "num_train_epochs": 1,
    "learning_rate": 5e-4,
    "weight_decay": 0.0,
    "warmup_steps": 0.05,
    "lr_scheduler_type": "cosine",
    "max_grad_norm": 1.0,
    "logging_steps": 10,
    "eval_strategy": "epoch",
    "save_strategy": "no",
    "report_to": "none",
    "remove_unused_columns": False,  # the collator reads the raw task / messages / image / audio columns
}
# Stage options (not TrainingArguments fields), also accepted in `training_overrides`:
#   include_image_questions  also train on every question of datasets["images"]["train"] (not only the
#                            image_qa rows the sft split samples from them); None (the default): when there is
#                            such a split, True and False as they say. On the built-in
#                            tiny data (stages A-D of one demo run, validation split) one epoch with them
#                            (~10.4k rows, 650 steps) scored image-QA 0.34 against 0.205 for two epochs
#                            without (4.2k rows, 525 steps), chat token-F1 0.157 vs 0.163, captions 0.43 vs 0.42
#   tasks                    the SFT tasks to train and score (None: all of them)
#   max_new_tokens           {task: generation cap}; None: the longest train target of the task + 8 tokens
#   projector_learning_rate  the peak learning rate of the (new) vision and audio projectors; None: learning_rate
STAGE_E_OPTIONS = {"include_image_questions": None, "tasks": None, "max_new_tokens": None,
                   "projector_learning_rate": None}  # fmt: skip


def _generation_caps(tokenizer, tasks: Sequence[str], targets: Sequence[str]) -> dict[str, int]:
    lengths = [len(ids) for ids in tokenizer(list(targets), add_special_tokens=False)["input_ids"]]
    caps: dict[str, int] = {}
    for task, length in zip(tasks, lengths):
        caps[task] = max(caps.get(task, 0), length + 8)
    return caps


def run_stage_e(
    config: MuOmniConfig,
    datasets: dict,
    output_dir: str,
    previous: dict[str, str] | None = None,
    training_overrides: dict | None = None,
    seed: int = 0,
    *,
    allow_random_init: bool = False,
) -> StageResult:
    """Assemble the model from `previous` (see `assemble_muomni`), fine-tune it on `datasets["sft"]`
    (and `datasets["images"]` questions), score it, and save model + processor to `output_dir`.

    Args:
        config: the MuOmni config (component configs come from the checkpoints in `previous`).
        datasets: {"sft": DatasetDict with train and validation (and optionally test) splits, columns
            task / messages / image / audio / target; optionally "images" (question types, extra questions)}.
        output_dir: where the model, the processor and `training_curves.png` go.
        previous: earlier stages' outputs: "thinker_lm", "tokenizer", "audio_encoder", "vision_encoder"
            (required), "talker", "codec", "vocoder" (optional).
        training_overrides: `TrainingArguments` fields replacing `STAGE_E_TRAINING_DEFAULTS` and the stage
            options of `STAGE_E_OPTIONS`.
        seed: initialisation of the projectors, data order.
        allow_random_init: tests only: missing encoders / language model are randomly initialised.

    Returns:
        `StageResult("E", outputs={"muomni": output_dir}, metrics)`: `eval_*` and `test_*` per-task scores
        with their majority baselines (see `sft_metrics`), losses, and `random_init_<component>` flags.
    """
    if not isinstance(config, MuOmniConfig):
        raise TypeError(f"config must be a MuOmniConfig, got {type(config).__name__}")
    sft = check_splits(datasets, "sft", SFT_COLUMNS, ("train", "validation"))
    images = datasets.get("images")
    args, options = stage_training_arguments(
        output_dir, seed, STAGE_E_TRAINING_DEFAULTS, training_overrides, STAGE_E_OPTIONS
    )
    tasks = options["tasks"]
    os.makedirs(output_dir, exist_ok=True)
    set_seed(seed)
    model, processor, random_init = assemble_muomni(config, previous, allow_random_init)

    lookup = question_type_lookup(images) if images is not None else {}
    include = options["include_image_questions"]
    if include is None:
        include = images is not None and "train" in images
    if include and (images is None or "train" not in images):
        raise ValueError("include_image_questions=True needs datasets['images'] with a train split")
    train = build_sft_split(sft["train"], images["train"] if include else None, lookup, include, tasks)
    validation = build_sft_split(sft["validation"], type_lookup=lookup, tasks=tasks)
    test = build_sft_split(sft["test"], type_lookup=lookup, tasks=tasks) if "test" in sft and len(sft["test"]) else None
    train_tasks, train_targets = list(train["task"]), list(train["target"])
    majority = majority_answers(train_tasks, list(train["question_type"]), train_targets)
    caps = options["max_new_tokens"] or _generation_caps(processor.tokenizer, train_tasks, train_targets)

    trainer = StageETrainer(
        model=model, args=args, train_dataset=train, eval_dataset=validation,
        data_collator=MuOmniSFTCollator(processor), majority=majority, max_new_tokens=caps,
        projector_learning_rate=options["projector_learning_rate"],
    )  # fmt: skip
    train_output = trainer.train()
    metrics = {"train_loss": train_output.training_loss, "train_runtime": train_output.metrics["train_runtime"]}
    metrics.update(trainer.evaluate())
    if test is not None:
        metrics.update(trainer.evaluate(test, metric_key_prefix="test", metric_dataset=test))
    metrics.update({f"random_init_{name}": 1.0 for name in random_init})

    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    push_stage_to_hub(trainer.args, output_dir, "E")
    return StageResult(stage="E", outputs={"muomni": output_dir}, metrics=float_metrics(metrics))


__all__ = [
    "COMPONENTS",
    "REQUIRED_STAGES",
    "STAGE_E_OPTIONS",
    "STAGE_E_TRAINING_DEFAULTS",
    "MuOmniSFTCollator",
    "StageETrainer",
    "assemble_muomni",
    "build_processor",
    "build_sft_split",
    "install_weights",
    "load_strictly",
    "majority_answers",
    "question_type_lookup",
    "run_stage_e",
    "sft_conversation",
    "sft_metrics",
    "task_scores",
    "token_f1",
]
