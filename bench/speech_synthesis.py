"""Speech for benchmarks, made offline: eSpeak NG through ctypes, or a synthetic speech-like fallback.

`espeak_available()` tells whether the `espeakng-loader` package (which bundles libespeak-ng and its
voice data) is installed; `synthesize(text, voice, rate, pitch)` returns 16 kHz float32 mono audio.
`speech_like(seed, seconds)` needs nothing: vowel-like harmonic segments with gliding pitch and moving
formants, fricative noise bursts and pauses.

Benchmark-only helper (not part of the `muomni` package); it may move to `training/` later.
"""

import ctypes
import importlib.util
import math

import numpy as np
import torch

from muomni.processing import resample_audio

SAMPLING_RATE = 16000
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# Harvard sentences (IEEE 1969 recommended practice for speech quality measurements), public domain
HARVARD_SENTENCES = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.",
    "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.",
    "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.",
    "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.",
    "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.",
    "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.",
    "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.",
    "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.",
    "What joy there is in living.",
    "A king ruled the state in the early days.",
    "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.",
    "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.",
    "Lift the square stone over the fence.",
    "The rope will bind the seven books at once.",
    "Hop over the fence and plunge in.",
    "The friendly gang left the drug store.",
    "Mesh wire keeps chicks inside.",
    "The frosty air passed through the coat.",
    "The crooked maze failed to fool the mouse.",
    "Adding fast leads to wrong sums.",
    "The show was a flop from the very start.",
    "A saw is a tool used for making boards.",
    "The wagon moved on well oiled wheels.",
    "March the soldiers past the next hill.",
    "A cup of sugar makes sweet fudge.",
    "Place a rosebush near the porch steps.",
    "Both lost their lives in the raging storm.",
]

VOICES = ["en-us", "en", "en-us+f2", "en+m3", "en-us+f4", "en+m1"]


class _Espeak:
    """The eSpeak NG library, initialised once in synchronous mode with a collecting callback."""

    def __init__(self):
        import espeakng_loader

        self.library = ctypes.cdll.LoadLibrary(espeakng_loader.get_library_path())
        self.chunks: list[np.ndarray] = []
        self.callback = _CALLBACK(self._collect)  # keep a reference: ctypes does not
        data_path = espeakng_loader.get_data_path().encode()
        self.sampling_rate = self.library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if self.sampling_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({self.sampling_rate})")
        self.library.espeak_SetSynthCallback(self.callback)

    def _collect(self, samples, num_samples, events) -> int:
        if num_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(samples, shape=(num_samples,)).copy())
        return 0

    def synthesize(self, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
        if self.library.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak NG has no voice {voice!r}")
        self.library.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
        self.library.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
        self.chunks = []
        encoded = text.encode()
        self.library.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None)
        self.library.espeak_Synchronize()
        return np.concatenate(self.chunks).astype(np.float32) / 32768.0


_ENGINE: _Espeak | None = None


def espeak_available() -> bool:
    return importlib.util.find_spec("espeakng_loader") is not None


def synthesize(text: str, voice: str = "en-us", rate: int = 160, pitch: int = 50) -> torch.Tensor:
    """eSpeak NG speech for `text`, resampled from 22.05 kHz to 16 kHz: float32 tensor (S,)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    audio = torch.from_numpy(_ENGINE.synthesize(text, voice, rate, pitch))
    return resample_audio(audio, _ENGINE.sampling_rate, SAMPLING_RATE)


def speech_like(seed: int, seconds: float = 2.0, sampling_rate: int = SAMPLING_RATE) -> torch.Tensor:
    """Synthetic speech-like audio (no dependencies): float32 tensor (seconds * sampling_rate,)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=generator)

    num_samples = int(seconds * sampling_rate)
    t = torch.arange(num_samples) / sampling_rate
    bounds, kinds = [0], []
    while bounds[-1] < num_samples:  # segments of 80-250 ms: voiced 60 %, fricative 25 %, pause 15 %
        bounds.append(min(num_samples, bounds[-1] + int((0.08 + 0.17 * rand(1).item()) * sampling_rate)))
        kinds.append(int(torch.multinomial(torch.tensor([0.6, 0.25, 0.15]), 1, generator=generator)))
    f0 = (90 + 160 * rand(1)) * (1 + 0.2 * torch.sin(2 * math.pi * (0.5 + rand(1)) * t + 6 * rand(1)))
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sampling_rate
    vowels = torch.tensor(
        [[300, 2300, 3000], [700, 1200, 2600], [500, 1500, 2500], [350, 800, 2400], [600, 1900, 2700]]
    )  # (5 vowels, 3 formants) in Hz
    formants = torch.zeros(num_samples, 3)
    for k in range(len(kinds)):
        formants[bounds[k] : bounds[k + 1]] = vowels[int(rand(1) * 5)] * (0.9 + 0.2 * rand(3))
    kernel = torch.ones(1, 1, 481) / 481  # 30 ms moving average: coarticulation
    formants = torch.nn.functional.conv1d(
        torch.nn.functional.pad(formants.T[:, None], (240, 240), mode="replicate"), kernel
    )[:, 0].T  # (S, 3)
    hop = 80  # harmonic amplitudes at a 200 Hz control rate
    harmonics = torch.arange(1, 41, dtype=torch.float32)
    freqs = f0[::hop, None] * harmonics  # (S / hop, 40)
    envelope = sum(
        torch.exp(-0.5 * ((freqs - formants[::hop, i : i + 1]) / (60 + 40 * i)) ** 2) / (i + 1) for i in range(3)
    )
    envelope = (envelope * (freqs < 7800)).repeat_interleave(hop, 0)[:num_samples]  # (S, 40)
    voiced = (envelope * torch.sin(phase[:, None] * harmonics)).sum(1)
    spectrum = torch.fft.rfft(torch.randn(num_samples, generator=generator))
    frequencies = torch.fft.rfftfreq(num_samples, 1 / sampling_rate)
    fricative = torch.fft.irfft(spectrum * ((frequencies > 3000) & (frequencies < 7500)), num_samples) * 3
    voiced_gate, fricative_gate = torch.zeros(num_samples), torch.zeros(num_samples)
    for k, kind in enumerate(kinds):
        length = bounds[k + 1] - bounds[k]
        ramp = torch.sin(math.pi * torch.arange(length) / length)
        if kind < 2:
            (voiced_gate if kind == 0 else fricative_gate)[bounds[k] : bounds[k + 1]] = ramp
    wave = voiced * voiced_gate + fricative * fricative_gate + 0.002 * torch.randn(num_samples, generator=generator)
    return (0.5 * wave / wave.abs().max()).float()
