"""The fault tests' data: the small test model and generated IMDB-format folders of 5,000 and 25,000
reviews."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.service import write_imdb_dir, write_model


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("faults-model") / "model.npz")


@pytest.fixture(scope="session")
def imdb_5k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imdb_dir(tmp_path_factory.mktemp("imdb-5k"), per_label=2_500)


@pytest.fixture(scope="session")
def imdb_25k(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The size of the real test split, so the job is as long as the issue's."""
    return write_imdb_dir(tmp_path_factory.mktemp("imdb-25k"), per_label=12_500)
