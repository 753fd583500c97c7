"""The `README.md` model card of an exported MuOmni checkpoint.

Built with `huggingface_hub.ModelCardData` (YAML metadata: `library_name`, `pipeline_tag`, tags,
license, datasets, and the training run's metrics as `model-index` eval results) and a Markdown
body: what the model is, the metrics as a table, how to load it with and without the `muomni`
package, which pipelines work, and the version policy.

`pipeline_tag` is `any-to-any`: the checkpoint takes text, images and speech and answers in text or
speech, which is the Hub's any-to-any task (as for Qwen2.5-Omni). `image-text-to-text` would describe
only one of its input/output combinations; it and the other single-modality tasks are listed as tags.
"""

import math
import re
from collections.abc import Mapping

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .version import TRANSFORMERS_REQUIREMENT

PIPELINE_TAG = "any-to-any"
DEFAULT_TAGS = (
    "muomni",
    "omni",
    "thinker-talker",
    "multimodal",
    "image-text-to-text",
    "automatic-speech-recognition",
    "text-to-speech",
    "custom_code",
    "safetensors",
)
# The training stage of a metric decides its task when its name does not (DESIGN.md's stages A-E).
STAGE_TASKS = {
    "a": "text-generation",
    "b": "automatic-speech-recognition",
    "c": "zero-shot-image-classification",  # image-text retrieval, CLIP-style
    "d": "text-to-speech",
    "e": "any-to-any",
}
TASK_NAMES = {
    "text-generation": "Text generation (thinker LM)",
    "automatic-speech-recognition": "Speech recognition (CTC)",
    "zero-shot-image-classification": "Image-text retrieval",
    "text-to-speech": "Speech synthesis",
    "any-to-any": "Multimodal instruction following",
}
METRIC_PREFIXES = ("eval_", "test_", "validation_", "val_")
# (pipeline task, what it loads, what it returns)
PIPELINES = (
    ("text-generation", "`MuOmniForConditionalGeneration`", "chat answer (messages in, text out)"),
    ("image-text-to-text", "`MuOmniForConditionalGeneration`", "answer about an image"),
    ("automatic-speech-recognition", "`MuOmniForSpeechRecognition`", "transcript (CTC head of the audio encoder)"),
    ("text-to-speech", "`MuOmniForTextToSpeech`", '`{"audio", "sampling_rate"}`'),
    ("any-to-any", "`MuOmniForConditionalGeneration`", "text or speech; needs `torchvision` for image input"),
)


def flatten_metrics(metrics: Mapping | None) -> list[tuple[str | None, str, float]]:
    """(stage, metric name, value) for `{name: value}` or `{stage: {name: value}}` (the `metrics` of each
    stage's `StageResult`, e.g. `{r.stage: r.metrics for r in results}`)."""
    if metrics is None:
        return []
    if not isinstance(metrics, Mapping):
        raise TypeError(
            f"metrics must be a dict of name -> value or stage -> {{name: value}}, got {type(metrics).__name__}"
        )
    flat = []
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            flat.extend((str(key), str(name), inner) for name, inner in value.items())
        else:
            flat.append((None, str(key), value))
    for stage, name, value in flat:
        where = f"{stage}/{name}" if stage else name
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"metric {where!r} must be a finite number, got {value!r}")
    return [(stage, name, float(value)) for stage, name, value in flat]


def _stage_letter(stage: str | None) -> str | None:
    match = re.match(r"^(?:stage[\s_-]?)?([a-e])(?:$|[\s_-])", stage.strip().lower()) if stage else None
    return match.group(1) if match else None


def metric_task(stage: str | None, name: str) -> str:
    """The Hub task type a metric reports on, from its name, else its stage, else any-to-any."""
    lowered = name.lower()
    tokens = set(re.split(r"[^a-z0-9@]+", lowered))
    if tokens & {"perplexity", "ppl", "bpb"} or "bits_per_byte" in lowered:
        return "text-generation"
    if "round_trip" in lowered or "roundtrip" in lowered or tokens & {"mel", "tts"}:
        return "text-to-speech"
    if tokens & {"cer", "wer"}:
        return "automatic-speech-recognition"
    if tokens & {"recall", "retrieval", "r1", "r5"} or any(token.startswith("r@") for token in tokens):
        return "zero-shot-image-classification"
    return STAGE_TASKS.get(_stage_letter(stage), "any-to-any")


def metric_type(name: str) -> str:
    lowered = name.lower()
    for prefix in METRIC_PREFIXES:
        if lowered.startswith(prefix):
            return lowered[len(prefix) :]
    return lowered


def eval_results(metrics: Mapping | None, dataset: str) -> list[EvalResult]:
    """One `EvalResult` per measured metric, on `dataset` (the evaluation data's name)."""
    results = []
    for stage, name, value in flatten_metrics(metrics):
        task = metric_task(stage, name)
        results.append(
            EvalResult(
                task_type=task,
                task_name=TASK_NAMES[task],
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=metric_type(name),
                metric_name=f"{stage}/{name}" if stage else name,
                metric_value=value,
            )
        )
    return results


def _parameter_lines(model) -> list[str]:
    if model is None:
        return []
    lines = []
    for name, child in model.named_children():
        children = list(child.named_children()) if name == "thinker" else [(None, child)]
        for inner, module in children:
            count = sum(p.numel() for p in module.parameters())
            label = f"{name}.{inner}" if inner else name
            lines.append(f"| `{label}` | {type(module).__name__} | {count / 1e6:.2f} M |")
    total = sum(p.numel() for p in model.parameters())
    return ["| module | class | parameters |", "|---|---|---|", *lines, f"| **total** | | **{total / 1e6:.2f} M** |"]


def _metrics_table(results: list[EvalResult]) -> list[str]:
    if not results:
        return ["No evaluation metrics were recorded for this checkpoint."]
    rows = ["| task | metric | value | dataset |", "|---|---|---|---|"]
    for result in results:
        rows.append(
            f"| {result.task_name} | `{result.metric_name}` | {result.metric_value:.4g} | {result.dataset_name} |"
        )
    return rows


def build_model_card(
    config,
    metrics: Mapping | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    *,
    model=None,
    model_name: str = "muomni",
    repo_id: str | None = None,
    eval_dataset: str | None = None,
    language: str | list[str] | None = "en",
    tags: list[str] | None = None,
    base_model: str | list[str] | None = None,
) -> ModelCard:
    """The model card of a `MuOmniConfig` checkpoint (see the module docstring).

    `metrics`: `{name: value}` or `{stage: {name: value}}`, finite numbers (ValueError otherwise);
    `eval_dataset` names the data they were measured on (default: the first of `datasets`, else
    "muomni-builtin"). `model`, when given, adds a parameter count per component.
    """
    if datasets is not None and (isinstance(datasets, str) or not all(isinstance(d, str) for d in datasets)):
        raise TypeError(f"datasets must be a list of dataset ids, got {datasets!r}")
    if not isinstance(license, str) or not license:
        raise ValueError(f"license must be a non-empty license id such as 'apache-2.0', got {license!r}")
    dataset = eval_dataset or (datasets[0] if datasets else "muomni-builtin")
    results = eval_results(metrics, dataset)
    card_data = ModelCardData(
        language=language,
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *(tags or [])])),
        datasets=list(datasets) if datasets else None,
        base_model=base_model,
        metrics=sorted({result.metric_type for result in results}) or None,
        model_name=model_name,
        eval_results=results or None,
    )
    body = _card_body(config, results, model, model_name, repo_id or f"<user>/{model_name}")
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}")


def _card_body(config, results, model, model_name: str, repo_id: str) -> str:
    thinker = config.thinker_config
    text, audio, vision = thinker.text_config, thinker.audio_config, thinker.vision_config
    audio_out = (
        f"talker {config.talker_config.num_hidden_layers} layers x {config.talker_config.hidden_size} -> RVQ codec "
        f"({config.codec_config.num_quantizers} x {config.codec_config.codebook_size} codes at "
        f"{config.codec_config.frame_rate:g} Hz) -> {config.vocoder_config.vocoder_type} vocoder at "
        f"{config.sampling_rate} Hz"
        if config.enable_audio_output
        else "disabled in this checkpoint (text output only)"
    )
    pipeline_rows = [f"| `{task}` | {loads} | {returns} |" for task, loads, returns in PIPELINES]
    lines = [
        f"# {model_name}",
        "",
        "A MuOmni Thinker-Talker omni model: text, images and speech in; text and "
        "speech out. Built on `transformers` (configs, models, processor, pipelines); weights in safetensors.",
        "",
        f"- **Thinker**: decoder-only LM, {text.num_hidden_layers} layers, hidden {text.hidden_size}, "
        f"{text.num_attention_heads} heads ({text.num_key_value_heads} KV), vocabulary {text.vocab_size}, "
        f"context {text.max_position_embeddings}"
        + (f", {text.num_experts} experts (top-{text.num_experts_per_tok})" if text.num_experts else ""),
        f"- **Audio encoder**: {audio.num_mel_bins} mel bins, {audio.encoder_layers} layers x {audio.d_model}, "
        f"character CTC head ({audio.ctc_vocab_size} symbols)",
        f"- **Vision encoder**: ViT {vision.image_size}px / patch {vision.patch_size}, "
        f"{vision.num_hidden_layers} layers x {vision.hidden_size}, {vision.num_output_tokens} tokens per image",
        f"- **Speech output**: {audio_out}",
        f"- Written by muomni {config.muomni_version}",
        "",
        *(["## Size", "", *_parameter_lines(model), ""] if model is not None else []),
        "## Evaluation",
        "",
        "Metrics measured at the end of the training run (also in the `model-index` metadata above):",
        "",
        *_metrics_table(results),
        "",
        "## How to use",
        "",
        "### With the `muomni` package",
        "",
        "```python",
        "import muomni  # registers MuOmni with the transformers Auto classes",
        "from transformers import AutoModel, AutoProcessor",
        "",
        f'model = AutoModel.from_pretrained("{repo_id}")',
        f'processor = AutoProcessor.from_pretrained("{repo_id}")',
        'messages = [{"role": "user", "content": "Hello!"}]',
        "inputs = processor.apply_chat_template(",
        '    messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"',
        ")",
        "output = model.generate(**inputs, max_new_tokens=32, return_audio=True)",
        'print(processor.batch_decode(output.sequences[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
        "waveform = output.audio[0]  # float32 at model.config.sampling_rate",
        "```",
        "",
        "### Without the package",
        "",
        "The modeling, configuration and processing code ships in this repository as flat files (generated "
        "from the muomni sources when the checkpoint was saved; do not edit them). It needs "
        f"`transformers{TRANSFORMERS_REQUIREMENT}`, `torch`, `tokenizers`, `numpy`, `pillow` and `soundfile`:",
        "",
        "```python",
        "from transformers import AutoModel, AutoProcessor, pipeline",
        "",
        f'model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True)',
        f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
        f'tts = pipeline("text-to-speech", model="{repo_id}", trust_remote_code=True)',
        "```",
        "",
        "When `muomni` is installed, its classes take precedence over the bundled code.",
        "",
        "### Pipelines",
        "",
        "With `import muomni`, or with `trust_remote_code=True` without it:",
        "",
        "| task | model class | output |",
        "|---|---|---|",
        *pipeline_rows,
        "",
        "## Files and versions",
        "",
        "- `model.safetensors` (or shards + `model.safetensors.index.json`): the only weights; MuOmni refuses "
        "pickled weights (`pytorch_model.bin`, ...).",
        "- `config.json`, `generation_config.json`, `processor_config.json`, `tokenizer.json`, "
        "`tokenizer_config.json`, `chat_template.jinja`; `auto_map` entries point at the bundled code.",
        f"- `muomni_version` in `config.json` ({config.muomni_version}): the checkpoint loads with muomni of the "
        "same major version that is at least as new; other versions refuse it with a clear error.",
        "",
        "## Limitations",
        "",
        "MuOmni is a tiny research and teaching model trained on small data: expect short, simple answers "
        "and robotic speech, and do not use it where mistakes matter.",
    ]
    return "\n".join(lines) + "\n"
