"""Stable, seed-independent split assignment shared by every built-in dataset.

A split is a pure function of a content key (a sentence, a scene caption, a fact key, a
conversation's first line), hashed with BLAKE2b: the same content always lands in the same split,
whatever the seed, the scale or the order of generation, so splits stay disjoint across datasets
and across runs.
"""

import hashlib

SPLITS = ("train", "validation", "test")


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` (BLAKE2b, independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def stable_split(key: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> str:
    """"train", "validation" or "test" for `key`, with the given probabilities."""
    value = stable_fraction(key)
    if value < fractions[0]:
        return "train"
    return "validation" if value < fractions[0] + fractions[1] else "test"
