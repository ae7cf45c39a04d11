"""`relevance train` end to end on a tiny IMDB folder: the command line reads the data (the relevance layer
reads no files), and the exported model carries its vocabulary, so it explains without the data folder."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from shared.cli import main
from shared.relevance.explainer import load_explainer
from shared.relevance.weights import load_weights

WORD_INDEX = {"the": 1, "film": 2, "great": 3, "awful": 4, "plot": 5}
TEXTS = {1: "The film was great, a great plot", 0: "An awful film, the plot was awful"}


def write_tiny_imdb(folder: Path, per_label: int) -> Path:
    """train and test splits of a few labelled reviews each, and a word index, in this project's format."""
    folder.mkdir()
    for split in ("train", "test"):
        with gzip.open(folder / f"{split}.jsonl.gz", "wb") as out:
            for label, text in TEXTS.items():
                for n in range(per_label):
                    record = {"id": f"{split}/{label}/{n}_5", "text": text, "label": label, "rating": 5}
                    out.write(orjson.dumps(record) + b"\n")
    (folder / "imdb_word_index.json").write_bytes(orjson.dumps(WORD_INDEX))
    return folder


@pytest.mark.slow
def test_training_exports_a_model_that_explains_on_its_own(tmp_path: Path) -> None:
    imdb = write_tiny_imdb(tmp_path / "imdb", per_label=10)
    model = tmp_path / "model.npz"
    arguments = [
        "train",
        "--imdb-dir",
        str(imdb),
        "--output",
        str(model),
        "--epochs",
        "1",
        "--max-length",
        "20",
    ]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    weights = load_weights(model)
    assert weights.words[4:9] == ("the", "film", "great", "awful", "plot")  # rank + 3, in id order
    assert set(weights.words[9:]) == {""}  # ids without a word
    files = ("train.jsonl.gz", "test.jsonl.gz", "imdb_word_index.json")
    assert weights.meta["data_sha256"] == {
        name: hashlib.sha256((imdb / name).read_bytes()).hexdigest() for name in files
    }
    for name in files:
        (imdb / name).unlink()  # explaining needs the model file only
    (review,) = load_explainer(model).explain(["A great film"])
    assert not isinstance(review, str)
    assert review.tokenized.token_ids == [1, 2, 6, 5]  # <start>, a (unknown), great, film
