"""The weights file: bad files are rejected with a clear message, the committed model is accepted and carries
its vocabulary, so explaining a text needs no data folder."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from shared.relevance.explainer import load_explainer, model_vocabulary
from shared.relevance.tokenizer import OOV_ID, START_ID, Vocabulary
from shared.relevance.weights import (
    ARRAY_KEYS,
    VOCABULARY_KEY,
    ModelWeights,
    WeightsError,
    id_words,
    load_weights,
    save_weights,
)
from shared.settings import DEFAULT_MODEL_PATH
from shared.store.imdb import split_path, word_index_path

SMALL_INDEX = {"good": 1, "bad": 2, "film": 3, "dropped": 9}  # rank 9 -> id 12, beyond V = 12


def small_arrays(V: int = 12, E: int = 3, H: int = 2, C: int = 2) -> dict[str, npt.NDArray[np.float64]]:
    rng = np.random.default_rng(0)
    return {
        "embedding": rng.normal(size=(V, E)),  # (V, E)
        "lstm_kernel": rng.normal(size=(E, 4 * H)),  # (E, 4H)
        "lstm_recurrent_kernel": rng.normal(size=(H, 4 * H)),  # (H, 4H)
        "lstm_bias": rng.normal(size=4 * H),  # (4H,)
        "dense_kernel": rng.normal(size=(H, C)),  # (H, C)
        "dense_bias": rng.normal(size=C),  # (C,)
    }


def write_npz(path: Path, arrays: dict[str, npt.NDArray[Any]]) -> Path:
    payload: dict[str, Any] = {**arrays, "meta": np.array(json.dumps({"max_length": 7}))}
    np.savez(path, **payload)
    return path


def test_round_trip(tmp_path: Path) -> None:
    arrays = small_arrays()
    save_weights(
        tmp_path / "w.npz", arrays, id_words(SMALL_INDEX, 12), {"max_length": 9, "truncate_keep": "end"}
    )
    weights = load_weights(tmp_path / "w.npz")
    for key in ARRAY_KEYS:
        np.testing.assert_allclose(getattr(weights, key), arrays[key], rtol=1e-6)
    assert (weights.vocab_size, weights.hidden_size, weights.num_classes) == (12, 2, 2)
    assert (weights.max_length, weights.keep) == (9, "end")
    assert weights.checksum == hashlib.sha256((tmp_path / "w.npz").read_bytes()).hexdigest()
    assert weights.words == ("", "", "", "", "good", "bad", "film", "", "", "", "", "")


def test_the_vocabulary_is_read_from_the_model_file(tmp_path: Path) -> None:
    save_weights(tmp_path / "w.npz", small_arrays(), id_words(SMALL_INDEX, 12), {})
    vocabulary = model_vocabulary(load_weights(tmp_path / "w.npz"))
    assert vocabulary.tokenize("Good film, dropped bad").token_ids == [START_ID, 4, 6, OOV_ID, 5]
    assert [vocabulary.word(i) for i in (4, 5, 6, 3, 12)] == ["good", "bad", "film", "<unk>", "<unk>"]


def test_the_checksum_covers_the_vocabulary(tmp_path: Path) -> None:
    arrays = small_arrays()
    save_weights(tmp_path / "a.npz", arrays, id_words(SMALL_INDEX, 12), {})
    save_weights(tmp_path / "b.npz", arrays, id_words({**SMALL_INDEX, "film": 4}, 12), {})
    assert load_weights(tmp_path / "a.npz").checksum != load_weights(tmp_path / "b.npz").checksum


def test_a_file_without_or_with_a_wrong_vocabulary_is_rejected(tmp_path: Path) -> None:
    arrays = small_arrays()
    with pytest.raises(WeightsError, match="has no vocabulary"):
        load_weights(write_npz(tmp_path / "none.npz", arrays))
    short = write_npz(tmp_path / "short.npz", {**arrays, VOCABULARY_KEY: np.array(["a", "b"])})
    with pytest.raises(WeightsError, match=r"12 strings, got \(2,\)"):
        load_weights(short)
    numbers = write_npz(tmp_path / "numbers.npz", {**arrays, VOCABULARY_KEY: np.zeros(12)})
    with pytest.raises(WeightsError, match="one word per embedding row"):
        load_weights(numbers)
    with pytest.raises(WeightsError, match="one word per embedding row"):
        save_weights(tmp_path / "w.npz", arrays, ["a"] * 11, {})


@pytest.mark.parametrize("missing", ARRAY_KEYS)
def test_missing_key_is_rejected_by_name(tmp_path: Path, missing: str) -> None:
    arrays = small_arrays()
    del arrays[missing]
    with pytest.raises(WeightsError, match=f"lacks the arrays \\['{missing}'\\]"):
        load_weights(write_npz(tmp_path / "w.npz", arrays))


@pytest.mark.parametrize(
    ("key", "shape", "message"),
    [
        ("lstm_kernel", (4, 8), r"lstm_kernel is \(4, 8\), expected \(3, 8\)"),
        ("lstm_recurrent_kernel", (2, 12), r"lstm_recurrent_kernel is \(2, 12\), expected \(2, 8\)"),
        ("lstm_bias", (6,), r"lstm_bias is \(6,\), expected \(8,\)"),
        ("dense_kernel", (3, 2), r"dense_kernel is \(3, 2\), expected \(2, C\)"),
        ("dense_bias", (3,), r"dense_bias is \(3,\), expected \(2,\)"),
        ("embedding", (12, 3, 1), "wrong number of dimensions"),
    ],
)
def test_inconsistent_shapes_are_rejected_clearly(
    tmp_path: Path, key: str, shape: tuple[int, ...], message: str
) -> None:
    arrays = small_arrays()
    arrays[key] = np.zeros(shape)
    with pytest.raises(WeightsError, match=message):
        load_weights(write_npz(tmp_path / "w.npz", arrays))


def test_transposed_kernel_is_caught(tmp_path: Path) -> None:
    """A kernel stored transposed, (4H, E), is a shape error, not a silently wrong model."""
    arrays = small_arrays()
    arrays["lstm_kernel"] = arrays["lstm_kernel"].T.copy()  # (4H, E)
    with pytest.raises(WeightsError, match="inconsistent weights: lstm_kernel"):
        load_weights(write_npz(tmp_path / "w.npz", arrays))


def test_non_finite_and_unreadable_files_are_rejected(tmp_path: Path) -> None:
    arrays = small_arrays()
    arrays["dense_bias"] = np.array([0.0, np.nan])
    with pytest.raises(WeightsError, match="dense_bias must hold finite"):
        load_weights(write_npz(tmp_path / "nan.npz", arrays))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(WeightsError, match=r"not a readable \.npz"):
        load_weights(tmp_path / "junk.npz")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        load_weights(tmp_path / "absent.npz")


def test_committed_model_is_accepted(trained_weights: ModelWeights, imdb_dir: Path) -> None:
    w = trained_weights
    assert w.embedding.shape == (10_000, 128)
    assert w.lstm_kernel.shape == (128, 256)
    assert w.lstm_recurrent_kernel.shape == (64, 256)
    assert w.lstm_bias.shape == (256,)
    assert w.dense_kernel.shape == (64, 2)
    assert w.dense_bias.shape == (2,)
    assert w.class_names == ["negative", "positive"]
    assert (w.max_length, w.keep) == (400, "start")
    meta = w.meta
    assert meta["vocab_size"] == meta["num_words"] == 10_000
    assert meta["test_accuracy"] >= 0.87
    matrix = np.array(meta["confusion_matrix"])  # (2, 2)
    assert matrix.sum() == 25_000
    assert matrix.sum(axis=1).tolist() == [12_500, 12_500]
    assert np.trace(matrix) / 25_000 == pytest.approx(meta["test_accuracy"])
    assert meta["epochs"] >= 1
    assert meta["train_seconds"] > 0
    assert isinstance(meta["seed"], int)
    assert set(meta["versions"]) == {"python", "numpy", "tensorflow", "keras"}
    files = [split_path(imdb_dir, "train"), split_path(imdb_dir, "test"), word_index_path(imdb_dir)]
    assert meta["data_sha256"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_committed_model_carries_the_keras_vocabulary(
    trained_weights: ModelWeights, word_index: dict[str, int], vocabulary: Vocabulary
) -> None:
    """The words of ids below 10,000, in id order, are the word index's; the tokenizer built from the model
    file gives the ids the word index gives."""
    assert list(trained_weights.words) == id_words(word_index, 10_000)
    from_model = model_vocabulary(trained_weights)
    text = "This film was a waste of time, cliché after cliché<br />but the score was superb"
    assert from_model.tokenize(text) == vocabulary.tokenize(text)
    assert [from_model.word(i) for i in range(10_000)] == [vocabulary.word(i) for i in range(10_000)]


def test_the_installed_default_model_explains_without_a_data_folder() -> None:
    """load_explainer reads nothing but the model file (the package's own copy by default)."""
    assert DEFAULT_MODEL_PATH.parent.name == "model" and DEFAULT_MODEL_PATH.parent.parent.name == "relevance"
    (review,) = load_explainer(DEFAULT_MODEL_PATH).explain(["a great film"])
    assert not isinstance(review, str)
    assert review.tokenized.tokens == ["<start>", "a", "great", "film"]
    assert review.explanation.predicted_class == 1
