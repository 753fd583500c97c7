"""A tiny, seeded MuOmni model + processor and the media to feed it, shared by the publishing tests
(`test_hub.py`, `test_remote_code.py`). Test scaffolding only."""

import random

import numpy as np
import PIL.Image
import torch

from muomni import (
    MuOmniFeatureExtractor,
    MuOmniForConditionalGeneration,
    MuOmniImageProcessor,
    MuOmniProcessor,
    get_preset_config,
    train_tokenizer,
)

WORDS = "the a cat dog bird sat ran on under mat tree big small red blue happy and but where is what color".split()
SR = 16000
PROMPT = "<|vision_start|><|image|><|vision_end|><|audio_start|><|audio|><|audio_end|>what color is the cat"
METRICS = {
    "stage_a": {"eval_perplexity": 17.25, "eval_bits_per_byte": 1.375},
    "stage_b": {"eval_cer": 0.4125},
    "stage_e": {"eval_image_qa_accuracy": 0.625},
}


def build_tiny_omni(seed: int = 0) -> tuple[MuOmniForConditionalGeneration, MuOmniProcessor]:
    """The `tiny` preset with a 300-token BPE vocabulary and 32x32 images, randomly initialised (eval mode)."""
    rng = random.Random(seed)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "." for _ in range(300)]
    tokenizer = train_tokenizer(corpus, vocab_size=300)
    config = get_preset_config(
        "tiny",
        # 0.2: a random model's greedy continuation varies instead of repeating one token
        thinker_config={
            "text_config": {"vocab_size": len(tokenizer), "initializer_range": 0.2},
            "vision_config": {"image_size": 32, "patch_size": 8},
        },
    )
    torch.manual_seed(seed)
    model = MuOmniForConditionalGeneration(config).eval()
    processor = MuOmniProcessor.from_config(
        config, MuOmniImageProcessor(size={"height": 32, "width": 32}), MuOmniFeatureExtractor(), tokenizer
    )
    return model, processor


def picture(seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8))


def sound(seconds: float = 0.8, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)
