"""Speech synthesis for the built-in dataset: eSpeak NG driven through ctypes, resampled to 16 kHz.

Notation: `S` samples.

The engine is `libespeak-ng` as bundled, with its voice data, by the `espeakng-loader` pip package
(eSpeak NG itself is GPL-3.0-or-later; it is loaded at run time as a separate shared library, and
the audio it produces is data, not a derivative of its code). No system install is needed.

Voices. A voice is `"<accent>+<variant>"`: an English accent file (`en`, `en-us`, `en-gb-scotland`,
...) and a variant from `espeak-ng-data/voices/!v` (`m1`..`m8`, `f1`..`f5`, `klatt`..`klatt6` and
named community variants). `TRAIN_ACCENTS` x `TRAIN_VARIANTS` are used for training;
`HELDOUT_ACCENTS` and `HELDOUT_VARIANTS` appear only in the test split, to measure cross-voice
generalisation. `ASSISTANT_VOICE` is the one voice of the assistant's spoken answers (SFT `tts`).

Determinism. eSpeak's waveform generator keeps state between utterances in static variables that
no API call resets (the pitch-flutter phase, the automatic gain, the cycle counter), and it draws
breath noise from its own generator and from libc `rand()`. So one loaded engine does not repeat
itself: the same call twice gives different samples. `EspeakSynthesizer` therefore loads a private
copy of the library for every utterance and unloads it afterwards (`dlclose`), and seeds both
generators: the output is a pure function of (text, voice, rate, pitch, range, seed). Reloading
costs ~1.5 ms per utterance, because the engine reads a minimal private copy of its data (see
`_private_workspace`); one utterance of 2-3 s takes ~7 ms of CPU, resampling included (~130
utterances/s per core). A module-level lock makes it safe to call from threads (calls are
serialised: eSpeak has one global state per process); each process has its own copy.

Resampling. eSpeak renders at 22050 Hz; `resample` converts to 16 kHz by zero-padding, an FFT,
dropping every bin above the new Nyquist frequency (with a raised-cosine taper over the last 10%
of the band, so the impulse response rings briefly) and an inverse FFT: band-limited, with no
aliasing, exact for any pair of integer rates.
"""

import _ctypes
import ctypes
import io
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass

import numpy as np

SAMPLING_RATE = 16000

TRAIN_ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
HELDOUT_ACCENTS = ("en-us-nyc",)
# eSpeak's numbered male/female/Klatt variants and community variants that sound like speech (the
# whispering, robotic and "demonic" ones are left out: they would teach the talker odd voices).
TRAIN_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m7", "m8", "f1", "f2", "f3", "f5",
    "klatt", "klatt2", "klatt4", "klatt5", "klatt6",
    "adam", "Alex", "Andy", "Annie", "belinda", "benjamin", "boris", "caleb", "david", "edward",
    "grandma", "grandpa", "ian", "iven2", "john", "Lee", "linda", "max", "Michael", "norbert",
    "quincy", "rob", "steph", "travis", "victor", "zac",
)
HELDOUT_VARIANTS = ("f4", "m6", "klatt3", "aunty")
ASSISTANT_VOICE = "en-us+f3"

# espeak_PARAMETER values and flags from speak_lib.h
_RATE, _PITCH, _RANGE = 1, 3, 4
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EE_OK = 0

RATE_RANGE = (80, 450)  # words per minute, espeakRATE_MINIMUM / espeakRATE_MAXIMUM
PITCH_RANGE = (0, 99)  # eSpeak's 0-99 scales for base pitch and intonation range

_LIBRARY_NAME = "espeak-ng.dll" if sys.platform == "win32" else "libespeak-ng.so"
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakUnavailableError(RuntimeError):
    """libespeak-ng or its voice data cannot be found or loaded."""


def espeak_paths() -> tuple[str, str]:
    """(path of libespeak-ng, path of espeak-ng-data) from the `espeakng-loader` package."""
    try:
        import espeakng_loader
    except ImportError as err:
        raise EspeakUnavailableError(
            "speech synthesis needs eSpeak NG from the 'espeakng-loader' package: pip install espeakng-loader"
        ) from err
    try:
        library, data = espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    except RuntimeError as err:  # get_data_path raises when the voice data is missing
        raise EspeakUnavailableError(f"espeakng-loader found no eSpeak NG voice data: {err}") from err
    if not os.path.isfile(library):
        raise EspeakUnavailableError(f"espeakng-loader's libespeak-ng is missing at {library!r}")
    return library, data


def available_variants(data_path: str | None = None) -> list[str]:
    """Names of the voice variants shipped in `espeak-ng-data/voices/!v`."""
    data_path = data_path or espeak_paths()[1]
    return sorted(os.listdir(os.path.join(data_path, "voices", "!v")))


def split_voice(voice: str) -> tuple[str, str | None]:
    """`"en-us+f3"` -> `("en-us", "f3")`; `"en"` -> `("en", None)`."""
    if not isinstance(voice, str) or not voice or voice.count("+") > 1:
        raise ValueError(f"voice must look like 'accent' or 'accent+variant' (e.g. 'en-us+f3'), got {voice!r}")
    accent, _, variant = voice.partition("+")
    return accent, (variant or None)


def is_heldout_voice(voice: str) -> bool:
    """Whether `voice` uses an accent or a variant that is kept out of the train and validation splits."""
    accent, variant = split_voice(voice)
    return accent in HELDOUT_ACCENTS or variant in HELDOUT_VARIANTS


def resample(waveform: np.ndarray, orig_sampling_rate: int, target_sampling_rate: int) -> np.ndarray:
    """Band-limited FFT resampling of a mono float waveform.

    The clip is zero-padded (by at least 2048 samples, so the circular FFT acts as a linear filter),
    transformed, cut (or zero-extended) to the new band with a raised-cosine taper over the top 10%
    of the lower Nyquist band, and transformed back.

    Args:
        waveform (`np.ndarray` of shape `(S,)`): float audio.
        orig_sampling_rate / target_sampling_rate (`int`): rates in Hz.

    Returns:
        `np.ndarray` of shape `(ceil(S * target / orig),)`, float32.
    """
    for name, rate in (("orig_sampling_rate", orig_sampling_rate), ("target_sampling_rate", target_sampling_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"{name} must be a positive integer, got {rate!r}")
    waveform = np.asarray(waveform)
    if waveform.ndim != 1:
        raise ValueError(f"waveform must have shape (S,), got {waveform.shape}")
    if orig_sampling_rate == target_sampling_rate:
        return waveform.astype(np.float32)
    gcd = math.gcd(orig_sampling_rate, target_sampling_rate)
    up, down = target_sampling_rate // gcd, orig_sampling_rate // gcd
    num_out = math.ceil(len(waveform) * up / down)
    # a padded length that is a multiple of `down` (so the output length is an integer) and FFT-friendly
    blocks = _next_smooth(math.ceil((len(waveform) + 2048) / down))
    padded_in, padded_out = blocks * down, blocks * up
    spectrum = np.fft.rfft(waveform.astype(np.float64), n=padded_in)
    bins = padded_out // 2 + 1
    kept = np.zeros(bins, dtype=np.complex128)
    common = min(bins, len(spectrum))
    kept[:common] = spectrum[:common]
    # taper the top 10% of the shared band: 1 at 0.9 * Nyquist, 0 at the Nyquist frequency
    band_top = common - 1
    freqs = np.arange(common) / band_top
    taper = np.clip((1.0 - freqs) / 0.1, 0.0, 1.0)
    kept[:common] *= 0.5 - 0.5 * np.cos(np.pi * taper)
    out = np.fft.irfft(kept, n=padded_out) * (padded_out / padded_in)
    return out[:num_out].astype(np.float32)


def _next_smooth(n: int) -> int:
    """The smallest integer >= n whose prime factors are 2, 3 and 5 (fast FFT sizes)."""
    best = 2 ** math.ceil(math.log2(max(n, 1)))
    power5 = 1
    while power5 < 2 * n:
        power35 = power5
        while power35 < 2 * n:
            value = power35
            while value < n:
                value *= 2
            best = min(best, value)
            power35 *= 3
        power5 *= 5
    return best


@dataclass(frozen=True)
class VoiceSettings:
    """How one utterance is spoken: `voice` ("accent+variant"), rate in words per minute, base pitch
    and intonation range on eSpeak's 0-99 scales."""

    voice: str
    words_per_minute: int = 175
    pitch: int = 50
    pitch_range: int = 50

    def __post_init__(self):
        split_voice(self.voice)
        for name, value, (low, high) in (
            ("words_per_minute", self.words_per_minute, RATE_RANGE),
            ("pitch", self.pitch, PITCH_RANGE),
            ("pitch_range", self.pitch_range, PITCH_RANGE),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


_LOCK = threading.RLock()


class EspeakSynthesizer:
    """Text -> 16 kHz float32 speech with eSpeak NG, English voices only ("<English accent>+<variant>").

    Args:
        library_path / data_path (`str`, *optional*): libespeak-ng and espeak-ng-data; default: the
            ones bundled by `espeakng-loader`.
        sampling_rate (`int`, defaults to 16000): output rate.

    Raises `EspeakUnavailableError` at construction when the library or its data cannot be loaded.
    """

    def __init__(
        self, library_path: str | None = None, data_path: str | None = None, sampling_rate: int = SAMPLING_RATE
    ):
        if library_path is None or data_path is None:
            default_library, default_data = espeak_paths()
            library_path, data_path = library_path or default_library, data_path or default_data
        if not os.path.isfile(library_path):
            raise EspeakUnavailableError(f"libespeak-ng not found at {library_path!r}")
        if not os.path.isdir(os.path.join(data_path, "voices", "!v")):
            raise EspeakUnavailableError(f"no eSpeak NG voice data (a 'voices/!v' folder) in {data_path!r}")
        if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer)) or sampling_rate <= 0:
            raise ValueError(f"sampling_rate must be a positive integer, got {sampling_rate!r}")
        self.source_library_path, self.source_data_path = library_path, data_path
        self.sampling_rate = sampling_rate
        self.variants = frozenset(available_variants(data_path))
        self.native_sampling_rate = None
        # every process works in its own subfolder of one folder that the creating process removes
        self._root = tempfile.mkdtemp(prefix="muomni-espeak-")
        weakref.finalize(self, _remove_private_copy, self._root, os.getpid())
        self._workspace_pid, self._workspace = None, None
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)
        self._libc = ctypes.CDLL(None) if sys.platform != "win32" else ctypes.cdll.msvcrt
        with _LOCK:
            library = self._load()  # fail early, with a clear error, if the library does not load
            self._unload(library)

    def _private_workspace(self) -> str:
        """This process's private folder: a copy of the library and a minimal espeak-ng-data.

        A private library copy, because dlopen of a path that other code holds open shares that
        handle, which then never unloads and leaks the engine's state between utterances. A minimal
        data folder (phoneme tables, the English dictionary and accents, and the one variant in use),
        because eSpeak lists every voice file on each voice selection: with the full data that
        listing costs ~10 ms per utterance, with this one ~0.5 ms. Forked workers get their own.
        """
        if self._workspace_pid == os.getpid():
            return self._workspace
        workspace = os.path.join(self._root, str(os.getpid()))
        shutil.rmtree(workspace, ignore_errors=True)  # a recycled process id
        os.makedirs(workspace)
        shutil.copy2(self.source_library_path, os.path.join(workspace, _LIBRARY_NAME))
        data = os.path.join(workspace, "espeak-ng-data")
        os.makedirs(os.path.join(data, "lang", "gmw"))
        os.makedirs(os.path.join(data, "voices", "!v"))
        for name in ("phondata", "phondata-manifest", "phonindex", "phontab", "intonations", "en_dict"):
            source = os.path.join(self.source_data_path, name)
            if not os.path.isfile(source):
                raise EspeakUnavailableError(f"eSpeak NG data file {name!r} is missing from {self.source_data_path!r}")
            shutil.copy2(source, data)
        accents = os.path.join(self.source_data_path, "lang", "gmw")
        for name in sorted(os.listdir(accents)):
            if name.startswith("en"):
                shutil.copy2(os.path.join(accents, name), os.path.join(data, "lang", "gmw"))
        self._workspace_pid, self._workspace = os.getpid(), workspace
        return workspace

    def _select_variant(self, variant: str | None) -> None:
        # the private voices/!v holds exactly the variant of this utterance (see _private_workspace)
        folder = os.path.join(self._private_workspace(), "espeak-ng-data", "voices", "!v")
        for name in os.listdir(folder):
            if name != variant:
                os.remove(os.path.join(folder, name))
        if variant is not None and not os.path.exists(os.path.join(folder, variant)):
            shutil.copy2(os.path.join(self.source_data_path, "voices", "!v", variant), folder)

    def _collect(self, wav, num_samples, events) -> int:
        if wav and num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = continue synthesis

    def _load(self):
        workspace = self._private_workspace()
        try:
            library = ctypes.CDLL(os.path.join(workspace, _LIBRARY_NAME), mode=getattr(os, "RTLD_LOCAL", 0))
        except OSError as err:
            raise EspeakUnavailableError(f"cannot load libespeak-ng from {self.source_library_path!r}: {err}") from err
        if not hasattr(library, "espeak_ng_SetRandSeed"):
            self._unload(library, terminate=False)
            raise EspeakUnavailableError(
                f"{self.source_library_path!r} lacks espeak_ng_SetRandSeed: "
                "eSpeak NG >= 1.51 is needed for reproducible speech"
            )
        library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        library.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        library.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        data_path = os.path.join(workspace, "espeak-ng-data")
        rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            self._unload(library, terminate=False)
            raise EspeakUnavailableError(
                f"espeak_Initialize failed (returned {rate}) with the data of {self.source_data_path!r}"
            )
        self.native_sampling_rate = rate
        library.espeak_SetSynthCallback(self._callback)
        return library

    @staticmethod
    def _unload(library, terminate: bool = True) -> None:
        if terminate:
            library.espeak_Terminate()
        # unloading resets every static variable of the engine for the next utterance
        (_ctypes.FreeLibrary if sys.platform == "win32" else _ctypes.dlclose)(library._handle)

    def synthesize_native(self, text: str, settings: VoiceSettings, seed: int = 0) -> np.ndarray:
        """`text` spoken with `settings`, as int16 samples at eSpeak's native rate (22050 Hz)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text must be a non-empty string, got {text!r}")
        if not isinstance(settings, VoiceSettings):
            raise TypeError(f"settings must be a VoiceSettings, got {type(settings).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        accent, variant = split_voice(settings.voice)
        if variant is not None and variant not in self.variants:
            raise ValueError(
                f"unknown eSpeak voice variant {variant!r} in {settings.voice!r}; see available_variants()"
            )
        with _LOCK:
            self._select_variant(variant)
            library = self._load()
            try:
                if library.espeak_SetVoiceByName(settings.voice.encode()) != _EE_OK:
                    raise ValueError(f"eSpeak NG has no voice {settings.voice!r} (accent {accent!r} not found)")
                library.espeak_SetParameter(_RATE, int(settings.words_per_minute), 0)
                library.espeak_SetParameter(_PITCH, int(settings.pitch), 0)
                library.espeak_SetParameter(_RANGE, int(settings.pitch_range), 0)
                seed = int(seed) % (2**31)
                library.espeak_ng_SetRandSeed(seed)
                self._libc.srand(ctypes.c_uint(seed))  # breath noise also draws from libc rand()
                encoded = text.encode("utf-8") + b"\0"
                self._chunks = []
                status = library.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                if status != _EE_OK:
                    raise RuntimeError(f"espeak_Synth failed with status {status} for {text!r}")
                chunks, self._chunks = self._chunks, []
            finally:
                self._unload(library)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def synthesize(self, text: str, settings: VoiceSettings, seed: int = 0, trim: bool = True) -> np.ndarray:
        """`text` spoken with `settings` as float32 in [-1, 1] at `self.sampling_rate`.

        With `trim`, eSpeak's leading and trailing silence is cut (to 10 ms of margin).

        Returns:
            `np.ndarray` of shape `(S,)`, float32.
        """
        native = self.synthesize_native(text, settings, seed)
        audio = native.astype(np.float32) / 32768.0
        if trim:
            audio = trim_silence(audio, self.native_sampling_rate)
        return resample(audio, self.native_sampling_rate, self.sampling_rate)


def _remove_private_copy(path: str, owner_pid: int) -> None:
    # a forked worker inherits the synthesizer; only the process that made the folder removes it
    if os.getpid() == owner_pid:
        shutil.rmtree(path, ignore_errors=True)


def trim_silence(audio: np.ndarray, sampling_rate: int, threshold: float = 1e-3, margin_s: float = 0.01) -> np.ndarray:
    """Cut leading and trailing samples below `threshold`, keeping `margin_s` seconds each side."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    margin = int(margin_s * sampling_rate)
    return audio[max(0, loud[0] - margin) : loud[-1] + 1 + margin]


_DEFAULT: EspeakSynthesizer | None = None


def get_synthesizer() -> EspeakSynthesizer:
    """The process-wide `EspeakSynthesizer` with the bundled library (created on first use)."""
    global _DEFAULT
    with _LOCK:
        if _DEFAULT is None:
            _DEFAULT = EspeakSynthesizer()
        return _DEFAULT


def synthesize(
    text: str,
    voice: str = ASSISTANT_VOICE,
    words_per_minute: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    seed: int = 0,
) -> np.ndarray:
    """Speak `text` with eSpeak NG: float32 mono at 16 kHz, shape `(S,)`; identical for identical arguments."""
    return get_synthesizer().synthesize(text, VoiceSettings(voice, words_per_minute, pitch, pitch_range), seed)


def encode_flac(audio: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> bytes:
    """float audio in [-1, 1] -> 16-bit FLAC bytes (what the built-in datasets store in `Audio` columns)."""
    import soundfile

    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, sampling_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_audio(value) -> tuple[np.ndarray, int]:
    """An `Audio` cell -> (float32 samples `(S,)`, sampling rate), without torchcodec.

    Accepts what a `datasets.Audio(decode=False)` column yields (`{"bytes", "path"}`), a decoded
    `{"array", "sampling_rate"}` dict, or a torchcodec `AudioDecoder` (what `Audio()` yields when
    torchcodec is installed).
    """
    import soundfile

    if hasattr(value, "get_all_samples"):  # torchcodec AudioDecoder
        samples = value.get_all_samples()
        return samples.data.mean(dim=0).numpy().astype(np.float32), int(samples.sample_rate)
    if not isinstance(value, dict):
        raise TypeError(f"expected an audio dict or AudioDecoder, got {type(value).__name__}")
    if value.get("array") is not None:
        return np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value.get("path")
    if source is None:
        raise ValueError(f"audio value has neither 'bytes' nor 'path': {sorted(value)}")
    audio, rate = soundfile.read(source, dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)


_WORD = re.compile(r"[a-z']+")


def normalize_transcript(text: str) -> str:
    """The transcript form the speech datasets store: lowercase ASCII words (letters and apostrophes)
    separated by single spaces; other punctuation is dropped. Apply it to hypotheses before scoring."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    return " ".join(_WORD.findall(text.lower().replace("-", " ")))
