"""Agreement of the methods: Spearman's rho against a plain loop (scipy is not installed), top-5 overlap, the
sums behind the per-job distribution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.relevance.agreement import (
    PAIRS,
    TOP_WORDS,
    Agreement,
    AgreementSums,
    agreement,
    average_ranks,
    spearman,
    spearman_edges,
    top_overlap,
)
from shared.relevance.engine import Engine, Explanation, truncate
from shared.relevance.tokenizer import PAD_ID, START_ID, Vocabulary
from shared.relevance.weights import ModelWeights
from shared.store.imdb import Review
from tests.helpers.reference_deletion import plain_ranking, plain_ranks, plain_spearman


@pytest.fixture(scope="module")
def real(
    sample_reviews: list[Review], vocabulary: Vocabulary, trained_weights: ModelWeights
) -> tuple[list[list[int]], list[Explanation]]:
    """60 real test reviews as the model reads them, explained by the trained model."""
    sequences = [
        truncate(vocabulary.tokenize(r.text).token_ids, trained_weights.max_length, trained_weights.keep)[0]
        for r in sample_reviews[:60]
    ]
    return sequences, Engine(trained_weights).explain(sequences)


def tied_rows(seed: int, rows: int = 60, width: int = 25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Small integers (many ties) in rows of 0..width valid entries."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, (rows, width)).astype(float)  # (N, W)
    b = rng.integers(0, 6, (rows, width)).astype(float)  # (N, W)
    valid = np.arange(width) < rng.integers(0, width + 1, rows)[:, None]  # (N, W)
    return a, b, valid


@pytest.mark.parametrize("seed", range(3))
def test_ranks_and_spearman_match_a_plain_loop_with_ties(seed: int) -> None:
    a, b, valid = tied_rows(seed)
    ranks = average_ranks(a, valid)
    rho = spearman(a, b, valid)
    for n in range(a.shape[0]):
        kept = valid[n]
        np.testing.assert_allclose(ranks[n, kept], plain_ranks(list(a[n, kept])))
        assert np.isnan(ranks[n, ~kept]).all()
        want = plain_spearman(list(a[n, kept]), list(b[n, kept]))
        if math.isnan(want):
            assert np.isnan(rho[n])
        else:
            assert rho[n] == pytest.approx(want, abs=1e-12)
    assert np.isfinite(rho).sum() > 40  # most rows are defined: the comparison above is not vacuous


def test_spearman_edge_cases() -> None:
    valid = np.array([[True, True, True], [True, False, False], [True, True, True], [True, True, True]])
    a = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [4.0, 4.0, 4.0], [1.0, 2.0, 3.0]])
    b = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]])
    rho = spearman(a, b, valid)
    assert rho[0] == pytest.approx(-1.0) and rho[3] == pytest.approx(1.0)
    assert np.isnan(rho[1]) and np.isnan(rho[2])  # one word; a constant ranking


def test_top_overlap_by_hand() -> None:
    a = np.array([[9.0, 8, 7, 6, 5, 4, 3, 0], [1, 1, 1, 1, 1, 1, 0, 0]])
    b = np.array([[0.0, 8, 7, 6, 5, 4, 3, 9], [1, 1, 1, 1, 1, 1, 0, 0]])
    valid = np.ones((2, 8), bool)
    valid[1, 6:] = False  # six words: ties go to the earlier ones, the same five for both
    np.testing.assert_allclose(top_overlap(a, b, valid), [4 / 5, 1.0])
    valid[1, 5] = False  # five words: the top five are the whole review
    assert np.isnan(top_overlap(a, b, valid)[1])


def test_agreement_on_real_reviews_matches_plain_loops(
    real: tuple[list[list[int]], list[Explanation]],
) -> None:
    sequences, explanations = real
    result = agreement(sequences, explanations)
    assert result.spearman.shape == result.overlap.shape == (len(sequences), len(PAIRS))
    for n, (ids, explanation) in enumerate(zip(sequences, explanations, strict=True)):
        words = [p for p, token in enumerate(ids) if token not in (PAD_ID, START_ID)]
        for p, (first, second) in enumerate(PAIRS):
            a, b = getattr(explanation, first), getattr(explanation, second)
            assert result.spearman[n, p] == pytest.approx(plain_spearman(a[words], b[words]), abs=1e-9)
            top_a = set(plain_ranking(ids, list(a), True)[:TOP_WORDS])
            top_b = set(plain_ranking(ids, list(b), True)[:TOP_WORDS])
            assert result.overlap[n, p] == len(top_a & top_b) / TOP_WORDS


def test_distribution_sums_add_up_and_give_quartiles(real: tuple[list[list[int]], list[Explanation]]) -> None:
    result = agreement(*real)
    whole = AgreementSums.of(result)
    halves = [Agreement(result.spearman[s], result.overlap[s]) for s in (slice(0, 25), slice(25, None))]
    added = AgreementSums.of(halves[0]) + AgreementSums.of(halves[1])
    np.testing.assert_array_equal(added.spearman_histogram, whole.spearman_histogram)
    np.testing.assert_array_equal(added.overlap_histogram, whole.overlap_histogram)
    np.testing.assert_allclose(added.spearman.mean(), whole.spearman.mean(), rtol=1e-12)
    assert whole.spearman_histogram.sum(axis=1).tolist() == [len(real[0])] * len(PAIRS)
    bin_width = float(np.diff(spearman_edges())[0])
    for p in range(len(PAIRS)):
        exact = np.quantile(result.spearman[:, p], [0.25, 0.5, 0.75])
        np.testing.assert_allclose(whole.spearman_quartiles()[p], exact, atol=bin_width)
        overlap = np.quantile(result.overlap[:, p], [0.25, 0.5, 0.75], method="inverted_cdf")
        np.testing.assert_allclose(whole.overlap_quartiles()[p], overlap)
        assert whole.overlap.mean()[p] == pytest.approx(result.overlap[:, p].mean())


def test_undefined_values_are_left_out_of_the_distribution() -> None:
    result = Agreement(spearman=np.array([[0.5, np.nan, 1.0]]), overlap=np.array([[np.nan, 0.4, 1.0]]))
    sums = AgreementSums.of(result)
    assert sums.spearman.count.tolist() == [1, 0, 1] and sums.overlap.count.tolist() == [0, 1, 1]
    assert sums.spearman_histogram.sum(axis=1).tolist() == [1, 0, 1]
    assert sums.spearman_histogram[2, -1] == 1  # rho = 1 falls in the last, closed bin
    assert sums.overlap_histogram[1].tolist() == [0, 0, 1, 0, 0, 0]
    assert np.isnan(sums.spearman_quartiles()[1]).all() and np.isnan(sums.overlap_quartiles()[0]).all()
