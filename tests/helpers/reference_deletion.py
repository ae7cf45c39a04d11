"""A deliberately plain deletion test (one review, one ranking, one k at a time, float64) and a plain
Spearman correlation, for testing shared/relevance/faithfulness.py and agreement.py.

Shares no code with them nor with shared/relevance/forward.py: rankings by Python's `sorted`, deletion by a
list comprehension, the LSTM run token by token in the Keras layout (gates i, f, c, o), ranks by loops.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from shared.relevance.tokenizer import PAD_ID, START_ID
from shared.relevance.weights import ModelWeights
from tests.helpers.reference_loop import sigmoid


def plain_probabilities(weights: ModelWeights, ids: Sequence[int]) -> np.ndarray:
    """Class probabilities of one review, padding skipped as Keras' mask_zero does."""
    H = weights.hidden_size
    h, c = np.zeros(H), np.zeros(H)
    for token in ids:
        if token == PAD_ID:
            continue
        z = (
            weights.embedding[token] @ weights.lstm_kernel
            + h @ weights.lstm_recurrent_kernel
            + weights.lstm_bias
        )
        i, f = sigmoid(z[:H]), sigmoid(z[H : 2 * H])
        g, o = np.tanh(z[2 * H : 3 * H]), sigmoid(z[3 * H :])
        c = f * c + i * g
        h = o * np.tanh(c)
    logits = h @ weights.dense_kernel + weights.dense_bias
    exp = np.exp(logits - logits.max())
    probabilities: np.ndarray = exp / exp.sum()
    return probabilities


def plain_ranking(ids: Sequence[int], scores: Sequence[float], most_relevant_first: bool) -> list[int]:
    """Positions of the words (not the start token, not padding) in deletion order; ties: earlier first."""
    words = [p for p, token in enumerate(ids) if token not in (PAD_ID, START_ID)]
    sign = -1.0 if most_relevant_first else 1.0
    return sorted(words, key=lambda p: (sign * scores[p], p))


def plain_deletion(
    weights: ModelWeights, ids: Sequence[int], order: Sequence[int], target: int, max_deleted: int
) -> list[tuple[float, int]]:
    """(target probability, predicted class) after deleting the first k positions of `order`, k = 0..K."""
    results = []
    for k in range(max_deleted + 1):
        gone = set(order[:k])
        kept = [token for p, token in enumerate(ids) if p not in gone]
        probabilities = plain_probabilities(weights, kept)
        results.append((float(probabilities[target]), int(np.argmax(probabilities))))
    return results


def plain_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n, tied values sharing the average of their ranks."""
    ranks = [0.0] * len(values)
    for p, value in enumerate(values):
        below = sum(1 for other in values if other < value)
        tied = sum(1 for other in values if other == value)
        ranks[p] = below + (tied + 1) / 2
    return ranks


def plain_spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rho: the Pearson correlation of the ranks; NaN if undefined."""
    ra, rb = plain_ranks(a), plain_ranks(b)
    n = len(ra)
    if n < 2:
        return math.nan
    mean_a, mean_b = sum(ra) / n, sum(rb) / n
    covariance = sum((x - mean_a) * (y - mean_b) for x, y in zip(ra, rb, strict=True))
    spread_a = math.sqrt(sum((x - mean_a) ** 2 for x in ra))
    spread_b = math.sqrt(sum((y - mean_b) ** 2 for y in rb))
    if spread_a == 0 or spread_b == 0:
        return math.nan
    return covariance / (spread_a * spread_b)
