"""`relevance explain`: one review in colour in the terminal, or many from JSON lines to JSON lines."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import click

from shared.cli.files import explain_file
from shared.relevance.explainer import load_explainer
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
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=lambda: len(os.sched_getaffinity(0)),
    show_default="every core",
    help="Processes explaining --input (one BLAS thread each).",
)
def explain(
    text: str | None,
    source: Path | None,
    output: Path | None,
    method: str,
    target: str,
    model_path: Path | None,
    workers: int,
) -> None:
    """Explain TEXT word by word, or every line of --input into --output.

    Input lines: {"id": ..., "text": ...} or {"id": ..., "token_ids": [1, ...]} (start token included).
    """
    settings = Settings.from_env()
    if (text is None) == (source is None):
        raise click.UsageError("give either TEXT or --input FILE (with --output FILE)")
    if source is not None and output is None:
        raise click.UsageError("--input needs --output")
    model_path = model_path or settings.model_path
    try:
        explainer = load_explainer(model_path)
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
        failed = explain_file(
            model_path, source, out, target=wanted, chunk_size=settings.engine_chunk_size, workers=workers
        )
    if failed:
        raise click.ClickException(
            f"{failed} line(s) could not be explained (see above); the others are in {output}"
        )
