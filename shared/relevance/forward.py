"""Forward-only batched LSTM: the final hidden states of many token sequences, each from a given start state.

The deletion tests of the explanations (faithfulness.py) run every review dozens of times with a few tokens
deleted. Two deletion sets that agree before position p give the same states before p, so a run may start
mid-review from a state saved by an earlier run, and save the states that later runs start from.

Batch-major arrays (rows, features); rows are sorted longest first and right-aligned in inner batches of at
most `max_rows` rows, so the rows running at each step are a contiguous prefix and no work is spent on
padding. Gates are kept in the order i, f, o, g with the i, f, o columns halved once, so that one tanh over
all four gates gives them (sigmoid(z) = (1 + tanh(z / 2)) / 2); the input projection embedding @ kernel +
bias is a table gathered one step at a time.
Model: Embedding(V, E) -> LSTM(H) (Keras layout, gates i, f, c, o) -> Dense(C). Imports NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.relevance.weights import ModelWeights

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]

DEFAULT_MAX_ROWS = 512  # rows per inner batch: a step's (rows, 4H) block stays in the CPU caches
_KERAS_TO_IFOG = (0, 1, 3, 2)  # Keras stores i, f, c, o; we use i, f, o, g(= c)


@dataclass(frozen=True)
class ForwardModel:
    """The weights laid out for the forward pass (gates i, f, o, g; the i, f, o columns halved)."""

    table: Array  # (V, 4H) embedding @ kernel + bias
    recurrent: Array  # (H, 4H)
    dense: Array  # (H, C)
    dense_bias: Array  # (C,)

    @classmethod
    def from_weights(cls, weights: ModelWeights, dtype: type[np.floating] = np.float32) -> ForwardModel:
        H = weights.hidden_size
        order = np.concatenate([np.arange(k * H, (k + 1) * H) for k in _KERAS_TO_IFOG])  # (4H,)
        scale = np.concatenate([np.full(3 * H, 0.5), np.ones(H)])  # (4H,) halve i, f, o
        kernel = weights.lstm_kernel[:, order] * scale  # (E, 4H)
        table = weights.embedding @ kernel + weights.lstm_bias[order] * scale  # (V, 4H)
        recurrent = weights.lstm_recurrent_kernel[:, order] * scale  # (H, 4H)
        return cls(
            table=np.ascontiguousarray(table, dtype=dtype),  # (V, 4H)
            recurrent=np.ascontiguousarray(recurrent, dtype=dtype),  # (H, 4H)
            dense=np.ascontiguousarray(weights.dense_kernel, dtype=dtype),  # (H, C)
            dense_bias=np.ascontiguousarray(weights.dense_bias, dtype=dtype),  # (C,)
        )

    @property
    def hidden_size(self) -> int:
        return int(self.recurrent.shape[0])

    def logits(self, hidden: Array) -> Array:
        """Dense layer on final hidden states (B, H) -> (B, C)."""
        return hidden @ self.dense + self.dense_bias  # (B, C)


@dataclass(frozen=True)
class Saves:
    """States a run saves for later runs: row `rows[s]`'s (h, c) after `steps[s]` of its own tokens (0 = its
    start state) are written to `store[slots[s]]`."""

    rows: IntArray  # (S,)
    steps: IntArray  # (S,)
    slots: IntArray  # (S,)


def ranges(starts: IntArray, lengths: IntArray) -> IntArray:
    """The concatenated ranges [start, start + length) of each row: (sum of lengths,)."""
    ends = np.cumsum(lengths)  # (B,)
    shift = np.repeat(starts - (ends - lengths), lengths)  # (total,) start minus where the row begins
    indices: IntArray = np.arange(int(ends[-1]) if ends.size else 0) + shift  # (total,)
    return indices


def run(
    model: ForwardModel,
    tokens: IntArray,
    lengths: IntArray,
    start: Array,
    saves: Saves | None = None,
    store: Array | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Array:
    """Final hidden states (B, H) of B token sequences, concatenated in `tokens` (sum of lengths,), each
    starting from its state start[row] = (h, c) (B, 2, H); `saves` go to `store` (slots, 2, H)."""
    B = lengths.shape[0]
    if tokens.size and not 0 <= int(tokens.min()) <= int(tokens.max()) < model.table.shape[0]:
        raise ValueError(f"token ids outside [0, {model.table.shape[0]})")
    final = np.array(start[:, 0], dtype=model.table.dtype)  # (B, H) rows of length 0 keep their start
    if saves is None:
        saves = Saves(*(np.zeros(0, np.intp) for _ in range(3)))
    at_start = saves.steps == 0  # (S,)
    if store is not None:
        store[saves.slots[at_start]] = start[saves.rows[at_start]]
    first_token = np.cumsum(lengths) - lengths  # (B,)
    order = np.argsort(-lengths, kind="stable")  # (B,) longest first
    batch_of_row = np.empty(B, np.intp)  # (B,)
    batch_of_row[order] = np.arange(B) // max_rows
    local_row = np.empty(B, np.intp)  # (B,) the row's index inside its inner batch
    local_row[order] = np.arange(B) % max_rows
    later = np.flatnonzero(~at_start)  # (S',) saves made during the steps
    for number, first in enumerate(range(0, B, max_rows)):
        rows = order[first : first + max_rows]  # (n,)
        width = int(lengths[rows[0]])
        if width == 0:
            continue
        mine = later[batch_of_row[saves.rows[later]] == number]  # (s,)
        local = local_row[saves.rows[mine]]  # (s,)
        step = (
            width - lengths[saves.rows[mine]] + saves.steps[mine] - 1
        )  # (s,) batch step after which to save
        by_step = np.argsort(step, kind="stable")  # (s,)
        bounds = np.searchsorted(step[by_step], np.arange(width + 1))  # (width + 1,)
        batch_saves = (local[by_step], saves.slots[mine][by_step], bounds)
        batch_tokens = _right_aligned(tokens, first_token[rows], lengths[rows], width)  # (width, n)
        final[rows] = _run_batch(model, batch_tokens, lengths[rows], start[rows], batch_saves, store)
    return final


def _right_aligned(tokens: IntArray, first: IntArray, lengths: IntArray, width: int) -> IntArray:
    """Rows' tokens as the columns of a (width, n) array, each ending at the last step."""
    column = np.repeat(np.arange(lengths.size), lengths)  # (total,)
    index = ranges(first, lengths)  # (total,) into tokens
    step = index - np.repeat(first, lengths) + np.repeat(width - lengths, lengths)  # (total,)
    aligned = np.zeros((width, lengths.size), dtype=np.intp)  # (width, n) zeros before a row starts
    aligned[step, column] = tokens[index]
    return aligned


def _run_batch(
    model: ForwardModel,
    tokens: IntArray,
    lengths: IntArray,
    start: Array,
    saves: tuple[IntArray, IntArray, IntArray],
    store: Array | None,
) -> Array:
    """One inner batch: tokens (T, n) right-aligned, rows sorted longest first; returns h (n, H)."""
    T, n = tokens.shape
    H = model.hidden_size
    dtype = model.table.dtype
    h = np.array(start[:, 0], dtype=dtype)  # (n, H)
    c = np.array(start[:, 1], dtype=dtype)  # (n, H)
    z_buffer = np.empty((n, 4 * H), dtype)  # (n, 4H) pre-activations, then gates
    x_buffer = np.empty((n, 4 * H), dtype)  # (n, 4H) gathered input projections
    t_buffer = np.empty((n, H), dtype)  # (n, H) scratch
    active = np.searchsorted(-lengths, -(T - np.arange(T)), side="right")  # (T,) rows running at each step
    save_rows, save_slots, bounds = saves
    for t in range(T):
        a = int(active[t])
        h_a, c_a = h[:a], c[:a]  # (a, H) each
        z = z_buffer[:a]  # (a, 4H)
        np.matmul(h_a, model.recurrent, out=z)
        z += np.take(model.table, tokens[t, :a], axis=0, out=x_buffer[:a], mode="clip")  # ids checked
        np.tanh(z, out=z)
        ifo = z[:, : 3 * H]  # (a, 3H) tanh of half the pre-activations -> sigmoids
        ifo *= 0.5
        ifo += 0.5
        g = z[:, 3 * H :]  # (a, H)
        c_a *= z[:, H : 2 * H]
        ig = t_buffer[:a]  # (a, H)
        np.multiply(z[:, :H], g, out=ig)
        c_a += ig
        np.tanh(c_a, out=ig)
        np.multiply(z[:, 2 * H : 3 * H], ig, out=h_a)
        lo, hi = int(bounds[t]), int(bounds[t + 1])
        if hi > lo and store is not None:
            store[save_slots[lo:hi], 0] = h[save_rows[lo:hi]]
            store[save_slots[lo:hi], 1] = c[save_rows[lo:hi]]
    return h
