"""What a job's model relies on overall: per word, how often it occurs and its mean LRP, SA and GI toward
fixed classes, and the word index behind the job page's word search.

Orientation: each review's relevance is for its explained (target) class, so a plain mean would mix words
for "positive" with words for "negative" in one list. The statistics keep every sum per (explained class,
predicted class) group, and a ranking (a `View`) combines the groups for one fixed class: the signed methods
(LRP, GI) toward class c, counting a review explained for c as it is and, in a two-class model, one explained
for the other class negated; a method without a sign (SA) has no direction, so its words are ranked per
predicted class (how sensitive the decision is to the word among the reviews predicted as c).

One pass over the rows of a finished job (its rows no longer change), stored in the database
(`job_word_stats`: the arrays as one NumPy `.npz` blob), so that any web process on any host serves any job
without recomputing; written by the worker batch that finishes the job, or on the first view. The stored row
names the rows it was computed from (`version`), so a job whose rows changed afterwards is computed again.
Each process keeps the statistics it read, and the bar charts it drew from them, in small LRU caches.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.relevance.methods import BY_KEY, METHODS
from shared.relevance.tokenizer import OOV_ID, OOV_TOKEN, START_ID, START_TOKEN
from shared.render.charts import BarPanel, bar_panels_png
from shared.store.db import insert_for
from shared.store.models import Explanation, Job, JobStatus, JobWordStats, utcnow

ROWS_PER_FETCH = 500
SCALE_PERCENTILE = 95  # job-wide scale: this percentile of the reviews' largest |value|
CHART_WORDS = 15
OOV_CODES = 1 << 40  # word-index codes of out-of-vocabulary words start here, above every token id
WEAK_REVIEWS = 10  # a word seen in fewer reviews than this (in a view) is weak evidence
STATS_KEPT = 4  # finished jobs' statistics kept in memory per process (a 25,000-review job: ~60 MB)
CHARTS_KEPT = 64  # bar charts kept in memory per process (~40 kB each)


@dataclass(frozen=True)
class WordRow:
    """One word of a ranking: its mean relevance per occurrence and its counts, within the view."""

    word: str
    mean: float
    occurrences: int
    reviews: int

    @property
    def weak(self) -> bool:
        return self.reviews < WEAK_REVIEWS


@dataclass(frozen=True)
class View:
    """One ranking: a signed method's words toward `class_index`, or an unsigned method's most sensitive
    words among the reviews predicted as `class_index`."""

    method: str
    class_index: int

    @property
    def signed(self) -> bool:
        return BY_KEY[self.method].signed

    def title(self, class_names: Sequence[str]) -> str:
        label, name = BY_KEY[self.method].label, class_names[self.class_index]
        return f"{label} toward {name}" if self.signed else f"{label} when predicted {name}"


def default_min_reviews(review_count: int) -> int:
    """The words' threshold unless one is chosen: in a larger job a word must be seen in more reviews."""
    return 20 if review_count >= 1000 else 2


def orientation(class_names: Sequence[str]) -> str:
    """The words page's one line (and the API's `orientation`): what the rankings are oriented to."""
    signed = " and ".join(m.label for m in BY_KEY.values() if m.signed)
    unsigned = " and ".join(m.label for m in BY_KEY.values() if not m.signed)
    names = " and ".join(class_names)
    if len(class_names) == 2:
        how = (
            f"a review explained for {class_names[1]} counts as it is toward {class_names[1]} and negated "
            f"toward {class_names[0]}, and the other way round"
        )
    else:
        how = "each class counts the reviews explained for it"
    line = f"{signed}: the words pushing toward {names} ({how})."
    if unsigned:
        line += f" {unsigned} has no sign: its most sensitive words per predicted class."
    return line


@dataclass(frozen=True)
class WordIndex:
    """Which reviews contain a word and its summed LRP in each: the job page's word search without scanning
    every review's tokens (postings of word code c are positions starts[c] to starts[c + 1])."""

    codes: dict[str, int]
    review_ids: npt.NDArray[np.str_]
    starts: npt.NDArray[np.int64]
    reviews: npt.NDArray[np.int32]  # positions in review_ids
    lrp: npt.NDArray[np.float32]

    def __call__(self, word: str) -> dict[str, float]:
        """Review id -> summed LRP of the word there, in the database's review id order."""
        code = self.codes.get(word)
        if code is None:
            return {}
        at, end = int(self.starts[code]), int(self.starts[code + 1])
        return dict(
            zip(self.review_ids[self.reviews[at:end]].tolist(), self.lrp[at:end].tolist(), strict=True)
        )


@dataclass(frozen=True)
class Ranked:
    """All of a view's words (token ids), best first, with their mean, occurrences and reviews."""

    ids: npt.NDArray[np.intp]  # (K,)
    means: npt.NDArray[np.float64]  # (K,)
    occurrences: npt.NDArray[np.int64]  # (K,)
    reviews: npt.NDArray[np.int64]  # (K,)


@dataclass(frozen=True)
class WordStats:
    """Per token id (column) and per (explained class, predicted class) group (row, target * classes +
    predicted): occurrences, reviews containing the token and relevance sums per method."""

    classes: int
    words: npt.NDArray[np.str_]  # (V,)
    occurrences: npt.NDArray[np.int64]  # (G, V)
    reviews: npt.NDArray[np.int64]  # (G, V)
    sums: dict[str, npt.NDArray[np.float64]]  # method -> (G, V)
    scales: dict[str, float]  # job-wide |value| at full colour, per method
    review_count: int
    index: WordIndex
    memo: dict[View, Ranked] = field(default_factory=dict, compare=False, repr=False)

    def views(self) -> list[View]:
        """Every ranking there is: per method with values, one per class."""
        return [View(m, c) for m in self.sums for c in range(self.classes)]

    def _weights(self, view: View) -> npt.NDArray[np.float64]:
        """How much each group counts in the view: +1, -1 (the other of two classes) or 0."""
        groups = np.arange(self.classes**2)  # (G,)
        target, predicted = groups // self.classes, groups % self.classes  # (G,), (G,)
        if not view.signed:
            return np.where(predicted == view.class_index, 1.0, 0.0).astype(np.float64)  # (G,)
        against = -1.0 if self.classes == 2 else 0.0
        return np.where(target == view.class_index, 1.0, against).astype(np.float64)  # (G,)

    def _ranked(self, view: View) -> Ranked:
        """Every word the view has, best first: sorted once per view and process (string sorting costs a
        few milliseconds), then each threshold only filters."""
        ranked: Ranked | None = self.memo.get(view)
        if ranked is None:
            weights = self._weights(view)  # (G,)
            used = np.abs(weights).astype(np.int64)  # (G,)
            occurrences, reviews = used @ self.occurrences, used @ self.reviews  # (V,), (V,)
            seen = np.flatnonzero(occurrences > 0)  # (K,)
            seen = seen[seen != START_ID]
            means = (weights @ self.sums[view.method][:, seen]) / occurrences[seen]  # (K,)
            order = np.lexsort((self.words[seen], -means))  # (K,)
            ranked = Ranked(seen[order], means[order], occurrences[seen][order], reviews[seen][order])
            self.memo[view] = ranked
        return ranked

    def table(
        self, view: View, min_reviews: int
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The view's words seen in at least `min_reviews` of its reviews (token ids), with their mean
        relevance per occurrence, occurrences and reviews, best first (ties broken by the word)."""
        ranked = self._ranked(view)
        keep = ranked.reviews >= max(min_reviews, 1)  # (K,)
        return ranked.ids[keep], ranked.means[keep], ranked.occurrences[keep], ranked.reviews[keep]

    def ranking(self, view: View, min_reviews: int, count: int) -> list[WordRow]:
        """The view's `count` best words among those seen in at least `min_reviews` of its reviews."""
        ids, means, occurrences, reviews = (a[:count] for a in self.table(view, min_reviews))
        return [
            WordRow(str(self.words[k]), float(m), int(o), int(r))
            for k, m, o, r in zip(
                ids.tolist(), means.tolist(), occurrences.tolist(), reviews.tolist(), strict=True
            )
        ]

    def view_reviews(self, view: View) -> int:
        """How many reviews the view's means are over (every review has the start token once)."""
        return int(np.abs(self._weights(view)).astype(np.int64) @ self.reviews[:, START_ID])


def _grow(array: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    """The array with at least `size` columns (zeros added on the right)."""
    missing = size - array.shape[-1]
    if missing <= 0:
        return array
    return np.concatenate([array, np.zeros((*array.shape[:-1], missing), array.dtype)], axis=-1)


def compute(session: Session, job_id: int) -> WordStats:
    """One streamed pass over the job's explained rows: sums per group and token id, and postings per word
    (every distinct token text, also those outside the vocabulary)."""
    methods = list(METHODS)
    classes = 0
    occurrences = np.zeros((0, 0), np.int64)
    reviews = np.zeros((0, 0), np.int64)
    sums = {m: np.zeros((0, 0), np.float64) for m in methods}
    words: dict[int, str] = {OOV_ID: OOV_TOKEN, START_ID: START_TOKEN}
    named = np.zeros(0, bool)  # token ids that have their entry in words
    maxima: dict[str, list[float]] = {m: [] for m in methods}
    unknown: dict[str, int] = {}  # out-of-vocabulary words: codes from OOV_CODES on (token ids stay below)
    review_ids: list[str] = []
    postings: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = []
    query = (
        select(
            Explanation.review_id,
            Explanation.logits,
            Explanation.target_class,
            Explanation.predicted_class,
            Explanation.token_ids,
            Explanation.tokens,
            *(getattr(Explanation, m) for m in methods),
        )
        .where(Explanation.job_id == job_id, Explanation.error.is_(None))
        .order_by(Explanation.review_id)  # the postings of a word list reviews in the database's id order
        .execution_options(yield_per=ROWS_PER_FETCH)
    )
    for review_id, logits, target, predicted, ids, tokens, *values in session.execute(query):
        if ids is None or tokens is None or logits is None or target is None or predicted is None:
            continue
        if not classes:
            classes = len(logits)
            occurrences, reviews = np.zeros((classes**2, 0), np.int64), np.zeros((classes**2, 0), np.int64)
            sums = {m: np.zeros((classes**2, 0), np.float64) for m in methods}
        group = target * classes + predicted
        size = int(ids.max()) + 1
        occurrences, reviews = _grow(occurrences, size), _grow(reviews, size)
        occurrences[group] += np.bincount(ids, minlength=occurrences.shape[1])
        reviews[group] += np.bincount(np.unique(ids), minlength=reviews.shape[1])
        texts = tokens.split("\n")
        named = _grow(named, size)
        for k in np.flatnonzero(~named[ids]):  # the first text of each token id (one word, except <unk>)
            words.setdefault(int(ids[k]), texts[k])
            named[ids[k]] = True
        # The word search's postings (without the start token) with the word's LRP, 0 when LRP was not asked.
        lrp = values[0] if values[0] is not None else np.zeros(len(ids), np.float32)
        word_codes = ids[1:].astype(np.int64)
        for k in np.flatnonzero(word_codes == OOV_ID):
            word_codes[k] = OOV_CODES + unknown.setdefault(texts[k + 1], len(unknown))
        unique, where = np.unique(word_codes, return_inverse=True)
        summed = np.bincount(where, weights=lrp[1:], minlength=len(unique))
        postings.append((unique, summed.astype(np.float64)))
        review_ids.append(review_id)
        for method, vector in zip(methods, values, strict=True):
            if vector is None:
                continue
            sums[method] = _grow(sums[method], size)
            sums[method][group] += np.bincount(ids, weights=vector, minlength=sums[method].shape[1])
            maxima[method].append(float(np.abs(vector).max(initial=0.0)))
    size = occurrences.shape[1]
    return WordStats(
        classes=classes,
        words=np.array([words.get(k, "") for k in range(size)], dtype=np.str_),
        occurrences=occurrences,
        reviews=reviews,
        sums={m: _grow(sums[m], size) for m in methods if maxima[m]},
        scales={m: float(np.percentile(maxima[m], SCALE_PERCENTILE)) for m in methods if maxima[m]},
        review_count=len(review_ids),
        index=_word_index(words, unknown, review_ids, postings),
    )


def _word_index(
    words: dict[int, str],
    unknown: dict[str, int],
    review_ids: list[str],
    postings: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]],
) -> WordIndex:
    """Postings of all reviews sorted by word (stable: reviews in reading order within a word); the sparse
    codes (token ids, OOV_CODES + n) become dense row numbers."""
    word_codes = np.concatenate([c for c, _ in postings] or [np.zeros(0, np.int64)])
    distinct = np.unique(word_codes)
    named = {w: i for i, w in words.items() if i != OOV_ID} | {w: OOV_CODES + n for w, n in unknown.items()}
    rows = np.searchsorted(distinct, np.array(list(named.values()), dtype=np.int64))
    codes = {
        w: int(r)
        for (w, code), r in zip(named.items(), rows, strict=True)
        if r < len(distinct) and distinct[r] == code
    }
    positions = np.concatenate(
        [np.full(len(c), n, np.int32) for n, (c, _) in enumerate(postings)] or [np.zeros(0, np.int32)]
    )
    lrp = np.concatenate([v for _, v in postings] or [np.zeros(0)])
    order = np.argsort(word_codes, kind="stable")
    starts = np.searchsorted(word_codes[order], np.append(distinct, np.iinfo(np.int64).max)).astype(np.int64)
    return WordIndex(
        codes=codes,
        review_ids=np.array(review_ids, dtype=np.str_),
        starts=starts,
        reviews=positions[order].astype(np.int32),
        lrp=lrp[order].astype(np.float32),
    )


# --- stored in the database, kept in memory ----------------------------------------------------------------


def version(job: Job) -> str:
    """Names the job's rows as they are once it finished; the counters are in it because a batch that was
    already running when a job was cancelled still adds its rows afterwards."""
    ends = f"{job.id}|{job.created_at.isoformat()}|{job.finished_at}|{job.done}|{job.failed}"
    return hashlib.sha256(ends.encode()).hexdigest()[:32]


def cache_key(database_url: str, job: Job) -> str:
    """The memory caches' key: the rows' version in one database (one process may serve several)."""
    return f"job-{job.id}-{hashlib.sha256(database_url.encode()).hexdigest()[:8]}-{version(job)}"


def encode(stats: WordStats) -> bytes:
    """The statistics as one `.npz` blob (no pickles: plain arrays only)."""
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {f"sum_{m}": v for m, v in stats.sums.items()}
    arrays.update({f"scale_{m}": np.array(v) for m, v in stats.scales.items()})
    index = stats.index
    np.savez(
        buffer,
        classes=np.array(stats.classes),
        words=stats.words,
        occurrences=stats.occurrences,
        reviews=stats.reviews,
        review_count=np.array(stats.review_count),
        index_words=np.array("\n".join(sorted(index.codes, key=index.codes.__getitem__))),  # by row
        index_review_ids=index.review_ids,
        index_starts=index.starts,
        index_reviews=index.reviews,
        index_lrp=index.lrp,
        **arrays,
    )
    return buffer.getvalue()


def decode(data: bytes) -> WordStats:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        methods = [m for m in METHODS if f"sum_{m}" in npz.files]
        words = str(npz["index_words"])
        index = WordIndex(
            codes={w: c for c, w in enumerate(words.split("\n"))} if words else {},
            review_ids=npz["index_review_ids"],
            starts=npz["index_starts"],
            reviews=npz["index_reviews"],
            lrp=npz["index_lrp"],
        )
        return WordStats(
            classes=int(npz["classes"]),
            words=npz["words"],
            occurrences=npz["occurrences"],
            reviews=npz["reviews"],
            sums={m: npz[f"sum_{m}"] for m in methods},
            scales={m: float(npz[f"scale_{m}"]) for m in methods},
            review_count=int(npz["review_count"]),
            index=index,
        )


class _Kept:
    """A small thread-safe LRU of values by key (the web process serves requests on threads)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.values: OrderedDict[str, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self.lock:
            if key in self.values:
                self.values.move_to_end(key)
            return self.values.get(key)

    def put(self, key: str, value: Any) -> None:
        with self.lock:
            self.values[key] = value
            self.values.move_to_end(key)
            while len(self.values) > self.size:
                self.values.popitem(last=False)


_stats, _charts = _Kept(STATS_KEPT), _Kept(CHARTS_KEPT)


def store(session: Session, job: Job) -> WordStats:
    """Compute the job's statistics and store them (replacing an outdated row; two processes computing at
    once store the same), committed."""
    stats = compute(session, job.id)
    row = {"job_id": job.id, "version": version(job), "computed_at": utcnow(), "data": encode(stats)}
    insert = insert_for(session)(JobWordStats).values(row)
    session.execute(insert.on_conflict_do_update(index_elements=["job_id"], set_=row))
    session.commit()
    return stats


def job_word_stats(session: Session, database_url: str, job: Job) -> WordStats:
    """A finished job's statistics: from memory, else from the database, else computed and stored."""
    key = cache_key(database_url, job)
    stats: WordStats | None = _stats.get(key)
    if stats is None:
        stored = session.execute(
            select(JobWordStats.version, JobWordStats.data).where(JobWordStats.job_id == job.id)
        ).first()
        stats = decode(stored.data) if stored and stored.version == version(job) else store(session, job)
        _stats.put(key, stats)
    return stats


def prepare_when_finished(session: Session, job_id: int) -> bool:
    """Compute and store the statistics of a job that has just succeeded (called by the worker after each
    batch: only the batch that finished the job finds it so), so that its first view need not wait."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.SUCCEEDED:
        return False
    stored = session.scalar(select(JobWordStats.version).where(JobWordStats.job_id == job_id))
    if stored == version(job):
        return False
    store(session, job)
    return True


# --- charts and downloads ----------------------------------------------------------------------------------


def _bar_chart(stats: WordStats, method: str, min_reviews: int, class_names: Sequence[str]) -> bytes:
    """One panel per class: the method's words toward it (or most sensitive when predicted so)."""
    panels = []
    for view in (v for v in stats.views() if v.method == method):
        rows = stats.ranking(view, min_reviews, CHART_WORDS)
        words, means, weak = [r.word for r in rows], [r.mean for r in rows], [r.weak for r in rows]
        panels.append(BarPanel(view.title(class_names), words, means, view.signed, weak))
    label = BY_KEY[method].label
    return bar_panels_png(
        panels,
        f"mean {label} per occurrence, words seen in at least {min_reviews} reviews "
        f"(pale: in fewer than {WEAK_REVIEWS}, weak evidence)",
    )


def chart_png(stats: WordStats, key: str, method: str, min_reviews: int, class_names: Sequence[str]) -> bytes:
    """The PNG bar chart of one method, drawn from the statistics once per process."""
    name = f"{key}|{method}|{min_reviews}|{'|'.join(class_names)}"
    png: bytes | None = _charts.get(name)
    if png is None:
        png = _bar_chart(stats, method, min_reviews, class_names)
        _charts.put(name, png)
    return png


CSV_COLUMNS = ("method", "direction", "class", "rank", "word", "mean", "occurrences", "reviews", "weak")


def csv_rows(stats: WordStats, min_reviews: int, class_names: Sequence[str]) -> Iterator[str]:
    """Every view's words seen in at least `min_reviews` of its reviews, best first, as CSV lines."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for view in stats.views():
        direction = "toward" if view.signed else "predicted"
        ids, means, occurrences, reviews = stats.table(view, min_reviews)
        for rank, (k, mean, count, seen) in enumerate(
            zip(ids.tolist(), means.tolist(), occurrences.tolist(), reviews.tolist(), strict=True), start=1
        ):
            writer.writerow(
                (
                    view.method,
                    direction,
                    class_names[view.class_index],
                    rank,
                    str(stats.words[k]),
                    f"{mean:.6g}",
                    count,
                    seen,
                    int(seen < WEAK_REVIEWS),
                )
            )
        yield out.getvalue()
        out.seek(0)
        out.truncate()
