"""`relevance explain`: one review in colour in the terminal, or many from JSON lines to JSON lines."""

from __future__ import annotations

import gzip
import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click
import orjson
from tqdm import tqdm

from shared.jobs.export import engine_fields, explanation_record, jsonl_line, review_record
from shared.relevance.engine import truncate
from shared.relevance.explainer import Explainer, load_explainer
from shared.relevance.methods import BY_KEY, METHODS
from shared.relevance.weights import WeightsError
from shared.render.colours import legend
from shared.render.terminal import render_terminal
from shared.settings import Settings


def parse_target(value: str, class_names: Sequence[str]) -> int | None:
    """'predicted' -> None; a class index or class name -> its index."""
    if value == "predicted":
        return None
    if value in class_names:
        return list(class_names).index(value)
    if value.isdigit() and int(value) < len(class_names):
        return int(value)
    raise click.BadParameter(
        f"use 'predicted', a class index or one of {list(class_names)}", param_hint="--target"
    )


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


def read_lines(path: Path) -> Iterator[InputLine]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                yield parse_line(number, raw)


def explain_chunk(explainer: Explainer, chunk: list[InputLine], target: int | None) -> list[bytes | str]:
    """Each line's output record, or the reason it failed; a bad line never stops the others."""
    results: list[bytes | str] = []
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


def explain_file(
    explainer: Explainer, source: Path, out: IO[bytes], *, target: int | None, chunk_size: int
) -> int:
    """Stream source to out in chunks (bounded memory); returns how many lines failed."""
    failed = 0
    chunk: list[InputLine] = []
    with tqdm(desc="explaining", unit=" reviews", file=sys.stderr, dynamic_ncols=True) as progress:
        for line in itertools.chain(read_lines(source), [None]):
            if line is not None:
                chunk.append(line)
                if len(chunk) < chunk_size:
                    continue
            for item, result in zip(chunk, explain_chunk(explainer, chunk, target), strict=True):
                if isinstance(result, bytes):
                    out.write(result)
                else:
                    failed += 1
                    progress.write(f"{source}:{item.number}: {result}", file=sys.stderr)
            progress.update(len(chunk))
            chunk = []
    return failed


@click.command()
@click.argument("text", required=False)
@click.option(
    "--input", "source", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSON lines in."
)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="JSON lines out.")
@click.option(
    "--method", type=click.Choice(METHODS), default=METHODS[0], show_default=True, help="Colours shown."
)
@click.option("--target", default="predicted", show_default=True, help="predicted, a class index or name.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), help="Weights file.")
def explain(
    text: str | None,
    source: Path | None,
    output: Path | None,
    method: str,
    target: str,
    model_path: Path | None,
) -> None:
    """Explain TEXT word by word, or every line of --input into --output.

    Input lines: {"id": ..., "text": ...} or {"id": ..., "token_ids": [1, ...]} (start token included).
    """
    settings = Settings.from_env()
    if (text is None) == (source is None):
        raise click.UsageError("give either TEXT or --input FILE (with --output FILE)")
    if source is not None and output is None:
        raise click.UsageError("--input needs --output")
    try:
        explainer = load_explainer(model_path or settings.model_path)
    except WeightsError as exc:
        raise click.ClickException(str(exc)) from exc
    wanted = parse_target(target, explainer.weights.class_names)
    if text is not None:
        (review,) = explainer.explain([text], wanted)
        if isinstance(review, str):
            raise click.ClickException(review)
        names = explainer.weights.class_names
        e = review.explanation
        values = getattr(review.explanation, method)
        signed = BY_KEY[method].signed
        spans = review.tokenized.spans
        click.echo(render_terminal(text, spans, values, truncated=review.truncated, signed=signed))
        click.echo(
            f"\npredicted: {names[e.predicted_class]} (p = {e.probabilities[e.predicted_class]:.3f}); "
            f"{BY_KEY[method].label} for {names[e.target_class]}: {legend(signed)}"
            + ("; greyed text was beyond the model's maximum length" if review.truncated else "")
        )
        return
    assert source is not None and output is not None
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("wb") as out:
        failed = explain_file(explainer, source, out, target=wanted, chunk_size=settings.engine_chunk_size)
    if failed:
        raise click.ClickException(
            f"{failed} line(s) could not be explained (see above); the others are in {output}"
        )
