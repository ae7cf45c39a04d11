"""Batched NumPy LSTM with three word-level explanations: LRP (epsilon, signal-take-all), SA and GI.

Imports NumPy only. (interface draft; implementation follows)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.weights import ModelWeights

Array = npt.NDArray[np.floating]


@dataclass(frozen=True)
class Explanation:
    """What the engine says about one review; relevance arrays have one value per given token id."""

    logits: Array  # (C,)
    probabilities: Array  # (C,)
    predicted_class: int
    target_class: int
    lrp: Array  # (L,)
    sa: Array  # (L,)
    gi: Array  # (L,)
    lrp_rest: float  # part of the target logit that LRP gives to no token


class Engine:
    """The model in NumPy, ready to explain batches of token-id sequences."""

    def __init__(
        self,
        weights: ModelWeights,
        dtype: type[np.floating] = np.float32,
        eps: float = 1e-3,
        bias_factor: float = 0.0,
    ) -> None:
        raise NotImplementedError

    def explain(
        self, sequences: Sequence[Sequence[int]], targets: Sequence[int | None] | None = None
    ) -> list[Explanation]:
        """Explain each sequence (ids as given, start token included); target None = predicted class."""
        raise NotImplementedError


def truncate(token_ids: Sequence[int], max_length: int, keep: str) -> tuple[list[int], bool]:
    """The ids the model reads (keep="start": the first max_length) and whether anything was cut."""
    if len(token_ids) <= max_length:
        return list(token_ids), False
    kept = token_ids[:max_length] if keep == "start" else token_ids[-max_length:]
    return list(kept), True
