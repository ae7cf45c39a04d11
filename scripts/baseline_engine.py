"""The engine as of commit 2dccb14 (shared/relevance/engine.py then), frozen and kept only as the baseline of
`make bench` (scripts/bench_engine.py), which reports the current engine's speed as a ratio to it. Not used
by the service; do not edit.

Batched NumPy LSTM with three word-level explanations: LRP (epsilon, signal-take-all), SA and GI.

Model: Embedding(V, E) -> LSTM(H) (Keras layout, gates i, f, c, o) -> Dense(C) logits. Imports NumPy only.

How it is fast (../shared/notes/engine-performance.md has the measurements behind these choices):
- Reviews are sorted by length and right-aligned to a common last step, so at every step the reviews
  still running form a prefix of the batch: no work is ever done on padding, and nothing can leak into it.
- Arrays are feature-major, (features, batch): each gate is a contiguous row block of the (4H, n)
  pre-activations, and the products with the weights are single matrix products with no transposes.
- Gates are kept in the order i, f, o, g so that one sigmoid covers a contiguous 3H block; the i, f, o rows
  of the weights are negated once, so that sigmoid = 1 / (1 + exp(z)) needs no negation per step, and
  their gradients carry the same sign (s (s - 1) = -s (1 - s)), which the negated weights undo.
- The input projection embedding @ kernel + bias is a precomputed table, gathered once per batch.
- GI and the LRP token totals need no extra matrix product: sum_e x_e (W dz)_e = dz . (x W), and x W is
  the gathered table minus the bias. SA needs dx = W dz, fused with the recurrent product dh = U dz.
- All large arrays live in a workspace reused across batches (fresh pages cost more than the work here).

LRP follows Arras et al. 2017 ("Explaining Recurrent Neural Network Predictions in Sentiment Analysis"):
epsilon rule on every linear map (stabiliser eps * sign(denominator), sign(0) = +1), the bias and stabiliser
share redistributed over the layer inputs with weight `bias_factor`, and "signal-take-all" for products:
h = o * tanh(c) gives all relevance to c, and c = f * c_prev + i * g gives the two summands' relevance to
c_prev and g only. Relevance starts at the target logit. `lrp_rest` is what reaches no token: the relevance
left at the zero initial state plus what biases and stabilisers absorb (when bias_factor < 1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from shared.relevance.tokenizer import PAD_ID
from shared.relevance.weights import ModelWeights

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]

DEFAULT_TOKEN_BUDGET = 48_000  # padded tokens per inner batch: 12 H floats each, ~150 MB at H = 64
DEFAULT_MAX_ROWS = 320  # reviews per inner batch: wider arrays fall out of the CPU caches
_KERAS_TO_IFOG = (0, 1, 3, 2)  # Keras stores i, f, c, o; we use i, f, o, g(= c)
_FLUSH_EVERY = 4  # steps between flushes of vanishing backward signals (see _flush_tiny)


@dataclass(frozen=True)
class Explanation:
    """What the engine says about one review; relevance arrays have one value per given token id."""

    logits: Array  # (C,)
    probabilities: Array  # (C,)
    predicted_class: int
    target_class: int
    lrp: Array  # (L,)
    sa: Array  # (L,)
    gi: Array  # (L,)
    lrp_rest: float  # part of the target logit that LRP gives to no token


@dataclass(frozen=True)
class _Params:
    """Weights rearranged for the feature-major loops: gates i, f, o, g with i, f, o negated."""

    table_t: Array  # (4H, V) (embedding @ kernel + bias)^T
    bias: Array  # (4H,)
    recurrent_t: Array  # (4H, H) z += recurrent_t @ h
    grad_back: Array  # (H + E + 1, 4H) [U; W; b^T]: dh, dx and b . dz from one product
    lrp_back_g: Array  # (H + 1, H) [U_g; b_g^T] true signs: LRP messages to h_prev and the bias share
    dense_t: Array  # (C, H)
    dense_bias: Array  # (C,)


def _scaled_params(weights: ModelWeights, dtype: type[np.floating]) -> _Params:
    H = weights.hidden_size
    order = np.concatenate([np.arange(k * H, (k + 1) * H) for k in _KERAS_TO_IFOG])  # (4H,)
    sign = np.concatenate([-np.ones(3 * H), np.ones(H)])  # (4H,) negate i, f, o
    kernel = weights.lstm_kernel[:, order] * sign  # (E, 4H)
    recurrent = weights.lstm_recurrent_kernel[:, order] * sign  # (H, 4H)
    bias = weights.lstm_bias[order] * sign  # (4H,)
    table = weights.embedding @ kernel + bias  # (V, 4H)
    grad_back = np.concatenate([recurrent, kernel, bias[None, :]], axis=0)  # (H + E + 1, 4H)
    g = slice(3 * H, 4 * H)
    lrp_back_g = np.concatenate([recurrent[:, g], bias[None, g]], axis=0)  # (H + 1, H)

    def cast(a: Array) -> Array:
        return np.ascontiguousarray(a, dtype=dtype)

    return _Params(
        table_t=cast(table.T),
        bias=cast(bias),
        recurrent_t=cast(recurrent.T),
        grad_back=cast(grad_back),
        lrp_back_g=cast(lrp_back_g),
        dense_t=cast(weights.dense_kernel.T),
        dense_bias=cast(weights.dense_bias),
    )


class _Workspace:
    """Flat buffers reused by every batch (one engine per thread), viewed with the shape a batch needs."""

    def __init__(self, hidden: int, embed: int, dtype: type[np.floating]) -> None:
        self.hidden, self.embed, self.dtype = hidden, embed, dtype
        self.slots = self.rows = 0
        self.ensure(slots=1, rows=1)

    def ensure(self, slots: int, rows: int) -> None:
        """Grow the buffers to hold a batch of `slots` padded tokens and `rows` reviews."""
        H, E, dtype = self.hidden, self.embed, self.dtype
        if slots > self.slots:
            self.slots = slots
            self.x = np.empty(4 * H * slots, dtype)
            self.gates = np.empty(4 * H * slots, dtype)
            self.z_g = np.empty(H * slots, dtype)
            self.c = np.empty(H * slots, dtype)
            self.tanh_c = np.empty(H * slots, dtype)
            self.h = np.empty(H * slots, dtype)
        if rows > self.rows:
            self.rows = rows
            self.step = np.empty((H + E + 1) * rows, dtype)  # one step's matrix product
            self.wide = np.empty(4 * H * rows, dtype)  # (4H, n) per-step scratch
            self.temps = [np.empty(3 * H * rows, dtype) for _ in range(3)]  # (H or 3H, n) scratch

    @staticmethod
    def view(buffer: Array, *shape: int) -> Array:
        return buffer[: math.prod(shape)].reshape(shape)


@dataclass
class _Trace:
    """What the forward pass keeps for the two backward passes, feature-major."""

    x: Array  # (4H, T, B) gathered input projections (i, f, o negated), bias included
    gates: Array  # (T, 4H, B) activations i, f, o, g
    z_g: Array  # (T, H, B) cell-candidate pre-activation
    c: Array  # (T, H, B) cell state
    tanh_c: Array  # (T, H, B)
    h: Array  # (T, H, B) hidden state
    active: IntArray  # (T,) rows running at each step (a prefix of the batch)


def _flush_tiny(values: Array, scratch: Array) -> None:
    """Zero entries below 1e7 * sqrt(smallest normal number): 1e-12 in float32, 1e-147 in float64.

    Backward signals of distant tokens vanish geometrically; once they (or their squares, for SA) are
    subnormal, every operation on them runs many times slower. Such values are far below the float32
    resolution of any logit or relevance the engine reports.
    """
    np.abs(values, out=scratch)
    np.copyto(values, 0.0, where=scratch < math.sqrt(np.finfo(values.dtype).tiny) * 1e7)


def _forward(p: _Params, ws: _Workspace, tokens: IntArray, active: IntArray) -> _Trace:
    """Run the LSTM over a right-aligned batch; tokens (T, B), rows [0, active[t]) run at step t."""
    T, B = tokens.shape
    H = p.recurrent_t.shape[1]
    V = ws.view
    x = V(ws.x, 4 * H, T, B)
    flat_tokens = tokens.reshape(-1)  # (T * B,)
    for row, out in zip(p.table_t, x.reshape(4 * H, T * B), strict=True):
        np.take(row, flat_tokens, out=out, mode="clip")  # one table row at a time stays in cache
    tr = _Trace(
        x=x,
        gates=V(ws.gates, T, 4 * H, B),
        z_g=V(ws.z_g, T, H, B),
        c=V(ws.c, T, H, B),
        tanh_c=V(ws.tanh_c, T, H, B),
        h=V(ws.h, T, H, B),
        active=active,
    )
    zeros = np.zeros((H, B), ws.dtype)  # (H, B) the initial state
    for t in range(T):
        n = int(active[t])
        if t:
            started = slice(int(active[t - 1]), n)  # rows whose first step is t start from zero
            tr.c[t - 1, :, started] = 0.0
            tr.h[t - 1, :, started] = 0.0
        h_prev = tr.h[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        c_prev = tr.c[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        z = V(ws.wide, 4 * H, n)  # (4H, n)
        np.matmul(p.recurrent_t, h_prev, out=z)
        z += x[:, t, :n]
        gates = tr.gates[t, :, :n]  # (4H, n)
        ifo = z[: 3 * H]  # (3H, n) negated pre-activations
        np.exp(ifo, out=ifo)
        ifo += 1.0
        np.reciprocal(ifo, out=gates[: 3 * H])
        tr.z_g[t, :, :n] = z[3 * H :]
        np.tanh(z[3 * H :], out=gates[3 * H :])
        i, f, o, g = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]  # (H, n) each
        c = tr.c[t, :, :n]  # (H, n)
        np.multiply(f, c_prev, out=c)
        ig = V(ws.temps[0], H, n)  # (H, n)
        np.multiply(i, g, out=ig)
        c += ig
        tanh_c = tr.tanh_c[t, :, :n]  # (H, n)
        np.tanh(c, out=tanh_c)
        np.multiply(o, tanh_c, out=tr.h[t, :, :n])
    return tr


def _gradients(p: _Params, ws: _Workspace, tr: _Trace, targets: IntArray) -> tuple[Array, Array]:
    """SA and GI per (step, row): d(target logit)/d(embedding) by backpropagation through time."""
    T, H, B = tr.h.shape
    E = p.grad_back.shape[0] - H - 1
    V = ws.view
    sa = np.zeros((T, B), ws.dtype)  # (T, B)
    gi = np.zeros((T, B), ws.dtype)  # (T, B)
    dh = np.ascontiguousarray(p.dense_t[targets].T)  # (H, B) d logit / d h_T
    dc = np.zeros((H, B), ws.dtype)  # (H, B)
    zeros = np.zeros((H, B), ws.dtype)
    for t in range(T - 1, -1, -1):
        n = int(tr.active[t])
        gates = tr.gates[t, :, :n]  # (4H, n)
        i, f, o, g = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]  # (H, n) each
        tanh_c, h = tr.tanh_c[t, :, :n], tr.h[t, :, :n]  # (H, n)
        c_prev = tr.c[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        dh_n, dc_n = dh[:, :n], dc[:, :n]  # (H, n)
        if t % _FLUSH_EVERY == 0:
            _flush_tiny(dh_n, V(ws.temps[0], H, n))
            _flush_tiny(dc_n, V(ws.temps[0], H, n))
        dz = V(ws.wide, 4 * H, n)  # (4H, n) gradient w.r.t. the stored (i, f, o negated) pre-activations
        np.multiply(dh_n, tanh_c, out=dz[2 * H : 3 * H])  # d o
        dtanh = V(ws.temps[0], H, n)  # (H, n) o (1 - tanh(c)^2) = o - h tanh(c)
        np.multiply(h, tanh_c, out=dtanh)
        np.subtract(o, dtanh, out=dtanh)
        dtanh *= dh_n
        dc_n += dtanh  # d c
        np.multiply(dc_n, g, out=dz[:H])  # d i
        np.multiply(dc_n, c_prev, out=dz[H : 2 * H])  # d f
        np.multiply(dc_n, i, out=dz[3 * H :])  # d g
        dc_n *= f  # d c_prev
        slope = V(ws.temps[1], 3 * H, n)  # (3H, n) s (s - 1): sigmoid slope, negated like the weights
        np.subtract(gates[: 3 * H], 1.0, out=slope)
        slope *= gates[: 3 * H]
        dz[: 3 * H] *= slope
        np.multiply(g, g, out=dtanh)
        np.subtract(1.0, dtanh, out=dtanh)
        dz[3 * H :] *= dtanh
        back = V(ws.step, H + E + 1, n)  # (H + E + 1, n): [dh_prev; dx; b . dz]
        np.matmul(p.grad_back, dz, out=back)
        dh = back[:H]  # (H, n) read before the next product overwrites it
        dx = back[H : H + E]  # (E, n)
        sa[t, :n] = np.einsum("en,en->n", dx, dx)
        gi[t, :n] = np.einsum("kn,kn->n", dz, tr.x[:, t, :n])
        gi[t, :n] -= back[H + E]
    return sa, gi


def _lrp(
    p: _Params, ws: _Workspace, tr: _Trace, logits: Array, targets: IntArray, eps: float, bias_factor: float
) -> tuple[Array, Array]:
    """LRP per (step, row), and per row the relevance reaching no token (initial state + absorbed)."""
    T, H, B = tr.h.shape
    E = p.grad_back.shape[0] - H - 1
    V = ws.view
    keep = 1.0 - bias_factor  # share of bias + stabiliser that is absorbed, not redistributed
    relevance = np.zeros((T, B), ws.dtype)  # (T, B)
    absorbed = np.zeros(B, ws.dtype)  # (B,)

    # Dense layer: the target logit onto h_T; the bias share is spread over the H inputs.
    out = logits[targets, np.arange(B)]  # (B,) target logit, the relevance to explain
    out_sign = np.where(out >= 0, 1.0, -1.0)  # (B,)
    out_bias = p.dense_bias[targets] + eps * out_sign  # (B,)
    scale = out / (out + eps * out_sign)  # (B,)
    Rh_all = (tr.h[T - 1] * p.dense_t[targets].T + bias_factor * out_bias / H) * scale  # (H, B)
    Rh = Rh_all.astype(ws.dtype)  # (H, B)
    absorbed += keep * out_bias * scale
    Rc = np.zeros((H, B), ws.dtype)  # (H, B)

    zeros = np.zeros((H, B), ws.dtype)
    for t in range(T - 1, -1, -1):
        n = int(tr.active[t])
        gates = tr.gates[t, :, :n]  # (4H, n)
        i, f, g = gates[:H], gates[H : 2 * H], gates[3 * H :]  # (H, n) each
        c = tr.c[t, :, :n]  # (H, n)
        c_prev = tr.c[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        h_prev = tr.h[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        Rc_n = Rc[:, :n]  # (H, n)
        Rc_n += Rh[:, :n]  # signal-take-all: h = o * tanh(c) gives everything to c
        if t % _FLUSH_EVERY == 0:
            _flush_tiny(Rc_n, V(ws.temps[0], H, n))
        # c = f * c_prev + i * g: epsilon rule over the two summands; the gates get nothing.
        stab, den, msg = (V(buf, H, n) for buf in ws.temps)  # (H, n) each
        np.copysign(eps, c, out=stab)
        np.add(c, stab, out=den)
        np.divide(Rc_n, den, out=msg)  # m_c
        stab_c = np.einsum("hn,hn->n", msg, stab)  # (n,) stabiliser share
        Rg = den  # reuse: relevance of g
        np.multiply(i, g, out=Rg)
        Rg *= msg
        np.multiply(f, c_prev, out=stab)
        np.multiply(stab, msg, out=Rc_n)  # relevance of c_prev
        if bias_factor:
            Rc_n += bias_factor / (2 * H) * stab_c
            Rg += bias_factor / (2 * H) * stab_c
        # z_g = x W_g + h_prev U_g + b_g: epsilon rule onto x and h_prev.
        z_g = tr.z_g[t, :, :n]  # (H, n)
        np.copysign(eps, z_g, out=stab)
        np.add(z_g, stab, out=msg)
        np.divide(Rg, msg, out=msg)  # m_g
        back = V(ws.step, H + 1, n)  # (H + 1, n): [U_g m_g; b_g . m_g]
        np.matmul(p.lrp_back_g, msg, out=back)
        bias_share = np.einsum("hn,hn->n", msg, stab)  # (n,) stabiliser part ...
        bias_share += back[H]  # ... plus the bias part
        relevance[t, :n] = np.einsum("hn,hn->n", msg, tr.x[3 * H :, t, :n])
        relevance[t, :n] -= back[H]
        np.multiply(h_prev, back[:H], out=Rh[:, :n])
        if bias_factor:
            relevance[t, :n] += bias_factor * E / (E + H) * bias_share
            Rh[:, :n] += bias_factor / (E + H) * bias_share
        absorbed[:n] += keep * (stab_c + bias_share)
    # After its first step each row keeps the relevance of its zero initial state in Rh and Rc.
    rest = absorbed + Rh.sum(axis=0) + Rc.sum(axis=0)  # (B,)
    return relevance, rest


def _inner_batches(lengths: IntArray, token_budget: int, max_rows: int) -> list[IntArray]:
    """Split review indices, longest first, into batches of at most token_budget padded tokens."""
    order = np.argsort(-lengths, kind="stable")  # (N,)
    batches = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])
        rows = max(1, min(max_rows, token_budget // max(longest, 1)))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def _with_padding(explanation: Explanation, given: IntArray) -> Explanation:
    """Put exact zeros back at the padding positions of a sequence that had any."""
    read = given != PAD_ID  # (L,)
    if read.all():
        return explanation

    def spread(values: Array) -> Array:
        full = np.zeros(given.shape, values.dtype)  # (L,)
        full[read] = values
        return full

    return replace(
        explanation, lrp=spread(explanation.lrp), sa=spread(explanation.sa), gi=spread(explanation.gi)
    )


class Engine:
    """The model in NumPy, ready to explain batches of token-id sequences.

    Keeps a reusable workspace, so one engine serves one thread (workers are processes: one each).
    """

    def __init__(
        self,
        weights: ModelWeights,
        dtype: type[np.floating] = np.float32,
        eps: float = 1e-3,
        bias_factor: float = 0.0,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> None:
        if eps <= 0:
            raise ValueError("eps must be positive")
        self.weights = weights
        self.dtype = dtype
        self.eps = eps
        self.bias_factor = bias_factor
        self.token_budget = token_budget
        self.max_rows = max_rows
        self._params = _scaled_params(weights, dtype)
        self._workspace = _Workspace(weights.hidden_size, weights.embedding.shape[1], dtype)
        self.seconds = dict.fromkeys(("forward", "gradient", "lrp", "other"), 0.0)  # cumulative, per phase

    def _check(self, sequences: Sequence[Sequence[int]]) -> list[IntArray]:
        V = self.weights.vocab_size
        arrays = []
        for number, seq in enumerate(sequences):
            ids = np.asarray(seq, dtype=np.intp)  # (L,)
            if ids.ndim != 1 or not np.any(ids != PAD_ID):
                raise ValueError(f"sequence {number} is empty; every review starts with the start token")
            if ids.min() < 0 or ids.max() >= V:
                raise ValueError(f"sequence {number} has token ids outside [0, {V})")
            arrays.append(ids)
        return arrays

    def explain(
        self, sequences: Sequence[Sequence[int]], targets: Sequence[int | None] | None = None
    ) -> list[Explanation]:
        """Explain each sequence (ids as given, start token included); target None = predicted class."""
        given = self._check(sequences)
        ids = [a[a != PAD_ID] for a in given]  # padding is masked, as Embedding(mask_zero=True) does
        C = self.weights.num_classes
        if targets is not None and len(targets) != len(ids):
            raise ValueError("targets must have one entry per sequence")
        if targets is not None and any(t is not None and not 0 <= t < C for t in targets):
            raise ValueError(f"target classes must be in [0, {C})")
        lengths = np.array([a.size for a in ids], dtype=np.intp)  # (N,)
        results: list[Explanation | None] = [None] * len(ids)
        for batch in _inner_batches(lengths, self.token_budget, self.max_rows):
            wanted = None if targets is None else [targets[r] for r in batch]
            explained = self._explain_batch([ids[r] for r in batch], lengths[batch], wanted)
            for r, explanation in zip(batch, explained, strict=True):
                results[r] = _with_padding(explanation, given[r])
        return [r for r in results if r is not None]

    def _explain_batch(
        self, ids: list[IntArray], lengths: IntArray, wanted: list[int | None] | None
    ) -> list[Explanation]:
        """One right-aligned batch, rows sorted longest first."""
        p, ws = self._params, self._workspace
        started = time.perf_counter()
        B, T = len(ids), int(lengths[0])
        ws.ensure(slots=T * B, rows=B)
        tokens = np.zeros((T, B), dtype=np.intp)  # (T, B) left padding is never read
        for j, seq in enumerate(ids):
            tokens[T - seq.size :, j] = seq
        active = np.searchsorted(-lengths, -(T - np.arange(T)), side="right")  # (T,)
        forward_start = time.perf_counter()
        trace = _forward(p, ws, tokens, active)
        forward_end = time.perf_counter()
        logits = p.dense_t @ trace.h[T - 1] + p.dense_bias[:, None]  # (C, B)
        shifted = np.exp(logits - logits.max(axis=0))  # (C, B)
        probabilities = shifted / shifted.sum(axis=0)  # (C, B)
        predicted = logits.argmax(axis=0)  # (B,)
        targets = predicted.copy()  # (B,)
        if wanted is not None:
            for j, target in enumerate(wanted):
                if target is not None:
                    targets[j] = target
        gradient_start = time.perf_counter()
        sa, gi = _gradients(p, ws, trace, targets)  # (T, B) each
        lrp_start = time.perf_counter()
        lrp, rest = _lrp(p, ws, trace, logits, targets, self.eps, self.bias_factor)  # (T, B), (B,)
        lrp_end = time.perf_counter()
        sa, gi, lrp = sa.T.copy(), gi.T.copy(), lrp.T.copy()  # (B, T) each, rows contiguous
        logits, probabilities = logits.T.copy(), probabilities.T.copy()  # (B, C) each
        explanations = [
            Explanation(
                logits=logits[j],
                probabilities=probabilities[j],
                predicted_class=int(predicted[j]),
                target_class=int(targets[j]),
                lrp=lrp[j, T - L :],
                sa=sa[j, T - L :],
                gi=gi[j, T - L :],
                lrp_rest=float(rest[j]),
            )
            for j, L in enumerate(lengths.tolist())
        ]
        self.seconds["forward"] += forward_end - forward_start
        self.seconds["gradient"] += lrp_start - gradient_start
        self.seconds["lrp"] += lrp_end - lrp_start
        self.seconds["other"] += (forward_start - started) + (gradient_start - forward_end)
        self.seconds["other"] += time.perf_counter() - lrp_end
        return explanations


def truncate(token_ids: Sequence[int], max_length: int, keep: str) -> tuple[list[int], bool]:
    """The ids the model reads (keep="start": the first max_length) and whether anything was cut."""
    if len(token_ids) <= max_length:
        return list(token_ids), False
    kept = token_ids[:max_length] if keep == "start" else token_ids[-max_length:]
    return list(kept), True
