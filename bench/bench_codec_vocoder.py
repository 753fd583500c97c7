"""Codec reconstruction by frame rate, Griffin-Lim filterbank inversion, and vocoder speed on CPU.

Three parts (`--parts`, all by default):

codec     trains `MuOmniCodec` for `--steps` steps on 1 s crops of speech, once per downsample factor
          (`--factors`, default 2 4 8: 50 / 25 / 12.5 Hz), and reports on held-out sentences the mel
          L1 (normalised units), the mel spectral distance (RMS dB over bins, mean over frames), each
          codebook's utilisation (fraction of its codes used) and perplexity, and the bitrate.
inversion compares the two filterbank inversions of `MuOmniGriffinLim` (NNLS vs clamped pseudo-inverse)
          on held-out speech: mel error of the inverted magnitude, its log-spectral distance to the
          true STFT magnitude, and the mel error of the Griffin-Lim waveform.
speed     real-time factor (compute seconds / audio seconds, median of `--repeats` runs after a
          warm-up) and peak memory of Griffin-Lim and of the (untrained) neural vocoder at the `tiny`
          and `micro` presets, for 1, 5 and 10 s of mel. Each measurement runs in a fresh process; peak
          memory is the peak RSS of its first run above the RSS before it (Linux VmHWM, reset first).

Speech is eSpeak NG (Harvard sentences, six voices, random rate and pitch) when the `espeakng-loader`
package is installed, else the synthetic speech-like signal of `speech_synthesis.speech_like`.
Both wall and process CPU time are reported; on a shared machine prefer `--threads 1` (oversubscribed
OpenMP threads spin) and read the CPU column.

    python bench/bench_codec_vocoder.py
    python bench/bench_codec_vocoder.py --parts codec --steps 600 --factors 4
    python bench/bench_codec_vocoder.py --parts speed --threads 2
"""

import argparse
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_utils import memory_kib, print_table, reset_peak_rss  # noqa: E402
from speech_synthesis import HARVARD_SENTENCES, VOICES, espeak_available, speech_like, synthesize  # noqa: E402

from muomni import MuOmniCodec, MuOmniCodecConfig, MuOmniGriffinLim  # noqa: E402
from muomni import MuOmniNeuralVocoder, MuOmniVocoderConfig  # noqa: E402
from muomni.configuration import get_preset  # noqa: E402
from muomni.modeling_vocoder import griffin_lim, invert_mel_filterbank, mel_filters, mel_to_power  # noqa: E402
from muomni.processing import MuOmniFeatureExtractor  # noqa: E402

DB_PER_UNIT = 40.0  # one normalised log-mel unit is 4 log10 units of power = 40 dB


def load_speech(synthetic: bool, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor], str]:
    """(train clips, held-out clips, source name): the first 48 sentences train, the last 12 are held out."""
    rng = random.Random(seed)
    if synthetic or not espeak_available():
        clips = [speech_like(i, 2.0 + (i % 3) * 0.5) for i in range(120)]
        return clips[:96], clips[96:], "synthetic speech-like"
    train, held_out = [], []
    for index, sentence in enumerate(HARVARD_SENTENCES):
        voices = rng.sample(VOICES, 3) if index < 48 else VOICES[:2]
        for voice in voices:
            clip = synthesize(sentence, voice, rate=rng.randint(130, 190), pitch=rng.randint(30, 70))
            (train if index < 48 else held_out).append(clip)
    return train, held_out, "eSpeak NG (Harvard sentences, 6 voices)"


def extract(extractor: MuOmniFeatureExtractor, clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    features = extractor(clips, sampling_rate=16000, return_tensors="pt")
    mask_name = extractor.model_input_names[1]  # the frame mask's name ("attention_mask")
    return features["input_features"], features[mask_name].bool()


def random_crops(mels: list[torch.Tensor], batch_size: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` random windows of `frames` frames from the (M, F_i) mels: (batch_size, M, frames)."""
    crops = []
    for index in torch.randint(len(mels), (batch_size,), generator=generator).tolist():
        mel = mels[index]
        if mel.shape[-1] < frames:
            mel = torch.nn.functional.pad(mel, (0, frames - mel.shape[-1]), mode="replicate")
        start = int(torch.randint(mel.shape[-1] - frames + 1, (1,), generator=generator))
        crops.append(mel[:, start : start + frames])
    return torch.stack(crops)


@torch.no_grad()
def evaluate_codec(codec: MuOmniCodec, mel: torch.Tensor, mask: torch.Tensor) -> dict:
    codec.eval()
    output = codec(mel, mel_mask=mask)
    error = output.reconstruction - mel  # (B, M, F)
    mel_l1 = error.abs().mean(dim=1)[mask].mean().item()
    distance_db = (DB_PER_UNIT * error).pow(2).mean(dim=1).sqrt()[mask].mean().item()
    factor = codec.config.downsample_factor
    frame_mask = torch.nn.functional.pad(mask, (0, -mask.shape[-1] % factor)).view(mask.shape[0], -1, factor).any(-1)
    usage, perplexity = [], []
    for i in range(codec.config.num_quantizers):
        counts = torch.bincount(output.codes[:, i][frame_mask], minlength=codec.config.codebook_size).float()
        probabilities = counts / counts.sum()
        usage.append((counts > 0).float().mean().item())
        entropy = -(probabilities[probabilities > 0] * probabilities[probabilities > 0].log()).sum()
        perplexity.append(entropy.exp().item())
    return {"mel_l1": mel_l1, "distance_db": distance_db, "usage": usage, "perplexity": perplexity}


def bench_codec(args, train_mels, held_mel, held_mask) -> None:
    print(f"\n## Codec: {args.steps} steps, batch {args.batch_size} x {args.crop_frames} frames, "
          f"hidden {args.hidden_size}, {args.num_quantizers} x {args.codebook_size} codes of dim {args.codebook_dim}")
    rows = []
    for factor in args.factors:
        torch.manual_seed(args.seed)
        config = MuOmniCodecConfig(
            downsample_factor=factor, hidden_size=args.hidden_size, num_layers=args.num_layers,
            codebook_dim=args.codebook_dim, num_quantizers=args.num_quantizers, codebook_size=args.codebook_size,
        )  # fmt: skip
        codec = MuOmniCodec(config).train()
        optimizer = torch.optim.AdamW(codec.parameters(), lr=args.lr, weight_decay=0.0)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        )
        generator = torch.Generator().manual_seed(args.seed)
        start = time.perf_counter()
        for step in range(args.steps):
            batch = random_crops(train_mels, args.batch_size, args.crop_frames, generator)
            output = codec(batch)
            optimizer.zero_grad()
            output.loss.backward()
            optimizer.step()
            schedule.step()
            if args.verbose and step % 50 == 0:
                print(f"  factor {factor} step {step}: loss {output.loss.item():.4f} "
                      f"recon {output.reconstruction_loss.item():.4f} usage {output.codebook_usage.tolist()}")
        seconds = time.perf_counter() - start
        metrics = evaluate_codec(codec, held_mel, held_mask)
        bitrate = config.num_quantizers * math.log2(config.codebook_size) * config.frame_rate
        rows.append((factor, config.frame_rate, bitrate, metrics, seconds))

    header = [
        "factor", "frame rate (Hz)", "bitrate (bit/s)", "held-out mel L1", "mel distance (dB)",
        "utilisation per codebook", "perplexity per codebook", "train time (s)",
    ]  # fmt: skip
    print_table(
        header,
        [
            [
                str(factor), f"{rate:g}", f"{bitrate:.0f}", f"{metrics['mel_l1']:.4f}", f"{metrics['distance_db']:.2f}",
                " / ".join(f"{u:.2f}" for u in metrics["usage"]),
                " / ".join(f"{p:.0f}" for p in metrics["perplexity"]),
                f"{seconds:.0f}",
            ]  # fmt: skip
            for factor, rate, bitrate, metrics, seconds in rows
        ],
    )


def bench_inversion(args, held_clips, extractor) -> None:
    print("\n## Filterbank inversion + Griffin-Lim on held-out speech "
          f"({len(held_clips)} clips, {args.gl_iters} GL iterations)")
    config = MuOmniVocoderConfig(griffin_lim_iters=args.gl_iters)
    filters = mel_filters(config)
    window = torch.hann_window(config.n_fft)
    rows = []
    for method, iterations in (("pinv", 0), ("nnls", 25), ("nnls", 50), ("nnls", 100), ("nnls", 200)):
        mel_errors, distances, gl_errors, seconds = [], [], [], 0.0
        for clip in held_clips:
            clip = clip[: clip.shape[0] // config.hop_length * config.hop_length][None]
            mel = extractor.log_mel(clip, normalize=True)  # (1, M, F)
            start = time.perf_counter()
            power = invert_mel_filterbank(mel_to_power(mel), filters, iterations, method)
            seconds += time.perf_counter() - start
            peak = (mel * 4 - 4).amax()
            rebuilt = (torch.maximum(torch.clamp(filters.T @ power, min=1e-10).log10(), peak - 8) + 4) / 4
            mel_errors.append((rebuilt - mel).abs().mean().item())
            stft = torch.stft(clip, config.n_fft, config.hop_length, window=window, return_complex=True)
            true_power = stft.abs()[..., :-1] ** 2  # (1, K, F): the frames the front end keeps
            ours, truth = (10 * torch.clamp(p, min=1e-10).log10() for p in (power, true_power))
            floor = truth.max() - 80
            distances.append((ours.clamp(min=floor) - truth.clamp(min=floor)).abs().mean().item())
            waveform = griffin_lim(
                power.sqrt(), config.n_fft, config.hop_length, args.gl_iters, config.griffin_lim_momentum
            )
            gl_errors.append((extractor.log_mel(waveform, normalize=True) - mel).abs().mean().item())
        name = "clamp(pinv)" if method == "pinv" else f"NNLS, {iterations} iterations"
        rows.append(
            [
                name, f"{statistics.mean(mel_errors):.4f}", f"{statistics.mean(distances):.2f}",
                f"{statistics.mean(gl_errors):.4f}", f"{seconds:.2f}",
            ]  # fmt: skip
        )
    header = [
        "inversion", "mel L1 of the magnitude", "log-spectral distance to the true magnitude (dB)",
        "mel L1 after Griffin-Lim", "inversion time (s)",
    ]  # fmt: skip
    print_table(header, rows)


def _speed_child(kind: str, seconds: int, threads: int, repeats: int, queue) -> None:
    torch.set_num_threads(threads)
    frames = seconds * 100
    mel = torch.rand(1, 128, frames, generator=torch.Generator().manual_seed(0)) * 1.5 - 1.0
    if kind == "griffin_lim":
        vocoder = MuOmniGriffinLim(MuOmniVocoderConfig())
    else:
        fields = dict(get_preset(kind)["vocoder_config"], vocoder_type="neural")
        vocoder = MuOmniNeuralVocoder(MuOmniVocoderConfig(**fields)).eval()

    @torch.no_grad()
    def run():
        return vocoder(mel) if kind == "griffin_lim" else vocoder(mel).waveform

    # memory of the first (cold) run: the peak RSS it reaches above the RSS before it
    rss_before = memory_kib("VmRSS")
    can_reset = reset_peak_rss()
    run()
    working = (memory_kib("VmHWM") - rss_before) / 1024 if can_reset else float("nan")
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    parameters = sum(p.numel() for p in vocoder.parameters())
    queue.put({"wall": statistics.median(wall), "cpu": statistics.median(cpu), "working_mib": working,
               "rss_mib": rss_before / 1024, "parameters": parameters})


def bench_speed(args) -> None:
    print(f"\n## Vocoder speed on CPU ({args.threads} thread(s), median of {args.repeats} runs after a warm-up)")
    rows = []
    context = multiprocessing.get_context("spawn")
    config = MuOmniVocoderConfig()
    kinds = {
        "griffin_lim": f"Griffin-Lim ({config.griffin_lim_iters} it., NNLS {config.mel_inversion_iters} it.)",
        "tiny": "neural, tiny preset",
        "micro": "neural, micro preset",
    }
    for kind, name in kinds.items():
        for seconds in (1, 5, 10):
            queue = context.Queue()
            process = context.Process(target=_speed_child, args=(kind, seconds, args.threads, args.repeats, queue))
            process.start()
            result = queue.get()
            process.join()
            rows.append(
                [
                    name, f"{result['parameters'] / 1e6:.2f} M", str(seconds), f"{result['wall']:.3f}",
                    f"{result['cpu']:.3f}", f"{result['wall'] / seconds:.3f}", f"{result['cpu'] / seconds:.3f}",
                    f"{result['working_mib']:.0f}",
                ]  # fmt: skip
            )
    header = [
        "vocoder", "parameters", "audio (s)", "wall (s)", "CPU (s)", "RTF (wall)", "RTF (CPU)",
        "peak working memory (MiB)",
    ]  # fmt: skip
    print_table(header, rows)
    print(f"(process RSS before the runs, imports included: {result['rss_mib']:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = ["codec", "inversion", "speed"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--factors", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--crop-frames", type=int, default=96)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--codebook-dim", type=int, default=64)
    parser.add_argument("--num-quantizers", type=int, default=2)
    parser.add_argument("--codebook-size", type=int, default=128)
    parser.add_argument("--gl-iters", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--synthetic", action="store_true", help="use the synthetic speech-like signal, not eSpeak NG")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# bench_codec_vocoder: torch {torch.__version__}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    if "codec" in args.parts or "inversion" in args.parts:
        extractor = MuOmniFeatureExtractor()
        start = time.perf_counter()
        train_clips, held_clips, source = load_speech(args.synthetic, args.seed)
        train_seconds = sum(clip.shape[0] for clip in train_clips) / 16000
        held_seconds = sum(clip.shape[0] for clip in held_clips) / 16000
        print(f"speech: {source}; {len(train_clips)} training clips ({train_seconds:.0f} s), {len(held_clips)} "
              f"held-out ({held_seconds:.0f} s), made in {time.perf_counter() - start:.1f} s")
        if "codec" in args.parts:
            train_mels = [extractor.log_mel(clip[None], normalize=True)[0] for clip in train_clips]
            held_mel, held_mask = extract(extractor, held_clips)
            bench_codec(args, train_mels, held_mel, held_mask)
        if "inversion" in args.parts:
            bench_inversion(args, held_clips, extractor)
    if "speed" in args.parts:
        bench_speed(args)
    print(json.dumps({"load_average_at_end": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
