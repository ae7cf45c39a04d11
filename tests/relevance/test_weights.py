"""The weights file: bad files are rejected with a clear message, the committed model is accepted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from shared.relevance.weights import ARRAY_KEYS, ModelWeights, WeightsError, load_weights, save_weights
from shared.store.imdb import split_path, word_index_path


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


def write_npz(path: Path, arrays: dict[str, npt.NDArray[np.float64]]) -> Path:
    payload: dict[str, Any] = {**arrays, "meta": np.array(json.dumps({"max_length": 7}))}
    np.savez(path, **payload)
    return path


def test_round_trip(tmp_path: Path) -> None:
    arrays = small_arrays()
    save_weights(tmp_path / "w.npz", arrays, {"max_length": 9, "truncate_keep": "end"})
    weights = load_weights(tmp_path / "w.npz")
    for key in ARRAY_KEYS:
        np.testing.assert_allclose(getattr(weights, key), arrays[key], rtol=1e-6)
    assert (weights.vocab_size, weights.hidden_size, weights.num_classes) == (12, 2, 2)
    assert (weights.max_length, weights.keep) == (9, "end")
    assert weights.checksum == hashlib.sha256((tmp_path / "w.npz").read_bytes()).hexdigest()


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
