# GENERATED FILE - DO NOT EDIT.
# Flat copy of `muomni.processing.tokenization_muomni` for loading with `trust_remote_code=True`,
# written by `python -m muomni.hub export-remote-code`. Edit the package source and regenerate.
"""MuOmni tokenizers.

    MuOmniTokenizer     the thinker's byte-level BPE tokenizer (a `TokenizersBackend`), with the ChatML
                        chat template and the media placeholder tokens
    MuOmniCTCTokenizer  the audio encoder's character CTC vocabulary (blank, unk, printable ASCII)
    train_tokenizer     trains a `MuOmniTokenizer` on any iterable of strings
    tokenize_for_pretraining  token ids with EOS appended to every text (stage A)

Every MuOmni vocabulary starts with the ten special tokens of `SPECIAL_TOKENS`, at the ids of
`muomni.configuration.SPECIAL_TOKEN_IDS`, followed by the 256 byte-level symbols and the learned merges,
so any unicode text encodes without an unknown token and decodes back byte for byte.

Generation stops at `<|im_end|>` as well as `<|endoftext|>`: model configs carry `eos_token_id=[0, 3]`.
Both are special tokens here, so `decode(..., skip_special_tokens=True)` (what the text-generation
pipeline does) drops whichever one ended the answer.
"""

import json
import unicodedata
from collections.abc import Iterable, Iterator
from itertools import groupby

from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import PreTrainedTokenizer, TokenizersBackend
from transformers.models.auto.tokenization_auto import get_tokenizer_config
from transformers.models.wav2vec2.tokenization_wav2vec2 import Wav2Vec2CTCTokenizer, Wav2Vec2CTCTokenizerOutput

from .configuration_muomni import SPECIAL_TOKEN_IDS

# The special tokens in id order (0..9); the names are the tokenizer attributes (`tokenizer.image_token`,
# `tokenizer.image_token_id`, ...) and, with "_id" appended, the keys of `SPECIAL_TOKEN_IDS`.
SPECIAL_TOKENS = {
    "eos_token": "<|endoftext|>",
    "pad_token": "<|pad|>",
    "im_start_token": "<|im_start|>",
    "im_end_token": "<|im_end|>",
    "image_token": "<|image|>",
    "vision_start_token": "<|vision_start|>",
    "vision_end_token": "<|vision_end|>",
    "audio_token": "<|audio|>",
    "audio_start_token": "<|audio_start|>",
    "audio_end_token": "<|audio_end|>",
}
BYTE_ALPHABET = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 symbols standing for the bytes
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + len(BYTE_ALPHABET)  # 266: specials + bytes, no merges

# GPT-2 / Qwen2 pre-tokenization: contractions, letter runs, single digits, punctuation runs, whitespace
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# ChatML. Only a part's "type" matters: the processor leaves "image"/"url"/"path"/"audio" keys in the
# parts it has loaded media from. `{% generation %}` marks what the assistant writes (its content and
# <|im_end|>), so `apply_chat_template(..., return_assistant_tokens_mask=True)` gives the SFT loss mask.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{%- set rendered = message['content'] -%}"
    "{%- else -%}"
    "{%- set rendered = namespace(text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}"
    "{%- set rendered.text = rendered.text + part['text'] -%}"
    "{%- elif part['type'] == 'image' -%}"
    "{%- set rendered.text = rendered.text + '<|vision_start|><|image|><|vision_end|>' -%}"
    "{%- elif part['type'] == 'audio' -%}"
    "{%- set rendered.text = rendered.text + '<|audio_start|><|audio|><|audio_end|>' -%}"
    "{%- else -%}"
    "{{- raise_exception('MuOmni chat messages hold text, image and audio parts, got a part of type '"
    " + part['type']|string) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set rendered = rendered.text -%}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- rendered + '<|im_end|>' -}}{%- endgeneration -%}{{- '\\n' -}}"
    "{%- else -%}"
    "{{- rendered + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def default_vocab() -> dict[str, int]:
    """The smallest MuOmni vocabulary: the special tokens, then the byte alphabet (`MIN_VOCAB_SIZE` entries)."""
    return {token: index for index, token in enumerate([*SPECIAL_TOKENS.values(), *BYTE_ALPHABET])}


def check_chat_messages(conversation) -> None:
    """Refuse chat input the template would render wrongly: a message without a role or content, and message
    text holding the template's control strings (`<|im_end|>\n<|im_start|>assistant` typed into a user
    message would otherwise become real turn boundaries: prompt injection through the template).
    Images and audio go in as content parts, not as placeholder strings."""
    conversations = conversation if conversation and isinstance(conversation[0], (list, tuple)) else [conversation]
    for messages in conversations:
        if not messages:
            raise ValueError("the conversation is empty; expected a list of {'role': ..., 'content': ...} messages")
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ValueError(
                    f"message {index} must be a dict with 'role' and 'content', got {message!r}"[:300]
                )
            content = message["content"]
            parts = [content] if isinstance(content, str) else [
                part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
            ]  # fmt: skip
            for text in parts:
                found = [token for token in SPECIAL_TOKENS.values() if isinstance(text, str) and token in text]
                if found:
                    raise ValueError(
                        f"message {index} ({message['role']}) contains the control string {found[0]!r} in its text; "
                        "special tokens cannot be typed into a message (pass images and audio as content parts)"
                    )


def _byte_level_pipeline(tokenizer: Tokenizer) -> Tokenizer:
    """Give a BPE `Tokenizer` the MuOmni pre-tokenizer and decoder. No normalizer: decoding is exact."""
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def _check_vocab(vocab: dict[str, int]) -> None:
    for name, token in SPECIAL_TOKENS.items():
        expected = SPECIAL_TOKEN_IDS[f"{name}_id"]
        if vocab.get(token) != expected:
            raise ValueError(
                f"MuOmniTokenizer vocab maps {token!r} to {vocab.get(token)}, expected {expected} "
                "(muomni.configuration.SPECIAL_TOKEN_IDS); build vocabularies with train_tokenizer"
            )
    missing = [symbol for symbol in BYTE_ALPHABET if symbol not in vocab]
    if missing:
        raise ValueError(
            f"MuOmniTokenizer vocab lacks {len(missing)} of the 256 byte-level symbols (first: {missing[0]!r}); "
            "without them some text cannot be encoded"
        )


class MuOmniCTCTokenizer(PreTrainedTokenizer):
    r"""Character vocabulary of the audio encoder's CTC head.

    Id 0 is the CTC blank (`<blank>`, also the pad token), id 1 `<unk>`, ids 2..96 the printable ASCII
    characters 32..126 in order: 97 ids, `MuOmniAudioEncoderConfig.ctc_vocab_size`, blank =
    `ctc_blank_id`. The vocabulary is fixed, so the tokenizer needs no file (a saved one has `vocab.json`).

    Encoding (CTC targets): text is NFKD-normalised and stripped of accents ("café" -> "cafe"), whitespace
    becomes a space, anything else outside printable ASCII becomes `<unk>`. Text that spells a special
    token ("<blank>") is encoded character by character (`split_special_tokens=True`), so a target never
    holds the blank.

    Decoding (CTC output), like `Wav2Vec2CTCTokenizer`: with `group_tokens=True` (default) repeats of a
    frame-wise argmax (F,) collapse first, then blanks are dropped, so `decode(frame_ids,
    skip_special_tokens=False)` (what the ASR pipeline calls) gives the transcript. Decode target ids
    (which may repeat letters legitimately) with `group_tokens=False`. `output_char_offsets=True` returns
    the frame span of each character (the ASR pipeline's `return_timestamps="char"` / `"word"`).
    """

    vocab_files_names = {"vocab_file": "vocab.json"}
    model_input_names = ["input_ids", "attention_mask"]
    # a character vocabulary has no word delimiter token: words are separated by the space character
    replace_word_delimiter_char = " "
    _get_word_offsets = staticmethod(Wav2Vec2CTCTokenizer._get_word_offsets)

    def __init__(self, vocab_file: str | None = None, unk_token: str = "<unk>", pad_token: str = "<blank>", **kwargs):
        if vocab_file is None:
            self.encoder = self.default_vocab()
        else:
            with open(vocab_file, encoding="utf-8") as handle:
                self.encoder = json.load(handle)
        if sorted(self.encoder.values()) != list(range(len(self.encoder))):
            raise ValueError(f"CTC vocabulary ids must be 0..{len(self.encoder) - 1} without gaps or repeats")
        for name, token in (("pad_token (the CTC blank)", pad_token), ("unk_token", unk_token)):
            if str(token) not in self.encoder:
                raise ValueError(f"{name} {token!r} is not in the CTC vocabulary")
        self.decoder = {index: token for token, index in self.encoder.items()}
        kwargs.setdefault("split_special_tokens", True)
        super().__init__(unk_token=unk_token, pad_token=pad_token, special_tokens_pattern="none", **kwargs)

    @staticmethod
    def default_vocab() -> dict[str, int]:
        """`<blank>`: 0, `<unk>`: 1, then " " .. "~" (ASCII 32..126): 97 entries."""
        return {token: index for index, token in enumerate(["<blank>", "<unk>", *map(chr, range(32, 127))])}

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *init_inputs, **kwargs):
        """Load a saved CTC tokenizer; from a thinker checkpoint, whose tokenizer files are the BPE
        tokenizer's, build the fixed vocabulary instead of misreading them."""
        hub_kwargs = {
            key: kwargs[key]
            for key in ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")
            if key in kwargs
        }
        saved_class = get_tokenizer_config(pretrained_model_name_or_path, **hub_kwargs).get("tokenizer_class")
        if saved_class is not None and saved_class != cls.__name__:
            return cls(name_or_path=str(pretrained_model_name_or_path))
        return super().from_pretrained(pretrained_model_name_or_path, *init_inputs, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    @property
    def blank_token_id(self) -> int:
        """The CTC blank (= `pad_token_id`, = `MuOmniAudioEncoderConfig.ctc_blank_id`)."""
        return self.pad_token_id

    def get_vocab(self) -> dict[str, int]:
        return {**self.encoder, **self.added_tokens_encoder}

    @staticmethod
    def normalize_text(text: str) -> str:
        """NFKD, accents dropped, whitespace -> " ": "Ça  va\\n" -> "Ca  va "."""
        characters = unicodedata.normalize("NFKD", text)
        return "".join(" " if char.isspace() else char for char in characters if not unicodedata.combining(char))

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return list(self.normalize_text(text))

    def _convert_token_to_id(self, token: str) -> int:
        return self.encoder.get(token, self.encoder[self.unk_token])

    def _convert_id_to_token(self, index: int) -> str:
        return self.decoder[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        group_tokens: bool = True,
        output_char_offsets: bool = False,
        output_word_offsets: bool = False,
        **kwargs,
    ) -> str | Wav2Vec2CTCTokenizerOutput:
        token_ids = [token_ids] if isinstance(token_ids, int) else [int(index) for index in token_ids]
        invalid = [index for index in token_ids if index not in self.decoder]
        if invalid:
            raise ValueError(
                f"ids {sorted(set(invalid))[:5]} are outside the CTC vocabulary [0, {len(self.decoder)}); "
                "replace label padding (-100) with pad_token_id before decoding"
            )
        # runs of (id, first frame, end frame); without grouping every id is its own run
        runs, frame = [], 0
        for index, run in groupby(token_ids) if group_tokens else ((index, [index]) for index in token_ids):
            length = len(list(run))
            runs.append((index, frame, frame + length))
            frame += length
        dropped = set(self.all_special_ids) if skip_special_tokens else {self.pad_token_id}
        kept = [(self.decoder[index], start, end) for index, start, end in runs if index not in dropped]
        text = "".join(char for char, _, _ in kept)
        if not (output_char_offsets or output_word_offsets):
            return text
        char_offsets = [{"char": char, "start_offset": start, "end_offset": end} for char, start, end in kept]
        word_offsets = self._get_word_offsets(char_offsets, self.replace_word_delimiter_char)
        return Wav2Vec2CTCTokenizerOutput(
            text=text,
            char_offsets=char_offsets if output_char_offsets else None,
            word_offsets=word_offsets if output_word_offsets else None,
        )


class MuOmniTokenizer(TokenizersBackend):
    r"""The thinker's byte-level BPE tokenizer.

    Built from `vocab`/`merges` like `Qwen2Tokenizer` (`tokenizer.json` is what `save_pretrained` writes
    and `from_pretrained` reads); without them it is the merge-free `default_vocab()` of `MIN_VOCAB_SIZE`
    tokens. Use `train_tokenizer` to learn merges. The special tokens sit at the ids of
    `muomni.configuration.SPECIAL_TOKEN_IDS` and are attributes: `eos_token` / `pad_token` and
    `im_start_token`, `im_end_token`, `image_token`, `vision_start_token`, `vision_end_token`,
    `audio_token`, `audio_start_token`, `audio_end_token` (each with its `..._id`). There is no BOS and
    no unknown token; nothing is added around encoded text (`add_eos_token=True` would append EOS).

    `from_pretrained(..., _from_pipeline="automatic-speech-recognition")` returns a `MuOmniCTCTokenizer`:
    the ASR pipeline decodes CTC frame ids, which mean characters, not BPE tokens.
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    model = BPE

    def __init__(
        self,
        vocab: dict[str, int] | None = None,
        merges: list[tuple[str, str]] | list[str] | None = None,
        eos_token: str = SPECIAL_TOKENS["eos_token"],
        pad_token: str = SPECIAL_TOKENS["pad_token"],
        im_start_token: str = SPECIAL_TOKENS["im_start_token"],
        im_end_token: str = SPECIAL_TOKENS["im_end_token"],
        image_token: str = SPECIAL_TOKENS["image_token"],
        vision_start_token: str = SPECIAL_TOKENS["vision_start_token"],
        vision_end_token: str = SPECIAL_TOKENS["vision_end_token"],
        audio_token: str = SPECIAL_TOKENS["audio_token"],
        audio_start_token: str = SPECIAL_TOKENS["audio_start_token"],
        audio_end_token: str = SPECIAL_TOKENS["audio_end_token"],
        **kwargs,
    ):
        if vocab is None:
            if merges:
                raise ValueError(f"merges ({len(merges)}) were given without the vocab they build")
            vocab = default_vocab()
        _check_vocab(vocab)
        self._tokenizer = _byte_level_pipeline(
            Tokenizer(BPE(vocab=vocab, merges=list(merges or []), dropout=None, unk_token=None, fuse_unk=False))
        )
        if kwargs.get("chat_template") is None:
            kwargs["chat_template"] = CHAT_TEMPLATE
        super().__init__(
            eos_token=eos_token,
            pad_token=pad_token,
            # named multimodal tokens (transformers keeps any `*_token` keyword as `tokenizer.<name>`)
            im_start_token=im_start_token,
            im_end_token=im_end_token,
            image_token=image_token,
            vision_start_token=vision_start_token,
            vision_end_token=vision_end_token,
            audio_token=audio_token,
            audio_start_token=audio_start_token,
            audio_end_token=audio_end_token,
            **kwargs,
        )

    def apply_chat_template(self, conversation, *args, **kwargs):
        check_chat_messages(conversation)
        return super().apply_chat_template(conversation, *args, **kwargs)

    def _decode(self, token_ids, *args, **kwargs) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        invalid = sorted({int(index) for index in ids if not 0 <= int(index) < len(self)})
        if invalid:
            raise ValueError(
                f"ids {invalid[:5]} are outside the vocabulary [0, {len(self)}); "
                "replace label padding (-100) with pad_token_id before decoding"
            )
        return super()._decode(token_ids, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *init_inputs, **kwargs):
        # `pipeline()` loads tokenizers with `AutoTokenizer.from_pretrained(..., _from_pipeline=task)`, which
        # passes `_from_pipeline` on to the resolved class's `from_pretrained`
        if kwargs.get("_from_pipeline") == "automatic-speech-recognition":
            return MuOmniCTCTokenizer.from_pretrained(pretrained_model_name_or_path, *init_inputs, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *init_inputs, **kwargs)


def _checked_texts(texts: Iterable[str], counts: dict[str, int] | None = None) -> Iterator[str]:
    """`texts` as an iterator that raises on anything but a string; `counts["characters"]` sums their lengths."""
    if isinstance(texts, str):  # iterable, but of characters
        raise TypeError("texts must be an iterable of strings, not a single string")

    def check(position: int, text: str) -> str:
        if not isinstance(text, str):
            raise TypeError(f"texts must hold strings, item {position} is {type(text).__name__}: {text!r:.50}")
        if counts is not None:
            counts["characters"] += len(text)
        return text

    return (check(position, text) for position, text in enumerate(texts))


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    show_progress: bool = False,
    length: int | None = None,
) -> MuOmniTokenizer:
    """Train a byte-level BPE `MuOmniTokenizer` on `texts` (any iterable of str, read once).

    The vocabulary is the special tokens (ids 0..9), the 256 byte symbols, then up to
    `vocab_size - MIN_VOCAB_SIZE` merges seen at least `min_frequency` times. `len(tokenizer)` equals
    `vocab_size` when the corpus offers that many merges; a small corpus gives fewer, so set the model
    config's `vocab_size` from `len(tokenizer)`, never from the requested size. `length` (the number of
    texts, optional) only feeds the progress bar.
    """
    texts = _checked_texts(texts, counts := {"characters": 0})
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size ({vocab_size!r}) must be an integer >= {MIN_VOCAB_SIZE}: {len(SPECIAL_TOKENS)} special "
            f"tokens + {len(BYTE_ALPHABET)} byte symbols, before any merge"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be a positive integer, got {min_frequency!r}")
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=show_progress,
        special_tokens=list(SPECIAL_TOKENS.values()),  # first, so their ids are 0..9
        initial_alphabet=BYTE_ALPHABET,  # every byte, seen in the corpus or not
    )
    backend = _byte_level_pipeline(Tokenizer(BPE(unk_token=None, fuse_unk=False)))
    backend.train_from_iterator(texts, trainer=trainer, length=length)
    if counts["characters"] == 0:
        raise ValueError("texts is empty (no characters to train on)")
    model = json.loads(backend.to_str())["model"]
    return MuOmniTokenizer(vocab=model["vocab"], merges=[tuple(merge) for merge in model["merges"]])


def tokenize_for_pretraining(
    tokenizer: TokenizersBackend, texts: Iterable[str], split_special_tokens: bool = True
) -> list[list[int]]:
    """Token ids of each text with the EOS id appended, so a pretrained model learns to stop.

    With `split_special_tokens=True` (default) a text that spells a control token ("<|im_end|>") is encoded
    as plain bytes: in raw text it is text, and only the appended EOS is a control token.
    """
    texts = list(_checked_texts(texts))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no eos_token to append")
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False, split_special_tokens=split_special_tokens)["input_ids"]
    return [ids + [tokenizer.eos_token_id] for ids in encoded]


__all__ = [
    "BYTE_ALPHABET",
    "CHAT_TEMPLATE",
    "MIN_VOCAB_SIZE",
    "SPECIAL_TOKENS",
    "MuOmniCTCTokenizer",
    "MuOmniTokenizer",
    "default_vocab",
    "tokenize_for_pretraining",
    "train_tokenizer",
]
