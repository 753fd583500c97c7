"""The built-in dataset: determinism, disjoint splits, schemas, audio and image content, answers that
match the drawn scenes, a corpus free of held-out sentences, and clear errors on bad input."""

import re
import sys
from collections import Counter

import numpy as np
import pytest
from datasets import Audio, Image

pytest.importorskip("espeakng_loader", reason="speech synthesis needs the espeakng-loader package")

from muomni.training.data import (  # noqa: E402
    DATASET_NAMES,
    FEATURES,
    HELDOUT_ACCENTS,
    HELDOUT_VARIANTS,
    SFT_TASKS,
    EspeakSynthesizer,
    EspeakUnavailableError,
    build_builtin_dataset,
    decode_audio,
    load_builtin_dataset,
    normalize_transcript,
    resample,
    synthesize,
    with_audio_arrays,
)
from muomni.training.data import builtin, speech  # noqa: E402
from muomni.training.data.scenes import (  # noqa: E402
    COLOURS,
    IMAGE_SIZE,
    NUMBER_WORDS,
    SHAPES,
    draw_scene,
    plural,
    sample_scene,
    scene_questions,
)
from muomni.training.data.text import SENTENCE_TEMPLATES, HeldoutFilter, content_key, sentence_split  # noqa: E402

SPLITS = ("train", "validation", "test")


def _text_columns(sft):
    return sft.select_columns(["task", "messages", "target"])  # reading rows would decode the media


def _undecoded(sft):
    return sft.cast_column("audio", Audio(decode=False)).cast_column("image", Image(decode=False))


def _media_bytes(row):
    return (row["image"] or row["audio"])["bytes"]


@pytest.fixture(scope="module")
def built():
    return build_builtin_dataset(seed=0, scale="test", show_progress=False)


# ---------------------------------------------------------------- determinism and schemas


def test_same_seed_same_content_and_fingerprint(built):
    again = build_builtin_dataset(seed=0, scale="test", show_progress=False)
    for name in DATASET_NAMES:
        for split in SPLITS:
            assert again[name][split]._fingerprint == built[name][split]._fingerprint, (name, split)
            assert again[name][split].data.table.equals(built[name][split].data.table), (name, split)


def test_num_proc_does_not_change_content(built):
    parallel = build_builtin_dataset(seed=0, scale="test", num_proc=2, show_progress=False)
    for name in DATASET_NAMES:
        for split in SPLITS:
            assert parallel[name][split].data.table.equals(built[name][split].data.table), (name, split)


def test_other_seed_other_content(built):
    other = build_builtin_dataset(seed=1, scale="test", show_progress=False)
    assert other["speech"]["train"]["text"] != built["speech"]["train"]["text"]
    assert other["images"]["train"]["caption"] != built["images"]["train"]["caption"]
    assert other["speech"]["train"]._fingerprint != built["speech"]["train"]._fingerprint


def test_schemas(built):
    assert set(built) == set(DATASET_NAMES)
    for name in DATASET_NAMES:
        assert list(built[name]) == list(SPLITS)
        for split in SPLITS:
            assert built[name][split].features == FEATURES[name], (name, split)
            assert built[name][split].num_rows > 0
    assert FEATURES["speech"]["audio"].sampling_rate == 16000
    assert list(FEATURES["speech"]) == ["audio", "text", "voice", "words_per_minute", "pitch", "sentence_id"]
    assert list(FEATURES["images"]) == ["image", "caption", "questions", "answers", "question_types", "scene_id"]
    assert list(FEATURES["sft"]) == ["task", "messages", "image", "audio", "target"]


def test_save_and_load_round_trip(built, tmp_path):
    build_builtin_dataset(output_dir=str(tmp_path / "a"), seed=0, scale="test", show_progress=False)
    for name in DATASET_NAMES:
        built[name].save_to_disk(str(tmp_path / "elsewhere" / name))
    loaded, resaved = load_builtin_dataset(str(tmp_path / "a")), load_builtin_dataset(str(tmp_path / "elsewhere"))
    for name in DATASET_NAMES:
        for split in SPLITS:
            assert loaded[name][split].data.table.equals(built[name][split].data.table)
            # saving changes the fingerprint, deterministically and whatever the folder
            assert loaded[name][split]._fingerprint == resaved[name][split]._fingerprint


# ---------------------------------------------------------------- splits


def test_splits_share_no_sentence_scene_or_conversation(built):
    def disjoint(values_by_split):
        for i, a in enumerate(SPLITS):
            for b in SPLITS[i + 1 :]:
                assert not set(values_by_split[a]) & set(values_by_split[b]), (a, b)

    disjoint({s: built["speech"][s]["text"] for s in SPLITS})
    disjoint({s: built["images"][s]["caption"] for s in SPLITS})
    disjoint({s: [m[0]["content"] for m in built["chat"][s]["messages"]] for s in SPLITS})
    disjoint({s: built["text"][s]["text"] for s in SPLITS})
    # SFT prompts and short answers recur ("How many stars are there?" -> "two"); the media never do
    disjoint({s: [_media_bytes(r) for r in _undecoded(built["sft"][s]) if r["task"] != "chat"] for s in SPLITS})
    disjoint({s: [str(r["messages"]) for r in _text_columns(built["sft"][s]) if r["task"] == "chat"] for s in SPLITS})


def test_sft_rows_come_from_the_same_split(built):
    for split in SPLITS:
        sft = _text_columns(built["sft"][split])
        transcripts = set(built["speech"][split]["text"])
        captions = set(built["images"][split]["caption"])
        chats = [m for m in built["chat"][split]["messages"]]
        for row in sft:
            if row["task"] == "asr":
                assert row["target"] in transcripts
            elif row["task"] == "tts":
                assert normalize_transcript(row["target"]) in transcripts
            elif row["task"] == "image_caption":
                assert row["target"] in captions
            elif row["task"] == "chat":
                assert row["messages"] in chats


def test_heldout_voices_only_in_test(built):
    def heldout(voice):
        accent, _, variant = voice.partition("+")
        return accent in HELDOUT_ACCENTS or variant in HELDOUT_VARIANTS

    for split in ("train", "validation"):
        assert not any(heldout(v) for v in built["speech"][split]["voice"])
    assert any(heldout(v) for v in built["speech"]["test"]["voice"])


def test_heldout_templates_never_reach_train():
    rng = np.random.default_rng(0)
    for template in SENTENCE_TEMPLATES:
        if template.heldout:
            for _ in range(30):
                text, combo = template.make(rng)
                assert sentence_split(text, template, combo) != "train", text


def test_text_corpus_excludes_heldout_sentences(built):
    heldout = [t for s in ("validation", "test") for t in built["speech"][s]["text"]]
    heldout += [c for s in ("validation", "test") for c in built["images"][s]["caption"]]
    heldout += [m[0]["content"] for s in ("validation", "test") for m in built["chat"][s]["messages"]]
    for split in ("validation", "test"):
        heldout += [r["messages"][0]["content"] for r in _text_columns(built["sft"][split]) if r["task"] == "chat"]
    check = HeldoutFilter(heldout)
    corpus = built["text"]["train"]["text"]
    assert all(check.allows(document) for document in corpus)
    joined = " " + " | ".join(content_key(d) for d in corpus) + " "  # "|" keeps matches inside one document
    for sentence in heldout:
        key = content_key(sentence)
        if len(key.split()) >= 4:
            assert f" {key} " not in joined, sentence


def test_heldout_filter_matches_whole_sentences_and_word_runs():
    check = HeldoutFilter(["The red ball is big.", "Hi!", "What is 3 + 4?"])
    assert not check.allows("the red ball is big")
    assert not check.allows("I think the red ball is big today.")
    assert not check.allows("hi")
    assert not check.allows("What is 3 + 4?")
    assert check.allows("What is 5 + 4?")
    assert check.allows("the red ball is small")
    assert check.allows("Hi there, how are you?")  # short held-out lines match only whole texts


# ---------------------------------------------------------------- content


def test_audio_is_16khz_non_silent_and_as_long_as_its_text(built):
    for split in SPLITS:
        rows = built["speech"][split].cast_column("audio", Audio(decode=False))
        for row in rows:
            audio, rate = decode_audio(row["audio"])
            assert rate == 16000 and audio.dtype == np.float32 and audio.ndim == 1
            assert np.sqrt(np.mean(audio**2)) > 0.01
            assert np.abs(audio).max() <= 1.0
            seconds, chars = len(audio) / rate, len(row["text"])
            assert 0.03 * chars + 0.1 <= seconds <= 0.15 * chars + 0.6, (row["text"], seconds)
            assert row["text"] == normalize_transcript(row["text"]) and row["text"].isascii()
            assert 80 <= row["words_per_minute"] <= 450 and 0 <= row["pitch"] <= 99


def test_with_audio_arrays_decodes_without_torchcodec(built):
    sft = with_audio_arrays(built["sft"]["train"])
    assert isinstance(sft.features["audio"], Audio) and sft.features["audio"].decode is False
    for row in sft:
        if row["task"] in ("asr", "speech_qa", "tts"):
            assert row["audio"]["sampling_rate"] == 16000 and row["audio"]["array"].dtype == np.float32
            assert row["audio"]["array"].ndim == 1 and len(row["audio"]["array"]) > 8000
        else:
            assert row["audio"] is None
    with pytest.raises(ValueError, match="column 'text' is not an Audio column"):
        with_audio_arrays(built["speech"]["train"], columns=("text",))
    with pytest.raises(TypeError, match="dataset must be a Dataset or DatasetDict"):
        with_audio_arrays([1, 2])


def test_images_are_224_rgb(built):
    for split in SPLITS:
        for image in built["images"][split]["image"]:
            assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"


_GROUP = re.compile(r"(a|an|two|three|four) (?:(small|large) )?(\w+) (\w+)")


def _caption_objects(caption):
    """{(colour, shape): count} parsed back from a caption."""
    counts = {}
    for count, _, colour, shape in _GROUP.findall(caption):
        shape = next(s for s in SHAPES if shape in (s, plural(s)))
        counts[(colour, shape)] = 1 if count in ("a", "an") else NUMBER_WORDS.index(count)
    return counts


def test_dataset_answers_agree_with_captions(built):
    for split in SPLITS:
        for row in built["images"][split]:
            objects = _caption_objects(row["caption"])
            assert sum(objects.values()) >= 1
            for question, answer, kind in zip(row["questions"], row["answers"], row["question_types"]):
                words = question.rstrip("?.").split()
                colour = next((w for w in words if w in COLOURS), None)
                shape = next((s for s in SHAPES if s in words or plural(s) in words), None)
                if kind == "colour":
                    assert [c for (c, s) in objects if s == shape] == [answer]
                elif kind == "count":
                    assert NUMBER_WORDS.index(answer) == sum(n for (c, s), n in objects.items() if s == shape)
                elif kind == "shape":
                    assert [s for (c, s) in objects if c == colour] == [answer]
                elif kind == "exist":
                    assert answer == ("yes" if (colour, shape) in objects else "no")


def test_questions_agree_with_scene_metadata_and_pixels():
    rng = np.random.default_rng(3)
    for _ in range(40):
        scene = sample_scene(rng)
        pixels = np.asarray(draw_scene(scene, rng), dtype=np.float32)
        for obj in scene.objects:  # the drawn colour sits at the object's centre
            assert np.abs(pixels[obj.center[1], obj.center[0]] - np.array(obj.rgb)).max() < 40
        for question, answer, kind in scene_questions(scene, rng):
            words = question.rstrip("?.").split()
            colour = next((w for w in words if w in COLOURS), None)
            shape = next((s for s in SHAPES if s in words or plural(s) in words), None)
            matching = [
                o for o in scene.objects if colour in (None, o.colour) and shape in (None, o.shape)
            ]
            if kind == "count":
                assert NUMBER_WORDS.index(answer) == len(matching)
            elif kind == "exist":
                assert answer == ("yes" if matching else "no")
            else:
                assert len(matching) == 1, question
                attribute = {"colour": "colour", "shape": "shape", "position": "position", "size": "size"}[kind]
                assert getattr(matching[0], attribute) == answer


def test_answers_are_balanced_per_question_type():
    rng = np.random.default_rng(0)
    answers = {}
    for _ in range(600):
        for _, answer, kind in scene_questions(sample_scene(rng), rng):
            answers.setdefault(kind, Counter())[answer] += 1
    majority = {kind: c.most_common(1)[0][1] / sum(c.values()) for kind, c in answers.items()}
    limits = {"colour": 0.2, "count": 0.3, "shape": 0.25, "exist": 0.6, "position": 0.3, "size": 0.6}
    assert set(majority) == set(limits)
    for kind, value in majority.items():
        assert value < limits[kind], (kind, value)


def test_sft_rows_carry_matching_media(built):
    for split in SPLITS:
        rows = _undecoded(built["sft"][split])
        assert set(rows["task"]) <= set(SFT_TASKS)
        for row in rows:
            user, last = row["messages"][0], row["messages"][-1]
            assert user["role"] == "user" and last["role"] == "assistant" and last["content"] == row["target"]
            assert (row["image"] is not None) == row["task"].startswith("image")
            assert (row["audio"] is not None) == (row["task"] in ("asr", "speech_qa", "tts"))
            assert ("<image>" in user["content"]) == row["task"].startswith("image")
            assert ("<audio>" in user["content"]) == (row["task"] in ("asr", "speech_qa"))


# ---------------------------------------------------------------- speech engine


def test_synthesis_is_deterministic_and_seeded():
    first = synthesize("the quick brown fox", "en+whisper", 170, 50, 50, seed=5)  # whisper: breath noise
    synthesize("something else entirely", "en-us+klatt2", 200, 20, 70, seed=9)  # engine state in between
    assert np.array_equal(first, synthesize("the quick brown fox", "en+whisper", 170, 50, 50, seed=5))
    assert not np.array_equal(first, synthesize("the quick brown fox", "en+whisper", 170, 50, 50, seed=6))
    assert first.dtype == np.float32 and np.abs(first).max() > 0.05


def test_faster_speech_is_shorter():
    slow = synthesize("the teacher reads a long story", "en-us+m3", 120)
    fast = synthesize("the teacher reads a long story", "en-us+m3", 240)
    assert len(fast) < 0.75 * len(slow)


def test_resample_passes_the_band_and_removes_what_would_alias():
    rate = 22050
    t = np.arange(2 * rate) / rate
    low = resample(np.sin(2 * np.pi * 1000 * t), rate, 16000)
    assert low.shape == (32000,) and low.dtype == np.float32
    middle = low[4000:-4000]
    assert abs(middle.std() * np.sqrt(2) - 1) < 0.01
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    assert abs(np.fft.rfftfreq(len(middle), 1 / 16000)[spectrum.argmax()] - 1000) < 5
    high = resample(np.sin(2 * np.pi * 9000 * t), rate, 16000)
    assert high[4000:-4000].std() < 1e-3
    with pytest.raises(ValueError, match="orig_sampling_rate must be a positive integer"):
        resample(np.zeros(10), 0, 16000)
    with pytest.raises(ValueError, match=r"waveform must have shape \(S,\)"):
        resample(np.zeros((2, 10)), 22050, 16000)


def test_normalize_transcript():
    assert normalize_transcript("Hello, World! It's a well-known fact.") == "hello world it's a well known fact"
    with pytest.raises(TypeError, match="text must be a string"):
        normalize_transcript(3)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"scale": "huge"}, ValueError, "unknown scale 'huge'"),
        ({"scale": 3}, TypeError, "scale must be a name"),
        ({"seed": -1}, ValueError, "seed must be a non-negative integer, got -1"),
        ({"seed": 1.5}, ValueError, "seed must be a non-negative integer"),
        ({"num_proc": 0}, ValueError, "num_proc must be a positive integer, got 0"),
        ({"scale": {"speech": {"train": -5, "validation": 1, "test": 1}}}, ValueError,
         r"size of speech / train must be a non-negative integer, got -5"),
        ({"scale": {"speech": {"train": 10, "validation": 1, "test": 1}}}, ValueError,
         r"sft.asr / train \(500\) needs more than the speech rows give \(10 rows"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_builtin_dataset(show_progress=False, **kwargs)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a built-in dataset folder: missing"):
        load_builtin_dataset(str(tmp_path))
    with pytest.raises(TypeError, match="path must be a folder path"):
        load_builtin_dataset(42)


def test_unloadable_espeak_library(tmp_path, monkeypatch):
    data = speech.espeak_paths()[1]
    with pytest.raises(EspeakUnavailableError, match="libespeak-ng not found"):
        EspeakSynthesizer(library_path=str(tmp_path / "missing.so"), data_path=data)
    junk = tmp_path / "libespeak-ng.so"
    junk.write_bytes(b"not a shared library")
    with pytest.raises(EspeakUnavailableError, match="cannot load libespeak-ng"):
        EspeakSynthesizer(library_path=str(junk), data_path=data)
    with pytest.raises(EspeakUnavailableError, match="no eSpeak NG voice data"):
        EspeakSynthesizer(library_path=speech.espeak_paths()[0], data_path=str(tmp_path))
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # the package is not installed
    with pytest.raises(EspeakUnavailableError, match="pip install espeakng-loader"):
        speech.espeak_paths()


def test_build_fails_early_without_espeak(monkeypatch):
    def unavailable():
        raise EspeakUnavailableError("no eSpeak NG here")

    monkeypatch.setattr(builtin, "get_synthesizer", unavailable)
    with pytest.raises(EspeakUnavailableError, match="no eSpeak NG here"):
        build_builtin_dataset(scale="test", show_progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"voice": "en+nosuch"}, "unknown eSpeak voice variant 'nosuch'"),
        ({"voice": "xx+m3"}, "eSpeak NG has no voice 'xx\\+m3'"),
        ({"voice": "en+m3+f2"}, "voice must look like"),
        ({"words_per_minute": 20}, r"words_per_minute must be an integer in \[80, 450\], got 20"),
        ({"pitch": 120}, r"pitch must be an integer in \[0, 99\], got 120"),
        ({"seed": -3}, "seed must be a non-negative integer, got -3"),
    ],
)
def test_bad_synthesis_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthesize("hello there", **kwargs)


def test_empty_text_is_an_error():
    with pytest.raises(ValueError, match="text must be a non-empty string"):
        synthesize("   ")


def test_more_speech_errors(tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="settings must be a VoiceSettings, got str"):
        speech.get_synthesizer().synthesize_native("hello", "en+m3")
    with pytest.raises(ValueError, match="sampling_rate must be a positive integer, got 0"):
        EspeakSynthesizer(sampling_rate=0)
    with pytest.raises(TypeError, match="expected an audio dict or AudioDecoder, got list"):
        decode_audio([0.0, 1.0])
    with pytest.raises(ValueError, match="audio value has neither 'bytes' nor 'path'"):
        decode_audio({"bytes": None, "path": None})
    library, data = speech.espeak_paths()
    (tmp_path / "voices" / "!v").mkdir(parents=True)  # voice folders but no phoneme data
    with pytest.raises(EspeakUnavailableError, match="eSpeak NG data file 'phondata' is missing"):
        EspeakSynthesizer(library_path=library, data_path=str(tmp_path))
    libm = "/lib/x86_64-linux-gnu/libm.so.6"
    if sys.platform.startswith("linux") and __import__("os").path.isfile(libm):  # a real library, but not eSpeak NG
        with pytest.raises(EspeakUnavailableError, match="lacks espeak_ng_SetRandSeed"):
            EspeakSynthesizer(library_path=libm, data_path=data)

    import espeakng_loader

    def no_data():
        raise RuntimeError("data path not exists")

    monkeypatch.setattr(espeakng_loader, "get_data_path", no_data)
    with pytest.raises(EspeakUnavailableError, match="espeakng-loader found no eSpeak NG voice data"):
        speech.espeak_paths()


def test_more_argument_errors():
    from muomni.training.data.facts import number_word
    from muomni.training.data.scenes import SceneObject, _outline

    with pytest.raises(ValueError, match="number_word covers 0-99, got 120"):
        number_word(120)
    blob = SceneObject("blob", "red", "small", "left", (200, 0, 0), (40, 40), 10, 0.0)
    with pytest.raises(ValueError, match="unknown shape 'blob'"):
        _outline(blob, 2)
    with pytest.raises(ValueError, match=r"assistant_share must be in \[0, 1\], got 2"):
        build_builtin_dataset(scale={"assistant_share": 2}, show_progress=False)
    with pytest.raises(ValueError, match=r"sft.tts / train \(300\) exceeds the speech rows in the assistant voice"):
        build_builtin_dataset(scale={"assistant_share": 0.0}, show_progress=False)
