"""Text-to-speech speed on CPU: `MuOmniForTextToSpeech.speak` (text -> talker codes -> codec log-mel -> waveform).

For every preset (`--presets`, default `tiny` and `micro`) and vocoder (`--vocoders`, default Griffin-Lim and
the neural vocoder) one fresh process builds an untrained model and makes its talker produce exactly
`--frames` frames (default 50 and 250, i.e. 2 s and 10 s of audio): end of speech is suppressed and
`max_frames` caps the utterance. Untrained weights run at the speed of trained ones of the same sizes (the
audio is noise). The process reports:

speak      the real-time factor (compute seconds / audio seconds) of `speak`, median of `--repeats` runs
           after a warm-up, in wall and process CPU time, and split into talker / codec / vocoder CPU time
           by timers around the three stages that `speak` calls (`talker.generate`, `codec.decode`, `vocode`).
memory     for the first (cold) `speak` of each length: the peak RSS above the RSS before it (Linux VmHWM,
           reset first), and tracemalloc's peak (Python-level allocations only: torch's tensor memory is
           not traced by tracemalloc, so this column shows the Python overhead, not the tensors).
streaming  `speak_stream` at `--chunk-frames` (default 6 and 12): the latency of its first chunk and its
           total time, against the latency of the whole `speak` (which returns nothing before the end).

On a shared machine prefer `--threads 1` (oversubscribed OpenMP threads spin) and read the CPU column.

    python bench/bench_tts.py
    python bench/bench_tts.py --presets tiny --vocoders neural --frames 50 --repeats 5 --threads 1
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
import tracemalloc

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_utils import memory_kib, print_table, reset_peak_rss  # noqa: E402
from speech_synthesis import HARVARD_SENTENCES  # noqa: E402

import muomni.modeling_muomni as modeling_muomni  # noqa: E402
from muomni import MuOmniForTextToSpeech, get_preset_config, train_tokenizer  # noqa: E402

TEXT = "The birch canoe slid on the smooth planks."
STAGES = ("talker", "codec", "vocoder")


class StageTimers:
    """Process CPU time spent in the talker, the codec and the vocoder while `speak` runs: wrappers around
    the three calls `speak` makes (`model.talker.generate`, `model.codec.decode`, the module-level `vocode`).
    CPU rather than wall time, so that other processes on a shared machine do not distort the split."""

    def __init__(self, model):
        self.seconds = dict.fromkeys(STAGES, 0.0)
        model.talker.generate = self._timed("talker", model.talker.generate)
        model.codec.decode = self._timed("codec", model.codec.decode)
        modeling_muomni.vocode = self._timed("vocoder", modeling_muomni.vocode)

    def _timed(self, stage: str, function):
        def timed(*args, **kwargs):
            start = time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[stage] += time.process_time() - start

        return timed

    def reset(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)


def build_model(preset: str, vocoder: str) -> tuple[MuOmniForTextToSpeech, torch.Tensor]:
    """An untrained text-to-speech model whose talker never ends speech by itself, and the text's ids (1, L)."""
    tokenizer = train_tokenizer(HARVARD_SENTENCES * 4, vocab_size=1000)
    config = get_preset_config(preset, vocoder_config={"vocoder_type": vocoder})
    torch.manual_seed(0)
    model = MuOmniForTextToSpeech(config).eval()
    with torch.no_grad():
        model.talker.codebook_heads[0].bias[config.talker_config.end_of_speech_id] = -1e9
    return model, tokenizer(TEXT, return_tensors="pt")["input_ids"]


def _child(preset: str, vocoder: str, frames_list: list[int], chunk_frames_list: list[int], threads: int,
           repeats: int, queue) -> None:  # fmt: skip
    torch.set_num_threads(threads)
    model, text_ids = build_model(preset, vocoder)
    timers = StageTimers(model)
    config = model.config
    seconds_per_frame = config.codec_config.downsample_factor * config.vocoder_config.hop_length / config.sampling_rate
    results = {
        "parameters": {
            name: sum(p.numel() for p in part.parameters()) if part is not None else 0
            for name, part in (("talker", model.talker), ("codec", model.codec), ("vocoder", model.vocoder))
        },
        "text_tokens": text_ids.shape[1],
        "runs": [],
    }
    for frames in frames_list:
        # memory of the first (cold) run of this length
        rss_before = memory_kib("VmRSS")
        can_reset = reset_peak_rss()
        output = model.speak(text_ids, max_frames=frames)
        peak_rss = (memory_kib("VmHWM") - rss_before) / 1024 if can_reset else float("nan")
        if output.code_lengths.tolist() != [frames]:
            raise RuntimeError(f"expected {frames} frames, the talker made {output.code_lengths.tolist()}")
        audio_seconds = output.audio[0].shape[0] / config.sampling_rate
        tracemalloc.start()
        model.speak(text_ids, max_frames=frames)
        python_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()

        wall, cpu, stages = [], [], {stage: [] for stage in STAGES}
        for _ in range(repeats):
            timers.reset()
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            model.speak(text_ids, max_frames=frames)
            wall.append(time.perf_counter() - start_wall)
            cpu.append(time.process_time() - start_cpu)
            for stage in STAGES:
                stages[stage].append(timers.seconds[stage])

        streaming = []
        for chunk_frames in chunk_frames_list:
            first, first_cpu, total, streamed = [], [], [], 0
            for _ in range(repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                stream = model.speak_stream(text_ids, chunk_frames=chunk_frames, max_frames=frames)
                chunk = next(stream)
                first.append(time.perf_counter() - start)
                first_cpu.append(time.process_time() - start_cpu)
                streamed = chunk.audio[0].shape[0]
                for chunk in stream:
                    streamed += chunk.audio[0].shape[0]
                total.append(time.perf_counter() - start)
            if streamed != output.audio[0].shape[0]:
                raise RuntimeError(f"streamed {streamed} samples, speak made {output.audio[0].shape[0]}")
            streaming.append(
                {
                    "chunk_frames": chunk_frames,
                    "first": statistics.median(first),
                    "first_cpu": statistics.median(first_cpu),
                    "total": statistics.median(total),
                }
            )
        results["runs"].append(
            {
                "frames": frames,
                "audio_seconds": audio_seconds,
                "expected_seconds": frames * seconds_per_frame,
                "wall": statistics.median(wall),
                "cpu": statistics.median(cpu),
                "stages": {stage: statistics.median(values) for stage, values in stages.items()},
                "peak_rss_mib": peak_rss,
                "tracemalloc_peak_mib": python_peak,
                "streaming": streaming,
            }
        )
    results["rss_mib"] = memory_kib("VmRSS") / 1024
    queue.put(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["tiny", "micro"])
    parser.add_argument("--vocoders", nargs="+", default=["griffin_lim", "neural"], choices=["griffin_lim", "neural"])
    parser.add_argument("--frames", nargs="+", type=int, default=[50, 250])
    parser.add_argument("--chunk-frames", nargs="+", type=int, default=[6, 12])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    print(f"# bench_tts: torch {torch.__version__}, {args.threads} thread(s), load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; text {TEXT!r}; median of {args.repeats} runs "
          "after a warm-up")  # fmt: skip

    context = multiprocessing.get_context("spawn")
    speak_rows, stream_rows = [], []
    for preset in args.presets:
        for vocoder in args.vocoders:
            queue = context.Queue()
            process = context.Process(
                target=_child,
                args=(preset, vocoder, args.frames, args.chunk_frames, args.threads, args.repeats, queue),
            )
            process.start()
            result = queue.get()
            process.join()
            parameters = result["parameters"]
            size = "/".join(f"{parameters[stage] / 1e6:.2f}" for stage in STAGES)
            for run in result["runs"]:
                audio = run["audio_seconds"]
                stages = run["stages"]
                speak_rows.append(
                    [
                        preset, vocoder, size, str(run["frames"]), f"{audio:.2f}",
                        *(f"{stages[stage]:.3f}" for stage in STAGES),
                        f"{run['wall']:.3f}", f"{run['cpu']:.3f}", f"{run['wall'] / audio:.3f}",
                        f"{run['cpu'] / audio:.3f}", f"{run['peak_rss_mib']:.0f}", f"{run['tracemalloc_peak_mib']:.2f}",
                    ]  # fmt: skip
                )
                for stream in run["streaming"]:
                    stream_rows.append(
                        [
                            preset, vocoder, str(run["frames"]), str(stream["chunk_frames"]),
                            f"{stream['first']:.3f}", f"{stream['first_cpu']:.3f}", f"{stream['total']:.3f}",
                            f"{run['wall']:.3f}", f"{run['cpu']:.3f}", f"{stream['first_cpu'] / run['cpu']:.2f}",
                        ]  # fmt: skip
                    )
            print(f"  done: {preset} / {vocoder} (process RSS at the end {result['rss_mib']:.0f} MiB, "
                  f"{result['text_tokens']} text tokens)", flush=True)  # fmt: skip

    print("\n## speak: text -> waveform")
    header = [
        "preset", "vocoder", "params talker/codec/vocoder (M)", "frames", "audio (s)", "talker CPU (s)",
        "codec CPU (s)", "vocoder CPU (s)", "speak wall (s)", "speak CPU (s)", "RTF (wall)", "RTF (CPU)",
        "peak RSS (MiB)", "tracemalloc peak (MiB)",
    ]  # fmt: skip
    print_table(header, speak_rows)
    print("\n## speak_stream: first-chunk latency vs the whole speak")
    header = [
        "preset", "vocoder", "frames", "chunk_frames", "first chunk wall (s)", "first chunk CPU (s)",
        "stream total wall (s)", "speak wall (s)", "speak CPU (s)", "first chunk / speak (CPU)",
    ]  # fmt: skip
    print_table(header, stream_rows)
    print(json.dumps({"load_average_at_end": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
