"""The built-in MuOmni dataset: five `DatasetDict`s generated offline from code, eSpeak NG and PIL.

    build_builtin_dataset(output_dir=None, seed=0, scale="tiny", num_proc=1, show_progress=True)
        -> {"speech", "images", "text", "chat", "sft"}: DatasetDict with train / validation / test
    load_builtin_dataset(path) -> the same, from `output_dir`

Schemas (every split has the same columns):
    speech   audio Audio(16 kHz, FLAC), text str (normalized transcript: lowercase words),
             voice str ("accent+variant"), words_per_minute int, pitch int (eSpeak 0-99),
             sentence_id int (unique over all splits; one utterance per sentence)
    images   image Image (224x224 RGB JPEG), caption str, questions list[str], answers list[str],
             question_types list[str] (colour|count|shape|exist|position|size), scene_id int
             (unique over all splits)
    text     text str (one short document per row; train = the pretraining corpus)
    chat     messages list[{"role", "content"}] (user first, assistant last)
    sft      task str (image_qa | image_caption | asr | speech_qa | tts | chat),
             messages list[{"role", "content"}], image Image or None, audio Audio(16 kHz) or None,
             target str (the assistant's answer: the text to predict, or for tts the text spoken)

SFT messages are plain strings. The user turn of image_qa / image_caption starts with the literal
marker "<image>" and that of asr / speech_qa with "<audio>" (then a newline and the instruction, if
any): the processor replaces a marker with the media's placeholder tokens. In `tts` the audio is the
assistant's OUTPUT (the target speech of `target`) and the user turn has no marker.

Splits are disjoint in content (see `splits.py`, `text.sentence_split`, `facts.fact_split`):
sentences, scenes (by caption), facts, conversations and their derived SFT rows never cross splits,
test voices include `speech.HELDOUT_VARIANTS` / `HELDOUT_ACCENTS` (half of the speech and speech_qa
test rows; none in train or validation), and the train split of `text` contains no sentence of any
validation or test split (checked by `text.HeldoutFilter`).

Audio and image columns are built from their encoded bytes and cast, so building needs no
torchcodec. Reading audio back through `datasets.Audio` needs torchcodec and FFmpeg; without them,
`with_audio_arrays(dataset)` gives `{"array", "sampling_rate"}` cells decoded with soundfile.

Determinism: every row draws from its own seeded generator and eSpeak is reset for each utterance,
so the same (seed, scale) gives identical rows whatever `num_proc` is. The `_fingerprint` of each
in-memory split is a hash of its content; `save_to_disk` gives the saved copy a new fingerprint
(it derives from the in-memory one, not from the path), which `load_from_disk` restores.
"""

import multiprocessing
import os
import time

import numpy as np
import pyarrow as pa
from datasets import Audio, Dataset, DatasetDict, DatasetInfo, Features, Image, List, Value, load_from_disk
from datasets.table import InMemoryTable
from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from tqdm.auto import tqdm

from .chat import ChatSampler
from .facts import all_facts, fact_split
from .scenes import render_scene, sample_scene, scene_description, scene_questions
from .speech import (
    ASSISTANT_VOICE, HELDOUT_ACCENTS, HELDOUT_VARIANTS, SAMPLING_RATE, TRAIN_ACCENTS, TRAIN_VARIANTS,
    VoiceSettings, decode_audio, encode_flac, get_synthesizer, normalize_transcript,
)
from .splits import SPLITS, stable_split
from .text import (
    HeldoutFilter, SentencePool, capitalize, chatterbot_lines, content_key, conversation_split, corpus_documents,
    load_chatterbot_conversations,
)

DATASET_NAMES = ("speech", "images", "text", "chat", "sft")
SFT_TASKS = ("image_qa", "image_caption", "asr", "speech_qa", "tts", "chat")

_MESSAGES = List({"role": Value("string"), "content": Value("string")})
FEATURES = {
    "speech": Features({"audio": Audio(sampling_rate=SAMPLING_RATE), "text": Value("string"), "voice": Value("string"),
                        "words_per_minute": Value("int32"), "pitch": Value("int32"), "sentence_id": Value("int64")}),
    "images": Features({"image": Image(), "caption": Value("string"), "questions": List(Value("string")),
                        "answers": List(Value("string")), "question_types": List(Value("string")),
                        "scene_id": Value("int64")}),
    "text": Features({"text": Value("string")}),
    "chat": Features({"messages": _MESSAGES}),
    "sft": Features({"task": Value("string"), "messages": _MESSAGES, "image": Image(),
                     "audio": Audio(sampling_rate=SAMPLING_RATE), "target": Value("string")}),
}


def _sizes(train: int, validation: int, test: int) -> dict[str, int]:
    return {"train": train, "validation": validation, "test": test}


def _scaled(base: dict, factor: int) -> dict:
    """`base` with every row count multiplied by `factor`."""
    scaled = {}
    for name, value in base.items():
        if name == "sft":
            scaled[name] = {task: {s: n * factor for s, n in sizes.items()} for task, sizes in value.items()}
        elif isinstance(value, dict):
            scaled[name] = {s: n * factor for s, n in value.items()}
        else:
            scaled[name] = value
    return scaled


_TINY = {
    "speech": _sizes(1500, 150, 150),
    "images": _sizes(1500, 150, 150),
    "speech_qa": _sizes(300, 40, 40),
    "chat": _sizes(1500, 100, 100),
    "text": _sizes(12000, 400, 400),
    "sft": {"image_qa": _sizes(2000, 200, 200), "image_caption": _sizes(500, 50, 50), "asr": _sizes(500, 50, 50),
            "speech_qa": _sizes(300, 40, 40), "tts": _sizes(300, 30, 30), "chat": _sizes(600, 60, 60)},
    "assistant_share": 0.2,
}
SCALES: dict[str, dict] = {
    "test": {
        "speech": _sizes(6, 4, 4), "images": _sizes(6, 3, 3), "speech_qa": _sizes(3, 2, 2), "chat": _sizes(8, 3, 3),
        "text": _sizes(40, 6, 6),
        "sft": {"image_qa": _sizes(4, 2, 2), "image_caption": _sizes(2, 1, 1), "asr": _sizes(2, 1, 1),
                "speech_qa": _sizes(3, 2, 2), "tts": _sizes(1, 1, 1), "chat": _sizes(3, 2, 2)},
        "assistant_share": 0.25,
    },
    "tiny": _TINY,
    "small": _scaled(_TINY, 5),
}
# SeedSequence stream ids: every kind of draw has its own stream, every row its own generator
_STREAM = {"sentences": 1, "voices": 2, "scenes": 3, "questions": 4, "render": 5, "facts": 6, "chat": 7, "corpus": 8,
           "sft": 9, "synth": 10}


def _rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[stream], *keys])


def _check_arguments(seed, scale, num_proc) -> dict:
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(
                f"unknown scale {scale!r}; expected one of {sorted(SCALES)} or a dict like SCALES['tiny']"
            )
        config = SCALES[scale]
    elif isinstance(scale, dict):
        config = {**SCALES["tiny"], **scale}
    else:
        raise TypeError(f"scale must be a name in {sorted(SCALES)} or a dict of sizes, got {type(scale).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(num_proc, bool) or not isinstance(num_proc, (int, np.integer)) or num_proc < 1:
        raise ValueError(f"num_proc must be a positive integer, got {num_proc!r}")
    for name in ("speech", "images", "speech_qa", "chat", "text", *(f"sft.{t}" for t in SFT_TASKS)):
        sizes = config["sft"][name[4:]] if name.startswith("sft.") else config[name]
        for split in SPLITS:
            n = sizes.get(split) if isinstance(sizes, dict) else None
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise ValueError(f"size of {name} / {split} must be a non-negative integer, got {n!r}")
    share = config["assistant_share"]
    if not 0 <= share <= 1:
        raise ValueError(f"assistant_share must be in [0, 1], got {share!r}")
    sft = config["sft"]
    for task, source, per_row in (("asr", "speech", 1), ("image_caption", "images", 1), ("chat", "chat", 1),
                                  ("speech_qa", "speech_qa", 1), ("image_qa", "images", 2)):
        for split in SPLITS:  # a scene has at least 2 questions (count and exist)
            if sft[task][split] > per_row * config[source][split]:
                raise ValueError(
                    f"sft.{task} / {split} ({sft[task][split]}) needs more than the {source} rows give "
                    f"({config[source][split]} rows, {per_row} pair(s) each)"
                )
    for split in SPLITS:
        assistant_rows = round(share * config["speech"][split])
        if sft["tts"][split] > assistant_rows:
            raise ValueError(
                f"sft.tts / {split} ({sft['tts'][split]}) exceeds the speech rows in the assistant voice "
                f"({assistant_rows})"
            )
    return config


def _voice_plan(
    seed: int, stream_key: int, split_index: int, count: int, assistant_share: float
) -> list[VoiceSettings]:
    """Voices of a split: the first `assistant_share` rows in `ASSISTANT_VOICE` at a natural rate; in
    test, half of the others with a held-out accent or variant; the rest any train accent x variant."""
    plan = []
    assistant_rows = round(assistant_share * count)
    heldout_rows = (count - assistant_rows) // 2 if SPLITS[split_index] == "test" else 0
    for row in range(count):
        rng = _rng(seed, "voices", stream_key, split_index, row)
        if row < assistant_rows:
            plan.append(VoiceSettings(ASSISTANT_VOICE, int(rng.integers(160, 191)), int(rng.integers(45, 56)), 50))
            continue
        accent = TRAIN_ACCENTS[rng.integers(len(TRAIN_ACCENTS))]
        variant = TRAIN_VARIANTS[rng.integers(len(TRAIN_VARIANTS))]
        if row < assistant_rows + heldout_rows:
            kind = rng.integers(3)  # a held-out variant, a held-out accent, or both
            if kind != 1:
                variant = HELDOUT_VARIANTS[rng.integers(len(HELDOUT_VARIANTS))]
            if kind != 0:
                accent = HELDOUT_ACCENTS[rng.integers(len(HELDOUT_ACCENTS))]
        plan.append(VoiceSettings(f"{accent}+{variant}", int(rng.integers(130, 211)), int(rng.integers(25, 76)),
                                  int(rng.integers(30, 81))))
    return plan


def _synthesize_job(job: tuple[str, VoiceSettings, int]) -> tuple[bytes, float]:
    """One utterance: eSpeak, then a random peak level and 50-250 ms of silence each side (seeded)."""
    text, settings, seed = job
    rng = np.random.default_rng([seed, 77])
    audio = get_synthesizer().synthesize(text, settings, seed=seed)
    peak = float(np.abs(audio).max()) or 1.0
    audio = audio * (rng.uniform(0.3, 0.95) / peak)
    pads = (rng.uniform(0.05, 0.25, 2) * SAMPLING_RATE).astype(int)
    audio = np.concatenate([np.zeros(pads[0], np.float32), audio.astype(np.float32), np.zeros(pads[1], np.float32)])
    return encode_flac(audio), len(audio) / SAMPLING_RATE


def _render_job(job) -> bytes:
    scene, seed = job
    return render_scene(scene, np.random.default_rng([seed, 78]))


def _run_jobs(function, jobs: list, num_proc: int, description: str, show_progress: bool) -> list:
    """`function` over `jobs`, in order, in `num_proc` processes, with a progress bar."""
    bar = tqdm(total=len(jobs), desc=description, disable=not show_progress, unit="item")
    if num_proc == 1 or len(jobs) < 2 * num_proc:
        results = []
        for job in jobs:
            results.append(function(job))
            bar.update()
    else:
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        with context.Pool(num_proc) as pool:
            results = []
            for result in pool.imap(function, jobs, chunksize=4):
                results.append(result)
                bar.update()
    bar.close()
    return results


def _dataset(rows: list[dict], features: Features) -> Dataset:
    """A Dataset of the `features` columns of `rows`. Audio / Image cells are given as their Arrow
    storage, {"bytes", "path"}, so nothing is encoded (and no torchcodec is needed to build)."""
    columns = {column: [row[column] for row in rows] for column in features}
    table = pa.Table.from_pydict(columns, schema=features.arrow_schema)
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=features))


def _media(data: bytes | None) -> dict | None:
    return None if data is None else {"bytes": data, "path": None}


def build_builtin_dataset(
    output_dir: str | None = None,
    seed: int = 0,
    scale: str | dict = "tiny",
    num_proc: int = 1,
    show_progress: bool = True,
) -> dict[str, DatasetDict]:
    """Generate the built-in dataset (see the module docstring); save it under `output_dir/<name>` if given.

    Args:
        output_dir (`str`, *optional*): where to `save_to_disk` each DatasetDict.
        seed (`int`): non-negative; the same seed gives the same content (splits do not depend on it).
        scale (`str` or `dict`): "test" (a handful of rows, for unit tests), "tiny" (the demo), "small"
            (5x tiny), or a dict overriding entries of `SCALES["tiny"]`.
        num_proc (`int`): processes for speech synthesis and image rendering.
        show_progress (`bool`): tqdm progress bars.

    Returns:
        `dict[str, DatasetDict]` keyed by `DATASET_NAMES`.
    """
    config = _check_arguments(seed, scale, num_proc)
    get_synthesizer()  # a clear error now, before any work, if eSpeak NG cannot be loaded
    started = time.perf_counter()
    facts = all_facts()
    conversations = load_chatterbot_conversations()

    images = _image_rows(config, seed, num_proc, show_progress)
    # facts and their questions keep their fact's split wherever a sentence is drawn
    reserved = {normalize_transcript(t): "train" for f in facts for t in f.statements}
    reserved.update({normalize_transcript(q): fact_split(f) for f in facts for q in f.questions})
    reserved.pop("", None)
    pool = SentencePool(reserved, chatterbot_lines(conversations))
    spoken, written = {}, {}
    for i, split in enumerate(SPLITS):
        spoken[split] = [t for t, _ in pool.draw(split, config["speech"][split], _rng(seed, "sentences", i))]
    for i, split in enumerate(SPLITS):  # more sentences than are spoken, for the corpus and the chat "repeat" task
        count = config["text"][split] // 4 if split == "train" else config["text"][split]
        written[split] = [t for t, _ in pool.draw(split, count, _rng(seed, "sentences", 10 + i))]
    speech, spoken_questions = _speech_rows(config, seed, spoken, facts, num_proc, show_progress)
    chats = ChatSampler(facts, conversations, written)
    chats = {s: chats.draw(s, config["chat"][s], _rng(seed, "chat", i)) for i, s in enumerate(SPLITS)}
    text = _text_rows(config, seed, facts, conversations, spoken, written, images, chats)
    sft = _sft_rows(config, seed, images, speech, spoken_questions, chats)

    tables = {
        "speech": {s: [{**r, "audio": _media(r["audio"])} for r in speech[s]] for s in SPLITS},
        "images": {s: [{**r, "image": _media(r["image"])} for r in images[s]] for s in SPLITS},
        "text": {s: [{"text": d} for d in text[s]] for s in SPLITS},
        "chat": {s: [{"messages": m} for m in chats[s]] for s in SPLITS},
        "sft": {s: [{**r, "image": _media(r["image"]), "audio": _media(r["audio"])} for r in sft[s]] for s in SPLITS},
    }
    datasets = {
        name: DatasetDict({split: _dataset(tables[name][split], FEATURES[name]) for split in SPLITS})
        for name in DATASET_NAMES
    }
    if output_dir is not None:
        _save(datasets, output_dir, show_progress)
    if show_progress:
        sizes = ", ".join(f"{name} {'/'.join(str(d[s].num_rows) for s in SPLITS)}" for name, d in datasets.items())
        tqdm.write(f"built-in dataset ({sizes}) built in {time.perf_counter() - started:.1f} s")
    return datasets


def _image_rows(config: dict, seed: int, num_proc: int, show_progress: bool) -> dict[str, list[dict]]:
    """Scenes routed to the split of their caption, rendered, with their questions."""
    scenes = {s: [] for s in SPLITS}
    rng = _rng(seed, "scenes")
    for _ in range(200 * (sum(config["images"].values()) + 10)):
        if all(len(scenes[s]) >= config["images"][s] for s in SPLITS):
            break
        scene = sample_scene(rng)
        split = stable_split("scene:" + scene.signature)
        if len(scenes[split]) < config["images"][split]:
            scenes[split].append(scene)
    jobs = [
        (scene, int(_rng(seed, "render", i, j).integers(2**31)))
        for i, split in enumerate(SPLITS)
        for j, scene in enumerate(scenes[split])
    ]
    jpegs = iter(_run_jobs(_render_job, jobs, num_proc, "images", show_progress))
    rows, scene_id = {s: [] for s in SPLITS}, 0
    for i, split in enumerate(SPLITS):
        for j, scene in enumerate(scenes[split]):
            qa = scene_questions(scene, _rng(seed, "questions", i, j))
            rows[split].append({"image": next(jpegs), "caption": scene.caption, "questions": [q for q, _, _ in qa],
                                "answers": [a for _, a, _ in qa], "question_types": [t for _, _, t in qa],
                                "scene_id": scene_id, "scene": scene})
            scene_id += 1
    return rows


def _speech_rows(config, seed, spoken, facts, num_proc, show_progress) -> tuple[dict, dict]:
    """Speech rows (plus their written sentence) and spoken fact questions (question, fact, FLAC), one
    synthesis run for both."""
    jobs, speech_meta, question_meta = [], {s: [] for s in SPLITS}, {s: [] for s in SPLITS}
    sentence_id = 0
    for i, split in enumerate(SPLITS):
        plan = _voice_plan(seed, 0, i, config["speech"][split], config["assistant_share"])
        for j, (text, settings) in enumerate(zip(spoken[split], plan)):
            jobs.append((text, settings, int(_rng(seed, "synth", 0, i, j).integers(2**31))))
            speech_meta[split].append((text, settings, sentence_id))
            sentence_id += 1
    for i, split in enumerate(SPLITS):
        rng, split_facts = _rng(seed, "facts", i), [f for f in facts if fact_split(f) == split]
        for j, settings in enumerate(_voice_plan(seed, 1, i, config["speech_qa"][split], 0.0)):
            fact = split_facts[rng.integers(len(split_facts))]
            question = fact.questions[rng.integers(len(fact.questions))]
            jobs.append((capitalize(question), settings, int(_rng(seed, "synth", 1, i, j).integers(2**31))))
            question_meta[split].append((question, fact))
    audio = iter(flac for flac, _ in _run_jobs(_synthesize_job, jobs, num_proc, "speech", show_progress))
    speech = {s: [{"audio": next(audio), "text": normalize_transcript(text), "voice": settings.voice,
                   "words_per_minute": settings.words_per_minute, "pitch": settings.pitch, "sentence_id": sid,
                   "written": text}
                  for text, settings, sid in speech_meta[s]] for s in SPLITS}
    questions = {s: [(question, fact, next(audio)) for question, fact in question_meta[s]] for s in SPLITS}
    return speech, questions


def _text_rows(config, seed, facts, conversations, spoken, written, images, chats) -> dict[str, list[str]]:
    """Corpus documents per split; train holds no sentence of any validation / test split."""
    heldout = [t for s in ("validation", "test") for t in spoken[s] + written[s]]
    heldout += [row["caption"] for s in ("validation", "test") for row in images[s]]
    heldout += [q for f in facts if fact_split(f) != "train" for q in f.questions]
    heldout += [m["content"] for s in ("validation", "test") for chat in chats[s] for m in chat if m["role"] == "user"]
    # every line of a held-out ChatterBot dialog, except generic ones that train dialogs also use ("Yes it is.")
    train_lines = {content_key(t) for c in conversations if conversation_split(c) == "train" for t in c}
    heldout += [
        t for c in conversations if conversation_split(c) != "train" for t in c if content_key(t) not in train_lines
    ]
    documents = {}
    for i, split in enumerate(SPLITS):
        rng = _rng(seed, "corpus", i)
        scene_texts = [capitalize(row["caption"]) + "." for row in images[split]]
        scene_texts += [scene_description(row["scene"], rng) for row in images[split]]
        documents[split] = corpus_documents(
            rng, config["text"][split], spoken[split] + written[split], facts if split == "train" else [],
            [f for f in facts if fact_split(f) == split], [c for c in conversations if conversation_split(c) == split],
            chats[split], scene_texts, HeldoutFilter(heldout if split == "train" else []),
            sequences=split == "train",  # the same few lists everywhere: train only
        )
    return documents


_PROMPTS = {
    "image_caption": (
        "Describe the image.", "What is in this picture?", "Write a short caption for this image.", "What do you see?"
    ),
    "asr": ("Transcribe the audio.", "What does the speaker say?", "Write down what you hear."),
    "tts": ("Say this out loud: {t}", "Read aloud: {t}", "Please say: {t}", "Speak this sentence: {t}"),
}


def _sft_rows(config, seed, images, speech, spoken_questions, chats) -> dict[str, list[dict]]:
    """Matched SFT pairs, each made from rows of the same split, without repeats."""
    rows = {s: [] for s in SPLITS}
    for i, split in enumerate(SPLITS):
        rng, sizes = _rng(seed, "sft", i), {task: config["sft"][task][split] for task in SFT_TASKS}

        def prompt(task):
            return _PROMPTS[task][rng.integers(len(_PROMPTS[task]))]

        pairs = [(row, q) for row in images[split] for q in range(len(row["questions"]))]
        for k in rng.permutation(len(pairs))[: sizes["image_qa"]]:
            row, q = pairs[k]
            user = "<image>\n" + capitalize(row["questions"][q])
            rows[split].append(_sft("image_qa", user, row["answers"][q], image=row["image"]))
        for k in rng.permutation(len(images[split]))[: sizes["image_caption"]]:
            row = images[split][k]
            user = "<image>\n" + prompt("image_caption")
            rows[split].append(_sft("image_caption", user, row["caption"], image=row["image"]))
        for k in rng.permutation(len(speech[split]))[: sizes["asr"]]:
            row = speech[split][k]
            rows[split].append(_sft("asr", "<audio>\n" + prompt("asr"), row["text"], audio=row["audio"]))
        for question, fact, audio in spoken_questions[split][: sizes["speech_qa"]]:
            user = "<audio>" if rng.uniform() < 0.5 else "<audio>\nAnswer the question."
            rows[split].append(_sft("speech_qa", user, fact.answer, audio=audio))
        # tts: the written sentence (cased, punctuated) in, its speech in the assistant voice out
        assistant = [row for row in speech[split] if row["voice"] == ASSISTANT_VOICE]
        for k in rng.permutation(len(assistant))[: sizes["tts"]]:
            row = assistant[k]
            rows[split].append(_sft("tts", prompt("tts").format(t=row["written"]), row["written"], audio=row["audio"]))
        for k in rng.permutation(len(chats[split]))[: sizes["chat"]]:
            messages = chats[split][k]
            rows[split].append(
                {"task": "chat", "messages": messages, "image": None, "audio": None, "target": messages[-1]["content"]}
            )
    return rows


def _sft(task: str, prompt: str, target: str, image: bytes | None = None, audio: bytes | None = None) -> dict:
    return {"task": task, "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": target}],
            "image": image, "audio": audio, "target": target}


def _save(datasets: dict[str, DatasetDict], output_dir: str, show_progress: bool) -> None:
    quiet = not show_progress and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        for name, dataset in datasets.items():
            dataset.save_to_disk(os.path.join(output_dir, name))
    finally:
        if quiet:
            enable_progress_bars()


def with_audio_arrays(dataset: Dataset | DatasetDict, columns: tuple[str, ...] = ("audio",)) -> Dataset | DatasetDict:
    """`dataset` with its `Audio` columns read as `{"array": float32 (S,), "sampling_rate": int}`
    (None stays None), decoded with soundfile: no torchcodec (which `datasets.Audio` needs, with
    FFmpeg) is required. The columns are cast to `Audio(decode=False)` and decoded on access by
    `with_transform`."""
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: with_audio_arrays(d, columns) for split, d in dataset.items()})
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a Dataset or DatasetDict, got {type(dataset).__name__}")
    for column in columns:
        feature = dataset.features.get(column)
        if not isinstance(feature, Audio):
            raise ValueError(f"column {column!r} is not an Audio column (features: {dataset.features})")
        dataset = dataset.cast_column(column, Audio(sampling_rate=feature.sampling_rate, decode=False))

    def decode(batch: dict) -> dict:
        for column in columns:
            if column in batch:
                batch[column] = [None if cell is None else dict(zip(("array", "sampling_rate"), decode_audio(cell)))
                                 for cell in batch[column]]
        return batch

    return dataset.with_transform(decode)


def load_builtin_dataset(path: str) -> dict[str, DatasetDict]:
    """The DatasetDicts that `build_builtin_dataset(output_dir=path)` saved."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder path, got {type(path).__name__}")
    missing = [name for name in DATASET_NAMES if not os.path.isdir(os.path.join(path, name))]
    if missing:
        raise ValueError(
            f"{path!r} is not a built-in dataset folder: missing {missing} (expected {list(DATASET_NAMES)})"
        )
    return {name: load_from_disk(os.path.join(path, name)) for name in DATASET_NAMES}
