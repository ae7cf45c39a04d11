"""How much the methods agree: per review, the Spearman rank correlation of every pair of methods over the
review's words and the overlap of their top-5 words; per job, the distribution of both.

The words are those that deletion may remove (faithfulness.py: not the start token, not padding), ranked by
the same scores (signed relevance toward the explained class for LRP and GI, the value for SA). Spearman's
rho is the Pearson correlation of the ranks, ties sharing their average rank; it is undefined (NaN) for fewer
than two words or a constant ranking. The top-5 overlap is the number of words two methods both put among
their five most relevant (ties go to the earlier word, as in deletion), divided by 5; undefined for reviews of
at most five words, whose top-5 sets are the whole review.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.relevance.engine import Explanation
from shared.relevance.faithfulness import MeanSums, ReadBatch, read_batch
from shared.relevance.methods import METHODS

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

PAIRS = tuple(itertools.combinations(METHODS, 2))  # the columns of every per-pair array
TOP_WORDS = 5
SPEARMAN_BINS = 40  # histogram bins of width 0.05 over [-1, 1]
QUARTILES = (0.25, 0.5, 0.75)


def average_ranks(values: Array, valid: BoolArray) -> Array:
    """Ranks 1..n of each row's valid values (N, W), ties averaged; NaN where not valid."""
    N, W = values.shape
    keys = np.where(valid, values, np.inf)  # (N, W) invalid entries sort last
    order = np.argsort(keys, axis=1, kind="stable")  # (N, W)
    ordered = np.take_along_axis(keys, order, axis=1)  # (N, W)
    starts = np.ones((N, W), bool)  # (N, W) a tie group starts here
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones((N, W), bool)  # (N, W) a tie group ends here
    ends[:, :-1] = starts[:, 1:]
    column = np.arange(W)  # (W,)
    first = np.maximum.accumulate(np.where(starts, column, 0), axis=1)  # (N, W) group's first index
    last = np.minimum.accumulate(np.where(ends, column, W - 1)[:, ::-1], axis=1)[:, ::-1]  # (N, W)
    ranks = np.empty((N, W))  # (N, W)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=1)
    return np.where(valid, ranks, np.nan)


def spearman(a: Array, b: Array, valid: BoolArray) -> Array:
    """Spearman's rho of each row (N,) over its valid entries of a and b (N, W)."""
    count = valid.sum(axis=1)  # (N,)
    ra = np.nan_to_num(average_ranks(a, valid) - (count[:, None] + 1) / 2)  # (N, W) centred, 0 if invalid
    rb = np.nan_to_num(average_ranks(b, valid) - (count[:, None] + 1) / 2)  # (N, W)
    covariance = (ra * rb).sum(axis=1)  # (N,)
    scale = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))  # (N,)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = covariance / scale  # (N,)
    return np.where((count >= 2) & (scale > 0), np.clip(rho, -1.0, 1.0), np.nan)


def top_overlap(a: Array, b: Array, valid: BoolArray, top: int = TOP_WORDS) -> Array:
    """Share of each row's top `top` valid entries of a and b (N, W) that both have in common (N,)."""
    top_a = np.argsort(np.where(valid, -a, np.inf), axis=1, kind="stable")[:, :top]  # (N, top)
    top_b = np.argsort(np.where(valid, -b, np.inf), axis=1, kind="stable")[:, :top]  # (N, top)
    shared = (top_a[:, :, None] == top_b[:, None, :]).any(axis=2).sum(axis=1)  # (N,)
    return np.where(valid.sum(axis=1) > top, shared / top, np.nan)


@dataclass(frozen=True)
class Agreement:
    """Per review and pair of methods (PAIRS): Spearman's rho and the top-5 overlap, NaN if undefined."""

    spearman: Array  # (N, P)
    overlap: Array  # (N, P)


def agreement(sequences: Sequence[Sequence[int]], explanations: Sequence[Explanation]) -> Agreement:
    """The agreement of the methods on each review (ids as given to the engine, with its explanations)."""
    return agreement_of(read_batch(sequences, explanations))


def agreement_of(batch: ReadBatch) -> Agreement:
    """Agreement over the deletable words of reviews read once for deletion too."""
    index = {method: m for m, method in enumerate(METHODS)}
    rho, overlap = [], []
    for first, second in PAIRS:
        a, b = batch.scores[index[first]], batch.scores[index[second]]  # (N, W) each
        rho.append(spearman(a, b, batch.deletable))
        overlap.append(top_overlap(a, b, batch.deletable))
    return Agreement(spearman=np.stack(rho, axis=1), overlap=np.stack(overlap, axis=1))  # (N, P) each


@dataclass(frozen=True)
class AgreementSums:
    """The distribution of the agreement over many reviews, as sums: add batches with `+`."""

    spearman: MeanSums  # (P,)
    overlap: MeanSums  # (P,)
    spearman_histogram: IntArray  # (P, SPEARMAN_BINS) counts over [-1, 1]
    overlap_histogram: IntArray  # (P, TOP_WORDS + 1) counts of 0..5 shared words

    @classmethod
    def of(cls, result: Agreement) -> AgreementSums:
        P = len(PAIRS)
        edges = spearman_edges()  # (bins + 1,)
        rho_bin = np.clip(np.searchsorted(edges, result.spearman, side="right") - 1, 0, SPEARMAN_BINS - 1)
        shared = np.rint(result.overlap * TOP_WORDS)  # (N, P) words in common
        rho_counts = np.zeros((P, SPEARMAN_BINS), np.int64)  # (P, bins)
        overlap_counts = np.zeros((P, TOP_WORDS + 1), np.int64)  # (P, 6)
        for p in range(P):
            defined = ~np.isnan(result.spearman[:, p])  # (N,)
            rho_counts[p] = np.bincount(rho_bin[defined, p], minlength=SPEARMAN_BINS)
            defined = ~np.isnan(shared[:, p])  # (N,)
            overlap_counts[p] = np.bincount(shared[defined, p].astype(np.intp), minlength=TOP_WORDS + 1)
        return cls(
            spearman=MeanSums.of(result.spearman),
            overlap=MeanSums.of(result.overlap),
            spearman_histogram=rho_counts,
            overlap_histogram=overlap_counts,
        )

    def __add__(self, other: AgreementSums) -> AgreementSums:
        return AgreementSums(
            spearman=self.spearman + other.spearman,
            overlap=self.overlap + other.overlap,
            spearman_histogram=self.spearman_histogram + other.spearman_histogram,
            overlap_histogram=self.overlap_histogram + other.overlap_histogram,
        )

    def spearman_quartiles(self) -> Array:
        """(P, 3) quartiles of rho, interpolated linearly inside the histogram's 0.05-wide bins."""
        edges = spearman_edges()  # (bins + 1,)
        return np.stack([histogram_quantiles(counts, edges) for counts in self.spearman_histogram])

    def overlap_quartiles(self) -> Array:
        """(P, 3) quartiles of the top-5 overlap, exact: the overlap takes only the values 0, 0.2, .., 1."""
        cumulative = np.cumsum(self.overlap_histogram, axis=1)  # (P, 6)
        wanted = np.array(QUARTILES)[None, :] * cumulative[:, -1:]  # (P, 3)
        shared = (cumulative[:, None, :] < wanted[:, :, None]).sum(axis=2)  # (P, 3) first count reaching it
        return np.where(cumulative[:, -1:] > 0, shared / TOP_WORDS, np.nan)


def spearman_edges() -> Array:
    return np.linspace(-1.0, 1.0, SPEARMAN_BINS + 1)  # (bins + 1,)


def histogram_quantiles(counts: IntArray, edges: Array, quantiles: Sequence[float] = QUARTILES) -> Array:
    """Quantiles of values known only by their histogram (bins,), interpolated linearly inside a bin."""
    cumulative = np.concatenate([[0], np.cumsum(counts)])  # (bins + 1,) counts below each edge
    if cumulative[-1] == 0:
        return np.full(len(quantiles), np.nan)
    wanted = np.array(quantiles) * cumulative[-1]  # (Q,)
    bin_ = np.searchsorted(cumulative[1:], wanted, side="left")  # (Q,) first bin reaching the wanted count
    within = (wanted - cumulative[bin_]) / counts[bin_]  # (Q,) share of that bin below the quantile
    values: Array = edges[bin_] + within * (edges[bin_ + 1] - edges[bin_])  # (Q,)
    return values
