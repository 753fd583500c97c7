"""MuOmniFeatureExtractor: Whisper parity, padding invariance, input types, resampling, errors, save/load."""

import math

import numpy as np
import pytest
import soundfile
import torch
from transformers import AutoFeatureExtractor, WhisperFeatureExtractor

import muomni  # noqa: F401  (registers the Auto classes)
from muomni.configuration import MuOmniAudioEncoderConfig, MuOmniConfig
from muomni.processing import MuOmniFeatureExtractor, log_mel_spectrogram, normalize_log_mel, resample_audio

SR = 16000


def chirp(seconds: float, sampling_rate: int = SR, seed: int = 0) -> np.ndarray:
    """A 200 Hz -> 4 kHz chirp plus a little white noise, float32 (S,)."""
    t = np.arange(int(round(seconds * sampling_rate))) / sampling_rate
    rng = np.random.default_rng(seed)
    sweep = 0.5 * np.sin(2 * np.pi * (200 * t + 0.5 * (4000 - 200) / seconds * t**2))
    return (sweep + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def tones(seconds: float, sampling_rate: int, freqs=(440.0, 1500.0, 3100.0)) -> np.ndarray:
    t = np.arange(int(round(seconds * sampling_rate))) / sampling_rate
    return (sum(0.2 * np.sin(2 * np.pi * f * t) for f in freqs)).astype(np.float32)


@pytest.fixture(scope="module")
def fe():
    return MuOmniFeatureExtractor()


@pytest.fixture(scope="module")
def whisper():
    return WhisperFeatureExtractor(feature_size=128, sampling_rate=SR, hop_length=160, n_fft=400)


def features(fe, audio, **kwargs):
    kwargs.setdefault("sampling_rate", SR)
    return fe(audio, return_tensors="pt", **kwargs)


# ----------------------------------------------------------------------------------------------
# Parity with Whisper


def test_matches_whisper_when_whisper_pads_to_longest(fe, whisper):
    # One clip, no padding on either side: the same STFT, filterbank, log and per-clip clamp.
    audio = chirp(3.0)
    ours = features(fe, audio)["input_features"]
    theirs = whisper(audio, sampling_rate=SR, padding="longest", return_tensors="pt")["input_features"]
    assert ours.shape == theirs.shape == (1, 128, 300)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_matches_whisper_30s_window_except_the_last_frame(fe, whisper):
    # Whisper pads the clip with zeros to 30 s before its STFT: only the last frame's window
    # (centred 200 samples before the end) reaches past the clip, into Whisper's zeros instead of
    # our reflection. The maximum is unchanged (the padded frames are at the -10 floor).
    audio = chirp(3.0)
    ours = features(fe, audio)["input_features"]
    theirs = whisper(audio, sampling_rate=SR, return_tensors="pt")["input_features"][..., :300]
    torch.testing.assert_close(ours[..., :-1], theirs[..., :-1], atol=1e-5, rtol=0)
    assert (ours[..., -1] - theirs[..., -1]).abs().max() > 1e-3


def test_log_mel_helper_agrees_with_call(fe):
    audio = chirp(2.0)
    called = features(fe, audio)["input_features"][0]
    waveform = torch.from_numpy(audio)
    torch.testing.assert_close(fe.log_mel(waveform, normalize=True), called, atol=1e-6, rtol=0)
    torch.testing.assert_close(normalize_log_mel(fe.log_mel(waveform[None])), called[None], atol=1e-6, rtol=0)
    raw = log_mel_spectrogram(waveform, torch.from_numpy(fe.mel_filters).float(), 400, 160)
    torch.testing.assert_close(raw, fe.log_mel(waveform))
    assert raw.min() >= -10.0  # log10 floor of 1e-10


def test_log_mel_is_differentiable(fe):
    waveform = torch.from_numpy(chirp(0.5)).requires_grad_(True)
    fe.log_mel(waveform).sum().backward()
    assert waveform.grad is not None and torch.isfinite(waveform.grad).all()


# ----------------------------------------------------------------------------------------------
# Frames, padding, masks


@pytest.mark.parametrize("num_samples", [201, 320, 479, 16000, 16001, 48159])
def test_frame_count_formula(fe, num_samples):
    out = features(fe, chirp(num_samples / SR))
    assert fe.num_frames(num_samples) == num_samples // 160
    assert out["input_features"].shape == (1, 128, num_samples // 160)
    assert out["attention_mask"].tolist() == [[1] * (num_samples // 160)]


def test_short_clip_is_identical_alone_and_in_a_batch(fe):
    short, long = chirp(1.234, seed=1), chirp(3.0, seed=2)
    alone = features(fe, short)
    batch = features(fe, [short, long])
    frames = fe.num_frames(short.shape[0])
    assert batch["input_features"].shape == (2, 128, 300)
    assert batch["attention_mask"].dtype == torch.int64
    assert batch["attention_mask"].sum(-1).tolist() == [frames, 300]
    torch.testing.assert_close(batch["input_features"][0, :, :frames], alone["input_features"][0], atol=1e-6, rtol=0)
    assert torch.equal(batch["input_features"][0, :, frames:], torch.zeros(128, 300 - frames))
    torch.testing.assert_close(batch["input_features"][1], features(fe, long)["input_features"][0], atol=1e-6, rtol=0)


def test_padding_value_fills_padded_frames():
    fe = MuOmniFeatureExtractor(padding_value=-1.5)
    out = features(fe, [chirp(0.5), chirp(1.0)])
    assert torch.all(out["input_features"][0, :, 50:] == -1.5)


def test_padding_max_length_and_pad_to_multiple_of(fe):
    out = features(fe, [chirp(0.5), chirp(1.0)], padding="max_length", max_length=2 * SR)
    assert out["input_features"].shape == (2, 128, 200)
    assert out["attention_mask"].sum(-1).tolist() == [50, 100]
    out = features(fe, chirp(1.0), pad_to_multiple_of=64)
    assert out["input_features"].shape == (1, 128, 128)
    assert out["attention_mask"].sum().item() == 100


def test_return_types(fe):
    out = fe(chirp(0.5), sampling_rate=SR)
    assert isinstance(out["input_features"], np.ndarray) and out["input_features"].dtype == np.float32
    assert isinstance(out["attention_mask"], np.ndarray)
    assert out["attention_mask"].dtype == np.int64  # the processor renames it feature_attention_mask
    out = fe(chirp(0.5), sampling_rate=SR, return_attention_mask=False, return_tensors="pt")
    assert set(out) == {"input_features"}


# ----------------------------------------------------------------------------------------------
# Input types


def test_dtypes_lists_and_tensors_agree(fe):
    audio = chirp(1.0)
    reference = features(fe, audio)["input_features"]
    for variant in (audio.astype(np.float64), audio.tolist(), torch.from_numpy(audio), audio.astype(np.float16)):
        atol = 2e-2 if getattr(variant, "dtype", None) == np.float16 else 1e-5
        torch.testing.assert_close(features(fe, variant)["input_features"], reference, atol=atol, rtol=0)


def test_int16_is_scaled_by_1_over_32768(fe):
    pcm = np.round(chirp(1.0) * 32767).astype(np.int16)
    expected = features(fe, pcm.astype(np.float32) / 32768)["input_features"]
    torch.testing.assert_close(features(fe, pcm)["input_features"], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(features(fe, torch.from_numpy(pcm))["input_features"], expected, atol=1e-6, rtol=0)


def test_wav_file_path_and_pathlib(fe, tmp_path):
    pcm = np.round(chirp(1.0) * 32767).astype(np.int16)
    path = tmp_path / "clip.wav"
    soundfile.write(path, pcm, SR, subtype="PCM_16")
    expected = features(fe, pcm)["input_features"]
    torch.testing.assert_close(fe(str(path), return_tensors="pt")["input_features"], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(fe(path, return_tensors="pt")["input_features"], expected, atol=1e-6, rtol=0)


def test_stereo_is_mixed_to_mono_in_both_layouts_and_from_files(fe, tmp_path):
    left, right = chirp(1.0, seed=3), tones(1.0, SR)
    expected = features(fe, (left + right) / 2)["input_features"]
    stereo = np.stack([left, right], axis=1)  # (samples, channels), soundfile's layout
    torch.testing.assert_close(features(fe, stereo)["input_features"], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(features(fe, torch.from_numpy(stereo.T))["input_features"], expected, atol=1e-6, rtol=0)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, SR, subtype="FLOAT")
    torch.testing.assert_close(fe(path, return_tensors="pt")["input_features"], expected, atol=1e-6, rtol=0)


def test_batch_of_mixed_types(fe, tmp_path):
    a, b = chirp(0.5, seed=4), chirp(0.8, seed=5)
    path = tmp_path / "b.wav"
    soundfile.write(path, b, SR, subtype="FLOAT")
    out = features(fe, [a.tolist(), torch.from_numpy(a), path])
    assert out["input_features"].shape == (3, 128, 80)
    assert out["attention_mask"].sum(-1).tolist() == [50, 50, 80]
    torch.testing.assert_close(out["input_features"][2], features(fe, b)["input_features"][0], atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------------------
# Resampling


@pytest.mark.parametrize("orig", [44100, 48000, 22050, 8000])
def test_resample_audio_keeps_the_passband(orig):
    resampled = resample_audio(torch.from_numpy(tones(1.0, orig)).double(), orig, SR)
    expected = torch.from_numpy(tones(1.0, SR)).double()
    assert resampled.shape == expected.shape
    torch.testing.assert_close(resampled[200:-200], expected[200:-200], atol=1e-4, rtol=0)


def test_resample_audio_removes_what_would_alias():
    t = torch.arange(44100, dtype=torch.float64) / 44100
    above_nyquist = torch.sin(2 * math.pi * 9000 * t)  # would fold to 7 kHz at 16 kHz
    resampled = resample_audio(above_nyquist, 44100, SR)
    assert resampled[200:-200].abs().max() < 1e-5  # more than 100 dB down


def test_resample_audio_batched_shapes():
    batch = torch.randn(2, 3, 4410)
    out = resample_audio(batch, 44100, SR)
    assert out.shape == (2, 3, 1600)
    torch.testing.assert_close(out[1, 2], resample_audio(batch[1, 2], 44100, SR))


def test_call_resamples_arrays_and_files_on_request(fe, tmp_path):
    expected = features(fe, tones(1.0, SR))["input_features"]
    out = features(fe, tones(1.0, 44100), sampling_rate=44100, resample=True)["input_features"]
    assert out.shape == expected.shape
    # the filter sees zeros past both ends of the clip, so the first and last 2 frames (20 ms) differ
    torch.testing.assert_close(out[..., 2:-2], expected[..., 2:-2], atol=1e-3, rtol=0)
    path = tmp_path / "cd.wav"
    soundfile.write(path, tones(1.0, 44100), 44100, subtype="FLOAT")
    torch.testing.assert_close(fe(path, resample=True, return_tensors="pt")["input_features"], out, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------
# Errors


def test_other_sampling_rate_is_an_error_naming_both_rates(fe, tmp_path):
    match = r"audio clip 0 is sampled at 44100 Hz but MuOmniFeatureExtractor expects 16000 Hz"
    with pytest.raises(ValueError, match=match):
        fe(tones(1.0, 44100), sampling_rate=44100)
    path = tmp_path / "phone.wav"
    soundfile.write(path, tones(1.0, 8000), 8000)
    with pytest.raises(ValueError, match=r"audio file '.*phone\.wav' is sampled at 8000 Hz .* expects 16000 Hz"):
        fe(path)


def test_missing_sampling_rate_warns(fe):
    with pytest.warns(UserWarning, match=r"No sampling_rate was passed to MuOmniFeatureExtractor; assuming 16000 Hz"):
        fe(chirp(0.5))


@pytest.mark.parametrize(
    ("audio", "error", "match"),
    [
        (np.zeros(0, np.float32), ValueError, r"audio clip 0 is empty \(0 samples\)"),
        (np.zeros((0, 2), np.float32), ValueError, r"audio clip 0 is empty \(0 samples\)"),
        ([chirp(0.5), []], ValueError, r"audio clip 1 is empty"),
        ([], ValueError, r"raw_speech is an empty list"),
        (np.array([0.1] * 300 + [np.nan], np.float32), ValueError, r"audio clip 0 has 1 NaN or infinite samples"),
        (np.array([0.1] * 300 + [np.inf, -np.inf], np.float64), ValueError, r"has 2 NaN or infinite samples"),
        (np.zeros(400, np.uint8), TypeError, r"audio clip 0 has dtype uint8; expected float16/32/64, int16 or int32"),
        (np.zeros(400, bool), TypeError, r"has dtype bool"),
        (np.zeros(400, np.complex64), TypeError, r"has dtype complex64"),
        (torch.zeros(400, dtype=torch.int64), TypeError, r"has dtype torch.int64; expected a float dtype"),
        (np.zeros((2, 3, 400), np.float32), ValueError, r"has shape \(2, 3, 400\); expected \(samples,\)"),
        (np.array(0.5, np.float32), ValueError, r"has shape \(\); expected"),
        (np.float32(0.5), TypeError, r"audio clip 0 is a float32; expected a numpy array"),
        (np.zeros((16, 4000), np.float32), ValueError, r"has shape \(16, 4000\): a 2-D clip must be"),
        (np.zeros((4, 4), np.float32), ValueError, r"a 2-D clip must be \(samples, channels\)"),
        (np.zeros(200, np.float32), ValueError, r"has 200 samples; at least 201 \(n_fft // 2 \+ 1, 12\.6 ms\)"),
        ({"array": chirp(0.5)}, TypeError, r"audio clip 0 is a dict; expected a numpy array"),
        ([chirp(0.5), 0.1], TypeError, r"raw_speech mixes numbers and clips"),
        ([["a", "b"]], TypeError, r"audio clip 0 is a list that holds str"),
        ([[[0.1, 0.2], [0.3]]], ValueError, r"audio clip 0 is a ragged nested list"),
    ],
)
def test_bad_audio(fe, audio, error, match):
    with pytest.raises(error, match=match):
        fe(audio, sampling_rate=SR)


def test_too_long_audio_is_an_error_not_a_truncation(tmp_path):
    fe = MuOmniFeatureExtractor(max_length_seconds=2.0)
    with pytest.raises(ValueError, match=r"audio clip 0 lasts 2\.50 s, longer than max_length_seconds=2\.0"):
        fe(chirp(2.5), sampling_rate=SR)
    path = tmp_path / "long.wav"
    soundfile.write(path, chirp(2.5), SR)
    with pytest.raises(ValueError, match=r"audio file '.*long\.wav' lasts 2\.50 s, longer than max_length_seconds"):
        fe(path)


def test_file_errors(fe, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"audio file '.*missing\.wav' does not exist"):
        fe(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 10)
    with pytest.raises(ValueError, match=r"could not read audio file '.*junk\.wav'"):
        fe(junk)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"truncation": True}, r"never truncates audio; got truncation=True"),
        ({"padding": False}, r"padding must be 'longest' or 'max_length', got False"),
        ({"padding": "do_not_pad"}, r"padding must be 'longest' or 'max_length', got 'do_not_pad'"),
        ({"padding": "max_length"}, r"padding='max_length' needs max_length \(in samples\)"),
        ({"padding": "max_length", "max_length": 4000}, r"a clip has 8000 samples, more than max_length=4000"),
        ({"pad_to_multiple_of": 0}, r"pad_to_multiple_of must be a positive integer \(frames\), got 0"),
        ({"sampling_rate": -16000}, r"sampling_rate must be a positive integer, got -16000"),
        ({"sampling_rate": "16k"}, r"sampling_rate must be a positive integer, got '16k'"),
    ],
)
def test_bad_call_arguments(fe, kwargs, match):
    kwargs.setdefault("sampling_rate", SR)
    with pytest.raises(ValueError, match=match):
        fe(chirp(0.5), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"feature_size": 0}, r"feature_size must be a positive integer, got 0"),
        ({"n_fft": 400.0}, r"n_fft must be a positive integer, got 400\.0"),
        ({"hop_length": 500}, r"hop_length \(500\) is larger than n_fft \(400\)"),
        ({"max_frequency": 9000.0}, r"max_frequency \(9000\.0\) <= sampling_rate / 2 \(8000\.0\)"),
        ({"min_frequency": 8000.0}, r"need 0 <= min_frequency \(8000\.0\) < max_frequency"),
        ({"max_length_seconds": 0}, r"max_length_seconds must be > 0, got 0"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MuOmniFeatureExtractor(**kwargs)


def test_helper_errors():
    filters = torch.zeros(201, 128)
    with pytest.raises(ValueError, match=r"waveform must have shape \(S,\) or \(B, S\), got \(1, 1, 400\)"):
        log_mel_spectrogram(torch.zeros(1, 1, 400), filters)
    with pytest.raises(ValueError, match=r"waveform has 200 samples; the centred STFT needs more than n_fft // 2"):
        log_mel_spectrogram(torch.zeros(200), filters)
    with pytest.raises(ValueError, match=r"orig_sampling_rate must be a positive integer, got 0"):
        resample_audio(torch.zeros(100), 0, SR)
    with pytest.raises(ValueError, match=r"orig_sampling_rate must be a positive integer, got '44k'"):
        resample_audio(torch.zeros(100), "44k", SR)
    with pytest.raises(ValueError, match=r"target_sampling_rate must be a positive integer, got 16000\.5"):
        resample_audio(torch.zeros(100), 44100, 16000.5)


# ----------------------------------------------------------------------------------------------
# Save / load


def test_save_pretrained_round_trip(tmp_path):
    fe = MuOmniFeatureExtractor(max_length_seconds=12.5, padding_value=-1.0)
    fe.save_pretrained(tmp_path)
    saved = (tmp_path / "preprocessor_config.json").read_text()
    assert "mel_filters" not in saved and len(saved) < 2000  # rebuilt on load, as in Whisper
    for loaded in (MuOmniFeatureExtractor.from_pretrained(tmp_path), AutoFeatureExtractor.from_pretrained(tmp_path)):
        assert type(loaded) is MuOmniFeatureExtractor
        assert loaded.max_length_seconds == 12.5 and loaded.padding_value == -1.0
        np.testing.assert_array_equal(loaded.mel_filters, fe.mel_filters)
        audio = [chirp(0.5), chirp(1.0)]
        assert torch.equal(features(loaded, audio)["input_features"], features(fe, audio)["input_features"])
        assert loaded.to_dict() == fe.to_dict()


@pytest.mark.parametrize("config", [MuOmniConfig(), MuOmniAudioEncoderConfig()])
def test_auto_feature_extractor_from_model_config(tmp_path, config):
    config.save_pretrained(tmp_path)
    MuOmniFeatureExtractor().save_pretrained(tmp_path)
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is MuOmniFeatureExtractor
