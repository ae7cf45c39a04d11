"""Reading the IMDB reviews from the configured data folder (this project's JSONL files)."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

SPLITS = ("train", "test")
WORD_INDEX_FILE = "imdb_word_index.json"


@dataclass(frozen=True)
class Review:
    """One labelled review: id like "test/pos/0_10", label 1 = positive, IMDB star rating."""

    id: str
    text: str
    label: int
    rating: int


def split_path(imdb_dir: Path, split: str) -> Path:
    return imdb_dir / f"{split}.jsonl.gz"


def word_index_path(imdb_dir: Path) -> Path:
    return imdb_dir / WORD_INDEX_FILE


def read_split(imdb_dir: Path, split: str) -> Iterator[Review]:
    """Stream the reviews of one split in file order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    with gzip.open(split_path(imdb_dir, split), "rb") as lines:
        for line in lines:
            record = orjson.loads(line)
            yield Review(
                id=record["id"], text=record["text"], label=int(record["label"]), rating=int(record["rating"])
            )
