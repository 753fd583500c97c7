# GENERATED FILE - DO NOT EDIT.
# Flat copy of `muomni.processing.feature_extraction_muomni` for loading with `trust_remote_code=True`,
# written by `python -m muomni.hub export-remote-code`. Edit the package source and regenerate.
"""`MuOmniFeatureExtractor`: waveforms -> 128-bin log-mel frames at 100 Hz, the mel front end all of MuOmni shares.

Notation: `B` batch, `S` samples, `M` mel bins, `K` frequency bins (n_fft // 2 + 1), `F` frames.

The math is Whisper's (`WhisperFeatureExtractor._torch_extract_fbank_features`): Hann-windowed STFT
(n_fft 400 = 25 ms, hop 160 = 10 ms, centred with reflect padding), power spectrum, Slaney mel
filterbank (0-8 kHz), log10 with a 1e-10 floor, dynamic range clamped to 8 (80 dB) below the clip's
maximum, then (x + 4) / 4. Three things differ from Whisper, on purpose:

- no padding to 30 s and no silent truncation: a batch is padded to its longest clip, and a clip
  longer than `max_length_seconds` is an error;
- each clip is reflect-padded on its own before batching and its maximum is taken over its real
  frames only, so a clip's features do not depend on what it is batched with (Whisper's last frame of
  a padded clip sees the zeros of the batch padding, and its maximum covers the padded frames);
- padded frames hold exactly `padding_value` (0.0) and are 0 in `attention_mask`.

A clip of `S` samples gives `num_frames(S) = S // hop_length` frames: the centred STFT yields
`1 + S // hop_length` frames and, like Whisper, the last one is dropped, so one second is exactly
100 frames. (Whisper computes the same S // hop_length frames for a clip alone, but its
`attention_mask` for a clip padded inside a batch counts ceil(S / hop_length) frames.)

Measured against `WhisperFeatureExtractor(feature_size=128)` on a 3 s chirp + noise: identical
(max abs difference 0.0) with Whisper's `padding="longest"`; with its default 30 s window every
frame but the last matches (< 1e-5) and the last differs by ~0.07, because its window reaches past
the clip into Whisper's zero padding instead of our reflection (`tests/test_feature_extraction.py`).

`log_mel_spectrogram` (and `MuOmniFeatureExtractor.log_mel`) is the same front end as a
differentiable torch function, for the codec, talker and vocoder, so every mel in MuOmni agrees.
"""

import math
import os
import warnings
from functools import lru_cache

import numpy as np
import soundfile
import torch
import torch.nn.functional as F
from transformers.audio_utils import mel_filter_bank
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import PaddingStrategy, TensorType

# Whisper's normalisation constants (log10 units): floor of the power mel, dynamic range kept below
# the maximum (8 = 80 dB), and the affine map (x + 4) / 4 that puts speech roughly in [-1, 1].
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0
LOG_OFFSET = 4.0
LOG_SCALE = 4.0

# A 2-D clip is one multichannel recording; its channel axis is the short one, at most this long.
MAX_CHANNELS = 8

_INT_SCALES = {np.dtype(np.int16): 1.0 / 32768.0, np.dtype(np.int32): 1.0 / 2147483648.0}
_TORCH_INT_SCALES = {torch.int16: 1.0 / 32768.0, torch.int32: 1.0 / 2147483648.0}


def log_mel_spectrogram(
    waveform: torch.Tensor, mel_filters: torch.Tensor, n_fft: int = 400, hop_length: int = 160
) -> torch.Tensor:
    """Log10 power mel spectrogram of equal-length waveforms, not normalised (Whisper's math).

    Args:
        waveform (`torch.Tensor` of shape `(S,)` or `(B, S)`): float audio, `S > n_fft // 2`.
        mel_filters (`torch.Tensor` of shape `(K, M)`): filterbank, `K = n_fft // 2 + 1`.

    Returns:
        `torch.Tensor` of shape `(M, F)` or `(B, M, F)` with `F = S // hop_length`: log10 of the mel
        power, floored at 1e-10. Differentiable with respect to `waveform`.
    """
    if waveform.dim() not in (1, 2):
        raise ValueError(f"waveform must have shape (S,) or (B, S), got {tuple(waveform.shape)}")
    if waveform.shape[-1] <= n_fft // 2:
        raise ValueError(
            f"waveform has {waveform.shape[-1]} samples; the centred STFT needs more than n_fft // 2 = {n_fft // 2}"
        )
    window = torch.hann_window(n_fft, device=waveform.device, dtype=waveform.dtype)
    stft = torch.stft(waveform, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = (stft[..., :-1].abs() ** 2).contiguous()  # (..., K, F): drop the last frame, like Whisper
    mel = mel_filters.to(power.dtype).T @ power  # (..., M, F)
    return torch.clamp(mel, min=LOG_FLOOR).log10()


def normalize_log_mel(
    log_mel: torch.Tensor, mask: torch.Tensor | None = None, padding_value: float = 0.0
) -> torch.Tensor:
    """Whisper's per-sample normalisation, computed over each clip's real frames only.

    Args:
        log_mel (`torch.Tensor` of shape `(B, M, F)`): output of `log_mel_spectrogram`.
        mask (`torch.Tensor` of shape `(B, F)`, *optional*): 1 for real frames, 0 for padding; every
            row needs at least one real frame. Without it every frame is real.

    Returns:
        `torch.Tensor` of shape `(B, M, F)`: `(max(x, x_max - 8) + 4) / 4` where `x_max` is the
        clip's maximum over its real frames; padded frames are exactly `padding_value`.
    """
    if mask is None:
        mask = torch.ones(log_mel.shape[0], log_mel.shape[-1], dtype=torch.bool, device=log_mel.device)
    real = mask.to(torch.bool)[:, None, :]  # (B, 1, F)
    peak = log_mel.masked_fill(~real, -torch.inf).amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    normalized = (torch.maximum(log_mel, peak - DYNAMIC_RANGE) + LOG_OFFSET) / LOG_SCALE
    return normalized.masked_fill(~real, padding_value)


@lru_cache(maxsize=16)
def _sinc_resample_kernel(
    orig: int, new: int, lowpass_filter_width: int, rolloff: float, beta: float
) -> tuple[torch.Tensor, int]:
    """Polyphase Kaiser-windowed sinc kernel for `orig -> new` (both already divided by their gcd).

    Returns the kernel of shape `(new, 1, 2 * width + orig)` (one filter per output phase) and `width`.
    """
    base_freq = min(orig, new) * rolloff  # low-pass cut-off, a little under the lower Nyquist frequency
    width = math.ceil(lowpass_filter_width * orig / base_freq)  # taps each side, in input samples
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig  # (1, 1, taps)
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx  # (new, 1, taps)
    t = (t * base_freq).clamp(-lowpass_filter_width, lowpass_filter_width)  # in zero crossings of the sinc
    kaiser = torch.i0(beta * torch.sqrt(1 - (t / lowpass_filter_width) ** 2))
    window = kaiser / torch.i0(torch.tensor(beta, dtype=torch.float64))
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / (math.pi * t))
    return sinc * window * (base_freq / orig), width


def resample_audio(
    waveform: torch.Tensor,
    orig_sampling_rate: int,
    target_sampling_rate: int,
    lowpass_filter_width: int = 64,
    rolloff: float = 0.9475937167399596,
    beta: float = 14.769656459379492,
) -> torch.Tensor:
    """Band-limited resampling with a Kaiser-windowed sinc filter (torchaudio's method, "kaiser_best" defaults).

    The filter cuts at `rolloff` times the lower of the two Nyquist frequencies (7.58 kHz for 16 kHz
    output), spans `lowpass_filter_width` zero crossings each side and is applied as a strided
    polyphase convolution, `O(S * taps)` for any pair of integer rates. Measured at 44.1 kHz -> 16 kHz:
    tones up to 7 kHz come through within 1e-5, tones at 8.3 kHz and above (which would alias) are
    attenuated by more than 140 dB.

    Args:
        waveform (`torch.Tensor` of shape `(..., S)`): float audio.

    Returns:
        `torch.Tensor` of shape `(..., ceil(S * target_sampling_rate / orig_sampling_rate))`.
    """
    for name, rate in (("orig_sampling_rate", orig_sampling_rate), ("target_sampling_rate", target_sampling_rate)):
        if not (_is_number(rate) and rate > 0 and rate == int(rate)):
            raise ValueError(f"{name} must be a positive integer, got {rate!r}")
    orig_sampling_rate, target_sampling_rate = int(orig_sampling_rate), int(target_sampling_rate)
    if orig_sampling_rate == target_sampling_rate:
        return waveform
    gcd = math.gcd(orig_sampling_rate, target_sampling_rate)
    orig, new = orig_sampling_rate // gcd, target_sampling_rate // gcd
    kernel, width = _sinc_resample_kernel(orig, new, lowpass_filter_width, rolloff, beta)
    kernel = kernel.to(device=waveform.device, dtype=waveform.dtype)

    shape = waveform.shape
    flat = waveform.reshape(-1, 1, shape[-1])  # (N, 1, S)
    flat = F.pad(flat, (width, width + orig))
    out = F.conv1d(flat, kernel, stride=orig)  # (N, new, S / orig): one output phase per channel
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)  # (N, S * new / orig), phases interleaved
    target_length = math.ceil(new * shape[-1] / orig)
    return out[:, :target_length].reshape(*shape[:-1], target_length)


class MuOmniFeatureExtractor(SequenceFeatureExtractor):
    r"""Log-mel feature extractor for the MuOmni audio encoder (Whisper's math, no 30 s window).

    Args:
        feature_size (`int`, defaults to 128): mel bins `M`.
        sampling_rate (`int`, defaults to 16000): the rate the model expects, in Hz.
        hop_length (`int`, defaults to 160): STFT hop in samples (10 ms, 100 frames/s).
        n_fft (`int`, defaults to 400): STFT size and Hann window length (25 ms).
        min_frequency / max_frequency (`float`, defaults to 0 / 8000): filterbank range in Hz.
        padding_value (`float`, defaults to 0.0): value of the padded frames of `input_features`.
        return_attention_mask (`bool`, defaults to `True`): return `attention_mask`.
        max_length_seconds (`float`, defaults to 30.0): longer clips are an error, never truncated.

    Calling it returns a [`BatchFeature`] with
        - `input_features` of shape `(B, M, F)`, `F` the frames of the longest clip (or of `max_length`);
        - `attention_mask` of shape `(B, F)`, 1 for the `num_frames(S_i)` real frames of clip `i`.

    `mel_filters` (`np.ndarray` of shape `(K, M)`, Slaney scale and norm) is rebuilt from the fields
    above on construction and is not saved in `preprocessor_config.json`, as in Whisper.
    """

    model_input_names = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 128,
        sampling_rate: int = 16000,
        hop_length: int = 160,
        n_fft: int = 400,
        min_frequency: float = 0.0,
        max_frequency: float = 8000.0,
        padding_value: float = 0.0,
        return_attention_mask: bool = True,
        max_length_seconds: float = 30.0,
        **kwargs,
    ):
        for name, value in (
            ("feature_size", feature_size), ("sampling_rate", sampling_rate),
            ("hop_length", hop_length), ("n_fft", n_fft),
        ):  # fmt: skip
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if hop_length > n_fft:
            raise ValueError(f"hop_length ({hop_length}) is larger than n_fft ({n_fft}): samples would be skipped")
        if not 0 <= min_frequency < max_frequency <= sampling_rate / 2:
            raise ValueError(
                f"need 0 <= min_frequency ({min_frequency}) < max_frequency ({max_frequency}) <= "
                f"sampling_rate / 2 ({sampling_rate / 2})"
            )
        if not max_length_seconds > 0:
            raise ValueError(f"max_length_seconds must be > 0, got {max_length_seconds!r}")
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.min_frequency = min_frequency
        self.max_frequency = max_frequency
        self.max_length_seconds = max_length_seconds
        self.mel_filters = mel_filter_bank(
            num_frequency_bins=1 + n_fft // 2,
            num_mel_filters=feature_size,
            min_frequency=min_frequency,
            max_frequency=max_frequency,
            sampling_rate=sampling_rate,
            norm="slaney",
            mel_scale="slaney",
        )  # (K, M), float64

    @property
    def min_num_samples(self) -> int:
        """Shortest accepted clip: the centred STFT reflect-pads n_fft // 2 samples, which needs more than that."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip of `num_samples` samples: `num_samples // hop_length` (100 per second at 16 kHz)."""
        return num_samples // self.hop_length

    def log_mel(self, waveform: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Log-mel of equal-length waveforms in torch with this extractor's settings (differentiable).

        Args:
            waveform (`torch.Tensor` of shape `(S,)` or `(B, S)`): float audio at `self.sampling_rate`.
            normalize (`bool`): apply the per-sample normalisation that `__call__` applies.

        Returns:
            `torch.Tensor` of shape `(M, F)` or `(B, M, F)`, `F = num_frames(S)`; equals the real frames
            of `__call__`'s `input_features` when `normalize=True`.
        """
        mel_filters = torch.from_numpy(self.mel_filters).to(device=waveform.device, dtype=waveform.dtype)
        log_mel = log_mel_spectrogram(waveform, mel_filters, self.n_fft, self.hop_length)
        if not normalize:
            return log_mel
        if waveform.dim() == 1:
            return normalize_log_mel(log_mel[None])[0]
        return normalize_log_mel(log_mel)

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        resample: bool = False,
        padding: bool | str | PaddingStrategy = "longest",
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        truncation: bool = False,
        return_attention_mask: bool | None = None,
        return_tensors: str | TensorType | None = None,
        device: str | torch.device | None = None,
        load_audio_backend: str | None = None,
    ) -> BatchFeature:
        r"""Turn one clip or a batch of clips into padded log-mel features.

        Args:
            raw_speech: one clip or a list of clips. A clip is a 1-D float (float16/32/64) or integer
                (int16 scaled by 1/32768, int32 by 1/2^31) numpy array or torch tensor, a list of
                floats, or a path to an audio file (read with soundfile at the file's own rate). A 2-D
                array or tensor is ONE multichannel clip, `(samples, channels)` as soundfile returns it
                or `(channels, samples)`; the channel axis is the shorter one (at most 8 channels) and
                channels are averaged to mono. A batch must be a list, never a 2-D array.
            sampling_rate (`int`, *optional*): rate of the in-memory arrays. Missing: a warning, and
                `self.sampling_rate` is assumed. Files always use the rate in their header.
            resample (`bool`, defaults to `False`): resample clips at another rate with
                `resample_audio`; otherwise another rate is an error.
            padding (`"longest"`/`True` or `"max_length"`): pad to the longest clip, or to `max_length`
                samples (`F = num_frames(max_length)`). `False`/`"do_not_pad"` is not supported.
            max_length (`int`, *optional*): in samples; required by `padding="max_length"`. A longer
                clip is an error (nothing is ever truncated).
            pad_to_multiple_of (`int`, *optional*): round `F` up to a multiple of this many frames.
            truncation (`bool`): must stay `False`; accepted for the processor API.
            return_attention_mask (`bool`, *optional*): defaults to `self.return_attention_mask`.
            return_tensors (`"pt"`, `"np"` or `None`): `None` gives numpy arrays.
            device (*optional*): where to compute the STFT; outputs come back on the CPU.
            load_audio_backend: ignored (files are read with soundfile); accepted for the processor API.

        Returns:
            [`BatchFeature`] with `input_features` `(B, M, F)` float32 and `attention_mask`
            `(B, F)` int64.
        """
        if truncation:
            raise ValueError("MuOmniFeatureExtractor never truncates audio; got truncation=True")
        if padding is True:
            padding = "longest"
        if padding not in ("longest", "max_length", PaddingStrategy.LONGEST, PaddingStrategy.MAX_LENGTH):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        padding = PaddingStrategy(padding)
        if padding == PaddingStrategy.MAX_LENGTH and max_length is None:
            raise ValueError("padding='max_length' needs max_length (in samples)")
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of <= 0):
            raise ValueError(f"pad_to_multiple_of must be a positive integer (frames), got {pad_to_multiple_of!r}")
        if sampling_rate is not None and not (
            _is_number(sampling_rate) and sampling_rate > 0 and sampling_rate == int(sampling_rate)
        ):
            raise ValueError(f"sampling_rate must be a positive integer, got {sampling_rate!r}")
        return_attention_mask = self.return_attention_mask if return_attention_mask is None else return_attention_mask

        items = _as_batch(raw_speech)
        if sampling_rate is None and not all(isinstance(item, (str, os.PathLike)) for item in items):
            warnings.warn(
                f"No sampling_rate was passed to {type(self).__name__}; assuming {self.sampling_rate} Hz. "
                "Pass sampling_rate= to catch audio at the wrong rate.",
                UserWarning,
                stacklevel=2,
            )
        clips = [self._prepare_clip(item, index, sampling_rate, resample) for index, item in enumerate(items)]
        lengths = [clip.shape[0] for clip in clips]
        num_frames = self.num_frames(max(lengths))
        if padding == PaddingStrategy.MAX_LENGTH:
            if max(lengths) > max_length:
                raise ValueError(
                    f"a clip has {max(lengths)} samples, more than max_length={max_length}; "
                    "MuOmniFeatureExtractor never truncates"
                )
            num_frames = self.num_frames(max_length)
        if pad_to_multiple_of is not None:
            num_frames = -(-num_frames // pad_to_multiple_of) * pad_to_multiple_of

        features, mask = self._extract(clips, num_frames, device)
        data = {"input_features": features}
        if return_attention_mask:
            data["attention_mask"] = mask
        if return_tensors is None:
            return_tensors = "np"
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _extract(self, clips: list[torch.Tensor], num_frames: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched log-mel of clips of different lengths, each exactly as if it were alone.

        Each clip is reflect-padded by n_fft // 2 on its own (the centred STFT), then zero-padded to a
        common length and framed without centring: a real frame only ever reads its own clip.
        """
        half = self.n_fft // 2
        # long enough for every reflect-padded clip and for num_frames STFT frames
        width = max(max(clip.shape[0] for clip in clips) + 2 * half, (num_frames - 1) * self.hop_length + self.n_fft)
        batch = torch.zeros(len(clips), width, dtype=torch.float32, device=device)  # (B, S')
        for i, clip in enumerate(clips):
            padded = F.pad(clip.to(device)[None, None], (half, half), mode="reflect")[0, 0]
            batch[i, : padded.shape[0]] = padded
        window = torch.hann_window(self.n_fft, device=device)
        stft = torch.stft(batch, self.n_fft, self.hop_length, window=window, center=False, return_complex=True)
        power = (stft[..., :num_frames].abs() ** 2).contiguous()  # (B, K, F)
        mel_filters = torch.from_numpy(self.mel_filters).to(device=device, dtype=torch.float32)
        log_mel = torch.clamp(mel_filters.T @ power, min=LOG_FLOOR).log10()  # (B, M, F)

        frames = torch.arange(num_frames, device=device)[None]  # (1, F)
        real = torch.tensor([self.num_frames(clip.shape[0]) for clip in clips], device=device)[:, None]  # (B, 1)
        mask = frames < real  # (B, F)
        features = normalize_log_mel(log_mel, mask, self.padding_value)
        return features.cpu(), mask.long().cpu()

    def _prepare_clip(self, item, index: int, sampling_rate: int | None, resample: bool) -> torch.Tensor:
        """One clip -> mono float32 tensor `(S,)` at `self.sampling_rate`, validated."""
        name = f"audio clip {index}"
        if isinstance(item, (str, os.PathLike)):
            name = f"audio file {os.fspath(item)!r}"
            waveform, rate = _read_audio_file(item, self.max_length_seconds)
        else:
            waveform = _to_float_tensor(item, name)
            rate = self.sampling_rate if sampling_rate is None else int(sampling_rate)
        if waveform.numel() == 0:
            raise ValueError(f"{name} is empty (0 samples)")
        if waveform.dim() == 2:
            waveform = _mix_to_mono(waveform, name)
        if not torch.isfinite(waveform).all():
            bad = int((~torch.isfinite(waveform)).sum())
            raise ValueError(f"{name} has {bad} NaN or infinite samples")
        duration = waveform.shape[0] / rate
        if duration > self.max_length_seconds:
            raise ValueError(
                f"{name} lasts {duration:.2f} s, longer than max_length_seconds={self.max_length_seconds}; "
                "split it into shorter clips (MuOmni never truncates audio)"
            )
        if rate != self.sampling_rate:
            if not resample:
                raise ValueError(
                    f"{name} is sampled at {rate} Hz but {type(self).__name__} expects {self.sampling_rate} Hz; "
                    "resample it or pass resample=True"
                )
            waveform = resample_audio(waveform, rate, self.sampling_rate)
        if waveform.shape[0] < self.min_num_samples:
            raise ValueError(
                f"{name} has {waveform.shape[0]} samples; at least {self.min_num_samples} "
                f"(n_fft // 2 + 1, {1000 * self.min_num_samples / self.sampling_rate:.1f} ms) are needed"
            )
        return waveform


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _as_batch(raw_speech) -> list:
    """A single clip -> [clip]; a list of clips stays a list. A list of numbers is one clip."""
    if isinstance(raw_speech, (list, tuple)):
        if len(raw_speech) == 0:
            raise ValueError("raw_speech is an empty list: no audio to process")
        if all(_is_number(x) for x in raw_speech):
            return [raw_speech]
        if any(_is_number(x) for x in raw_speech):
            raise TypeError("raw_speech mixes numbers and clips; pass one clip (a list of floats) or a list of clips")
        return list(raw_speech)
    return [raw_speech]


def _to_float_tensor(item, name: str) -> torch.Tensor:
    """An array, tensor or list of numbers -> float32 tensor, integers scaled to [-1, 1)."""
    if isinstance(item, (list, tuple)):
        if not all(_is_number(x) or isinstance(x, (list, tuple)) for x in item):
            raise TypeError(f"{name} is a list that holds {type(item[0]).__name__}, expected numbers")
        try:
            item = np.asarray(item, dtype=np.float32)
        except ValueError as err:
            raise ValueError(f"{name} is a ragged nested list: {err}") from None
    if isinstance(item, np.ndarray):
        if item.dtype in _INT_SCALES:
            item = item.astype(np.float32) * _INT_SCALES[item.dtype]
        elif not np.issubdtype(item.dtype, np.floating):
            raise TypeError(f"{name} has dtype {item.dtype}; expected float16/32/64, int16 or int32")
        tensor = torch.from_numpy(item.astype(np.float32)).contiguous()  # a copy: never alias the caller's array
    elif isinstance(item, torch.Tensor):
        tensor = item.detach().cpu()
        if tensor.dtype in _TORCH_INT_SCALES:
            tensor = tensor.float() * _TORCH_INT_SCALES[tensor.dtype]
        elif not tensor.is_floating_point():
            raise TypeError(f"{name} has dtype {tensor.dtype}; expected a float dtype, int16 or int32")
        tensor = tensor.float()
    else:
        raise TypeError(
            f"{name} is a {type(item).__name__}; expected a numpy array, a torch tensor, a list of floats "
            "or a path to an audio file"
        )
    if tensor.dim() not in (1, 2):
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}; expected (samples,) or a 2-D multichannel clip "
            "(pass a batch as a list of clips)"
        )
    return tensor


def _mix_to_mono(waveform: torch.Tensor, name: str) -> torch.Tensor:
    """(samples, channels) or (channels, samples) -> (samples,): the channel axis is the shorter one."""
    rows, cols = waveform.shape
    if cols <= MAX_CHANNELS and rows > cols:
        return waveform.mean(dim=1)
    if rows <= MAX_CHANNELS and cols > rows:
        return waveform.mean(dim=0)
    raise ValueError(
        f"{name} has shape {(rows, cols)}: a 2-D clip must be (samples, channels) or (channels, samples) with at "
        f"most {MAX_CHANNELS} channels on the shorter axis; pass a batch as a list of 1-D clips"
    )


def _read_audio_file(path, max_length_seconds: float) -> tuple[torch.Tensor, int]:
    """Read an audio file with soundfile, channels averaged: ((S,) float32 tensor, the file's rate).

    The duration is checked from the header first, so an over-long file is refused before it is decoded.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file {path!r} does not exist")
    try:
        info = soundfile.info(path)
        if info.frames / info.samplerate > max_length_seconds:
            raise ValueError(
                f"audio file {path!r} lasts {info.frames / info.samplerate:.2f} s, longer than max_length_seconds="
                f"{max_length_seconds}; split it into shorter clips (MuOmni never truncates audio)"
            )
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)  # (S, C)
    except soundfile.LibsndfileError as err:
        raise ValueError(f"could not read audio file {path!r}: {err}") from None
    return torch.from_numpy(data).mean(dim=1), int(rate)  # soundfile's layout is known: no guessing


__all__ = ["MuOmniFeatureExtractor", "log_mel_spectrogram", "normalize_log_mel", "resample_audio"]
