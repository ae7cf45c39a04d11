"""Deletion tests of the explanations: a one-word model, the trained model against the random floor, batches
against single reviews, a plain loop and the engine's own masking; the sums behind the curves."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

from shared.relevance.engine import Engine, Explanation, truncate
from shared.relevance.faithfulness import (
    DIRECTIONS,
    RANKINGS,
    DeletionCurves,
    FaithfulnessSums,
    MeanSums,
    deletion_curves,
    deletion_order,
    random_scores,
    read_batch,
)
from shared.relevance.forward import ForwardModel, run
from shared.relevance.methods import METHODS
from shared.relevance.tokenizer import PAD_ID, START_ID, Vocabulary
from shared.relevance.weights import ModelWeights
from shared.store.imdb import Review
from tests.helpers.reference_deletion import plain_deletion, plain_ranking

K = 10
MOST, LEAST = DIRECTIONS.index("most"), DIRECTIONS.index("least")
LRP, RANDOM = RANKINGS.index("lrp"), RANKINGS.index("random")
KEY_WORD = 7


@dataclass(frozen=True)
class Explained:
    sequences: list[list[int]]
    explanations: list[Explanation]
    labels: list[int]


@pytest.fixture(scope="module")
def real(sample_reviews: list[Review], vocabulary: Vocabulary, trained_weights: ModelWeights) -> Explained:
    """120 real test reviews as the model reads them, explained by the trained model."""
    reviews = sample_reviews[:120]
    sequences = [
        truncate(vocabulary.tokenize(r.text).token_ids, trained_weights.max_length, trained_weights.keep)[0]
        for r in reviews
    ]
    explanations = Engine(trained_weights).explain(sequences)
    return Explained(sequences, explanations, [r.label for r in reviews])


@pytest.fixture(scope="module")
def real_curves(real: Explained, trained_weights: ModelWeights) -> DeletionCurves:
    return deletion_curves(
        ForwardModel.from_weights(trained_weights), real.sequences, real.explanations, max_deleted=K
    )


def one_word_model(vocab: int = 30) -> ModelWeights:
    """Positive exactly when KEY_WORD occurs: its input gate opens and writes 0.76 into a cell that never
    forgets; every other word keeps the gate shut. Other words differ in a dimension of tiny weight only."""
    rng = np.random.default_rng(0)
    embedding = np.zeros((vocab, 2))
    embedding[KEY_WORD, 0] = 1.0
    embedding[3:, 1] = rng.normal(0.0, 1.0, vocab - 3)
    embedding[KEY_WORD, 1] = 0.0
    kernel = np.array([[16.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.01, 0.0]])  # (E, 4H) gates i, f, c, o
    return ModelWeights(
        embedding=embedding,
        lstm_kernel=kernel,
        lstm_recurrent_kernel=np.zeros((1, 4)),
        lstm_bias=np.array([-8.0, 8.0, 0.0, 8.0]),  # input gate shut, forget gate and output gate open
        dense_kernel=np.array([[0.0, 10.0]]),
        dense_bias=np.array([0.0, -3.0]),
    )


def one_word_reviews(count: int, vocab: int = 30) -> tuple[list[list[int]], list[int]]:
    """Reviews of 12..30 filler words with KEY_WORD once, at every place from the first word to the last."""
    rng = np.random.default_rng(1)
    filler = [w for w in range(3, vocab) if w != KEY_WORD]
    sequences, places = [], []
    for n in range(count):
        words = rng.choice(filler, int(rng.integers(12, 31))).tolist()
        place = n % (len(words) + 1)
        sequences.append([START_ID, *words[:place], KEY_WORD, *words[place:]])
        places.append(place + 1)
    return sequences, places


def test_one_word_model_every_method_deletes_that_word_first() -> None:
    weights = one_word_model()
    sequences, places = one_word_reviews(40)
    explanations = Engine(weights, np.float64).explain(sequences)
    assert all(e.predicted_class == 1 and e.probabilities[1] > 0.95 for e in explanations)
    order, _ = deletion_order(read_batch(sequences, explanations), K)  # (N, D, R, K)
    methods = [RANKINGS.index(m) for m in METHODS]
    assert (order[:, MOST, methods, 0] == np.array(places)[:, None]).all()
    assert not (order[:, LEAST, methods, :] == np.array(places)[:, None, None]).any()  # never among the last

    curves = deletion_curves(ForwardModel.from_weights(weights), sequences, explanations, max_deleted=K)
    sums = FaithfulnessSums.of(curves, [1] * len(sequences))
    accuracy = sums.accuracy_correct()  # (D, R, K+1)
    assert sums.correct == len(sequences) and sums.misclassified == 0
    drop_at_one = np.broadcast_to([1.0] + [0.0] * K, (len(methods), K + 1))
    np.testing.assert_array_equal(accuracy[MOST, methods], drop_at_one)
    assert (curves.probability[:, MOST, methods, 1:] < 0.05).all()  # the drop is at k = 1 and stays
    np.testing.assert_array_equal(accuracy[LEAST, methods], 1.0)  # deleting filler changes nothing
    assert accuracy[MOST, RANDOM, 1] > 0.8  # random rarely hits the one word among 13..31 ...
    assert accuracy[MOST, RANDOM, K] < 1.0  # ... but now and then it does


def test_random_drops_more_slowly_than_lrp_on_the_trained_model(
    real: Explained, real_curves: DeletionCurves
) -> None:
    sums = FaithfulnessSums.of(real_curves, real.labels)
    accuracy = sums.accuracy_correct()  # (D, R, K+1)
    assert sums.correct > 80 and sums.misclassified > 5
    assert (accuracy[MOST, LRP, 1:] <= accuracy[MOST, RANDOM, 1:]).all()
    assert accuracy[MOST, LRP, K] < 0.6 < 0.9 < accuracy[MOST, RANDOM, K]
    low, high = sums.aopc.interval()  # (D, R) each
    assert low[MOST, LRP] > high[MOST, RANDOM]  # comprehensiveness: clearly above the floor
    assert high[LEAST, LRP] < low[LEAST, RANDOM]  # sufficiency: deleting the bottom words even helps
    rising = sums.accuracy_misclassified()  # the same deletion fixes wrong predictions
    assert rising[MOST, LRP, 0] == 0.0 and rising[MOST, LRP, K] > max(0.5, rising[MOST, RANDOM, K])


def test_batched_results_equal_one_review_at_a_time(real: Explained, trained_weights: ModelWeights) -> None:
    model = ForwardModel.from_weights(trained_weights, np.float64)
    sequences, explanations = real.sequences[:24], real.explanations[:24]
    batched = deletion_curves(model, sequences, explanations, max_deleted=K)
    for n, (ids, explanation) in enumerate(zip(sequences, explanations, strict=True)):
        alone = deletion_curves(model, [ids], [explanation], max_deleted=K)
        np.testing.assert_allclose(alone.probability[0], batched.probability[n], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(alone.predicted[0], batched.predicted[n])


def test_padding_in_the_input_is_no_token(real: Explained, trained_weights: ModelWeights) -> None:
    """Padding ids inside a sequence are skipped by the model, so they change neither ranks nor curves."""
    model = ForwardModel.from_weights(trained_weights, np.float64)
    ids, explanation = real.sequences[0], real.explanations[0]
    padded = [PAD_ID, *ids[:5], PAD_ID, PAD_ID, *ids[5:]]

    def with_gaps(values: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], values[:5], [0.0, 0.0], values[5:]])

    gapped: dict[str, Any] = {m: with_gaps(getattr(explanation, m)) for m in METHODS}
    padded_explanation = replace(explanation, **gapped)
    plain = deletion_curves(model, [ids], [explanation], max_deleted=K)
    gaps = deletion_curves(model, [padded], [padded_explanation], max_deleted=K)
    np.testing.assert_allclose(gaps.probability, plain.probability, rtol=0, atol=1e-12)


def test_agrees_with_a_plain_loop(real: Explained, trained_weights: ModelWeights) -> None:
    sequences, explanations = real.sequences[:4], real.explanations[:4]
    curves = deletion_curves(
        ForwardModel.from_weights(trained_weights), sequences, explanations, max_deleted=K
    )
    for n, (ids, explanation) in enumerate(zip(sequences, explanations, strict=True)):
        scores = {m: getattr(explanation, m) for m in METHODS}
        scores["random"] = random_scores(np.array(ids), seed=0)
        for d, direction in enumerate(DIRECTIONS):
            for r, ranking in enumerate(RANKINGS):
                most_first = direction == "most" or ranking == "random"  # random has no least
                order = plain_ranking(ids, list(scores[ranking]), most_first)
                want = plain_deletion(trained_weights, ids, order, explanation.target_class, K)
                probability = np.array([p for p, _ in want])
                np.testing.assert_allclose(curves.probability[n, d, r], probability, rtol=0, atol=2e-5)
                clear = np.abs(probability - 0.5) > 1e-4  # float32 may tip a coin toss
                assert (curves.predicted[n, d, r][clear] == np.array([c for _, c in want])[clear]).all()


def test_deletion_is_the_engines_masking(real: Explained, trained_weights: ModelWeights) -> None:
    """Deleting k words gives the probability the engine reports for the review with those ids set to 0."""
    ids, explanation = real.sequences[1], real.explanations[1]
    curves = deletion_curves(ForwardModel.from_weights(trained_weights), [ids], [explanation], max_deleted=K)
    order, _ = deletion_order(read_batch([ids], [explanation]), K)  # (1, D, R, K)
    for d in range(len(DIRECTIONS)):
        for r in range(len(RANKINGS)):
            masked = np.array(ids)
            masked[order[0, d, r, :4]] = PAD_ID
            (engine,) = Engine(trained_weights).explain([masked.tolist()], [explanation.target_class])
            assert curves.probability[0, d, r, 4] == pytest.approx(
                engine.probabilities[engine.target_class], abs=1e-5
            )


def test_start_token_is_never_deleted_and_short_reviews_repeat_their_end(
    trained_weights: ModelWeights,
) -> None:
    sequences = [[START_ID, 20, 30, 40], [START_ID, 50], [START_ID]]
    explanations = Engine(trained_weights).explain(sequences)
    curves = deletion_curves(
        ForwardModel.from_weights(trained_weights), sequences, explanations, max_deleted=K
    )
    order, count = deletion_order(read_batch(sequences, explanations), K)
    np.testing.assert_array_equal(count, [3, 1, 0])
    assert not (order[0, :, :, :3] == 0).any()
    for n, words in enumerate(count):
        ends = curves.probability[n, :, :, words:]  # (D, R, K + 1 - words) all equal to the value at `words`
        np.testing.assert_array_equal(ends, np.broadcast_to(ends[..., :1], ends.shape))
    alone = explanations[2].probabilities  # (C,) the start token alone: nothing to delete
    assert curves.probability[2, 0, 0, 0] == pytest.approx(alone[explanations[2].target_class], abs=1e-6)
    # Deleting all three words of the first review leaves the start token alone.
    assert curves.probability[0, MOST, LRP, 3] == pytest.approx(alone[explanations[0].target_class], abs=1e-6)


def test_records_are_small_and_start_from_the_engines_prediction(
    real: Explained, real_curves: DeletionCurves
) -> None:
    N = len(real.sequences)
    assert real_curves.probability.shape == (N, len(DIRECTIONS), len(RANKINGS), K + 1)
    assert real_curves.probability.dtype == np.float32 and real_curves.predicted.dtype == np.int8
    assert real_curves.probability[0].nbytes + real_curves.predicted[0].nbytes == 440
    engine = np.array([e.probabilities[e.target_class] for e in real.explanations])  # (N,)
    start = real_curves.probability[:, :, :, 0]  # (N, D, R)
    np.testing.assert_allclose(start, np.broadcast_to(engine[:, None, None], start.shape), atol=1e-5)
    np.testing.assert_array_equal(
        real_curves.predicted[:, 0, 0, 0], [e.predicted_class for e in real.explanations]
    )


def test_random_ranking_is_seeded_by_the_review() -> None:
    ids = np.array([START_ID, 5, 9, 12, 5])
    np.testing.assert_array_equal(random_scores(ids, 3), random_scores(ids.copy(), 3))
    assert not np.array_equal(random_scores(ids, 3), random_scores(ids, 4))
    assert not np.array_equal(random_scores(ids, 3), random_scores(ids[::-1], 3))


def test_sums_of_batches_add_up_to_the_sums_of_all(real: Explained, real_curves: DeletionCurves) -> None:
    labels: list[int | None] = [*real.labels[:-10], *[None] * 10]  # the last ten without a label
    whole = FaithfulnessSums.of(real_curves, labels)
    parts = [
        FaithfulnessSums.of(
            DeletionCurves(real_curves.probability[s], real_curves.predicted[s], real_curves.target[s]),
            labels[s],
        )
        for s in (slice(0, 50), slice(50, 51), slice(51, None))
    ]
    added = parts[0] + parts[1] + parts[2]
    assert (added.reviews, added.correct, added.misclassified) == (
        whole.reviews,
        whole.correct,
        whole.misclassified,
    )
    assert whole.correct + whole.misclassified == len(labels) - 10
    for name in ("flips", "correct_right", "misclassified_right"):
        np.testing.assert_array_equal(getattr(added, name), getattr(whole, name))
    np.testing.assert_allclose(added.aopc.mean(), whole.aopc.mean(), rtol=1e-12)
    np.testing.assert_allclose(added.aopc.interval(), whole.aopc.interval(), rtol=1e-9)
    np.testing.assert_array_equal(whole.accuracy_correct()[:, :, 0], 1.0)
    np.testing.assert_array_equal(whole.accuracy_misclassified()[:, :, 0], 0.0)
    np.testing.assert_array_equal(whole.flip_rate()[:, :, 0], 0.0)


def test_mean_and_interval_match_the_textbook() -> None:
    values = np.random.default_rng(5).normal(0.3, 0.2, (200, 3))  # (N, 3)
    values[::7, 1] = np.nan  # skipped
    sums = MeanSums.of(values)
    for column in range(3):
        kept = values[:, column][~np.isnan(values[:, column])]
        half = 1.96 * kept.std(ddof=1) / np.sqrt(kept.size)
        assert sums.count[column] == kept.size
        assert sums.mean()[column] == pytest.approx(kept.mean())
        low, high = sums.interval()
        assert (low[column], high[column]) == pytest.approx(
            (kept.mean() - half, kept.mean() + half), rel=1e-4
        )
    low, high = MeanSums.of(np.array([[0.5]])).interval()
    assert np.isnan(low[0]) and np.isnan(high[0])


def test_rejects_bad_arguments(real: Explained, trained_weights: ModelWeights) -> None:
    model = ForwardModel.from_weights(trained_weights)
    with pytest.raises(ValueError, match="one explanation per sequence"):
        deletion_curves(model, real.sequences[:2], real.explanations[:1])
    with pytest.raises(ValueError, match="at least 1"):
        deletion_curves(model, real.sequences[:1], real.explanations[:1], max_deleted=0)
    vocab = trained_weights.vocab_size
    with pytest.raises(ValueError, match=f"token ids outside \\[0, {vocab}\\)"):
        run(model, np.array([5, vocab]), np.array([2]), np.zeros((1, 2, trained_weights.hidden_size)))
