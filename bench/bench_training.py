"""Training throughput of every stage (samples/s and tokens/s) at the `tiny` and `micro` presets on CPU.

    python bench/bench_training.py [--presets tiny micro] [--scale tiny] [--warmup 2] [--steps 8]
                                   [--data-dir /tmp/muomni-bench-data] [--output-dir DIR] [--threads N]
                                   [--stages abcde] [--block-size N]

Each stage recipe runs unchanged (its own data preparation, collator, batch size and optimizer) for
`warmup + steps` optimizer steps, stages A..E in order, each fed the outputs of the earlier ones (stage
D's codec, vocoder and talker are timed separately). Evaluation is switched off (the recipes' own
`evaluate()` calls return nothing) so that only training is timed. The clock starts when the last
warm-up step ends and stops when the last step ends, so it covers data loading and collation,
forward, backward and the optimizer; samples and "tokens" are counted from the batches of the timed
steps. What a token is depends on the stage, and the table says it: text tokens (A, E), mel frames
(B, codec, vocoder), caption tokens (C, whose samples are images), codec frames (talker).
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict

import torch

import muomni  # noqa: F401
from muomni.training import cli
from muomni.training.trainer import MuOmniStageTrainer

# trainer class -> (label, token unit, tokens of a batch)
UNITS = {
    "StageATrainer": ("A thinker LM", "text tokens", lambda b: b["input_ids"].numel()),
    "StageBTrainer": ("B audio encoder", "mel frames", lambda b: int(b["feature_attention_mask"].sum())),
    "StageCTrainer": ("C vision encoder", "caption tokens", lambda b: int(b["attention_mask"].sum())),
    "StageDCodecTrainer": ("D codec", "mel frames", lambda b: int(b["mel_mask"].sum())),
    "StageDVocoderTrainer": ("D vocoder", "mel frames", lambda b: b["mel"].shape[0] * b["mel"].shape[-1]),
    "StageDTalkerTrainer": ("D talker", "codec frames", lambda b: int(b["codes_mask"].sum())),
    "StageETrainer": ("E SFT", "text tokens", lambda b: int(b["attention_mask"].sum())),
}


def batch_size(batch: dict) -> int:
    first = next(v for v in batch.values() if isinstance(v, torch.Tensor))
    return first.shape[0]


class Recorder:
    """Wraps `MuOmniStageTrainer.training_step` to time steps and count samples and tokens."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.records = defaultdict(lambda: {"ends": [], "samples": [], "tokens": []})
        self.order = []

    def install(self):
        recorder, original = self, MuOmniStageTrainer.training_step

        def training_step(trainer, model, inputs, num_items_in_batch=None):
            loss = original(trainer, model, inputs, num_items_in_batch)
            record = recorder.records[id(trainer)]
            if not record["ends"]:
                recorder.order.append((id(trainer), type(trainer).__name__))
            _, _, count = UNITS.get(type(trainer).__name__, (None, "tokens", lambda b: 0))
            record["samples"].append(batch_size(inputs))
            record["tokens"].append(count(inputs))
            record["ends"].append(time.perf_counter())
            return loss

        MuOmniStageTrainer.training_step = training_step
        MuOmniStageTrainer.evaluate = lambda self, *args, **kwargs: {}

    def rows(self, preset: str) -> list[dict]:
        rows = []
        for key, name in self.order:
            record = self.records[key]
            label, unit, _ = UNITS.get(name, (name, "tokens", None))
            ends = record["ends"]
            if len(ends) <= self.warmup:
                continue
            seconds = ends[-1] - ends[self.warmup - 1] if self.warmup else ends[-1] - ends[0]
            timed = slice(self.warmup, None) if self.warmup else slice(1, None)
            samples, tokens = sum(record["samples"][timed]), sum(record["tokens"][timed])
            steps = len(ends[timed])
            rows.append({
                "preset": preset, "stage": label, "steps": steps, "batch": record["samples"][-1],
                "s/step": seconds / steps, "samples/s": samples / seconds, "tokens/s": tokens / seconds, "unit": unit,
            })  # fmt: skip
        self.records.clear()
        self.order.clear()
        return rows


def print_table(rows: list[dict]) -> None:
    header = ("preset", "stage", "batch", "steps", "s/step", "samples/s", "tokens/s", "token unit")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            f"| {r['preset']} | {r['stage']} | {r['batch']} | {r['steps']} | {r['s/step']:.3f} | "
            f"{r['samples/s']:.1f} | {r['tokens/s']:,.0f} | {r['unit']} |"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "micro"])
    parser.add_argument("--scale", default="tiny", help="built-in data scale (default tiny: the demo's data)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per stage (default 2)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per stage (default 8)")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "muomni-bench-data"))
    parser.add_argument("--output-dir", default=None, help="stage outputs (default: a temporary folder)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--num-proc", type=int, default=2, help="processes that build the data (default 2)")
    parser.add_argument("--stages", default="abcde", help="stages to run, in order (default abcde; later ones need earlier ones)")
    parser.add_argument("--block-size", type=int, default=None, help="stage A block size (default: the context length)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"data: built-in {args.scale!r}; {args.warmup} warm-up + {args.steps} timed steps per stage")
    cli.prepare_builtin_dataset(args.data_dir, seed=0, scale=args.scale, num_proc=args.num_proc)
    datasets = cli.load_saved_builtin(args.data_dir, cli.STAGES)
    recorder = Recorder(args.warmup)
    recorder.install()
    overrides = {
        "max_steps": args.warmup + args.steps, "eval_strategy": "no", "logging_steps": 10**6,
        "disable_tqdm": True, "save_strategy": "no",
    }  # fmt: skip

    def stage_overrides(stage: str) -> dict:
        if stage == "a" and args.block_size:
            return {**overrides, "block_size": args.block_size}
        return dict(overrides)

    rows = []
    output_root = args.output_dir or tempfile.mkdtemp(prefix="muomni-bench-")
    try:
        for preset in args.presets:
            config = cli.resolve_config(preset, None)
            previous = {}
            for stage in args.stages:
                stage_dir = os.path.join(output_root, preset, f"stage_{stage}")
                started = time.perf_counter()
                result = cli.recipe(stage)(config, datasets, stage_dir, previous=dict(previous),
                                           training_overrides=stage_overrides(stage), seed=0)
                previous.update(result.outputs)
                cli.sync_vocab_size(config, previous)
                print(f"{preset} stage {stage.upper()}: {time.perf_counter() - started:.1f} s in all (data preparation included)",
                      file=sys.stderr)
            rows += recorder.rows(preset)
    finally:
        if args.output_dir is None:
            shutil.rmtree(output_root, ignore_errors=True)
    print()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
