"""The RVQ speech codec: log-mel -> conv encoder -> residual vector quantizer -> conv decoder -> log-mel.

Notation: B batch, M mel bins, F mel frames (100 Hz), T codec frames (F / downsample_factor),
H conv channels (hidden_size), Dc codebook dim, Nq quantizers (codebooks), K codebook size,
N real (unpadded) codec frames of a batch, B*T flattened.

The encoder halves time `log2(downsample_factor)` times with stride-2 convs, so a clip of F mel
frames gives T = ceil(F / downsample_factor) codec frames (the mel is padded on the right by
repeating its last frame). The decoder mirrors it with stride-2 transposed convs and returns
T * downsample_factor frames; `forward` trims them back to F.

The quantizer is SoundStream/EnCodec residual VQ with Euclidean codebooks, trained by gradient:
  - straight-through estimator: the decoder reads `z + (sum_i q_i - z).detach()`, so the
    encoder receives the decoder's gradient unchanged;
  - every quantizer i has a codebook loss `|q_i - sg(r_i)|^2` (trains codebook i) and a
    commitment loss `|r_i - sg(q_i)|^2` (trains the encoder). The residual handed on is
    `r_{i+1} = r_i - sg(q_i)`, which keeps the encoder in the graph of every later quantizer;
    EnCodec's `r - (r + sg(q - r))` is detached after the first quantizer, so its commitment loss
    stops training the encoder there;
  - codebooks are initialised from the data (k-means on the first training batch's residuals) and
    codes unused for `dead_code_steps` training forwards are restarted on random residuals of the
    current batch. Both states are persistent buffers (`initialized`, `unused_steps`), so a saved
    checkpoint resumes training where it stopped and `_init_weights` resets them on a fresh model.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from muomni.configuration import MuOmniCodecConfig

from .modeling_utils import MuOmniSafetensorsLoadingMixin


@dataclass
class MuOmniQuantizerOutput(ModelOutput):
    r"""Output of [`MuOmniResidualVectorQuantizer`].

    Args:
        quantized (`torch.FloatTensor` of shape `(B, T, Dc)`): straight-through quantized latents.
        codes (`torch.LongTensor` of shape `(B, Nq, T)`): code of every quantizer at every frame.
        codebook_losses (`torch.FloatTensor` of shape `(Nq,)`): `|q_i - sg(r_i)|^2` per quantizer.
        commitment_losses (`torch.FloatTensor` of shape `(Nq,)`): `|r_i - sg(q_i)|^2` per quantizer.
        codebook_usage (`torch.FloatTensor` of shape `(Nq,)`): fraction of the K codes used in the batch.
    """

    quantized: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    codebook_losses: torch.FloatTensor | None = None
    commitment_losses: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None


@dataclass
class MuOmniCodecOutput(ModelOutput):
    r"""Output of [`MuOmniCodec.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): `reconstruction_loss + codebook_weight * codebook_loss
            + commitment_weight * commitment_loss`.
        reconstruction (`torch.FloatTensor` of shape `(B, M, F)`): the decoded log-mel.
        codes (`torch.LongTensor` of shape `(B, Nq, T)`): the codes, `T = ceil(F / downsample_factor)`.
        reconstruction_loss (`torch.FloatTensor` of shape `()`): L1 over the real frames.
        codebook_loss / commitment_loss (`torch.FloatTensor` of shape `()`): summed over the quantizers.
        codebook_losses / commitment_losses (`torch.FloatTensor` of shape `(Nq,)`): per quantizer.
        codebook_usage (`torch.FloatTensor` of shape `(Nq,)`): fraction of each codebook's codes used
            by the real frames of this batch.
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    codebook_losses: torch.FloatTensor | None = None
    commitment_losses: torch.FloatTensor | None = None
    codebook_usage: torch.FloatTensor | None = None


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` (B, T) over the positions where `mask` (B, T) is True (0 when none is)."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def kmeans(samples: torch.Tensor, num_clusters: int, num_iters: int) -> torch.Tensor:
    """Lloyd's k-means on `samples` (N, Dc), started from random samples; returns centroids (K, Dc).

    With fewer samples than clusters the start repeats samples; a cluster that empties is moved to a
    random sample, so every centroid lies in the data.
    """
    num_samples = samples.shape[0]
    centroids = samples[random_indices(num_samples, num_clusters, samples.device)].clone()  # (K, Dc)
    for _ in range(num_iters):
        assignment = torch.cdist(samples, centroids).argmin(dim=1)  # (N,)
        counts = torch.bincount(assignment, minlength=num_clusters)  # (K,)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, samples)  # (K, Dc)
        empty = counts == 0
        centroids = sums / counts.clamp(min=1)[:, None]
        centroids[empty] = samples[random_indices(num_samples, int(empty.sum()), samples.device)]
    return centroids


def random_indices(population: int, count: int, device: torch.device) -> torch.Tensor:
    """`count` random indices into `population` items: distinct when there are enough of them."""
    if count <= population:
        return torch.randperm(population, device=device)[:count]
    return torch.randint(population, (count,), device=device)


class MuOmniVectorQuantizer(nn.Module):
    """One Euclidean codebook of K entries of dimension Dc, with data-driven init and dead-code restarts.

    Buffers (persistent: they are training state a resumed run needs):
        initialized (`torch.BoolTensor` of shape `()`): the codebook has been initialised from data.
        unused_steps (`torch.LongTensor` of shape `(K,)`): training forwards since each code was last used.
    """

    def __init__(self, config: MuOmniCodecConfig):
        super().__init__()
        self.codebook_size = config.codebook_size
        self.dead_code_steps = config.dead_code_steps
        self.kmeans_iters = config.kmeans_iters
        self.codebook = nn.Embedding(config.codebook_size, config.codebook_dim)
        self.initialized = nn.Buffer(torch.tensor(False))
        self.unused_steps = nn.Buffer(torch.zeros(config.codebook_size, dtype=torch.long))

    def quantize(self, residual: torch.Tensor) -> torch.Tensor:
        """Nearest code of every vector: (..., Dc) -> (...) long."""
        flat = residual.detach().reshape(-1, residual.shape[-1])  # (B*T, Dc)
        codebook = self.codebook.weight.detach()  # (K, Dc)
        distances = (
            flat.pow(2).sum(dim=1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(dim=1)[None]
        )  # (B*T, K)
        return distances.argmin(dim=1).view(residual.shape[:-1])  # (B, T)

    @torch.no_grad()
    def update_codebook(self, samples: torch.Tensor) -> None:
        """Training-time housekeeping before quantizing: k-means init once, then dead-code restarts.

        Args:
            samples (`torch.Tensor` of shape `(N, Dc)`): this batch's residuals at the real frames.
        """
        if samples.shape[0] == 0:
            return
        if not self.initialized:
            self.codebook.weight.copy_(kmeans(samples, self.codebook_size, self.kmeans_iters))
            self.initialized.fill_(True)
            self.unused_steps.zero_()
            return
        dead = self.unused_steps >= self.dead_code_steps  # (K,)
        num_dead = int(dead.sum())
        if num_dead:
            self.codebook.weight[dead] = samples[random_indices(samples.shape[0], num_dead, samples.device)]
            self.unused_steps[dead] = 0

    def forward(
        self, residual: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize `residual` (B, T, Dc); `mask` (B, T) marks the real frames.

        Returns the code vectors `q` (B, T, Dc) (they carry gradient to the codebook only), the codes
        (B, T), the codebook and commitment losses (scalars, means over real frames) and the fraction
        of the K codes that the real frames used.
        """
        if self.training:
            self.update_codebook(residual.detach()[mask])
        codes = self.quantize(residual)  # (B, T)
        quantized = self.codebook(codes)  # (B, T, Dc)
        codebook_loss = masked_mean((quantized - residual.detach()).pow(2).mean(dim=-1), mask)
        commitment_loss = masked_mean((residual - quantized.detach()).pow(2).mean(dim=-1), mask)
        counts = torch.bincount(codes[mask], minlength=self.codebook_size)  # (K,)
        if self.training:
            with torch.no_grad():
                self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        usage = (counts > 0).float().mean()
        return quantized, codes, codebook_loss, commitment_loss, usage


class MuOmniResidualVectorQuantizer(nn.Module):
    """Nq quantizers in sequence, each quantizing what the previous ones left (SoundStream RVQ)."""

    def __init__(self, config: MuOmniCodecConfig):
        super().__init__()
        self.layers = nn.ModuleList([MuOmniVectorQuantizer(config) for _ in range(config.num_quantizers)])

    def forward(self, latents: torch.Tensor, mask: torch.Tensor | None = None) -> MuOmniQuantizerOutput:
        """Quantize `latents` (B, T, Dc); `mask` (B, T), True at real frames, defaults to all frames."""
        if mask is None:
            mask = torch.ones(latents.shape[:2], dtype=torch.bool, device=latents.device)
        mask = mask.to(torch.bool)
        residual = latents
        quantized_sum = torch.zeros_like(latents)
        codes, codebook_losses, commitment_losses, usage = [], [], [], []
        for quantizer in self.layers:
            quantized, codes_i, codebook_loss, commitment_loss, usage_i = quantizer(residual, mask)
            quantized_sum = quantized_sum + quantized.detach()
            # sg(q): the next residual keeps the encoder's gradient path, not the codebook's
            residual = residual - quantized.detach()
            codes.append(codes_i)
            codebook_losses.append(codebook_loss)
            commitment_losses.append(commitment_loss)
            usage.append(usage_i)
        # straight-through: the value of sum_i q_i, the gradient of the identity to `latents`
        straight_through = latents + (quantized_sum - latents).detach()
        return MuOmniQuantizerOutput(
            quantized=straight_through,
            codes=torch.stack(codes, dim=1),  # (B, Nq, T)
            codebook_losses=torch.stack(codebook_losses),
            commitment_losses=torch.stack(commitment_losses),
            codebook_usage=torch.stack(usage),
        )

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, Nq, T) -> the sum of their code vectors (B, T, Dc)."""
        return sum(quantizer.codebook(codes[:, i]) for i, quantizer in enumerate(self.layers))


class MuOmniCodecResidualBlock(nn.Module):
    """`x + conv_2(gelu(conv_1(gelu(x))))`: a dilated kernel-3 conv then a pointwise conv, length kept."""

    def __init__(self, hidden_size: int, dilation: int):
        super().__init__()
        self.conv_1 = nn.Conv1d(hidden_size, hidden_size, kernel_size=3, dilation=dilation, padding=dilation)
        self.conv_2 = nn.Conv1d(hidden_size, hidden_size, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.conv_2(F.gelu(self.conv_1(F.gelu(hidden_states))))


class MuOmniCodecDownBlock(nn.Module):
    """A residual block, then a stride-2 conv: (B, H, L) -> (B, H, L / 2) for even L."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.block = MuOmniCodecResidualBlock(hidden_size, dilation=1)
        self.down = nn.Conv1d(hidden_size, hidden_size, kernel_size=4, stride=2, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.block(hidden_states)))


class MuOmniCodecUpBlock(nn.Module):
    """A stride-2 transposed conv, then a residual block: (B, H, L) -> (B, H, 2 L)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.up = nn.ConvTranspose1d(hidden_size, hidden_size, kernel_size=4, stride=2, padding=1)
        self.block = MuOmniCodecResidualBlock(hidden_size, dilation=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.block(self.up(F.gelu(hidden_states)))


class MuOmniCodecEncoder(nn.Module):
    """Log-mel (B, M, F) with F a multiple of the downsample factor -> latents (B, T, Dc)."""

    def __init__(self, config: MuOmniCodecConfig):
        super().__init__()
        hidden = config.hidden_size
        self.conv_in = nn.Conv1d(config.num_mel_bins, hidden, kernel_size=7, padding=3)
        self.down_blocks = nn.ModuleList([MuOmniCodecDownBlock(hidden) for _ in range(config.num_downsample_layers)])
        self.layers = nn.ModuleList([MuOmniCodecResidualBlock(hidden, dilation=3**i) for i in range(config.num_layers)])
        self.proj = nn.Linear(hidden, config.codebook_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv_in(mel)  # (B, H, F)
        for block in self.down_blocks:
            hidden_states = block(hidden_states)  # (B, H, F / 2^i)
        for layer in self.layers:
            hidden_states = layer(hidden_states)  # (B, H, T)
        return self.proj(F.gelu(hidden_states).transpose(1, 2))  # (B, T, Dc)


class MuOmniCodecDecoder(nn.Module):
    """Latents (B, T, Dc) -> log-mel (B, M, T * downsample_factor); the encoder's mirror."""

    def __init__(self, config: MuOmniCodecConfig):
        super().__init__()
        hidden = config.hidden_size
        self.proj = nn.Linear(config.codebook_dim, hidden)
        self.layers = nn.ModuleList([MuOmniCodecResidualBlock(hidden, dilation=3**i) for i in range(config.num_layers)])
        self.up_blocks = nn.ModuleList([MuOmniCodecUpBlock(hidden) for _ in range(config.num_downsample_layers)])
        self.conv_out = nn.Conv1d(hidden, config.num_mel_bins, kernel_size=7, padding=3)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden_states = self.proj(latents).transpose(1, 2)  # (B, H, T)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        for block in self.up_blocks:
            hidden_states = block(hidden_states)  # (B, H, T * 2^i)
        return self.conv_out(F.gelu(hidden_states))  # (B, M, T * downsample_factor)


class MuOmniCodecPreTrainedModel(MuOmniSafetensorsLoadingMixin, PreTrainedModel):
    config: MuOmniCodecConfig
    config_class = MuOmniCodecConfig
    base_model_prefix = "codec"
    main_input_name = "mel"
    input_modalities = "audio"

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
            # fan-in scaling: the conv stack has no norms, so a fixed std would shrink or blow up activations
            fan_in = module.weight[0].numel()  # Linear (out, in), Conv1d (out, in, k)
            if isinstance(module, nn.ConvTranspose1d):
                # weight (in, out, k): each output sample sees in * k / stride inputs
                fan_in = module.weight.shape[0] * module.weight.shape[2] // module.stride[0]
            init.normal_(module.weight, mean=0.0, std=fan_in**-0.5)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, MuOmniVectorQuantizer):
            init.zeros_(module.initialized)
            init.zeros_(module.unused_steps)


class MuOmniCodec(MuOmniCodecPreTrainedModel):
    r"""The RVQ speech codec (log-mel <-> codes).

    `encode(mel, mel_mask=None)`: `(B, M, F)` -> codes `(B, Nq, T)`, `T = ceil(F / downsample_factor)`.
    `decode(codes)`: `(B, Nq, T)` -> log-mel `(B, M, T * downsample_factor)`.
    `forward(mel, mel_mask=None)`: a [`MuOmniCodecOutput`] with the training loss. In eval mode
    `decode(encode(mel))[..., :F]` equals `forward(mel).reconstruction`.

    The mel is the feature extractor's normalised log-mel (`MuOmniFeatureExtractor`); `mel_mask` (B, F)
    is its frame mask, `attention_mask` (1 real, 0 padding). Padded frames are left out of every loss,
    of the codebook statistics and of the data the codebooks are restarted from.
    """

    def __init__(self, config: MuOmniCodecConfig):
        super().__init__(config)
        self.encoder = MuOmniCodecEncoder(config)
        self.quantizer = MuOmniResidualVectorQuantizer(config)
        self.decoder = MuOmniCodecDecoder(config)
        self.post_init()

    def _check_mel(self, mel: torch.Tensor, mel_mask: torch.Tensor | None) -> None:
        if not isinstance(mel, torch.Tensor):
            raise TypeError(f"mel must be a torch.Tensor of shape (B, M, F), got {type(mel).__name__}")
        if not mel.is_floating_point():
            raise TypeError(f"mel must be a float tensor, got dtype {mel.dtype}")
        if mel.dim() != 3:
            raise ValueError(f"mel must have shape (B, M, F), got {tuple(mel.shape)} ({mel.dim()} dimensions)")
        if mel.shape[1] != self.config.num_mel_bins:
            raise ValueError(
                f"mel has {mel.shape[1]} mel bins (shape {tuple(mel.shape)}), the codec expects "
                f"num_mel_bins={self.config.num_mel_bins}"
            )
        if mel.shape[2] == 0:
            raise ValueError(f"mel has no frames (shape {tuple(mel.shape)})")
        if mel_mask is not None and tuple(mel_mask.shape) != (mel.shape[0], mel.shape[2]):
            raise ValueError(
                f"mel_mask has shape {tuple(mel_mask.shape)}, expected (B, F) = {(mel.shape[0], mel.shape[2])}"
            )

    def _latents(self, mel: torch.Tensor, mel_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder latents (B, T, Dc) and the codec-frame mask (B, T): a frame is real if any of its mel frames is."""
        factor = self.config.downsample_factor
        num_frames = mel.shape[-1]
        pad = -num_frames % factor
        if mel_mask is None:
            mel_mask = torch.ones(mel.shape[0], num_frames, dtype=torch.bool, device=mel.device)
        mel = F.pad(mel, (0, pad), mode="replicate")  # (B, M, T * factor)
        mel_mask = F.pad(mel_mask.to(torch.bool), (0, pad), value=False)  # (B, T * factor)
        frame_mask = mel_mask.view(mel.shape[0], -1, factor).any(dim=-1)  # (B, T)
        return self.encoder(mel), frame_mask

    @torch.no_grad()
    def encode(self, mel: torch.Tensor, mel_mask: torch.Tensor | None = None) -> torch.LongTensor:
        """Log-mel (B, M, F) -> codes (B, Nq, ceil(F / downsample_factor)), int64 in [0, codebook_size).

        Runs the quantizer in its current mode, so call it on a model in eval mode (a model in
        training mode would also update its codebooks).
        """
        self._check_mel(mel, mel_mask)
        latents, frame_mask = self._latents(mel, mel_mask)
        return self.quantizer(latents, frame_mask).codes

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.FloatTensor:
        """Codes (B, Nq, T) -> log-mel (B, M, T * downsample_factor)."""
        if not isinstance(codes, torch.Tensor) or codes.dtype not in (torch.int64, torch.int32, torch.int16):
            found = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise TypeError(f"codes must be an integer tensor of shape (B, Nq, T), got {found}")
        if codes.dim() != 3:
            raise ValueError(f"codes must have shape (B, Nq, T), got {tuple(codes.shape)}")
        if codes.shape[1] != self.config.num_quantizers:
            raise ValueError(
                f"codes have {codes.shape[1]} codebooks (shape {tuple(codes.shape)}), the codec has "
                f"num_quantizers={self.config.num_quantizers}"
            )
        if codes.shape[2] == 0:
            raise ValueError(f"codes have no frames (shape {tuple(codes.shape)})")
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= self.config.codebook_size:
            raise ValueError(
                f"codes must lie in [0, {self.config.codebook_size}) (codebook_size), got min {low}, max {high}"
            )
        return self.decoder(self.quantizer.decode(codes.long()))

    def forward(self, mel: torch.Tensor, mel_mask: torch.Tensor | None = None) -> MuOmniCodecOutput:
        r"""Encode, quantize and decode `mel` (B, M, F); `mel_mask` (B, F) marks real frames (1) and padding (0)."""
        self._check_mel(mel, mel_mask)
        latents, frame_mask = self._latents(mel, mel_mask)
        quantized = self.quantizer(latents, frame_mask)
        reconstruction = self.decoder(quantized.quantized)[..., : mel.shape[-1]]  # (B, M, F)

        if mel_mask is None:
            mel_mask = torch.ones(mel.shape[0], mel.shape[-1], dtype=torch.bool, device=mel.device)
        reconstruction_loss = masked_mean((reconstruction - mel).abs().mean(dim=1), mel_mask.to(torch.bool))
        codebook_loss = quantized.codebook_losses.sum()
        commitment_loss = quantized.commitment_losses.sum()
        loss = (
            reconstruction_loss
            + self.config.codebook_weight * codebook_loss
            + self.config.commitment_weight * commitment_loss
        )
        return MuOmniCodecOutput(
            loss=loss,
            reconstruction=reconstruction,
            codes=quantized.codes,
            reconstruction_loss=reconstruction_loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            codebook_losses=quantized.codebook_losses,
            commitment_losses=quantized.commitment_losses,
            codebook_usage=quantized.codebook_usage,
        )


__all__ = [
    "MuOmniCodec",
    "MuOmniCodecOutput",
    "MuOmniCodecPreTrainedModel",
    "MuOmniQuantizerOutput",
    "MuOmniResidualVectorQuantizer",
    "MuOmniVectorQuantizer",
]
