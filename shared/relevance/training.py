"""Train the IMDB sentiment LSTM with TensorFlow/Keras and export it in the engine's one-file format.

The only module that imports TensorFlow; nothing imports it at module level (the CLI imports it lazily), so
workers and the web process never load TensorFlow. Architecture: Embedding(10000, 128, mask_zero=True) ->
LSTM(64) -> Dropout(0.5) -> Dense(2) logits. Reviews are tokenised by shared.relevance.tokenizer (start
token kept), cut by shared.relevance.engine.truncate and padded with 0, which the embedding masks, so
padding changes nothing.
Batches group reviews of similar length (a seeded bucket iterator) so short reviews don't pay for long ones.
The epoch is picked on a validation slice of the train split (early stopping, best weights restored); the
test split is only ever used for the final report. The caller reads the data (`relevance train` through
shared.store): this layer reads no data files. The exported file carries the vocabulary it was trained with.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from shared.relevance.engine import truncate
from shared.relevance.tokenizer import PAD_ID, Vocabulary
from shared.relevance.weights import CLASS_NAMES, id_words, save_weights

NUM_WORDS = 10_000
EMBEDDING_DIM = 128
HIDDEN_UNITS = 64
DROPOUT = 0.5
BUCKET_BATCHES = 50  # a bucket of this many batches is sorted by length before it is cut into batches

IntArray = npt.NDArray[np.int32]
IndexArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on besides the data; recorded in the exported meta."""

    max_length: int = 400
    truncate_keep: str = "start"
    epochs: int = 10  # upper bound; early stopping on the validation slice picks the epoch
    batch_size: int = 64
    learning_rate: float = 5e-4  # tuned on the validation slice (model/README.md)
    clipnorm: float = 1.0
    validation_fraction: float = 0.1
    patience: int = 2
    seed: int = 1


@dataclass(frozen=True)
class TrainingData:
    """The labelled reviews (text, label) of both splits and the Keras word index, read by the caller, and
    the files they came from (the exported meta records their sha256)."""

    train: Sequence[tuple[str, int]]
    test: Sequence[tuple[str, int]]
    word_index: dict[str, int]
    sources: Sequence[Path]


@dataclass(frozen=True)
class TrainReport:
    """What a training run achieved; printed by the CLI and stored (mostly) in the weights meta."""

    test_accuracy: float
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    train_seconds: float
    epochs: int  # epochs run
    best_epoch: int  # the epoch whose weights were kept (1-based)
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: loss, val_loss, val_accuracy


def build_model(
    vocab_size: int = NUM_WORDS,
    embedding_dim: int = EMBEDDING_DIM,
    hidden_units: int = HIDDEN_UNITS,
    num_classes: int = len(CLASS_NAMES),
    dropout: float = DROPOUT,
    dtype: str = "float32",
) -> keras.Model:
    """Embedding(mask_zero) -> LSTM (Keras defaults: tanh, sigmoid, unit forget bias) -> Dropout -> Dense.

    dtype "float64" gives an exact oracle for the engine's float64 mode in the tests.
    """
    tokens = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, dtype=dtype, name="embedding")(
        tokens
    )
    x = keras.layers.LSTM(hidden_units, dtype=dtype, name="lstm")(x)
    x = keras.layers.Dropout(dropout, dtype=dtype, name="dropout")(x)
    logits = keras.layers.Dense(num_classes, dtype=dtype, name="dense")(x)
    return keras.Model(tokens, logits, name="imdb_lstm")


def _layer(model: keras.Model, kind: type[Any]) -> Any:
    found = [layer for layer in model.layers if isinstance(layer, kind)]
    if len(found) != 1:
        raise ValueError(f"expected exactly one {kind.__name__} layer, found {len(found)}")
    return found[0]


def _parts(model: keras.Model) -> tuple[Any, Any, Any]:
    """The Embedding layer, LSTM cell and Dense layer of an Embedding -> LSTM -> Dense model."""
    embedding = _layer(model, keras.layers.Embedding)
    cell = _layer(model, keras.layers.LSTM).cell
    dense = _layer(model, keras.layers.Dense)
    if not cell.use_bias or not dense.use_bias:
        raise ValueError("the engine expects an LSTM and a Dense layer with biases")
    return embedding, cell, dense


def _variables(model: keras.Model) -> dict[str, Any]:
    """The model's variables under the weights file's array names (Keras layout, gates i, f, c, o)."""
    embedding, cell, dense = _parts(model)
    return {
        "embedding": embedding.embeddings,  # (V, E)
        "lstm_kernel": cell.kernel,  # (E, 4H)
        "lstm_recurrent_kernel": cell.recurrent_kernel,  # (H, 4H)
        "lstm_bias": cell.bias,  # (4H,)
        "dense_kernel": dense.kernel,  # (H, C)
        "dense_bias": dense.bias,  # (C,)
    }


def export_arrays(model: keras.Model) -> dict[str, npt.NDArray[np.floating]]:
    """The six arrays of the weights file from a built model, in the model's own float precision."""
    return {k: np.array(v.numpy()) for k, v in _variables(model).items()}


def import_arrays(model: keras.Model, arrays: Mapping[str, npt.NDArray[np.floating]]) -> None:
    """The inverse of export_arrays: put weights-file arrays into a built model of matching shapes."""
    for key, variable in _variables(model).items():
        if tuple(variable.shape) != arrays[key].shape:
            raise ValueError(f"{key} is {arrays[key].shape}, the model has {tuple(variable.shape)}")
        variable.assign(np.asarray(arrays[key], dtype=variable.dtype))


def encode(texts: Sequence[str], vocabulary: Vocabulary, max_length: int, keep: str) -> list[IntArray]:
    """Token ids of each text as the model reads them: start token first, cut to max_length."""
    encoded = []
    for text in texts:
        ids, _ = truncate(vocabulary.tokenize(text).token_ids, max_length, keep)
        encoded.append(np.asarray(ids, dtype=np.int32))  # (L,)
    return encoded


def pad_batch(sequences: Sequence[IntArray]) -> IntArray:
    """Pad at the end with PAD_ID to the longest sequence of the batch (the embedding masks it)."""
    width = max(len(s) for s in sequences)
    batch = np.full((len(sequences), width), PAD_ID, dtype=np.int32)  # (B, T)
    for row, seq in enumerate(sequences):
        batch[row, : len(seq)] = seq
    return batch


def bucket_batches(lengths: IntArray, batch_size: int, rng: np.random.Generator) -> list[IndexArray]:
    """Shuffled batches of indices whose members have similar lengths (shuffle, sort in buckets, cut)."""
    order = rng.permutation(len(lengths)).astype(np.intp)  # (N,)
    batches: list[IndexArray] = []
    bucket = batch_size * BUCKET_BATCHES
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]  # (<= bucket,)
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def predict_logits(
    model: keras.Model, sequences: Sequence[IntArray], batch_size: int = 256
) -> npt.NDArray[np.float32]:
    """Logits for every sequence (inference mode), computed in length-sorted batches."""
    predict = _predict_function(model)
    lengths = np.array([len(s) for s in sequences])  # (N,)
    order = np.argsort(lengths, kind="stable")  # (N,)
    logits = np.zeros((len(sequences), model.output_shape[-1]), dtype=np.float32)  # (N, C)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        logits[rows] = predict(tf.constant(pad_batch([sequences[r] for r in rows]))).numpy()
    return logits


def _predict_function(model: keras.Model) -> Callable[[Any], Any]:
    """One traced graph for every (batch, length) shape."""

    def predict(tokens: Any) -> Any:
        return model(tokens, training=False)

    traced: Callable[[Any], Any] = tf.function(
        predict, input_signature=[tf.TensorSpec([None, None], tf.int32)], reduce_retracing=True
    )
    return traced


def confusion_matrix(labels: IntArray, predicted: IntArray, num_classes: int) -> list[list[int]]:
    """counts[true][predicted]."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)  # (C, C)
    np.add.at(counts, (labels, predicted), 1)
    return [[int(v) for v in row] for row in counts]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_checksums(sources: Sequence[Path]) -> dict[str, str]:
    """sha256 of the data files, so a weights file says exactly what it was trained and tested on."""
    return {p.name: sha256_file(p) for p in sources}


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


def _validation_split(
    labels: IntArray, fraction: float, rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Stratified (train, validation) index split of the train split."""
    train_rows, val_rows = [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))  # (n_label,)
        n_val = round(len(rows) * fraction)
        val_rows.append(rows[:n_val])
        train_rows.append(rows[n_val:])
    return np.sort(np.concatenate(train_rows)), np.sort(np.concatenate(val_rows))


def fit(
    model: keras.Model,
    sequences: Sequence[IntArray],
    labels: IntArray,
    config: TrainConfig,
    log: Callable[[str], None] = print,
) -> tuple[int, int, list[dict[str, float]]]:
    """Train with early stopping on a validation slice of the given (train) data; keeps the best epoch.

    Returns (epochs run, best epoch, per-epoch history).
    """
    rng = np.random.default_rng(config.seed)
    train_rows, val_rows = _validation_split(labels, config.validation_fraction, rng)
    train_seqs = [sequences[r] for r in train_rows]
    train_labels = labels[train_rows]  # (N_train,)
    val_seqs = [sequences[r] for r in val_rows]
    val_labels = labels[val_rows]  # (N_val,)
    lengths = np.array([len(s) for s in train_seqs], dtype=np.int32)  # (N_train,)

    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, clipnorm=config.clipnorm)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def step(tokens: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(tokens, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    train_step: Callable[[Any, Any], Any] = tf.function(
        step,
        input_signature=[tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None], tf.int32)],
        reduce_retracing=True,
    )

    best_loss, best_epoch, best_weights = np.inf, 0, model.get_weights()
    history: list[dict[str, float]] = []
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        losses = []
        for rows in bucket_batches(lengths, config.batch_size, rng):
            tokens = tf.constant(pad_batch([train_seqs[r] for r in rows]))
            losses.append(float(train_step(tokens, tf.constant(train_labels[rows]))))
        val_logits = predict_logits(model, val_seqs)  # (N_val, C)
        val_loss = float(np.mean(loss_fn(val_labels, val_logits)))
        val_acc = float(np.mean(val_logits.argmax(axis=1) == val_labels))
        history.append(
            {
                "loss": float(np.mean(losses)),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "seconds": time.perf_counter() - started,
            }
        )
        log(
            f"epoch {epoch}: loss {history[-1]['loss']:.4f}  val_loss {val_loss:.4f}  "
            f"val_accuracy {val_acc:.4f}  ({history[-1]['seconds']:.0f} s)"
        )
        if val_loss < best_loss:
            best_loss, best_epoch, best_weights = val_loss, epoch, model.get_weights()
        elif epoch - best_epoch >= config.patience:
            log(f"no better validation loss for {config.patience} epochs: stopping")
            break
    model.set_weights(best_weights)
    log(f"kept the weights of epoch {best_epoch}")
    return epoch, best_epoch, history


def train(
    data: TrainingData, output: Path, config: TrainConfig, log: Callable[[str], None] = print
) -> TrainReport:
    """Train on the train split, evaluate on all test reviews, export weights, vocabulary and meta."""
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    vocabulary = Vocabulary(data.word_index, NUM_WORDS)

    def load(reviews: Sequence[tuple[str, int]]) -> tuple[list[IntArray], IntArray]:
        seqs = encode([text for text, _ in reviews], vocabulary, config.max_length, config.truncate_keep)
        return seqs, np.array([label for _, label in reviews], dtype=np.int32)  # (N,)

    train_seqs, train_labels = load(data.train)
    test_seqs, test_labels = load(data.test)
    log(f"{len(train_seqs)} train and {len(test_seqs)} test reviews, max length {config.max_length}")

    model = build_model()
    started = time.perf_counter()
    epochs, best_epoch, history = fit(model, train_seqs, train_labels, config, log)
    train_seconds = time.perf_counter() - started

    predicted = predict_logits(model, test_seqs).argmax(axis=1)  # (N_test,)
    accuracy = float(np.mean(predicted == test_labels))
    matrix = confusion_matrix(test_labels, predicted, len(CLASS_NAMES))
    report = TrainReport(accuracy, matrix, round(train_seconds, 1), epochs, best_epoch, history)
    meta = {
        "vocab_size": NUM_WORDS,
        "num_words": NUM_WORDS,
        "max_length": config.max_length,
        "truncate_keep": config.truncate_keep,
        "class_names": list(CLASS_NAMES),
        "test_accuracy": accuracy,
        "confusion_matrix": matrix,
        "train_seconds": report.train_seconds,
        "epochs": epochs,
        "best_epoch": best_epoch,
        "seed": config.seed,
        "training": asdict(config),
        "history": history,
        "data_sha256": data_checksums(data.sources),
        "versions": library_versions(),
    }
    save_weights(output, export_arrays(model), id_words(data.word_index, NUM_WORDS), meta)
    log(f"test accuracy {accuracy:.4f}, confusion matrix (rows true, columns predicted) {matrix}")
    log(f"trained {epochs} epochs (kept epoch {best_epoch}) in {train_seconds:.0f} s; wrote {output}")
    return report
