# GENERATED FILE - DO NOT EDIT.
# Flat copy of `muomni.modeling_vocoder` for loading with `trust_remote_code=True`,
# written by `python -m muomni.hub export-remote-code`. Edit the package source and regenerate.
"""Vocoders: the feature extractor's normalised log-mel -> waveform.

Notation: B batch, M mel bins, F mel frames, K frequency bins (n_fft // 2 + 1), S samples,
D hidden, I MLP width.

Both vocoders invert the front end of `MuOmniFeatureExtractor` (same filterbank, window, n_fft,
hop and centring), so a clip of S = F * hop samples -> F frames -> S samples again:

    the front end frames a clip of S samples with a centred STFT (1 + S // hop frames) and drops the
    last frame, leaving F = S // hop. The vocoders rebuild F + 1 STFT frames (the dropped one is a
    copy of the last) and call `torch.istft(..., center=True, length=F * hop)`, so the output has
    exactly S = F * hop samples.

`MuOmniGriffinLim` (no weights): undo the normalisation and the log, solve for a non-negative power
spectrogram whose mel is the input (multiplicative updates for the generalised-KL NNLS, Lee & Seung),
then recover phases with fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99).

`MuOmniNeuralVocoder`: Vocos (Siuzdak 2023) without the GAN: a ConvNeXt backbone predicts a
log-magnitude and a phase angle per STFT bin, and `torch.istft` turns them into the waveform.

Neither keeps a buffer: the filterbank comes from a cached function and the window is built per
call, so nothing has to be rebuilt after `from_pretrained`.
"""

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_muomni import MuOmniVocoderConfig
from .feature_extraction_muomni import (
    DYNAMIC_RANGE,
    LOG_OFFSET,
    LOG_SCALE,
    MuOmniFeatureExtractor,
    log_mel_spectrogram,
)

from .modeling_utils import MuOmniSafetensorsLoadingMixin

# exp() of the predicted log-magnitude is clipped here (Vocos' value): an untrained or diverging head
# must not overflow to inf before the loss can pull it back
MAX_MAGNITUDE = 100.0
# floor of the magnitudes compared in log space by the STFT loss
MAGNITUDE_FLOOR = 1e-5


@lru_cache(maxsize=8)
def _mel_filters(num_mel_bins: int, sampling_rate: int, n_fft: int, hop_length: int) -> torch.Tensor:
    extractor = MuOmniFeatureExtractor(
        feature_size=num_mel_bins, sampling_rate=sampling_rate, n_fft=n_fft, hop_length=hop_length
    )
    return torch.from_numpy(extractor.mel_filters).float()  # (K, M)


def mel_filters(config: MuOmniVocoderConfig, device: torch.device | str | None = None) -> torch.Tensor:
    """The feature extractor's Slaney filterbank for this config's geometry, float32 of shape (K, M)."""
    filters = _mel_filters(config.num_mel_bins, config.sampling_rate, config.n_fft, config.hop_length)
    return filters.to(device)


def check_mel(mel: torch.Tensor, config: MuOmniVocoderConfig, min_frames: int = 1) -> None:
    """ValueError/TypeError unless `mel` is a float tensor (B, M, F) with M = num_mel_bins and F >= min_frames."""
    if not isinstance(mel, torch.Tensor) or not mel.is_floating_point():
        found = mel.dtype if isinstance(mel, torch.Tensor) else type(mel).__name__
        raise TypeError(f"mel must be a float tensor of shape (B, M, F), got {found}")
    if mel.dim() != 3:
        raise ValueError(f"mel must have shape (B, M, F), got {tuple(mel.shape)} ({mel.dim()} dimensions)")
    if mel.shape[1] != config.num_mel_bins:
        raise ValueError(
            f"mel has {mel.shape[1]} mel bins (shape {tuple(mel.shape)}), the vocoder expects "
            f"num_mel_bins={config.num_mel_bins}"
        )
    if mel.shape[2] < min_frames:
        raise ValueError(f"mel has {mel.shape[2]} frames (shape {tuple(mel.shape)}); at least {min_frames} are needed")


def mel_to_power(mel: torch.Tensor) -> torch.Tensor:
    """Undo the feature extractor's `(log10(mel) + 4) / 4`: normalised log-mel -> mel power, same shape."""
    return torch.pow(10.0, mel.float() * LOG_SCALE - LOG_OFFSET)


def invert_mel_filterbank(
    mel_power: torch.Tensor, filters: torch.Tensor, num_iters: int, method: str = "nnls"
) -> torch.Tensor:
    """Power spectrogram whose mel is `mel_power`: `filters.T @ P ~= mel_power` with `P >= 0`.

    `method="nnls"` runs `num_iters` multiplicative updates for the generalised-KL divergence (Lee & Seung
    2001), `P <- P * A^T (Y / A P) / A^T 1` with `A = filters.T`, started from the filterbank's transpose
    normalised per bin. It stays non-negative, is scale invariant per frame (quiet and loud frames fit
    equally well) and fits spectral valleys better than least squares. `method="pinv"` is
    `clamp(pinv(A) @ Y, min=0)`, the seeds' inverse, kept for comparison.

    Args:
        mel_power (`torch.Tensor` of shape `(B, M, F)`): mel power (not log).
        filters (`torch.Tensor` of shape `(K, M)`): the analysis filterbank.

    Returns:
        `torch.Tensor` of shape `(B, K, F)`: non-negative power.
    """
    basis = filters.to(mel_power.dtype).T  # (M, K)
    if method == "pinv":
        return (torch.linalg.pinv(basis) @ mel_power).clamp(min=0.0)
    if method != "nnls":
        raise ValueError(f"method must be 'nnls' or 'pinv', got {method!r}")
    tiny = torch.finfo(mel_power.dtype).tiny
    column_sums = basis.sum(dim=0)[:, None]  # (K, 1); 0 for a bin no filter covers (it stays 0)
    power = (basis.T @ mel_power) / ((basis.T @ basis).sum(dim=1)[:, None] + tiny)  # (B, K, F)
    for _ in range(num_iters):
        power = power * (basis.T @ (mel_power / (basis @ power).clamp(min=tiny))) / (column_sums + tiny)
    return power


def _stft(waveform: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """The front end's STFT (Hann, centred, reflect padding): (B, S) -> complex (B, K, 1 + S // hop)."""
    window = torch.hann_window(n_fft, device=waveform.device, dtype=waveform.dtype)
    return torch.stft(
        waveform, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True
    )


def _istft(spectrum: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Inverse of `_stft` for F + 1 frames: complex (B, K, F + 1) -> (B, F * hop)."""
    window = torch.hann_window(n_fft, device=spectrum.device, dtype=spectrum.real.dtype)
    length = (spectrum.shape[-1] - 1) * hop_length
    return torch.istft(spectrum, n_fft, hop_length, window=window, center=True, length=length)


def griffin_lim(
    magnitude: torch.Tensor, n_fft: int, hop_length: int, num_iters: int, momentum: float = 0.99, seed: int = 0
) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013): magnitude (B, K, F) -> waveform (B, F * hop_length).

    The front end drops the last centred-STFT frame, so the magnitude is extended by a copy of its last
    frame to the F + 1 frames of a clip of F * hop_length samples. The initial phases are uniform random
    from a generator seeded with `seed`, drawn once for (K, F + 1) and shared by the batch, so a clip's
    waveform does not depend on what it is batched with. The update is torchaudio's / librosa's:
    `t_n = c_n - momentum / (1 + momentum) * c_{n-1}` (the same phases as Perraudin's
    `c_n + momentum * (c_n - c_{n-1})`).
    """
    magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)  # (B, K, F + 1)
    generator = torch.Generator().manual_seed(seed)
    phase = 2 * math.pi * torch.rand(magnitude.shape[-2:], generator=generator)  # (K, F + 1)
    angles = torch.polar(torch.ones_like(phase), phase).to(magnitude.device).expand(magnitude.shape)
    previous = torch.zeros((), dtype=angles.dtype, device=magnitude.device)
    for _ in range(num_iters):
        rebuilt = _stft(_istft(magnitude * angles, n_fft, hop_length), n_fft, hop_length)  # (B, K, F + 1)
        angles = rebuilt - (momentum / (1 + momentum)) * previous
        angles = angles / angles.abs().clamp(min=1e-16)
        previous = rebuilt
    return _istft(magnitude * angles, n_fft, hop_length)


def spectral_convergence(waveform: torch.Tensor, magnitude: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """`||  |STFT(waveform)| - magnitude ||_F / ||magnitude||_F` per clip over the F frames: (B,)."""
    rebuilt = _stft(waveform, n_fft, hop_length).abs()[..., : magnitude.shape[-1]]  # (B, K, F)
    return (rebuilt - magnitude).flatten(1).norm(dim=1) / magnitude.flatten(1).norm(dim=1)


class MuOmniGriffinLim(nn.Module):
    r"""Weightless vocoder: normalised log-mel (B, M, F) -> waveform (B, F * hop_length), float32.

    The mel is mapped back to power (`mel_to_power`), the filterbank is inverted with
    `config.mel_inversion_iters` NNLS updates, and `config.griffin_lim_iters` fast Griffin-Lim
    iterations with `config.griffin_lim_momentum` recover the phases. Computed in float32 whatever the
    input dtype. Padded frames of a batch (value 0.0, a quiet but audible level) are vocoded like any
    other: cut each clip's output to its `num_frames * hop_length` samples.
    """

    def __init__(self, config: MuOmniVocoderConfig):
        super().__init__()
        self.config = config

    @property
    def min_frames(self) -> int:
        """The centred STFT reflect-pads n_fft // 2 samples, so a clip needs more than that many."""
        return self.config.n_fft // 2 // self.config.hop_length + 1

    def mel_to_magnitude(self, mel: torch.Tensor, method: str = "nnls") -> torch.Tensor:
        """Normalised log-mel (B, M, F) -> magnitude spectrogram (B, K, F)."""
        check_mel(mel, self.config)
        power = invert_mel_filterbank(
            mel_to_power(mel), mel_filters(self.config, mel.device), self.config.mel_inversion_iters, method
        )
        return power.sqrt()

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        check_mel(mel, self.config, self.min_frames)
        config = self.config
        return griffin_lim(
            self.mel_to_magnitude(mel), config.n_fft, config.hop_length, config.griffin_lim_iters,
            config.griffin_lim_momentum,
        )  # fmt: skip


@dataclass
class MuOmniVocoderOutput(ModelOutput):
    r"""Output of [`MuOmniNeuralVocoder.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, given a target waveform): `stft_loss + mel_loss_weight * mel_loss`.
        waveform (`torch.FloatTensor` of shape `(B, F * hop_length)`): the synthesised audio.
        stft_loss (`torch.FloatTensor` of shape `()`): multi-resolution spectral convergence + log-magnitude L1.
        mel_loss (`torch.FloatTensor` of shape `()`): L1 between the normalised log-mels of output and target.
    """

    loss: torch.FloatTensor | None = None
    waveform: torch.FloatTensor | None = None
    stft_loss: torch.FloatTensor | None = None
    mel_loss: torch.FloatTensor | None = None


def multi_resolution_stft_loss(
    prediction: torch.Tensor, target: torch.Tensor, resolutions: list[list[int]]
) -> torch.Tensor:
    """Mean over `[n_fft, hop_length]` resolutions of spectral convergence + log-magnitude L1 (Parallel WaveGAN)."""
    losses = []
    for n_fft, hop_length in resolutions:
        window = torch.hann_window(n_fft, device=target.device, dtype=target.dtype)
        stfts = [
            torch.stft(x, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True)
            for x in (prediction, target)
        ]
        predicted, reference = (stft.abs().clamp(min=MAGNITUDE_FLOOR) for stft in stfts)  # (B, K_r, F_r)
        convergence = (predicted - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)  # (B,)
        log_magnitude = (predicted.log() - reference.log()).abs().mean()
        losses.append(convergence.mean() + log_magnitude)
    return torch.stack(losses).mean()


def normalized_mel_loss(
    prediction: torch.Tensor, target: torch.Tensor, filters: torch.Tensor, config: MuOmniVocoderConfig
) -> torch.Tensor:
    """L1 between the front end's normalised log-mels of `prediction` and `target` (B, S).

    Both are clamped at the target's floor (its peak minus the 80 dB dynamic range), the clamp the
    feature extractor applies, and scaled by 1 / 4 as it does, so the loss is in the units of the mel input.
    """
    predicted = log_mel_spectrogram(prediction, filters, config.n_fft, config.hop_length)  # (B, M, F)
    reference = log_mel_spectrogram(target, filters, config.n_fft, config.hop_length)  # (B, M, F)
    floor = reference.amax(dim=(1, 2), keepdim=True) - DYNAMIC_RANGE  # (B, 1, 1)
    return (torch.maximum(predicted, floor) - torch.maximum(reference, floor)).abs().mean() / LOG_SCALE


class MuOmniConvNeXtBlock(nn.Module):
    """ConvNeXt block (Vocos): depthwise conv (k 7) -> LayerNorm -> Linear D->I -> GELU -> Linear I->D, scaled."""

    def __init__(self, config: MuOmniVocoderConfig):
        super().__init__()
        hidden = config.hidden_size
        self.dwconv = nn.Conv1d(hidden, hidden, kernel_size=7, padding=3, groups=hidden)
        self.norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.up_proj = nn.Linear(hidden, config.intermediate_size)
        self.down_proj = nn.Linear(config.intermediate_size, hidden)
        self.layer_scale = nn.Parameter(torch.full((hidden,), 1.0 / config.num_layers))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states  # (B, D, F)
        hidden_states = self.norm(self.dwconv(hidden_states).transpose(1, 2))  # (B, F, D)
        hidden_states = self.layer_scale * self.down_proj(F.gelu(self.up_proj(hidden_states)))
        return residual + hidden_states.transpose(1, 2)  # (B, D, F)


class MuOmniVocoderPreTrainedModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    config: MuOmniVocoderConfig
    config_class = MuOmniVocoderConfig
    base_model_prefix = "vocoder"
    main_input_name = "mel"
    input_modalities = "audio"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Conv1d, nn.Linear)):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, MuOmniConvNeXtBlock):
            init.constant_(module.layer_scale, 1.0 / self.config.num_layers)


class MuOmniNeuralVocoder(MuOmniVocoderPreTrainedModel):
    r"""Vocos-style neural vocoder: normalised log-mel (B, M, F) -> waveform (B, F * hop_length).

    `embed` (Conv1d k 7) -> LayerNorm -> `num_layers` ConvNeXt blocks -> LayerNorm -> `head` (Linear to
    2K) -> log-magnitude and phase angle per bin -> `torch.istft` with the front end's window and hop.
    The mel is extended by a copy of its last frame to the F + 1 STFT frames of F * hop_length samples
    (module docstring). `forward(mel, waveform)` also returns the training loss against `waveform`.
    """

    def __init__(self, config: MuOmniVocoderConfig):
        super().__init__(config)
        hidden = config.hidden_size
        self.num_frequencies = config.n_fft // 2 + 1
        self.embed = nn.Conv1d(config.num_mel_bins, hidden, kernel_size=7, padding=3)
        self.norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList([MuOmniConvNeXtBlock(config) for _ in range(config.num_layers)])
        self.final_layer_norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        self.head = nn.Linear(hidden, 2 * self.num_frequencies)
        self.post_init()

    def spectrum(self, mel: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel (B, M, F) -> complex spectrum (B, K, F + 1)."""
        mel = F.pad(mel, (0, 1), mode="replicate")  # (B, M, F + 1): the frame the front end dropped
        hidden_states = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)  # (B, D, F + 1)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        hidden_states = self.final_layer_norm(hidden_states.transpose(1, 2))  # (B, F + 1, D)
        log_magnitude, phase = self.head(hidden_states).transpose(1, 2).chunk(2, dim=1)  # 2 x (B, K, F + 1)
        magnitude = log_magnitude.float().exp().clamp(max=MAX_MAGNITUDE)  # the iSTFT runs in float32
        return torch.polar(magnitude, phase.float())  # magnitude * (cos(phase) + i sin(phase))

    def forward(self, mel: torch.Tensor, waveform: torch.Tensor | None = None) -> MuOmniVocoderOutput:
        r"""
        Args:
            mel (`torch.FloatTensor` of shape `(B, M, F)`): the feature extractor's normalised log-mel.
            waveform (`torch.FloatTensor` of shape `(B, F * hop_length)`, *optional*): the target audio;
                when given, the output carries the training loss.
        """
        check_mel(mel, self.config)
        config = self.config
        prediction = _istft(self.spectrum(mel), config.n_fft, config.hop_length)  # (B, F * hop)
        if waveform is None:
            return MuOmniVocoderOutput(waveform=prediction)

        expected = (mel.shape[0], mel.shape[2] * config.hop_length)
        if not isinstance(waveform, torch.Tensor) or tuple(waveform.shape) != expected:
            found = tuple(waveform.shape) if isinstance(waveform, torch.Tensor) else type(waveform).__name__
            raise ValueError(f"waveform must have shape (B, F * hop_length) = {expected} for this mel, got {found}")
        shortest = max(n_fft for n_fft, _ in config.stft_loss_resolutions) // 2 + 1
        if expected[1] < shortest:
            raise ValueError(
                f"the training loss needs clips of at least {shortest} samples (the largest STFT loss n_fft // 2 + 1), "
                f"got {expected[1]}"
            )
        waveform = waveform.to(prediction.dtype)
        stft_loss = multi_resolution_stft_loss(prediction, waveform, config.stft_loss_resolutions)
        mel_loss = normalized_mel_loss(prediction, waveform, mel_filters(config, mel.device), config)
        loss = stft_loss + config.mel_loss_weight * mel_loss
        return MuOmniVocoderOutput(loss=loss, waveform=prediction, stft_loss=stft_loss, mel_loss=mel_loss)


def vocode(
    mel: torch.Tensor, config: MuOmniVocoderConfig, neural_vocoder: MuOmniNeuralVocoder | None = None
) -> torch.Tensor:
    """Normalised log-mel (B, M, F) -> waveform (B, F * hop_length) with the vocoder `config.vocoder_type` names.

    `"griffin_lim"` needs no weights; `"neural"` needs the trained `neural_vocoder`.
    """
    if not isinstance(config, MuOmniVocoderConfig):
        raise TypeError(f"config must be a MuOmniVocoderConfig, got {type(config).__name__}")
    if config.vocoder_type == "griffin_lim":
        return MuOmniGriffinLim(config)(mel)
    if neural_vocoder is None:
        raise ValueError("vocoder_type is 'neural' but no neural_vocoder was given; pass a MuOmniNeuralVocoder")
    with torch.no_grad():
        return neural_vocoder(mel).waveform


__all__ = [
    "MuOmniGriffinLim",
    "MuOmniNeuralVocoder",
    "MuOmniVocoderOutput",
    "MuOmniVocoderPreTrainedModel",
    "griffin_lim",
    "invert_mel_filterbank",
    "mel_filters",
    "mel_to_power",
    "spectral_convergence",
    "vocode",
]
