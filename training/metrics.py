"""Model-quality metrics used by the stages and the demo: edit-distance error rates, retrieval recall, accuracy."""

import math
from collections.abc import Sequence

import torch


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_item in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_item != hyp_item))
        previous = current
    return previous[-1]


def _error_rate(references: Sequence[Sequence], hypotheses: Sequence[Sequence]) -> float:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = sum(len(r) for r in references)
    if total == 0:
        raise ValueError("references are empty: an error rate needs at least one reference symbol")
    return sum(edit_distance(r, h) for r, h in zip(references, hypotheses)) / total


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """CER: total character edit distance / total reference characters (corpus level)."""
    return _error_rate(list(references), list(hypotheses))


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """WER: total word edit distance / total reference words (corpus level, whitespace tokenised)."""
    return _error_rate([r.split() for r in references], [h.split() for h in hypotheses])


def retrieval_recall(similarity: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k for a (N, N) similarity matrix whose diagonal holds the matching pairs, in both
    directions (rows as queries: image->text; columns: text->image), averaged."""
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be a square (N, N) matrix, got {tuple(similarity.shape)}")
    n = similarity.shape[0]
    target = torch.arange(n, device=similarity.device)
    results = {}
    for k in ks:
        k_eff = min(k, n)
        hits_rows = (similarity.topk(k_eff, dim=1).indices == target[:, None]).any(dim=1).float().mean()
        hits_cols = (similarity.t().topk(k_eff, dim=1).indices == target[:, None]).any(dim=1).float().mean()
        results[f"recall_at_{k}"] = float((hits_rows + hits_cols) / 2)
    return results


def accuracy(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Exact-match accuracy after lowercasing and stripping whitespace and final punctuation."""
    if len(references) != len(predictions) or not references:
        raise ValueError(f"need as many predictions as references (> 0), got {len(predictions)} and {len(references)}")

    def norm(text: str) -> str:
        return text.strip().lower().rstrip(".!?").strip()

    return sum(norm(r) == norm(p) for r, p in zip(references, predictions)) / len(references)


def bits_per_byte(mean_loss_nats: float, tokens: int, utf8_bytes: int) -> float:
    """Bits per UTF-8 byte from a mean per-token loss in nats over `tokens` tokens of `utf8_bytes` bytes."""
    if utf8_bytes <= 0:
        raise ValueError(f"utf8_bytes must be > 0, got {utf8_bytes}")
    return mean_loss_nats * tokens / (utf8_bytes * math.log(2))


__all__ = [
    "accuracy",
    "bits_per_byte",
    "character_error_rate",
    "edit_distance",
    "retrieval_recall",
    "word_error_rate",
]
