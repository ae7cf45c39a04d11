"""`relevance train`: train the IMDB LSTM and export the engine's weights file (needs the train extra)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from shared.settings import Settings
from shared.store.imdb import read_split, split_path, word_index_path


def labelled_reviews(imdb_dir: Path, split: str) -> list[tuple[str, int]]:
    """(text, label) of every review of one split, in file order."""
    return [(review.text, review.label) for review in read_split(imdb_dir, split)]


@click.command()
@click.option(
    "--imdb-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder with train/test .jsonl.gz and imdb_word_index.json [default: settings imdb_dir].",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Weights file to write [default: settings model_path, shared/relevance/model/imdb_lstm.npz].",
)
@click.option("--max-length", type=click.IntRange(min=2), default=400, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True, help="At most.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=5e-4, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--truncate-keep",
    type=click.Choice(["start", "end"]),
    default="start",
    show_default=True,
    help="Which end of a long review the model reads.",
)
def train(
    imdb_dir: Path | None,
    output: Path | None,
    max_length: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    seed: int,
    truncate_keep: str,
) -> None:
    """Train Embedding -> LSTM -> Dense on the IMDB train split, report test accuracy, export weights."""
    try:
        from shared.relevance import training  # TensorFlow is loaded only here, and only for this command
    except ImportError as exc:
        raise click.ClickException(f"training needs TensorFlow: pip install -e '.[train]' ({exc})") from exc
    settings = Settings.from_env()
    config = training.TrainConfig(
        max_length=max_length,
        truncate_keep=truncate_keep,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        patience=patience,
        seed=seed,
    )
    folder = imdb_dir or settings.imdb_dir
    data = training.TrainingData(
        train=labelled_reviews(folder, "train"),
        test=labelled_reviews(folder, "test"),
        word_index=orjson.loads(word_index_path(folder).read_bytes()),
        sources=[split_path(folder, "train"), split_path(folder, "test"), word_index_path(folder)],
    )
    report = training.train(data, output or settings.model_path, config, click.echo)
    click.echo(
        f"test accuracy {report.test_accuracy:.4f}; confusion matrix {report.confusion_matrix}; "
        f"{report.train_seconds:.0f} s; {report.epochs} epochs (kept epoch {report.best_epoch})"
    )
