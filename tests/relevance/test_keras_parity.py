"""Keras as the oracle of the NumPy engine: logits equal Keras' own, SA and GI equal GradientTape gradients.

Needs TensorFlow (the train extra, which CI installs); these tests are not skipped without it. Engine weights
are built from a Keras model by shared.training.export_arrays, the function that writes the weights file.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import pytest
import tensorflow as tf

from shared.relevance.engine import Engine, Explanation, truncate
from shared.relevance.tokenizer import Vocabulary
from shared.relevance.training import build_model, export_arrays, import_arrays, pad_batch
from shared.relevance.weights import ARRAY_KEYS, ModelWeights
from shared.store.imdb import Review

Float = npt.NDArray[np.float64]
RANDOM_SEEDS = (0, 1, 2, 3)
N_TRAINED = 300  # real test reviews for the trained model's logits
N_TRAINED_GRADIENTS = 20  # real test reviews for the trained model's gradients


def weights_of(model: keras.Model) -> ModelWeights:
    """Engine weights from a Keras model, through the exporter the training uses."""
    arrays = {k: np.asarray(a, dtype=np.float64) for k, a in export_arrays(model).items()}
    return ModelWeights(
        embedding=arrays["embedding"],
        lstm_kernel=arrays["lstm_kernel"],
        lstm_recurrent_kernel=arrays["lstm_recurrent_kernel"],
        lstm_bias=arrays["lstm_bias"],
        dense_kernel=arrays["dense_kernel"],
        dense_bias=arrays["dense_bias"],
    )


def random_model(seed: int, dtype: str = "float64", C: int = 2) -> keras.Model:
    """A small model of the trained architecture (vocab 50, E 6, H 5) with large random weights."""
    rng = np.random.default_rng(seed)
    model = build_model(vocab_size=50, embedding_dim=6, hidden_units=5, num_classes=C, dtype=dtype)
    arrays = {k: rng.normal(0.0, 0.7, np.shape(v)) for k, v in export_arrays(model).items()}
    import_arrays(model, arrays)
    return model


def random_sequences(seed: int, n: int = 24, V: int = 50, max_len: int = 17) -> list[list[int]]:
    """Start token then random ids in [2, V), lengths 1..max_len; the first one is the start token alone."""
    rng = np.random.default_rng(1000 + seed)
    lengths = [1, 2, max_len, *rng.integers(1, max_len + 1, n - 3).tolist()]
    return [[1, *rng.integers(2, V, length - 1).tolist()] for length in lengths]


def keras_logits(model: keras.Model, sequences: list[list[int]]) -> Float:
    """Keras' own logits for a zero-padded batch (inference mode)."""
    batch = pad_batch([np.asarray(s, dtype=np.int32) for s in sequences])  # (B, T)
    return np.asarray(model(tf.constant(batch), training=False), dtype=np.float64)  # (B, C)


def tape_saliency(
    model: keras.Model, sequences: list[list[int]], targets: list[int]
) -> tuple[Float, list[Float], list[Float]]:
    """GradientTape: logits, and per review SA and GI from d(target logit)/d(embedding output) per token."""
    embedding, lstm, dense = (model.get_layer(n) for n in ("embedding", "lstm", "dense"))
    batch = tf.constant(pad_batch([np.asarray(s, dtype=np.int32) for s in sequences]))  # (B, T)
    with tf.GradientTape() as tape:
        embedded = embedding(batch)  # (B, T, E)
        tape.watch(embedded)
        logits = dense(lstm(embedded, mask=tf.not_equal(batch, 0)))  # (B, C)
        picked = tf.gather(logits, tf.constant(targets), axis=1, batch_dims=1)  # (B,)
    grads = np.asarray(tape.gradient(picked, embedded), dtype=np.float64)  # (B, T, E)
    emb = np.asarray(embedded, dtype=np.float64)  # (B, T, E)
    sa = np.sum(grads * grads, axis=2)  # (B, T)
    gi = np.sum(grads * emb, axis=2)  # (B, T)
    lengths = [len(s) for s in sequences]
    assert np.all(grads[np.asarray(batch) == 0] == 0.0)  # padding is masked: no gradient reaches it
    return (
        np.asarray(logits, dtype=np.float64),
        [sa[j, :L] for j, L in enumerate(lengths)],
        [gi[j, :L] for j, L in enumerate(lengths)],
    )


def max_rel(got: npt.NDArray[Any], want: npt.NDArray[Any]) -> float:
    """Largest difference relative to the largest magnitude of the reference."""
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def logits_of(explanations: list[Explanation]) -> Float:
    return np.stack([np.asarray(e.logits, dtype=np.float64) for e in explanations])  # (B, C)


# --- the exporter --------------------------------------------------------------------------------------


def test_export_and_import_round_trip_in_keras_layout() -> None:
    model = random_model(7, dtype="float32")
    arrays = export_arrays(model)
    assert list(arrays) == list(ARRAY_KEYS)
    assert [arrays[k].shape for k in ARRAY_KEYS] == [(50, 6), (6, 20), (5, 20), (20,), (5, 2), (2,)]
    lstm = model.get_layer("lstm")
    np.testing.assert_array_equal(arrays["lstm_kernel"], lstm.cell.kernel.numpy())
    copy = build_model(vocab_size=50, embedding_dim=6, hidden_units=5, dtype="float32")
    import_arrays(copy, arrays)
    sequences = random_sequences(7)
    np.testing.assert_array_equal(keras_logits(copy, sequences), keras_logits(model, sequences))


# --- (b) logits ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
@pytest.mark.parametrize("C", [2, 3])
def test_logits_equal_keras_on_random_models(seed: int, C: int) -> None:
    model64 = random_model(seed, "float64", C)
    model32 = build_model(vocab_size=50, embedding_dim=6, hidden_units=5, num_classes=C)
    import_arrays(model32, export_arrays(model64))
    weights = weights_of(model64)
    sequences = random_sequences(seed)
    want64 = keras_logits(model64, sequences)  # (B, C)
    want32 = keras_logits(model32, sequences)  # (B, C)
    assert np.ptp(want64) > 1.0  # the random models say different things about different sequences
    got64 = logits_of(Engine(weights, dtype=np.float64).explain(sequences))
    got32 = logits_of(Engine(weights, dtype=np.float32).explain(sequences))
    assert np.max(np.abs(got64 - want64)) <= 1e-10
    assert np.max(np.abs(got32 - want32)) <= 1e-4
    assert np.max(np.abs(got32 - want64)) <= 1e-4


@pytest.fixture(scope="module")
def trained_keras(trained_weights: ModelWeights) -> keras.Model:
    """The committed model as a Keras model (float32, as trained)."""
    model = build_model()
    import_arrays(model, {k: getattr(trained_weights, k) for k in ARRAY_KEYS})
    return model


@pytest.fixture(scope="module")
def trained_sequences(
    sample_reviews: list[Review], vocabulary: Vocabulary, trained_weights: ModelWeights
) -> list[list[int]]:
    """A few hundred real test reviews as the model reads them (cut with the engine's truncate)."""
    cut = [
        truncate(vocabulary.tokenize(r.text).token_ids, trained_weights.max_length, trained_weights.keep)[0]
        for r in sample_reviews[:N_TRAINED]
    ]
    assert max(len(s) for s in cut) == trained_weights.max_length  # some were cut
    return cut


def test_trained_model_exports_back_to_the_file(
    trained_keras: keras.Model, trained_weights: ModelWeights
) -> None:
    arrays = export_arrays(trained_keras)
    for key in ARRAY_KEYS:
        np.testing.assert_array_equal(arrays[key], getattr(trained_weights, key).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logits_equal_keras_on_the_trained_model(
    dtype: type[np.floating],
    trained_keras: keras.Model,
    trained_weights: ModelWeights,
    trained_sequences: list[list[int]],
) -> None:
    want = keras_logits(trained_keras, trained_sequences)  # (N, C)
    got = logits_of(Engine(trained_weights, dtype=dtype).explain(trained_sequences))  # (N, C)
    assert np.max(np.abs(got - want)) <= 1e-4
    assert np.array_equal(got.argmax(axis=1), want.argmax(axis=1))


def test_keras_padding_is_masked_on_the_trained_model(
    trained_keras: keras.Model, trained_sequences: list[list[int]]
) -> None:
    """The oracle itself: a padded batch gives each review's logits as if it were fed alone."""
    sequences = trained_sequences[:40]
    batched = keras_logits(trained_keras, sequences)  # (40, C)
    alone = np.concatenate([keras_logits(trained_keras, [s]) for s in sequences])  # (40, C)
    assert len({len(s) for s in sequences}) > 20
    assert np.max(np.abs(batched - alone)) <= 1e-5


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
def test_keras_padding_is_masked_on_random_models(seed: int) -> None:
    model = random_model(seed)
    sequences = random_sequences(seed)
    batched = keras_logits(model, sequences)  # (B, C)
    alone = np.concatenate([keras_logits(model, [s]) for s in sequences])  # (B, C)
    extra = keras_logits(model, [*sequences, [1] + [3] * 40])[: len(sequences)]  # (B, C) longer padding
    assert np.max(np.abs(batched - alone)) <= 1e-12
    assert np.max(np.abs(extra - alone)) <= 1e-12


# --- (c) SA and GI -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", RANDOM_SEEDS)
@pytest.mark.parametrize("target", ["predicted", 0, 1])
def test_sa_and_gi_equal_gradient_tape_on_random_models(seed: int, target: str | int) -> None:
    model = random_model(seed)
    weights = weights_of(model)
    sequences = random_sequences(seed)
    wanted = None if target == "predicted" else [int(target)] * len(sequences)
    explained = Engine(weights, dtype=np.float64).explain(sequences, wanted)
    targets = [e.target_class for e in explained]
    if wanted is None:
        assert targets == keras_logits(model, sequences).argmax(axis=1).tolist()
    else:
        assert targets == wanted
    logits, sa, gi = tape_saliency(model, sequences, targets)
    assert np.max(np.abs(logits_of(explained) - logits)) <= 1e-10
    for number, e in enumerate(explained):
        assert e.sa.shape == e.gi.shape == (len(sequences[number]),)
        assert max_rel(np.asarray(e.sa), sa[number]) <= 1e-8, (number, e.sa, sa[number])
        assert max_rel(np.asarray(e.gi), gi[number]) <= 1e-8, (number, e.gi, gi[number])


@pytest.fixture(scope="module")
def trained_keras64(trained_weights: ModelWeights) -> keras.Model:
    """The committed model in float64, for exact gradients."""
    model = build_model(dtype="float64")
    import_arrays(model, {k: getattr(trained_weights, k) for k in ARRAY_KEYS})
    return model


def gradient_sequences(trained_sequences: list[list[int]]) -> list[list[int]]:
    """~20 real reviews: short, long and cut ones."""
    ordered = sorted(trained_sequences, key=len)
    step = len(ordered) // N_TRAINED_GRADIENTS
    return ordered[::step][:N_TRAINED_GRADIENTS]


@pytest.mark.parametrize("target", ["predicted", "other"])
def test_sa_and_gi_equal_gradient_tape_on_the_trained_model(
    target: str,
    trained_keras64: keras.Model,
    trained_weights: ModelWeights,
    trained_sequences: list[list[int]],
) -> None:
    sequences = gradient_sequences(trained_sequences)
    assert len(sequences) == N_TRAINED_GRADIENTS
    assert max(len(s) for s in sequences) == trained_weights.max_length
    predicted = keras_logits(trained_keras64, sequences).argmax(axis=1)  # (N,)
    targets = predicted.tolist() if target == "predicted" else (1 - predicted).tolist()
    logits, sa, gi = tape_saliency(trained_keras64, sequences, targets)
    explained64 = Engine(trained_weights, dtype=np.float64).explain(sequences, targets)
    explained32 = Engine(trained_weights, dtype=np.float32).explain(sequences, targets)
    assert np.max(np.abs(logits_of(explained64) - logits)) <= 1e-9
    for number, (e64, e32) in enumerate(zip(explained64, explained32, strict=True)):
        assert e64.target_class == targets[number]
        assert max_rel(np.asarray(e64.sa), sa[number]) <= 1e-6, number
        assert max_rel(np.asarray(e64.gi), gi[number]) <= 1e-6, number
        assert max_rel(np.asarray(e32.sa, dtype=np.float64), sa[number]) <= 1e-3, number
        assert max_rel(np.asarray(e32.gi, dtype=np.float64), gi[number]) <= 1e-3, number
