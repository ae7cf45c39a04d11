"""How faithful the explanations are: delete the words a method ranks most (or least) relevant, and watch.

Following Arras et al. (2017), for each review and each ranking (the methods of METHODS plus a seeded random
ranking as the floor) delete the k = 0..K top-ranked tokens and record the probability of the explained class
and the predicted class; once deleting the most relevant tokens first, once the least relevant first. Per
job: accuracy-vs-k curves for the correctly classified and the misclassified reviews, and AOPC
comprehensiveness and sufficiency (as ferret reports them) with 95 % confidence intervals.

Deletion is masking, which for this model is the same as removal. A deleted token's id becomes the padding
id, and the model, trained with Embedding(mask_zero=True), skips masked steps and carries its LSTM state
over them (the engine does the same): the masked review gives exactly the logits of the review with those
words struck out. No filler is needed, so none can distort the test: a zero word vector, the unknown-word
token or a neutral word would each be an input that the model reads and reacts to (a zero vector still runs
an LSTM step with its biases; the unknown-word token has a learned embedding of its own), mixing the
method's ranking with the filler's side effects. The same deletion applies to every method and to the
random ranking. Only words are deleted: never the start token (it opens every review and is no word), and
padding in the input is no token at all.

Ranking: every method's relevance toward the explained class, as the engine reports it (signed for LRP and
GI: the most relevant token is the strongest evidence for the class, the least relevant the strongest
against it; SA has no sign and ranks by value); ties go to the earlier token. The random ranking has no
most or least relevant words: both directions delete the same random words (computed once).

Cost: deleting the k-th word at position p changes nothing before p, so pass k restarts every row at p from
a state saved by an earlier pass (the latest one whose own deleted word lies before p): the work is the
tokens after each deleted word, about 22 review lengths per review at K = 10 on IMDB (instead of 71).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.relevance.engine import Explanation
from shared.relevance.forward import ForwardModel, Saves, ranges, run
from shared.relevance.methods import METHODS
from shared.relevance.tokenizer import PAD_ID, START_ID

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

RANKINGS = (*METHODS, "random")  # the rows of every per-ranking array
DIRECTIONS = ("most", "least")  # most relevant deleted first (comprehensiveness), least first (sufficiency)
_MOST, _LEAST = DIRECTIONS.index("most"), DIRECTIONS.index("least")
DEFAULT_MAX_DELETED = 10
DEFAULT_SEED = 0
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


@dataclass(frozen=True)
class ReadBatch:
    """Reviews as the model reads them (given padding dropped), left-aligned in (N, W) arrays."""

    ids: IntArray  # (N, W) token ids, PAD_ID after each review's end
    scores: Array  # (R, N, W) ranking scores per RANKINGS, 0 after each review's end
    lengths: IntArray  # (N,)
    deletable: BoolArray  # (N, W) words: not the start token, not past the end


def read_batch(
    sequences: Sequence[Sequence[int]], explanations: Sequence[Explanation], seed: int = DEFAULT_SEED
) -> ReadBatch:
    """Token ids and explanations side by side; the random ranking's scores depend on the seed and the
    review's ids only, so a review ranks the same alone and in any batch."""
    if len(sequences) != len(explanations):
        raise ValueError("one explanation per sequence")
    given = [np.asarray(s, dtype=np.intp) for s in sequences]
    read = [g != PAD_ID for g in given]  # (L_n,) each
    lengths = np.array([r.sum() for r in read], dtype=np.intp)  # (N,)
    N, W = len(given), int(lengths.max(initial=1))
    ids = np.full((N, W), PAD_ID, dtype=np.intp)  # (N, W)
    scores = np.zeros((len(RANKINGS), N, W))  # (R, N, W)
    for n, (g, r, explanation) in enumerate(zip(given, read, explanations, strict=True)):
        L = int(lengths[n])
        ids[n, :L] = g[r]
        for m, method in enumerate(METHODS):
            scores[m, n, :L] = np.asarray(getattr(explanation, method))[r]
        scores[-1, n, :L] = random_scores(g[r], seed)
    deletable = (ids != START_ID) & (np.arange(W) < lengths[:, None])  # (N, W)
    return ReadBatch(ids=ids, scores=scores, lengths=lengths, deletable=deletable)


def random_scores(ids: IntArray, seed: int) -> Array:
    """Uniform scores (L,) seeded by the seed and the review's ids: a random ranking, reproducible."""
    key = zlib.crc32(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    scores: Array = np.random.default_rng([seed, key]).random((ids.shape[0],))  # (L,)
    return scores


def deletion_order(batch: ReadBatch, max_deleted: int) -> tuple[IntArray, IntArray]:
    """Positions (N, D, R, K) to delete one after the other per direction and ranking, and how many of
    them are real per review (N,): min(K, deletable words); positions past that count are meaningless."""
    K = max_deleted
    most = np.where(batch.deletable, -batch.scores, np.inf)  # (R, N, W) ascending = most relevant first
    least = np.where(batch.deletable, batch.scores, np.inf)  # (R, N, W) ascending = least relevant first
    least[-1] = most[-1]  # random has no most or least: both directions delete the same random words
    keys = np.stack([most, least], axis=1)  # (R, D, N, W)
    order = np.argsort(keys, axis=-1, kind="stable")[..., :K]  # (R, D, N, min(K, W)) ties: earlier first
    order = np.pad(order, [(0, 0)] * 3 + [(0, K - order.shape[-1])])  # (R, D, N, K)
    count = np.minimum(batch.deletable.sum(axis=1), K)  # (N,)
    return order.transpose(2, 1, 0, 3), count  # (N, D, R, K), (N,)


@dataclass(frozen=True)
class DeletionCurves:
    """Per review, direction, ranking and k = 0..K: the explained class's probability and the predicted
    class after deleting k tokens. Row n of `probability` and `predicted` is review n's record (at K = 10:
    2 x 4 x 11 float32 and int8, 440 bytes); k beyond a review's deletable words repeats its last value."""

    probability: npt.NDArray[np.float32]  # (N, D, R, K+1)
    predicted: npt.NDArray[np.int8]  # (N, D, R, K+1)
    target: IntArray  # (N,) the explained class


def deletion_curves(
    model: ForwardModel,
    sequences: Sequence[Sequence[int]],
    explanations: Sequence[Explanation],
    *,
    max_deleted: int = DEFAULT_MAX_DELETED,
    seed: int = DEFAULT_SEED,
) -> DeletionCurves:
    """Delete the k = 1..K most and least relevant words of every review by every ranking: one batched
    forward pass over all reviews, then one per k over all (review, direction, ranking) rows."""
    if max_deleted < 1:
        raise ValueError("max_deleted must be at least 1")
    batch = read_batch(sequences, explanations, seed)
    target = np.array([e.target_class for e in explanations], dtype=np.intp)  # (N,)
    order, count = deletion_order(batch, max_deleted)  # (N, D, R, K), (N,)
    N, D, R, K = order.shape
    H, W = model.hidden_size, batch.ids.shape[1]
    rows_per_review = D * R
    positions = order.reshape(N * D * R, K)  # (V, K) one row per variant (review, direction, ranking)
    review = np.repeat(np.arange(N), rows_per_review)  # (V,)
    usable = np.repeat(count, rows_per_review)  # (V,) how many passes each variant runs
    usable.reshape(N, D, R)[:, _LEAST, -1] = 0  # random least-first is random most-first, copied below
    parent = _resume_parents(positions)  # (V, K + 1)
    store = np.zeros((N * D * R * K, 2, H), model.table.dtype)  # (V K, 2, H) start state of (variant, k)

    probability = np.zeros((N * D * R, K + 1), np.float32)  # (V, K+1)
    predicted = np.zeros((N * D * R, K + 1), np.int8)  # (V, K+1)
    # Pass 0: each review once, whole.
    tokens = batch.ids[np.arange(W) < batch.lengths[:, None]]  # (sum L,) the reviews one after the other
    saves = _saves_for(0, parent, positions, usable, np.arange(N * D * R), review)
    start = np.zeros((N, 2, H), model.table.dtype)  # (N, 2, H)
    hidden = run(model, tokens, batch.lengths, start, saves, store)  # (N, H)
    p0, c0 = _target_probability(model, hidden, target)  # (N,), (N,)
    probability[:, 0] = np.repeat(p0, rows_per_review)
    predicted[:, 0] = np.repeat(c0, rows_per_review)
    deleted = np.zeros((N * D * R, W), bool)  # (V, W) positions deleted so far, per variant
    for k in range(1, K + 1):
        variants = np.flatnonzero(usable >= k)  # (v,) rows with a k-th word to delete
        at = positions[variants, k - 1]  # (v,) the k-th deleted position
        deleted[variants, at] = True
        tokens, lengths = _remainders(batch, review[variants], at, deleted[variants])  # (sum,), (v,)
        saves = _saves_for(k, parent, positions, usable, variants, np.arange(variants.size))
        hidden = run(model, tokens, lengths, store[variants * K + k - 1], saves, store)  # (v, H)
        probability[:, k] = probability[:, k - 1]  # reviews with fewer words repeat their last value
        predicted[:, k] = predicted[:, k - 1]
        probability[variants, k], predicted[variants, k] = _target_probability(
            model, hidden, target[review[variants]]
        )
    probability, predicted = probability.reshape(N, D, R, K + 1), predicted.reshape(N, D, R, K + 1)
    probability[:, _LEAST, -1], predicted[:, _LEAST, -1] = probability[:, _MOST, -1], predicted[:, _MOST, -1]
    return DeletionCurves(probability=probability, predicted=predicted, target=target)


def _remainders(
    batch: ReadBatch, review: IntArray, at: IntArray, deleted: npt.NDArray[np.bool_]
) -> tuple[IntArray, IntArray]:
    """The tokens each row reads after its deleted position `at` (v,), skipping its other deleted positions
    (v, W), concatenated (sum of lengths,), and their counts (v,)."""
    after = batch.lengths[review] - at - 1  # (v,) positions after the deleted one
    row = np.repeat(np.arange(at.size), after)  # (sum after,)
    position = ranges(at + 1, after)  # (sum after,)
    kept = ~deleted[row, position]  # (sum after,)
    tokens = batch.ids[review[row[kept]], position[kept]]  # (sum kept,)
    return tokens, np.bincount(row[kept], minlength=at.size)


def _resume_parents(positions: IntArray) -> IntArray:
    """For each variant and k (V, K+1): the pass whose states pass k starts from. The state before the k-th
    deleted position p is that of the latest earlier pass j whose deleted position lies before p (pass 0:
    none deleted); passes between them deleted only later tokens."""
    V, K = positions.shape
    before = np.concatenate([np.full((V, 1), -1), positions], axis=1)  # (V, K+1) pass 0 deletes "at -1"
    earlier = before[:, :, None] < before[:, None, :]  # (V, j, k) pass j's position precedes pass k's
    earlier &= np.tri(K + 1, K + 1, -1, dtype=bool).T[None]  # only j < k
    index = np.arange(K + 1)[None, :, None]  # (1, j, 1)
    parent: IntArray = np.where(earlier, index, -1).max(axis=1)  # (V, K+1); column 0 unused
    return parent


def _saves_for(
    j: int, parent: IntArray, positions: IntArray, usable: IntArray, served: IntArray, row_of: IntArray
) -> Saves:
    """What pass j saves: for every later pass k that resumes from j, the state just before k's deleted
    position q. `served` are the variants pass j runs for, `row_of` their rows in it. Pass j ran the tokens
    after its own position p_j except those deleted before it, so the state before q is that after
    q - 1 - p_j of its tokens, less the earlier deletions between p_j and q."""
    K = positions.shape[1]
    later = np.arange(1, K + 1)  # (K,)
    wanted = (parent[served][:, 1:] == j) & (later[None] <= usable[served][:, None])  # (s, K)
    which, k_index = np.nonzero(wanted)  # (S,), (S,)
    variant = served[which]  # (S,)
    q = positions[variant, k_index]  # (S,) the later pass's deleted position
    if j == 0:
        steps = q  # the whole review ran: q tokens precede q
    else:
        own = positions[variant, j - 1]  # (S,)
        earlier = positions[variant, : j - 1]  # (S, j - 1)
        between = ((earlier > own[:, None]) & (earlier < q[:, None])).sum(axis=1)  # (S,)
        steps = q - 1 - own - between
    return Saves(rows=row_of[which], steps=steps, slots=variant * K + k_index)


def _target_probability(model: ForwardModel, hidden: Array, target: IntArray) -> tuple[Array, IntArray]:
    """Probability of each row's target class (v,) and the predicted class (v,)."""
    logits = model.logits(hidden).astype(np.float64)  # (v, C)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))  # (v, C)
    probability = shifted[np.arange(len(target)), target] / shifted.sum(axis=1)  # (v,)
    return probability, logits.argmax(axis=1)


@dataclass(frozen=True)
class MeanSums:
    """Count, sum and sum of squares of a value per cell, NaN skipped: the mean and its 95 % confidence
    interval (mean +- 1.96 standard errors, normal approximation) from sums that batches simply add."""

    count: IntArray  # (...)
    total: Array  # (...)
    squares: Array  # (...)

    @classmethod
    def of(cls, values: Array) -> MeanSums:
        """Sums over the first axis of values (N, ...)."""
        defined = ~np.isnan(values)  # (N, ...)
        clean = np.where(defined, values, 0.0)  # (N, ...)
        return cls(count=defined.sum(axis=0), total=clean.sum(axis=0), squares=(clean * clean).sum(axis=0))

    def __add__(self, other: MeanSums) -> MeanSums:
        return MeanSums(self.count + other.count, self.total + other.total, self.squares + other.squares)

    def mean(self) -> Array:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.total / self.count  # (...) NaN where nothing was counted

    def interval(self) -> tuple[Array, Array]:
        """Lower and upper 95 % bounds (...); NaN with fewer than two values."""
        mean = self.mean()  # (...)
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = np.maximum(self.squares - self.count * mean * mean, 0.0) / (self.count - 1)  # (...)
            half = Z_95 * np.sqrt(variance / self.count)  # (...)
        half = np.where(self.count >= 2, half, np.nan)  # (...)
        return mean - half, mean + half


@dataclass(frozen=True)
class FaithfulnessSums:
    """Deletion results of many reviews as sums (add batches with `+`): accuracy-vs-k curves for the
    correctly classified and the misclassified reviews, flip rates and the AOPC scores.

    AOPC per review, direction and ranking: the mean over k = 1..K of p(k = 0) - p(k), p the explained
    class's probability. Most relevant first: comprehensiveness (higher: the top words carry the decision).
    Least relevant first: sufficiency in the form of a deletion test (lower: deleting the bottom words, the
    top ones left suffice; ferret keeps only the top fraction instead, a test this function does not run).
    """

    reviews: int
    flips: IntArray  # (D, R, K+1) predictions changed by the deletion
    correct: int  # reviews with a label that the model predicts
    correct_right: IntArray  # (D, R, K+1) of those, still predicted right after k deletions
    misclassified: int  # reviews with a label that the model gets wrong
    misclassified_right: IntArray  # (D, R, K+1) of those, predicted right after k deletions
    aopc: MeanSums  # (D, R) comprehensiveness (most), sufficiency (least)

    @classmethod
    def of(cls, curves: DeletionCurves, labels: Sequence[int | None]) -> FaithfulnessSums:
        """Sums of one batch; a review without a label (None) counts in the flips and AOPC only."""
        label = np.array([-1 if y is None else y for y in labels], dtype=np.intp)  # (N,)
        predicted = curves.predicted.astype(np.intp)  # (N, D, R, K+1)
        original = predicted[:, 0, 0, 0]  # (N,)
        right = predicted == label[:, None, None, None]  # (N, D, R, K+1)
        correct = (label >= 0) & (original == label)  # (N,)
        wrong = (label >= 0) & (original != label)  # (N,)
        drop = curves.probability[..., :1] - curves.probability[..., 1:]  # (N, D, R, K) float32
        aopc = drop.astype(np.float64).mean(axis=-1)  # (N, D, R)
        return cls(
            reviews=int(label.size),
            flips=(predicted != original[:, None, None, None]).sum(axis=0),
            correct=int(correct.sum()),
            correct_right=right[correct].sum(axis=0),
            misclassified=int(wrong.sum()),
            misclassified_right=right[wrong].sum(axis=0),
            aopc=MeanSums.of(aopc),
        )

    def __add__(self, other: FaithfulnessSums) -> FaithfulnessSums:
        return FaithfulnessSums(
            reviews=self.reviews + other.reviews,
            flips=self.flips + other.flips,
            correct=self.correct + other.correct,
            correct_right=self.correct_right + other.correct_right,
            misclassified=self.misclassified + other.misclassified,
            misclassified_right=self.misclassified_right + other.misclassified_right,
            aopc=self.aopc + other.aopc,
        )

    def accuracy_correct(self) -> Array:
        """(D, R, K+1) accuracy of the correctly classified reviews after k deletions (1 at k = 0)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.correct_right / self.correct

    def accuracy_misclassified(self) -> Array:
        """(D, R, K+1) accuracy of the misclassified reviews after k deletions (0 at k = 0)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.misclassified_right / self.misclassified

    def flip_rate(self) -> Array:
        """(D, R, K+1) share of all reviews whose prediction k deletions change."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.flips / self.reviews
