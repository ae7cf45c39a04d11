"""Fixtures for every suite: the IMDB data folder, vocabulary, real reviews and the trained model here; the
service's real parts (databases, Redis, worker processes) from tests.helpers.service."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shared.relevance.tokenizer import Vocabulary
from shared.relevance.weights import ModelWeights, load_weights
from shared.settings import Settings
from shared.store.imdb import Review, read_split, word_index_path
from tests.helpers.service import assets, postgres_url, service, sqlite_settings  # noqa: F401  (fixtures)

NUM_WORDS = 10_000
SAMPLE_STRIDE = 83  # every 83rd test review: 302 reviews, negative and positive, in file order


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def imdb_dir(settings: Settings) -> Path:
    """The read-only IMDB data folder (IMDB_DIR, default ../shared/imdb); a missing folder is an error."""
    path = settings.imdb_dir
    assert (path / "test.jsonl.gz").is_file(), f"IMDB data not found in {path}; set IMDB_DIR"
    return path


@pytest.fixture(scope="session")
def word_index(imdb_dir: Path) -> dict[str, int]:
    index: dict[str, int] = orjson.loads(word_index_path(imdb_dir).read_bytes())
    return index


@pytest.fixture(scope="session")
def vocabulary(word_index: dict[str, int]) -> Vocabulary:
    return Vocabulary(word_index, NUM_WORDS)


@pytest.fixture(scope="session")
def test_reviews(imdb_dir: Path) -> list[Review]:
    """All 25,000 test reviews, in file order."""
    return list(read_split(imdb_dir, "test"))


@pytest.fixture(scope="session")
def sample_reviews(test_reviews: list[Review]) -> list[Review]:
    """A fixed spread of a few hundred real test reviews."""
    return test_reviews[::SAMPLE_STRIDE]


@pytest.fixture(scope="session")
def trained_weights(settings: Settings) -> ModelWeights:
    """The committed model (shared/relevance/model/imdb_lstm.npz, or MODEL_PATH)."""
    return load_weights(settings.model_path)
