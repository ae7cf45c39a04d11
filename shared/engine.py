"""Batched NumPy LSTM with three word-level explanations: LRP (epsilon, signal-take-all), SA and GI.

Model: Embedding(V, E) -> LSTM(H) (Keras layout, gates i, f, c, o) -> Dense(C) logits. Imports NumPy only.

How it is fast (see ../shared/notes/engine-performance.md for the measurements behind these choices):
- Reviews are sorted by length and left-aligned to a common end, so at every time step the reviews still
  running form a prefix of the batch: no work is ever done on padding, and padding cannot leak anywhere.
- Arrays are feature-major, (features, batch): each gate is a contiguous row block of the (4H, n)
  pre-activations, so element-wise gate arithmetic runs on contiguous memory.
- The input projection embedding @ kernel + bias is a precomputed (V, 4H) table, gathered once per batch.
- One exp for all four gates: the cell-candidate rows of the weights are doubled so that
  tanh(z) = 2 * sigmoid(2z) - 1. All gradients are taken with respect to these scaled pre-activations.
- GI and the LRP token totals need no extra matrix product: sum_e x_e * (W dz)_e = dz . (x W), and x W is
  the gathered table minus the bias. SA needs dx = W dz, fused with the recurrent product dh = U dz.

LRP follows Arras et al. 2017 ("Explaining Recurrent Neural Network Predictions in Sentiment Analysis"):
epsilon rule on every linear map (stabiliser eps * sign(denominator), sign(0) = +1), the bias and stabiliser
share redistributed over the layer inputs with weight `bias_factor`, and "signal-take-all" for products:
h = o * tanh(c) gives all relevance to c, and c = f * c_prev + i * g gives the two summands' relevance to
c_prev and g only. Relevance starts at the target logit. `lrp_rest` is what reaches no token: the relevance
left at the zero initial state plus what the biases and stabilisers absorb (when bias_factor < 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from shared.weights import ModelWeights

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]

PAD_ID = 0  # as in keras.datasets.imdb
DEFAULT_TOKEN_BUDGET = 48_000  # tokens per inner batch: ~12 H floats each, so ~150 MB at H = 64
DEFAULT_MAX_ROWS = 384  # reviews per inner batch; wider matrices gain little at H = 64


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
    """Weights rearranged for the feature-major loops; cell-candidate rows scaled by 2 (see module doc)."""

    table: Array  # (V, 4H) embedding @ kernel + bias, scaled
    bias: Array  # (4H,) scaled
    recurrent_t: Array  # (4H, H) U^T, scaled: z += recurrent_t @ h
    grad_back: Array  # (H + E + 1, 4H) [U; W; b^T] scaled: dh, dx and b . dz from one product
    lrp_back_g: Array  # (H + 1, H) [U_g; b_g^T] scaled: LRP messages to h_prev and the bias share
    dense_t: Array  # (C, H)
    dense_bias: Array  # (C,)


def _scaled_params(weights: ModelWeights, dtype: type[np.floating]) -> _Params:
    H = weights.hidden_size
    scale = np.ones(4 * H)  # (4H,)
    scale[2 * H : 3 * H] = 2.0
    kernel = weights.lstm_kernel * scale  # (E, 4H)
    recurrent = weights.lstm_recurrent_kernel * scale  # (H, 4H)
    bias = weights.lstm_bias * scale  # (4H,)
    table = weights.embedding @ kernel + bias  # (V, 4H)
    grad_back = np.concatenate([recurrent, kernel, bias[None, :]], axis=0)  # (H + E + 1, 4H)
    g = slice(2 * H, 3 * H)
    lrp_back_g = np.concatenate([recurrent[:, g], bias[None, g]], axis=0)  # (H + 1, H)

    def cast(a: Array) -> Array:
        return np.ascontiguousarray(a, dtype=dtype)

    return _Params(
        table=cast(table),
        bias=cast(bias),
        recurrent_t=cast(recurrent.T),
        grad_back=cast(grad_back),
        lrp_back_g=cast(lrp_back_g),
        dense_t=cast(weights.dense_kernel.T),
        dense_bias=cast(weights.dense_bias),
    )


@dataclass
class _Trace:
    """What the forward pass keeps for the two backward passes, time-major, (T, features, B)."""

    x: Array  # (T, 4H, B) gathered input projections (scaled, bias included)
    gates: Array  # (T, 4H, B) activations i, f, g, o
    z_g: Array  # (T, H, B) scaled cell-candidate pre-activation
    c: Array  # (T, H, B) cell state
    tanh_c: Array  # (T, H, B)
    h: Array  # (T, H, B) hidden state
    active: IntArray  # (T,) rows running at each step (a prefix of the batch)


def _sigmoid_into(z: Array, out: Array) -> None:
    """out = 1 / (1 + exp(-z)), overwriting z."""
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += 1.0
    np.reciprocal(z, out=out)


def _forward(p: _Params, tokens: IntArray, active: IntArray) -> _Trace:
    """Run the LSTM over a left-aligned batch; tokens (T, B), rows [0, active[t]) run at step t."""
    T, B = tokens.shape
    H = p.recurrent_t.shape[1]
    dtype = p.table.dtype
    x = np.take(p.table, tokens, axis=0, mode="clip")  # (T, B, 4H)
    x = np.ascontiguousarray(x.transpose(0, 2, 1))  # (T, 4H, B)
    trace = _Trace(
        x=x,
        gates=np.empty((T, 4 * H, B), dtype),
        z_g=np.empty((T, H, B), dtype),
        c=np.zeros((T, H, B), dtype),
        tanh_c=np.empty((T, H, B), dtype),
        h=np.zeros((T, H, B), dtype),
        active=active,
    )
    zeros = np.zeros((H, B), dtype)  # (H, B) the initial state
    for t in range(T):
        n = int(active[t])
        h_prev = trace.h[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        c_prev = trace.c[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        z = p.recurrent_t @ h_prev  # (4H, n)
        z += x[t, :, :n]  # (4H, n)
        trace.z_g[t, :, :n] = z[2 * H : 3 * H]  # (H, n)
        gates = trace.gates[t, :, :n]  # (4H, n)
        _sigmoid_into(z, gates)
        i, f, g, o = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]  # (H, n) each
        g *= 2.0
        g -= 1.0  # tanh of the unscaled pre-activation
        c = trace.c[t, :, :n]  # (H, n)
        np.multiply(f, c_prev, out=c)
        c += i * g
        tanh_c = trace.tanh_c[t, :, :n]  # (H, n)
        np.tanh(c, out=tanh_c)
        np.multiply(o, tanh_c, out=trace.h[t, :, :n])
    return trace


def _gradients(p: _Params, tr: _Trace, targets: IntArray) -> tuple[Array, Array]:
    """SA and GI per (step, row): d(target logit)/d(embedding) by backpropagation through time."""
    T, H, B = tr.h.shape
    dtype = tr.h.dtype
    E = p.grad_back.shape[0] - H - 1
    sa = np.zeros((T, B), dtype)  # (T, B)
    gi = np.zeros((T, B), dtype)  # (T, B)
    dh = np.ascontiguousarray(p.dense_t[targets].T)  # (H, B) d logit / d h_T
    dc = np.zeros((H, B), dtype)  # (H, B)
    zeros = np.zeros((H, B), dtype)
    for t in range(T - 1, -1, -1):
        n = int(tr.active[t])
        gates = tr.gates[t, :, :n]  # (4H, n)
        i, f, g, o = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H], gates[3 * H :]  # (H, n) each
        tanh_c = tr.tanh_c[t, :, :n]  # (H, n)
        c_prev = tr.c[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        dh_n, dc_n = dh[:, :n], dc[:, :n]  # (H, n)
        dz = np.empty((4 * H, n), dtype)  # (4H, n) gradient w.r.t. the scaled pre-activations
        do = dz[3 * H :]
        np.multiply(dh_n, tanh_c, out=do)  # d o
        dh_n *= o
        dh_n *= 1.0 - tanh_c * tanh_c
        dc_n += dh_n  # d c
        np.multiply(dc_n, g, out=dz[:H])  # d i
        np.multiply(dc_n, c_prev, out=dz[H : 2 * H])  # d f
        np.multiply(dc_n, i, out=dz[2 * H : 3 * H])  # d g
        dc_n *= f  # d c_prev
        dz[:H] *= i * (1.0 - i)  # sigmoid derivatives
        dz[H : 2 * H] *= f * (1.0 - f)
        do *= o * (1.0 - o)
        dz[2 * H : 3 * H] *= (1.0 - g * g) * 0.5  # tanh derivative, and z_g' = 2 z_g
        back = p.grad_back @ dz  # (H + E + 1, n): [dh_prev; dx; b . dz]
        dh[:, :n] = back[:H]
        dx = back[H : H + E]  # (E, n)
        sa[t, :n] = np.einsum("en,en->n", dx, dx)
        gi[t, :n] = np.einsum("kn,kn->n", dz, tr.x[t, :, :n]) - back[H + E]
    return sa, gi


def _lrp(
    p: _Params, tr: _Trace, logits: Array, targets: IntArray, eps: float, bias_factor: float
) -> tuple[Array, Array]:
    """LRP per (step, row), and per row the relevance reaching no token (initial state + absorbed)."""
    T, H, B = tr.h.shape
    dtype = tr.h.dtype
    E = p.grad_back.shape[0] - H - 1
    keep = 1.0 - bias_factor  # share of bias + stabiliser that is absorbed, not redistributed
    relevance = np.zeros((T, B), dtype)  # (T, B)
    absorbed = np.zeros(B, dtype)  # (B,)

    # Dense layer: the target logit onto h_T; the bias share is spread over the H inputs.
    out = logits[targets, np.arange(B)]  # (B,) target logit, the relevance to explain
    out_sign = np.where(out >= 0, 1.0, -1.0)  # (B,)
    out_bias = p.dense_bias[targets] + eps * out_sign  # (B,)
    scale = out / (out + eps * out_sign)  # (B,)
    Rh = (tr.h[T - 1] * p.dense_t[targets].T + bias_factor * out_bias / H) * scale  # (H, B)
    absorbed += keep * out_bias * scale
    Rc = np.zeros((H, B), dtype)  # (H, B)

    zeros = np.zeros((H, B), dtype)
    for t in range(T - 1, -1, -1):
        n = int(tr.active[t])
        gates = tr.gates[t, :, :n]  # (4H, n)
        i, f, g = gates[:H], gates[H : 2 * H], gates[2 * H : 3 * H]  # (H, n) each
        c = tr.c[t, :, :n]  # (H, n)
        c_prev = tr.c[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        h_prev = tr.h[t - 1, :, :n] if t else zeros[:, :n]  # (H, n)
        Rc_n = Rc[:, :n]  # (H, n)
        Rc_n += Rh[:, :n]  # signal-take-all: h = o * tanh(c) gives everything to c
        # c = f * c_prev + i * g: epsilon rule over the two summands; the gates get nothing.
        sign_c = np.copysign(1.0, c)  # (H, n)
        m_c = Rc_n / (c + eps * sign_c)  # (H, n)
        stab_c = eps * np.einsum("hn,hn->n", m_c, sign_c)  # (n,) stabiliser share
        Rg = i * g * m_c  # (H, n)
        np.multiply(f * c_prev, m_c, out=Rc_n)  # relevance of c_prev
        if bias_factor:
            Rc_n += bias_factor * stab_c / (2 * H)
            Rg += bias_factor * stab_c / (2 * H)
        # z_g = x W_g + h_prev U_g + b_g (all scaled by 2): epsilon rule onto x and h_prev.
        z_g = tr.z_g[t, :, :n]  # (H, n)
        sign_g = np.copysign(1.0, z_g)  # (H, n)
        m_g = Rg / (z_g + 2.0 * eps * sign_g)  # (H, n)
        back = p.lrp_back_g @ m_g  # (H + 1, n): [U_g m_g; b_g . m_g]
        bias_share = back[H] + 2.0 * eps * np.einsum("hn,hn->n", m_g, sign_g)  # (n,)
        relevance[t, :n] = np.einsum("hn,hn->n", m_g, tr.x[t, 2 * H : 3 * H, :n]) - back[H]
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
    """The model in NumPy, ready to explain batches of token-id sequences."""

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
        """One left-aligned batch, rows sorted longest first."""
        p = self._params
        B, T = len(ids), int(lengths[0])
        tokens = np.zeros((T, B), dtype=np.intp)  # (T, B) left padding is never read
        for j, seq in enumerate(ids):
            tokens[T - seq.size :, j] = seq
        active = np.searchsorted(-lengths, -(T - np.arange(T)), side="right")  # (T,)
        trace = _forward(p, tokens, active)
        logits = p.dense_t @ trace.h[T - 1] + p.dense_bias[:, None]  # (C, B)
        shifted = np.exp(logits - logits.max(axis=0))  # (C, B)
        probabilities = shifted / shifted.sum(axis=0)  # (C, B)
        predicted = logits.argmax(axis=0)  # (B,)
        targets = predicted.copy()  # (B,)
        if wanted is not None:
            for j, target in enumerate(wanted):
                if target is not None:
                    targets[j] = target
        sa, gi = _gradients(p, trace, targets)  # (T, B) each
        lrp, rest = _lrp(p, trace, logits, targets, self.eps, self.bias_factor)  # (T, B), (B,)
        sa, gi, lrp = sa.T.copy(), gi.T.copy(), lrp.T.copy()  # (B, T) each
        return [
            Explanation(
                logits=logits[:, j],
                probabilities=probabilities[:, j],
                predicted_class=int(predicted[j]),
                target_class=int(targets[j]),
                lrp=lrp[j, T - L :],
                sa=sa[j, T - L :],
                gi=gi[j, T - L :],
                lrp_rest=float(rest[j]),
            )
            for j, L in enumerate(lengths.tolist())
        ]


def truncate(token_ids: Sequence[int], max_length: int, keep: str) -> tuple[list[int], bool]:
    """The ids the model reads (keep="start": the first max_length) and whether anything was cut."""
    if len(token_ids) <= max_length:
        return list(token_ids), False
    kept = token_ids[:max_length] if keep == "start" else token_ids[-max_length:]
    return list(kept), True
