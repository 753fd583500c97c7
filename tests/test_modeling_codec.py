"""Tests of the RVQ codec: shapes, straight-through gradients, every quantizer training, codebook
init and dead-code restarts, save/load, input validation, and a short training run on speech-like mels."""

import math

import pytest
import torch
from transformers import AutoModel

from muomni import MuOmniCodec, MuOmniCodecConfig
from muomni.modeling_codec import MuOmniResidualVectorQuantizer
from muomni.processing import MuOmniFeatureExtractor

# odd sizes expose shape bugs; 37 frames is not a multiple of any downsample factor
TINY_CODEC = {
    "num_mel_bins": 128,
    "hidden_size": 24,
    "num_layers": 1,
    "codebook_dim": 12,
    "num_quantizers": 2,
    "codebook_size": 19,
    "dead_code_steps": 3,
    "kmeans_iters": 2,
}


def make_codec(seed: int = 0, **overrides) -> MuOmniCodec:
    torch.manual_seed(seed)
    return MuOmniCodec(MuOmniCodecConfig(**{**TINY_CODEC, **overrides}))


def random_mel(batch: int = 2, frames: int = 37, bins: int = 128, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, bins, frames, generator=generator) * 0.5 - 0.3


def speech_like(seed: int, seconds: float = 0.5, sampling_rate: int = 16000) -> torch.Tensor:
    """Vowel-like harmonic segments (gliding pitch, moving formants), noise bursts and pauses."""
    generator = torch.Generator().manual_seed(seed)
    num_samples = int(seconds * sampling_rate)
    t = torch.arange(num_samples) / sampling_rate
    f0 = (90 + 160 * torch.rand(1, generator=generator)) * (1 + 0.15 * torch.sin(2 * math.pi * 1.3 * t))
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sampling_rate
    vowels = torch.tensor([[300.0, 2300.0], [700.0, 1200.0], [500.0, 1500.0], [350.0, 800.0], [600.0, 1900.0]])
    hop = 80  # harmonic amplitudes at a 200 Hz control rate
    segments = torch.randint(len(vowels), (num_samples // 1600 + 1,), generator=generator)
    formants = vowels[segments].repeat_interleave(1600, 0)[:num_samples:hop]  # (S / hop, 2)
    harmonics = torch.arange(1, 31, dtype=torch.float32)
    freqs = f0[::hop, None] * harmonics  # (S / hop, 30)
    envelope = sum(torch.exp(-0.5 * ((freqs - formants[:, i : i + 1]) / 90) ** 2) for i in range(2))
    envelope = envelope.repeat_interleave(hop, 0)[:num_samples]  # (S, 30)
    voiced = (envelope * torch.sin(phase[:, None] * harmonics)).sum(1)
    kinds = torch.randint(3, (segments.shape[0],), generator=generator).repeat_interleave(1600)[:num_samples]
    noise = torch.randn(num_samples, generator=generator) * 0.3
    wave = torch.where(kinds == 0, voiced, torch.where(kinds == 1, noise, 0.01 * noise))
    return 0.5 * wave / wave.abs().max()


@pytest.fixture(scope="module")
def speech_mels() -> torch.Tensor:
    extractor = MuOmniFeatureExtractor()
    clips = [speech_like(seed) for seed in range(40)]
    return extractor(clips, sampling_rate=16000, return_tensors="pt")["input_features"]  # (40, 128, 50)


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_encode_decode_shapes_and_symmetry(factor):
    codec = make_codec(downsample_factor=factor).eval()
    mel = random_mel(frames=37)
    codes = codec.encode(mel)
    frames = math.ceil(37 / factor)
    assert codes.shape == (2, 2, frames)
    assert codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < TINY_CODEC["codebook_size"]
    decoded = codec.decode(codes)
    assert decoded.shape == (2, 128, frames * factor)
    output = codec(mel)
    assert output.reconstruction.shape == mel.shape
    assert torch.equal(output.codes, codes)
    torch.testing.assert_close(decoded[..., :37], output.reconstruction, rtol=0, atol=1e-6)


def test_straight_through_estimator_is_the_identity():
    quantizer = MuOmniResidualVectorQuantizer(MuOmniCodecConfig(**TINY_CODEC))
    latents = torch.randn(2, 5, TINY_CODEC["codebook_dim"], requires_grad=True)
    weights = torch.randn(2, 5, TINY_CODEC["codebook_dim"])
    quantized = quantizer(latents).quantized
    (quantized * weights).sum().backward()
    torch.testing.assert_close(latents.grad, weights, rtol=0, atol=0)


def test_encoder_receives_the_reconstruction_gradient():
    codec = make_codec().train()
    output = codec(random_mel())
    output.reconstruction_loss.backward()
    for name, parameter in codec.encoder.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_every_quantizer_has_a_loss_and_trains():
    codec = make_codec().train()
    output = codec(random_mel(batch=8))  # 80 frames for 19 codes: k-means cannot fit them all exactly
    assert output.codebook_losses.shape == output.commitment_losses.shape == (2,)
    assert (output.codebook_losses > 0).all() and (output.commitment_losses > 0).all()
    torch.testing.assert_close(output.codebook_loss, output.codebook_losses.sum())
    expected = (
        output.reconstruction_loss
        + codec.config.codebook_weight * output.codebook_loss
        + codec.config.commitment_weight * output.commitment_loss
    )
    torch.testing.assert_close(output.loss, expected)
    output.loss.backward(retain_graph=True)
    for quantizer in codec.quantizer.layers:
        assert quantizer.codebook.weight.grad.abs().sum() > 0
    # the second quantizer's commitment loss alone still reaches the encoder (EnCodec's does not)
    codec.zero_grad()
    output.commitment_losses[1].backward()
    assert codec.encoder.proj.weight.grad.abs().sum() > 0


def test_codebooks_are_initialised_from_the_first_training_batch():
    codec = make_codec()
    mel = random_mel(batch=4)
    codec.eval()
    codec(mel)
    assert not any(bool(q.initialized) for q in codec.quantizer.layers), "eval mode must not touch the codebooks"
    codec.train()
    latents, _ = codec._latents(mel, None)
    codec(mel)
    first = codec.quantizer.layers[0]
    assert bool(first.initialized)
    # k-means centroids lie inside the data: each is close to some latent vector
    distances = torch.cdist(first.codebook.weight.detach(), latents.detach().reshape(-1, latents.shape[-1]))
    assert distances.min(dim=1).values.max() < latents.detach().norm(dim=-1).max()


def test_dead_code_is_restarted_from_the_batch():
    codec = make_codec().train()
    mel = random_mel(batch=4)
    codec(mel)  # k-means init
    first = codec.quantizer.layers[0]
    with torch.no_grad():
        first.codebook.weight[3] = 1e3  # never the nearest code
    before = first.codebook.weight.detach().clone()
    first.unused_steps.zero_()
    for _ in range(codec.config.dead_code_steps):
        codec(mel)
    assert int(first.unused_steps[3]) == codec.config.dead_code_steps
    latents, _ = codec._latents(mel, None)
    codec(mel)
    restarted = first.codebook.weight.detach()[3]
    assert restarted.abs().max() < 1e2
    # the new code is one of the batch's residuals (for the first quantizer: the latents themselves)
    distance = (latents.detach().reshape(-1, latents.shape[-1]) - restarted).norm(dim=-1).min()
    assert distance < 1e-5
    assert int(first.unused_steps[3]) <= 1
    alive = first.unused_steps < codec.config.dead_code_steps
    alive[3] = False
    torch.testing.assert_close(first.codebook.weight.detach()[alive], before[alive])


def test_unused_steps_count_only_in_training():
    codec = make_codec().train()
    mel = random_mel()
    codec(mel)
    first = codec.quantizer.layers[0]
    counts = first.unused_steps.clone()
    codec.eval()
    codec(mel)
    assert torch.equal(first.unused_steps, counts)


def test_mask_restricts_losses_and_usage_to_real_frames():
    codec = make_codec().eval()
    mel = random_mel(batch=2, frames=40)
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, 20:] = 0
    output = codec(mel, mel_mask=mask)
    error = (output.reconstruction - mel).abs().mean(dim=1)  # (B, F)
    expected = error[mask.bool()].mean()
    torch.testing.assert_close(output.reconstruction_loss, expected)
    real_codes = torch.cat([output.codes[0, 0], output.codes[1, 0, :5]])  # 20 real frames / 4 = 5
    assert float(output.codebook_usage[0]) == pytest.approx(real_codes.unique().numel() / 19)


def test_save_load_round_trip_keeps_weights_and_buffers(tmp_path):
    codec = make_codec().train()
    optimizer = torch.optim.Adam(codec.parameters(), lr=1e-3)
    for seed in range(3):
        loss = codec(random_mel(seed=seed)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert int(codec.quantizer.layers[0].unused_steps.max()) > 0
    codec.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, MuOmniCodec)
    state, loaded_state = codec.state_dict(), loaded.state_dict()
    assert state.keys() == loaded_state.keys()
    for key in state:
        assert torch.equal(state[key], loaded_state[key]), key
    assert "quantizer.layers.1.unused_steps" in state and "quantizer.layers.1.initialized" in state
    codec.eval()
    loaded.eval()
    mel = random_mel(seed=7)
    assert torch.equal(codec.encode(mel), loaded.encode(mel))
    assert torch.equal(codec(mel).reconstruction, loaded(mel).reconstruction)


def test_fresh_model_buffers_are_reset():
    codec = make_codec()
    for quantizer in codec.quantizer.layers:
        assert not bool(quantizer.initialized)
        assert int(quantizer.unused_steps.abs().sum()) == 0


def test_training_on_speech_like_mels_lowers_loss_and_uses_codebooks(speech_mels):
    train, held_out = speech_mels[:32], speech_mels[32:]
    codec = make_codec(hidden_size=32, codebook_dim=16, codebook_size=32, dead_code_steps=10, kmeans_iters=5)
    codec.eval()
    before = codec(held_out)
    codec.train()
    optimizer = torch.optim.Adam(codec.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        batch = train[torch.randperm(32, generator=generator)[:8]]
        loss = codec(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    codec.eval()
    after = codec(held_out)
    assert after.reconstruction_loss < 0.6 * before.reconstruction_loss
    # no codebook collapses while the loss falls: each still uses at least half of its 32 codes on the
    # held-out clips (a collapsed one uses 1-2). Not compared with `before`: random codebooks already cover
    # 0.6-0.7 of the codes, and training may trade a few rarely used ones for a lower loss.
    assert (after.codebook_usage >= 0.5).all()


@pytest.mark.parametrize(
    "mel, mask, error, match",
    [
        (torch.randn(2, 80, 10), None, ValueError, r"mel has 80 mel bins .* num_mel_bins=128"),
        (torch.randn(128, 10), None, ValueError, r"mel must have shape \(B, M, F\), got \(128, 10\)"),
        (torch.randn(2, 128, 0), None, ValueError, r"mel has no frames"),
        (torch.ones(2, 128, 10, dtype=torch.long), None, TypeError, r"mel must be a float tensor, got dtype .*int64"),
        ([[0.0]], None, TypeError, r"mel must be a torch.Tensor .* got list"),
        (torch.randn(2, 128, 10), torch.ones(2, 11), ValueError, r"mel_mask has shape \(2, 11\), expected .*\(2, 10\)"),
    ],
)
def test_invalid_mel_is_refused(mel, mask, error, match):
    codec = make_codec().eval()
    with pytest.raises(error, match=match):
        codec(mel, mel_mask=mask)
    with pytest.raises(error, match=match):
        codec.encode(mel, mel_mask=mask)


@pytest.mark.parametrize(
    "codes, error, match",
    [
        (torch.zeros(2, 3, 5, dtype=torch.long), ValueError, r"codes have 3 codebooks .* num_quantizers=2"),
        (torch.full((2, 2, 5), 19), ValueError, r"codes must lie in \[0, 19\) \(codebook_size\), got min 19, max 19"),
        (torch.full((2, 2, 5), -1), ValueError, r"got min -1, max -1"),
        (torch.zeros(2, 5, dtype=torch.long), ValueError, r"codes must have shape \(B, Nq, T\), got \(2, 5\)"),
        (torch.zeros(2, 2, 0, dtype=torch.long), ValueError, r"codes have no frames"),
        (torch.zeros(2, 2, 5), TypeError, r"codes must be an integer tensor .* got torch.float32"),
    ],
)
def test_invalid_codes_are_refused(codes, error, match):
    codec = make_codec().eval()
    with pytest.raises(error, match=match):
        codec.decode(codes)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"kmeans_iters": -1}, r"kmeans_iters must be an integer >= 0, got -1"),
        ({"commitment_weight": -0.5}, r"commitment_weight must be >= 0, got -0.5"),
        ({"codebook_weight": -1.0}, r"codebook_weight must be >= 0, got -1.0"),
        ({"downsample_factor": 3}, r"downsample_factor must be 1, 2, 4 or 8"),
    ],
)
def test_invalid_codec_config_is_refused(overrides, match):
    with pytest.raises(ValueError, match=match):
        MuOmniCodecConfig(**overrides)
