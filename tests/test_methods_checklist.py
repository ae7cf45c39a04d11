"""Adding a relevance method is a checklist of four places (docs/architecture.md); this fails when one is
missed, and when a list of methods is written by hand anywhere else instead of derived from METHODS."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect

from shared.relevance.engine import Engine
from shared.relevance.methods import ALL, BY_KEY, METHODS
from shared.relevance.weights import load_weights
from shared.settings import PROJECT_ROOT
from shared.store.db import migrate
from shared.store.models import Explanation as ExplanationRow
from shared.store.models import Float32Array
from tests.helpers.reference_loop import explain_one
from tests.helpers.service import write_model

TOKENS = [1, 14, 22, 0, 9, 30]  # the start token, words and a padding id
CODE_FOLDERS = ("shared", "api", "worker")
METHOD_LITERAL = re.compile("[\"'](" + "|".join(map(re.escape, METHODS)) + ")[\"']")


def test_every_method_is_named_once_with_a_label() -> None:
    assert len(set(METHODS)) == len(METHODS) == len(ALL)
    assert all(BY_KEY[m].label and BY_KEY[m].summary for m in METHODS)


def test_place_1_and_2_the_engine_computes_every_method(tmp_path: Path) -> None:
    weights = load_weights(write_model(tmp_path / "model.npz"))
    (explanation,) = Engine(weights).explain([TOKENS])
    for method in METHODS:
        values = getattr(explanation, method)
        assert values.shape == (len(TOKENS),), method
        assert np.all(np.isfinite(values)) and values[3] == 0.0, method  # padding gets exactly zero


def test_place_3_every_method_has_its_column_in_the_model_and_the_migrations(tmp_path: Path) -> None:
    columns = ExplanationRow.__table__.columns
    assert all(isinstance(columns[m].type, Float32Array) for m in METHODS)
    url = f"sqlite:///{tmp_path / 'migrated.sqlite3'}"
    migrate(url)
    engine = create_engine(url)
    migrated = {c["name"] for c in inspect(engine).get_columns("explanations")}
    engine.dispose()
    assert set(METHODS) <= migrated


def test_place_4_the_plain_reference_loop_computes_every_method(tmp_path: Path) -> None:
    weights = load_weights(write_model(tmp_path / "model.npz"))
    reference = explain_one(weights, [t for t in TOKENS if t])
    (explanation,) = Engine(weights, np.float64).explain([[t for t in TOKENS if t]])
    for method in METHODS:
        np.testing.assert_allclose(getattr(explanation, method), getattr(reference, method), atol=1e-6)


def code_lines() -> list[tuple[Path, int, str]]:
    lines = []
    for folder in CODE_FOLDERS:
        for path in sorted((PROJECT_ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".html", ".js") and path.name != "methods.py":
                for number, line in enumerate(path.read_text().splitlines(), start=1):
                    lines.append((path, number, line))
    return lines


@pytest.mark.parametrize("folder", CODE_FOLDERS)
def test_no_list_of_methods_is_written_by_hand(folder: str) -> None:
    """A line naming two or more method keys as strings is a hand-written copy of METHODS."""
    copies = [
        f"{path.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}"
        for path, number, line in code_lines()
        if path.is_relative_to(PROJECT_ROOT / folder) and len(set(METHOD_LITERAL.findall(line))) >= 2
    ]
    assert not copies, "derive these from shared.relevance.methods.METHODS:\n" + "\n".join(copies)
