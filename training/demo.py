"""`muomni demo`: build the built-in data, train every stage at the `tiny` preset, then use the result
the way a user would, through the transformers tools only.

    muomni demo [--output-dir muomni-demo] [--seed 0] [--scale tiny] [--num-proc 2] [--quick] [--resume]

1. the built-in data set (speech, images, text, chat, SFT) into `DIR/data` (progress bars);
2. `muomni-train all --preset tiny` into `DIR/stage_a` ... `DIR/stage_e`, the final checkpoint in `DIR/muomni`;
3. `AutoModel` / `AutoProcessor` / `pipeline(...)` on that folder, on held-out test rows: a chat answer,
   image QA (the image saved as `DIR/demo_image.png`), speech recognition (reference vs hypothesis),
   and a spoken answer written to `DIR/demo_spoken_answer.wav` (and transcribed back);
4. the held-out metrics of every stage next to their baselines, printed and written to `DIR/metrics.md`.

`--quick` is a smoke test (the `test` scale, 5 steps per stage, no evaluation during training): it
checks that everything runs in about two minutes, and its numbers mean nothing.
"""

import argparse
import os
import sys
import time
from collections.abc import Mapping, Sequence

# --quick: every stage a few steps on the `test` scale (stage A's blocks must fit its few documents)
QUICK_OVERRIDES = {
    "a": {"max_steps": 5, "eval_strategy": "no", "block_size": 64},
    "b": {"max_steps": 5, "eval_strategy": "no"},
    "c": {"max_steps": 5, "eval_strategy": "no"},
    "d": {"max_steps": 5, "eval_strategy": "no", "talker": {"roundtrip_sentences": 2}},
    "e": {"max_steps": 5, "eval_strategy": "no"},
}
QUICK_SCALE = "test"
GREEDY = {"do_sample": False}


def build_parser() -> argparse.ArgumentParser:
    from .data import SCALES

    parser = argparse.ArgumentParser(
        prog="muomni demo",
        description="Build the built-in data, train MuOmni (all stages, tiny preset), and show what it does.",
    )
    parser.add_argument("--output-dir", default="muomni-demo", help="where everything goes (default: muomni-demo)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data and the training (default: 0)")
    parser.add_argument("--scale", choices=sorted(SCALES), default=None, help="built-in data scale (default: tiny)")
    parser.add_argument("--num-proc", type=int, default=2, help="processes that generate the data (default: 2)")
    parser.add_argument("--quick", action="store_true", help="smoke test: test-scale data, 5 steps per stage")
    parser.add_argument("--resume", action="store_true", help="keep the stages an earlier run of this demo finished")
    return parser


# --------------------------------------------------------------------------------------------------
# the held-out metrics table


def _lookup(metrics: Mapping, name: str, prefixes: Sequence[str] = ("test_", "eval_", "")) -> tuple:
    """(value, split) of the first `prefix + name` present in `metrics`."""
    splits = {"test_": "test", "eval_": "validation", "": "validation"}
    for prefix in prefixes:
        value = metrics.get(prefix + name)
        if value is not None:
            return value, splits[prefix]
    return None, None


# (stage, label, metric, baseline metric, baseline label, lower is better)
TABLE_ROWS = (
    ("a", "thinker perplexity", "perplexity", "unigram_perplexity", "unigram", True),
    ("a", "thinker bits per byte", "bits_per_byte", "unigram_bits_per_byte", "unigram", True),
    ("b", "ASR CER", "cer", None, None, True),
    ("b", "ASR WER", "wer", None, None, True),
    ("b", "ASR CER, voices unheard in training", "heldout_cer", None, None, True),
    ("c", "image retrieval R@1", "recall_at_1", "chance_recall_at_1", "chance", False),
    ("c", "image retrieval R@5", "recall_at_5", "chance_recall_at_5", "chance", False),
    ("d", "codec mel L1 (resynthesis)", "codec_mel_l1", None, None, True),
    ("d", "talker round-trip CER", "talker_roundtrip_cer", "reference_asr_cer", "ASR on the eSpeak original", True),
    # the fair baseline answers each question with the majority answer of its type ("no" to is-there questions, ...)
    ("e", "image QA accuracy", "image_qa_accuracy", "image_qa_majority_by_type_accuracy",
     "majority answer per question type", False),
    ("e", "speech QA accuracy", "speech_qa_accuracy", "speech_qa_majority_accuracy", "majority answer", False),
)


def metrics_table(metrics: Mapping[str, Mapping]) -> str:
    """A Markdown table of the held-out metrics and their baselines: each row on the test split where
    the stage scored one, else on validation; a baseline is shown on the same split as the metric (a
    baseline measured on another split only is labelled with it)."""
    lines = [
        "| stage | metric | split | MuOmni | baseline |",
        "|---|---|---|---|---|",
    ]
    for stage, label, name, baseline_name, baseline_label, lower in TABLE_ROWS:
        stage_metrics = metrics.get(stage) or {}
        prefixes = ("test_", "eval_", "")
        if baseline_name:  # the first split that has both, so the two numbers compare
            paired = [p for p in prefixes if stage_metrics.get(p + name) is not None
                      and stage_metrics.get(p + baseline_name) is not None]  # fmt: skip
            prefixes = tuple(paired) + prefixes
        value, split = _lookup(stage_metrics, name, prefixes)
        if value is None:
            continue
        baseline = "-"
        if baseline_name:
            order = ("test_", "eval_", "") if split == "test" else ("eval_", "", "test_")
            base_value, base_split = _lookup(stage_metrics, baseline_name, order)
            if base_value is not None:
                where = "" if base_split == split else f", {base_split}"
                baseline = f"{base_value:.4g} ({baseline_label}{where})"
        arrow = "lower is better" if lower else "higher is better"
        lines.append(f"| {stage.upper()} | {label} ({arrow}) | {split} | {value:.4g} | {baseline} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# the trained model through the transformers tools


def _first(rows, predicate):
    for index in range(len(rows)):
        row = rows[index]
        if predicate(row):
            return row
    return rows[0]


def _shown(text: str) -> str:
    """`text` for the terminal: control characters (an untrained model writes some) as a middle dot."""
    return "".join(c if c.isprintable() else "\u00b7" for c in text)


def _is_heldout_voice(voice: str) -> bool:
    from .data import HELDOUT_ACCENTS, HELDOUT_VARIANTS

    accent, _, variant = voice.partition("+")
    return accent in HELDOUT_ACCENTS or variant in HELDOUT_VARIANTS


def showcase(checkpoint: str, datasets: Mapping, output_dir: str) -> dict:
    """Load `checkpoint` with AutoModel / AutoProcessor / pipeline and run it on held-out test rows.
    Prints what it does and returns {"chat", "image_qa", "asr", "speech"} results."""
    import numpy as np
    import soundfile
    from transformers import AutoModel, AutoProcessor, pipeline

    import muomni  # noqa: F401  (registers the MuOmni classes with the Auto classes)

    from .data import with_audio_arrays
    from .stage_e import sft_conversation

    results = {}
    model = AutoModel.from_pretrained(checkpoint)
    processor = AutoProcessor.from_pretrained(checkpoint)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"AutoModel -> {type(model).__name__} ({parameters / 1e6:.2f} M parameters); "
          f"AutoProcessor -> {type(processor).__name__}")

    # chat: a held-out conversation, answered by the text-generation pipeline
    chat = pipeline("text-generation", model=checkpoint)
    conversation = list(datasets["chat"]["test"][0]["messages"])
    prompt, reference = conversation[:-1], conversation[-1]["content"]
    (output,) = chat(prompt, max_new_tokens=40, **GREEDY)
    answer = output["generated_text"][-1]["content"].strip()
    print("\n[chat] pipeline('text-generation')")
    print(f"  user:      {_shown(prompt[-1]['content'])}")
    print(f"  MuOmni:    {_shown(answer)}")
    print(f"  reference: {_shown(reference)}")
    results["chat"] = {"question": prompt[-1]["content"], "answer": answer, "reference": reference}

    # image QA on a held-out test image
    sft_test = with_audio_arrays(datasets["sft"]["test"])
    row = _first(sft_test, lambda r: r["task"] == "image_qa")
    messages = sft_conversation(row)[:-1]
    image_path = os.path.join(output_dir, "demo_image.png")
    row["image"].convert("RGB").save(image_path)
    vqa = pipeline("image-text-to-text", model=checkpoint)
    (output,) = vqa(text=messages, generate_kwargs={"max_new_tokens": 12, **GREEDY})
    answer = output["generated_text"][-1]["content"].strip()
    question = "".join(p["text"] for p in messages[-1]["content"] if p["type"] == "text").strip()
    print(f"\n[image QA] pipeline('image-text-to-text') on a held-out test image ({image_path})")
    print(f"  question:    {_shown(question)}")
    print(f"  MuOmni:      {_shown(answer)}")
    print(f"  true answer: {row['target']}")
    results["image_qa"] = {"image": image_path, "question": question, "answer": answer, "reference": row["target"]}

    # speech recognition of held-out test speech (a voice never heard in training, if the split has one)
    speech_test = with_audio_arrays(datasets["speech"]["test"])
    row = _first(speech_test, lambda r: _is_heldout_voice(r["voice"]))
    audio = row["audio"]
    asr = pipeline("automatic-speech-recognition", model=checkpoint)
    hypothesis = asr({"raw": np.asarray(audio["array"], dtype=np.float32), "sampling_rate": audio["sampling_rate"]})
    hypothesis = hypothesis["text"].strip()
    print(f"\n[speech recognition] pipeline('automatic-speech-recognition'), held-out voice {row['voice']}")
    print(f"  reference:  {row['text']}")
    print(f"  hypothesis: {_shown(hypothesis)}")
    results["asr"] = {"voice": row["voice"], "reference": row["text"], "hypothesis": hypothesis}

    # a spoken answer: the chat answer (or, if the talker cannot say it, a held-out sentence) as speech
    if getattr(model.config, "enable_audio_output", False):
        tts = pipeline("text-to-speech", model=checkpoint)
        tts_targets = [t for task, t in zip(sft_test["task"], sft_test["target"]) if task == "tts"]
        answer = results["chat"]["answer"]
        candidates = ([answer] if any(c.isalpha() for c in answer) else []) + tts_targets[:1]
        for text in candidates:
            try:
                speech = tts(text)
                break
            except ValueError as error:  # empty or too long for the talker
                print(f"  (text-to-speech skipped {text[:40]!r}: {error})")
        else:
            speech = None
        if speech is not None:
            wav_path = os.path.join(output_dir, "demo_spoken_answer.wav")
            soundfile.write(wav_path, np.asarray(speech["audio"], dtype=np.float32).reshape(-1), speech["sampling_rate"])
            heard = asr({"raw": np.asarray(speech["audio"], dtype=np.float32).reshape(-1),
                         "sampling_rate": speech["sampling_rate"]})["text"].strip()
            seconds = np.asarray(speech["audio"]).size / speech["sampling_rate"]
            print(f"\n[spoken answer] pipeline('text-to-speech') -> {wav_path} ({seconds:.1f} s)")
            print(f"  text:             {_shown(text)}")
            print(f"  the ASR hears it: {_shown(heard)}")
            results["speech"] = {"text": text, "wav": wav_path, "seconds": seconds, "heard": heard}
        else:
            print("\n[spoken answer] skipped: nothing the talker could say")
    else:
        print("\n[spoken answer] skipped: the checkpoint has no talker (enable_audio_output=False)")
    return results


# --------------------------------------------------------------------------------------------------
# main


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be a non-negative integer, got {args.seed}")
    if args.num_proc < 1:
        parser.error(f"--num-proc must be a positive integer, got {args.num_proc}")
    scale = args.scale or (QUICK_SCALE if args.quick else "tiny")
    output_dir = os.path.abspath(args.output_dir)
    if os.path.isfile(output_dir):
        parser.error(f"--output-dir {args.output_dir!r} is a file")

    from .cli import (
        DATA_FOLDER, UsageError, distributed_state, metrics_from_results, prepare_builtin_dataset, resolve_config,
        train_all,
    )  # fmt: skip
    from .data import load_builtin_dataset

    state = distributed_state()
    started = time.perf_counter()
    say = print if state.is_main_process else (lambda *a, **k: None)
    say(f"MuOmni demo -> {output_dir} (scale {scale}, seed {args.seed}{', quick' if args.quick else ''})")

    say("\n[1/4] built-in data set")
    try:
        data_dir = prepare_builtin_dataset(os.path.join(output_dir, DATA_FOLDER), args.seed, scale, args.num_proc)
    except UsageError as error:
        parser.error(str(error))
    datasets = load_builtin_dataset(data_dir)
    data_seconds = time.perf_counter() - started

    say("\n[2/4] training stages A-E at the tiny preset")
    config = resolve_config("tiny", None)
    results = train_all(
        config, datasets, output_dir, QUICK_OVERRIDES if args.quick else None, seed=args.seed, resume=args.resume
    )
    metrics = metrics_from_results(results)
    checkpoint = os.path.join(output_dir, "muomni")
    if not state.is_main_process:
        return 0

    say(f"\n[3/4] the trained model, loaded from {checkpoint} with the transformers tools")
    showcase(checkpoint, datasets, output_dir)

    total = time.perf_counter() - started
    timings = ", ".join(
        [f"data {data_seconds:.0f} s"]
        + [f"{s.upper()} {metrics[s].get('stage_seconds') or 0:.0f} s" for s in metrics]
    )
    table = metrics_table(metrics)
    note = "\n\n(--quick: a smoke test on a handful of rows; the numbers mean nothing)" if args.quick else ""
    report = (
        f"# MuOmni demo: held-out metrics\n\nscale {scale}, seed {args.seed}, preset tiny; this run took "
        f"{total / 60:.1f} min; time per step ({timings}{', some from an earlier run' if args.resume else ''})"
        f"\n\n{table}{note}\n"
    )
    with open(os.path.join(output_dir, "metrics.md"), "w", encoding="utf-8") as handle:
        handle.write(report)
    say(f"\n[4/4] held-out metrics (also in {os.path.join(output_dir, 'metrics.md')})\n")
    say(table + note)
    say(f"\ndone in {total / 60:.1f} min ({timings}); all stage metrics in {os.path.join(output_dir, 'metrics.json')}")
    say(f"the model: {checkpoint} (AutoModel / AutoProcessor / pipeline after `import muomni`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
