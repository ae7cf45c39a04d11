"""`relevance explain --input/--output`: many reviews from JSON lines to JSON lines, on every core.

The input is read in chunks of `chunk_size` lines. Each chunk is explained by one of `workers` processes,
each holding the model once and running ONE BLAS thread, set here: the engine's matrix products are too small
to gain from more threads, and idle-spinning BLAS threads fight any busy neighbour for the cores. At most two
chunks per worker are in flight, so memory stays bounded whatever the file's size, and the output is written
in input order. A bad line is reported with its line number and never stops the others.
"""

from __future__ import annotations

import collections
import gzip
import multiprocessing
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import IO, Any

import orjson
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from shared.jobs.export import engine_fields, explanation_record, jsonl_line, review_record
from shared.relevance.engine import truncate
from shared.relevance.explainer import Explainer, load_explainer

CHUNKS_IN_FLIGHT_PER_WORKER = 2  # one being explained, one queued: no worker waits, memory stays bounded
Results = list[bytes | str]  # per input line: its output record, or why it failed


@dataclass(frozen=True)
class InputLine:
    """One parsed input line: an id and either text or token ids; or the reason it is unusable."""

    number: int
    review_id: Any = None
    text: str | None = None
    token_ids: list[int] | None = None
    error: str | None = None


def parse_line(number: int, raw: bytes) -> InputLine:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InputLine(number, error=f"not valid JSON ({exc})")
    if not isinstance(item, dict) or "id" not in item:
        return InputLine(number, error='expected an object with "id" and "text" or "token_ids"')
    text, ids = item.get("text"), item.get("token_ids")
    if (text is None) == (ids is None):
        return InputLine(number, item["id"], error='give exactly one of "text" and "token_ids"')
    if text is not None and not isinstance(text, str):
        return InputLine(number, item["id"], error='"text" must be a string')
    if ids is not None and not (
        isinstance(ids, list) and ids and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    ):
        return InputLine(number, item["id"], error='"token_ids" must be a non-empty list of integers')
    return InputLine(number, item["id"], text, ids)


def read_chunks(path: Path, chunk_size: int) -> Iterator[list[InputLine]]:
    """The non-blank lines of a JSON lines file (gzip when it ends in .gz), `chunk_size` at a time."""
    opener = gzip.open if path.suffix == ".gz" else open
    chunk: list[InputLine] = []
    with opener(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                chunk.append(parse_line(number, raw))
                if len(chunk) == chunk_size:
                    yield chunk
                    chunk = []
    if chunk:
        yield chunk


def explain_chunk(explainer: Explainer, chunk: list[InputLine], target: int | None) -> Results:
    """Each line's output record, or the reason it failed; a bad line never stops the others."""
    results: Results = []
    texts = [line for line in chunk if line.text is not None]
    reviews = explainer.explain([t.text or "" for t in texts], target)
    explained = {id(line): review for line, review in zip(texts, reviews, strict=True)}
    weights, vocab = explainer.weights, explainer.vocabulary
    id_lines = [line for line in chunk if line.error is None and line.text is None]
    cut = [truncate(line.token_ids or [], weights.max_length, weights.keep) for line in id_lines]
    by_ids = explainer.explain_ids([ids for ids, _ in cut], target)
    from_ids = {
        id(line): (ids, was_cut, e) for line, (ids, was_cut), e in zip(id_lines, cut, by_ids, strict=True)
    }
    for line in chunk:
        if line.error is not None:
            results.append(line.error)
        elif line.text is not None:
            review = explained[id(line)]
            results.append(
                review if isinstance(review, str) else jsonl_line(review_record(line.review_id, review))
            )
        else:
            ids, was_cut, e = from_ids[id(line)]
            if isinstance(e, str):
                results.append(e.replace("sequence 0", "token_ids"))
                continue
            rec = explanation_record(
                review_id=line.review_id,
                tokens=[vocab.word(i) for i in ids],
                token_ids=ids,
                spans=None,
                truncated=was_cut,
                **engine_fields(e),
            )
            results.append(jsonl_line(rec))
    return results


_worker_explainer: Explainer | None = None  # the model of this worker process


def _start_worker(model_path: Path) -> None:
    """Each worker process: one BLAS thread, the model loaded once."""
    global _worker_explainer
    threadpool_limits(1)
    _worker_explainer = load_explainer(model_path)


def _explain_in_worker(chunk: list[InputLine], target: int | None) -> Results:
    assert _worker_explainer is not None, "_start_worker runs first in every worker process"
    return explain_chunk(_worker_explainer, chunk, target)


class _Writer:
    """Writes each chunk's results in input order, reporting bad lines on stderr."""

    def __init__(self, source: Path, out: IO[bytes], progress: tqdm[Any]) -> None:
        self.source, self.out, self.progress = source, out, progress
        self.failed = 0

    def write(self, chunk: list[InputLine], results: Results) -> None:
        for line, result in zip(chunk, results, strict=True):
            if isinstance(result, bytes):
                self.out.write(result)
            else:
                self.failed += 1
                self.progress.write(f"{self.source}:{line.number}: {result}", file=sys.stderr)
        self.progress.update(len(chunk))


def explain_file(
    model_path: Path, source: Path, out: IO[bytes], *, target: int | None, chunk_size: int, workers: int
) -> int:
    """Stream source to out (bounded memory, input order) with `workers` processes; returns how many lines
    failed. One worker explains in this process."""
    with tqdm(desc="explaining", unit=" reviews", file=sys.stderr, dynamic_ncols=True) as progress:
        writer = _Writer(source, out, progress)
        chunks = read_chunks(source, chunk_size)
        if workers == 1:
            with threadpool_limits(1):
                explainer = load_explainer(model_path)
                for chunk in chunks:
                    writer.write(chunk, explain_chunk(explainer, chunk, target))
            return writer.failed
        # spawn: fresh interpreters, so no lock or thread of this process (tqdm's, BLAS') is inherited.
        context = multiprocessing.get_context("spawn")
        in_flight: collections.deque[tuple[list[InputLine], AsyncResult[Results]]] = collections.deque()
        with context.Pool(workers, initializer=_start_worker, initargs=(model_path,)) as pool:
            for chunk in chunks:
                in_flight.append((chunk, pool.apply_async(_explain_in_worker, (chunk, target))))
                if len(in_flight) >= workers * CHUNKS_IN_FLIGHT_PER_WORKER:
                    done, pending = in_flight.popleft()
                    writer.write(done, pending.get())
            while in_flight:
                done, pending = in_flight.popleft()
                writer.write(done, pending.get())
    return writer.failed
