"""What a job's model relies on overall: per vocabulary word, how often it occurs and its mean LRP, SA and GI.

One pass over all rows of a finished job (its rows no longer change), cached as a `.npz` file under the
instance folder, so the words page and the job-wide colour scale never recompute per request; the bar
charts (matplotlib, PNG) are cached next to it. The cache key includes the database and the job's creation
and end times, so a fresh database with the same job ids never reads an old file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.relevance.methods import BY_KEY, METHODS
from shared.relevance.tokenizer import OOV_ID, OOV_TOKEN, START_ID, START_TOKEN
from shared.render.charts import BarPanel, bar_panels_png
from shared.store.models import Explanation, Job, JobStatus

ROWS_PER_FETCH = 500
SCALE_PERCENTILE = 95  # job-wide scale: this percentile of the reviews' largest |value|
CACHE_FOLDER = "word-stats"
CHART_WORDS = 15
OOV_CODES = 1 << 40  # word-index codes of out-of-vocabulary words start here, above every token id


@dataclass(frozen=True)
class WordRow:
    """One word of a ranking: its mean relevance per occurrence, occurrences and reviews containing it."""

    word: str
    mean: float
    occurrences: int
    reviews: int


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
class WordStats:
    """Per token id (index): its word, occurrence and review counts, and relevance sums per method."""

    words: npt.NDArray[np.str_]
    occurrences: npt.NDArray[np.int64]
    reviews: npt.NDArray[np.int64]
    sums: dict[str, npt.NDArray[np.float64]]
    scales: dict[str, float]  # job-wide |value| at full colour, per method
    review_count: int
    index: WordIndex

    def ranking(self, method: str, min_count: int, count: int, highest: bool) -> list[WordRow]:
        """The `count` words with the highest (or lowest) mean relevance among those occurring at least
        `min_count` times; ties broken by the word."""
        keep = np.flatnonzero(self.occurrences >= max(min_count, 1))
        keep = keep[keep != START_ID]
        means = self.sums[method][keep] / self.occurrences[keep]
        order = np.lexsort((self.words[keep], -means if highest else means))[:count]
        return [
            WordRow(str(self.words[k]), float(means[i]), int(self.occurrences[k]), int(self.reviews[k]))
            for i, k in ((i, keep[i]) for i in order)
        ]


def _grow(array: npt.NDArray[Any], size: int) -> npt.NDArray[Any]:
    return array if len(array) >= size else np.concatenate([array, np.zeros(size - len(array), array.dtype)])


def compute(session: Session, job_id: int) -> WordStats:
    """One streamed pass over the job's explained rows: sums per token id and postings per word (every
    distinct token text, also those outside the vocabulary)."""
    methods = list(METHODS)
    occurrences = np.zeros(0, np.int64)
    reviews = np.zeros(0, np.int64)
    sums = {m: np.zeros(0, np.float64) for m in methods}
    words: dict[int, str] = {OOV_ID: OOV_TOKEN, START_ID: START_TOKEN}
    named = np.zeros(0, bool)  # token ids that have their entry in words
    maxima: dict[str, list[float]] = {m: [] for m in methods}
    unknown: dict[str, int] = {}  # out-of-vocabulary words: codes from OOV_CODES on (token ids stay below)
    review_ids: list[str] = []
    postings: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = []
    query = (
        select(
            Explanation.review_id,
            Explanation.token_ids,
            Explanation.tokens,
            *(getattr(Explanation, m) for m in methods),
        )
        .where(Explanation.job_id == job_id, Explanation.error.is_(None))
        .order_by(Explanation.review_id)  # the postings of a word list reviews in the database's id order
        .execution_options(yield_per=ROWS_PER_FETCH)
    )
    for review_id, ids, tokens, *values in session.execute(query):
        if ids is None or tokens is None:
            continue
        size = int(ids.max()) + 1
        occurrences = _grow(occurrences, size)
        reviews = _grow(reviews, size)
        occurrences += np.bincount(ids, minlength=len(occurrences))
        reviews += np.bincount(np.unique(ids), minlength=len(reviews))
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
            sums[method] += np.bincount(ids, weights=vector, minlength=len(sums[method]))
            maxima[method].append(float(np.abs(vector).max(initial=0.0)))
    size = len(occurrences)
    return WordStats(
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


def cache_key(database_url: str, job: Job) -> str:
    """Names the job's rows as they are once it finished; the counters are in it because a batch that was
    already running when a job was cancelled still adds its rows afterwards."""
    ends = f"{database_url}|{job.id}|{job.created_at.isoformat()}|{job.finished_at}|{job.done}|{job.failed}"
    return f"job-{job.id}-{hashlib.sha256(ends.encode()).hexdigest()[:16]}"


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers see the whole file or none (two web processes may compute the same stats at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".part") as part:
        part.write(data)
    os.replace(part.name, path)


def _save(path: Path, stats: WordStats) -> None:
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {f"sum_{m}": v for m, v in stats.sums.items()}
    arrays.update({f"scale_{m}": np.array(v) for m, v in stats.scales.items()})
    index = stats.index
    np.savez(
        buffer,
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
    _write_atomically(path, buffer.getvalue())


@functools.lru_cache(maxsize=4)
def _load(path: Path) -> WordStats:
    """The statistics in a cache file, kept in memory (a file never changes under its name)."""
    with np.load(path, allow_pickle=False) as npz:
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
            words=npz["words"],
            occurrences=npz["occurrences"],
            reviews=npz["reviews"],
            sums={m: npz[f"sum_{m}"] for m in methods},
            scales={m: float(npz[f"scale_{m}"]) for m in methods},
            review_count=int(npz["review_count"]),
            index=index,
        )


def _stats_path(cache_dir: Path, database_url: str, job: Job) -> Path:
    return cache_dir / CACHE_FOLDER / f"{cache_key(database_url, job)}.npz"


def job_word_stats(session: Session, cache_dir: Path, database_url: str, job: Job) -> WordStats:
    """The cached statistics of a finished job, computed on the first call."""
    path = _stats_path(cache_dir, database_url, job)
    if not path.is_file():
        _save(path, compute(session, job.id))
    return _load(path)


def prepare_when_finished(session: Session, cache_dir: Path, database_url: str, job_id: int) -> bool:
    """Compute and cache the statistics of a job that has just succeeded (called by the worker after each
    batch: only the batch that finished the job finds it so), so that its first view need not wait."""
    job = session.get(Job, job_id)
    if job is None or job.status != JobStatus.SUCCEEDED:
        return False
    path = _stats_path(cache_dir, database_url, job)
    if path.is_file():
        return False
    _save(path, compute(session, job.id))
    return True


def _bar_chart(stats: WordStats, method: str, min_count: int) -> bytes:
    """Two panels: the words with the highest and with the lowest mean relevance."""
    label = BY_KEY[method].label
    panels = []
    for highest in (True, False):
        rows = stats.ranking(method, min_count, CHART_WORDS, highest)
        title = f"{'highest' if highest else 'lowest'} mean {label}"
        panels.append(BarPanel(title, [r.word for r in rows], [r.mean for r in rows], towards=highest))
    return bar_panels_png(
        panels,
        f"mean {label} per occurrence for each review's explained class, "
        f"words seen at least {min_count} times",
    )


def chart_png(stats: WordStats, cache_dir: Path, key: str, method: str, min_count: int) -> bytes:
    """The cached PNG bar chart of one method (rendered on first request)."""
    path = cache_dir / CACHE_FOLDER / f"{key}-{method}-{min_count}.png"
    if path.is_file():
        return path.read_bytes()
    png = _bar_chart(stats, method, min_count)
    _write_atomically(path, png)
    return png
