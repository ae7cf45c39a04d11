"""Text in, explanation out: tokenizer + truncation + engine, loaded once per process and shared by the
workers (bulk batches and single interactive reviews)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.relevance.engine import Engine, Explanation, truncate
from shared.relevance.forward import ForwardModel
from shared.relevance.tokenizer import INDEX_FROM, Tokenized, Vocabulary
from shared.relevance.weights import ModelWeights, load_weights


@dataclass(frozen=True)
class ExplainedReview:
    """What the model read of one review (tokens after truncation) and what the engine says about it."""

    tokenized: Tokenized
    explanation: Explanation
    truncated: bool


def truncate_tokens(tokenized: Tokenized, max_length: int, keep: str) -> tuple[Tokenized, bool]:
    """Cut ids, tokens and spans alike, the way the engine's `truncate` cuts ids."""
    kept, truncated = truncate(list(range(len(tokenized.token_ids))), max_length, keep)
    if not truncated:
        return tokenized, False
    return (
        Tokenized(
            token_ids=[tokenized.token_ids[k] for k in kept],
            tokens=[tokenized.tokens[k] for k in kept],
            spans=[tokenized.spans[k] for k in kept],
        ),
        True,
    )


class Explainer:
    """The model and its vocabulary; `explain` isolates a failing review instead of failing the batch."""

    def __init__(self, weights: ModelWeights, vocabulary: Vocabulary) -> None:
        self.weights = weights
        self.vocabulary = vocabulary
        self.engine = Engine(weights)

    @functools.cached_property
    def forward_model(self) -> ForwardModel:
        """The forward-only model of the deletion test (faithfulness.py), laid out on first use."""
        return ForwardModel.from_weights(self.weights)

    def read(self, text: str) -> tuple[Tokenized, bool]:
        """The tokens the model reads of a text, and whether the text was cut to the maximum length."""
        return truncate_tokens(self.vocabulary.tokenize(text), self.weights.max_length, self.weights.keep)

    def explain(self, texts: Sequence[str], target: int | None = None) -> list[ExplainedReview | str]:
        """One result per text: an ExplainedReview, or the reason (a message) why that text failed."""
        read: list[tuple[Tokenized, bool] | str] = []
        for text in texts:
            try:
                read.append(self.read(text))
            except Exception as exc:
                read.append(f"tokenizer: {type(exc).__name__}: {exc}")
        good = [r for r in read if not isinstance(r, str)]
        explained = iter(self.explain_ids([t.token_ids for t, _ in good], target))
        results: list[ExplainedReview | str] = []
        for r in read:
            if isinstance(r, str):
                results.append(r)
                continue
            result = next(explained)
            results.append(result if isinstance(result, str) else ExplainedReview(r[0], result, r[1]))
        return results

    def explain_ids(
        self, sequences: Sequence[Sequence[int]], target: int | None = None
    ) -> list[Explanation | str]:
        """One result per token-id sequence, in one engine call; if that call fails, each sequence alone,
        so a bad one yields its reason (a message) and the others their explanations."""
        try:
            return list(self.engine.explain(sequences, [target] * len(sequences)))
        except Exception:
            return [self._explain_one(ids, target) for ids in sequences]

    def _explain_one(self, ids: Sequence[int], target: int | None) -> Explanation | str:
        try:
            (explanation,) = self.engine.explain([ids], [target])
        except Exception as exc:
            return f"engine: {type(exc).__name__}: {exc}"
        return explanation


def model_vocabulary(weights: ModelWeights) -> Vocabulary:
    """The tokenizer's vocabulary from the words stored in the model file (word of id i -> rank i - 3)."""
    ranks = {word: token_id - INDEX_FROM for token_id, word in enumerate(weights.words) if word}
    return Vocabulary(ranks, weights.vocab_size)


@functools.cache
def load_explainer(model_path: Path) -> Explainer:
    """The explainer of one model file (weights and vocabulary), loaded once per process (workers call it
    before their first task)."""
    weights = load_weights(model_path)
    return Explainer(weights, model_vocabulary(weights))
