"""The exported model: one `.npz` file in Keras layout (gate order i, f, c, o), the vocabulary the model was
trained with (the word of each token id) and JSON metadata, so explaining a text needs this file only."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shared.relevance.tokenizer import INDEX_FROM

ARRAY_KEYS = (
    "embedding",
    "lstm_kernel",
    "lstm_recurrent_kernel",
    "lstm_bias",
    "dense_kernel",
    "dense_bias",
)
VOCABULARY_KEY = "vocabulary"  # the word of each token id; "" for the ids that stand for no word
CLASS_NAMES = ("negative", "positive")


class WeightsError(ValueError):
    """The weights file is missing, unreadable, or not an Embedding -> LSTM -> Dense model with vocabulary."""


@dataclass(frozen=True)
class ModelWeights:
    """Weights of Embedding(V, E) -> LSTM(H) -> Dense(C), float64 master copy, Keras layout."""

    embedding: npt.NDArray[np.float64]  # (V, E)
    lstm_kernel: npt.NDArray[np.float64]  # (E, 4H) gates i, f, c, o
    lstm_recurrent_kernel: npt.NDArray[np.float64]  # (H, 4H)
    lstm_bias: npt.NDArray[np.float64]  # (4H,)
    dense_kernel: npt.NDArray[np.float64]  # (H, C)
    dense_bias: npt.NDArray[np.float64]  # (C,)
    words: tuple[str, ...] = ()  # (V,) the word of each token id, "" for padding, start, unknown, unused
    meta: dict[str, Any] = field(default_factory=dict)
    checksum: str = ""  # sha256 of the file it was loaded from (arrays, vocabulary and meta)

    @property
    def vocab_size(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.lstm_recurrent_kernel.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.dense_bias.shape[0])

    @property
    def max_length(self) -> int:
        return int(self.meta.get("max_length", 400))

    @property
    def keep(self) -> str:
        """Which end of a long review the model reads: "start" or "end"."""
        return str(self.meta.get("truncate_keep", "start"))

    @property
    def class_names(self) -> list[str]:
        names = self.meta.get("class_names")
        if isinstance(names, list) and len(names) == self.num_classes:
            return [str(n) for n in names]
        return [str(c) for c in range(self.num_classes)]


def check_shapes(arrays: dict[str, npt.NDArray[Any]]) -> None:
    """Raise WeightsError unless the arrays form one consistent Embedding -> LSTM -> Dense model."""
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise WeightsError(f"weights file lacks the arrays {missing}; expected {list(ARRAY_KEYS)}")
    emb, ker, rec, bias = (arrays[k] for k in ARRAY_KEYS[:4])
    dk, db = arrays["dense_kernel"], arrays["dense_bias"]
    if emb.ndim != 2 or rec.ndim != 2 or ker.ndim != 2 or bias.ndim != 1 or dk.ndim != 2 or db.ndim != 1:
        raise WeightsError("weights have the wrong number of dimensions")
    V, E = emb.shape
    H = rec.shape[0]
    problems = []
    if ker.shape != (E, 4 * H):
        problems.append(f"lstm_kernel is {ker.shape}, expected ({E}, {4 * H})")
    if rec.shape != (H, 4 * H):
        problems.append(f"lstm_recurrent_kernel is {rec.shape}, expected ({H}, {4 * H})")
    if bias.shape != (4 * H,):
        problems.append(f"lstm_bias is {bias.shape}, expected ({4 * H},)")
    if dk.shape[0] != H:
        problems.append(f"dense_kernel is {dk.shape}, expected ({H}, C)")
    if db.shape != (dk.shape[1],):
        problems.append(f"dense_bias is {db.shape}, expected ({dk.shape[1]},)")
    if V < 3 or H < 1 or E < 1:
        problems.append(f"implausible sizes V={V}, E={E}, H={H}")
    for k in ARRAY_KEYS:
        if not np.issubdtype(arrays[k].dtype, np.floating) or not np.all(np.isfinite(arrays[k])):
            problems.append(f"{k} must hold finite floating-point numbers")
    if problems:
        raise WeightsError("inconsistent weights: " + "; ".join(problems))


def id_words(word_index: dict[str, int], num_words: int) -> list[str]:
    """The word of each token id below num_words, from a Keras word index (word -> rank; id = rank + 3)."""
    words = [""] * num_words
    for word, rank in word_index.items():
        if rank + INDEX_FROM < num_words:
            words[rank + INDEX_FROM] = word
    return words


def check_vocabulary(words: npt.NDArray[Any], vocab_size: int) -> None:
    """Raise WeightsError unless `words` holds one string per row of the embedding."""
    if words.dtype.kind != "U" or words.shape != (vocab_size,):
        raise WeightsError(
            f"the vocabulary must hold one word per embedding row: {vocab_size} strings, got "
            f"{words.shape} of {words.dtype}"
        )


def load_weights(path: Path) -> ModelWeights:
    """Load and validate a weights file; any problem becomes a WeightsError with a clear message."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror}") from exc
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{path} is not a readable .npz weights file: {exc}") from exc
    check_shapes(arrays)
    if VOCABULARY_KEY not in arrays:
        raise WeightsError(f"{path} has no vocabulary; export it again with `relevance train`")
    check_vocabulary(arrays[VOCABULARY_KEY], arrays["embedding"].shape[0])
    meta: dict[str, Any] = {}
    if "meta" in arrays:
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{path}: meta is not valid JSON: {exc}") from exc
    return ModelWeights(
        **{k: np.asarray(arrays[k], dtype=np.float64) for k in ARRAY_KEYS},
        words=tuple(arrays[VOCABULARY_KEY].tolist()),
        meta=meta,
        checksum=hashlib.sha256(raw).hexdigest(),
    )


def save_weights(
    path: Path, arrays: dict[str, npt.NDArray[Any]], words: list[str], meta: dict[str, Any]
) -> None:
    """Write the one-file export: float32 arrays, the word of each token id (see `id_words`), meta JSON."""
    check_shapes(arrays)
    vocabulary = np.array(words, dtype=str)  # (V,)
    check_vocabulary(vocabulary, arrays["embedding"].shape[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {k: np.asarray(arrays[k], dtype=np.float32) for k in ARRAY_KEYS}
    payload[VOCABULARY_KEY] = vocabulary
    payload["meta"] = np.array(json.dumps(meta, sort_keys=True))
    np.savez_compressed(path, **payload)
