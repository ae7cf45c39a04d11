"""Batched NumPy LSTM with three word-level explanations of one logit: LRP, SA and GI. Imports NumPy only.

The model: Embedding(vocabulary, E) -> LSTM(H) (Keras layout, gates i, f, c, o) -> Dense(C) logits. With x_t
the embedding of token t, the forward pass is

    z_t = x_t W + h_{t-1} U + b,    i, f, o = sigmoid(z_i, z_f, z_o),    g = tanh(z_g)
    c_t = f * c_{t-1} + i * g,      h_t = o * tanh(c_t),                  logits = h_T D + d

from h_0 = c_0 = 0. Each review is explained for one target logit y = logits[k]:
- SA_t = |dy/dx_t|^2 and GI_t = dy/dx_t . x_t, with the gradient by backpropagation through time.
- LRP as in Arras et al. 2017, "Explaining Recurrent Neural Network Predictions in Sentiment Analysis".
  Relevance starts as R = y at the logit and flows back by two rules. The epsilon rule, for every linear
  map y_j = sum_i a_i w_ij + b_j with N inputs and the stabiliser s_j = eps sign(y_j), sign(0) = +1:
      R_i = sum_j (a_i w_ij + bias_factor (b_j + s_j) / N) / (y_j + s_j) R_j
  Signal-take-all, for the products: h = o * tanh(c) gives all of R(h) to c, and c = f * c_prev + i * g
  passes R(c), by the epsilon rule over its two terms, to c_prev and to g (the gates i, f, o get nothing);
  g passes its share through its pre-activation z_g to x_t and h_{t-1}. A token's LRP is what reaches x_t.
  Each rule passes on what it receives less what the bias and stabiliser terms keep (all of their share
  when bias_factor = 0, none when 1). So `lrp_rest`, what reaches no token (what they keep plus what
  arrives at the zero initial state), is y - sum(lrp).

How the work is laid out (scripts/bench_engine.py measures it against the previous engine):
- Reviews are sorted by length and right-aligned to a common last step, so at every step the reviews still
  running form a prefix of the batch: no work is done on padding, and nothing can leak into it.
- Arrays are token-major, (rows, H) per quantity, and each gate has its own contiguous (n, H) block: the
  rows running at the next step back are a contiguous prefix of every array, every element-wise pass runs
  over contiguous memory, and every table gather copies whole rows.
- The trace the forward pass keeps is packed: step t holds one contiguous block of its n_t running rows
  per kind of quantity, so padding takes neither work nor memory, and an inner batch is bounded by its
  reviews' own tokens. (The feature-major layout before, with (features, T, rows) arrays sliced per step,
  ran each pass over scattered rows of memory and was about 1.3x slower.)
- The input term x_t W + b is gathered from a precomputed (4, vocabulary, H) table, one block per gate.
- Large arrays live in a workspace reused across batches: fresh memory pages cost more than the work here.

Precision: in float32 the target logit y carries a rounding error of about 1e-7 times the terms it sums,
and every LRP value scales with y / (y + s). When |y| is as small as eps that error is large relative to y:
on the 25,000 IMDB test reviews, float32 LRP was within 1e-4 (relative to the review's largest |value|) of
float64 except on 8 reviews, all with |y| < 3.5e-3 (worst 4.7e-3 at |y| = 8e-5). So a float32 engine
explains every review with |y| < FLOAT64_BELOW_EPS * eps (78 of those 25,000) again in float64, and that
Explanation says so (`float64`).
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

DEFAULT_TOKEN_BUDGET = 120_000  # tokens per inner batch (padding takes no room): 7 H floats each in the
# trace, ~215 MB at H = 64; it holds a typical call of 500 reviews at once
DEFAULT_MAX_ROWS = 512  # reviews per inner batch
FLOAT64_BELOW_EPS = 10.0  # float32 reviews whose |target logit| < this * eps are explained again in float64
_KERAS_TO_IFOG = (0, 1, 3, 2)  # Keras stores the gates as i, f, c, o; the engine uses i, f, o, g (g = c)
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
    float64: bool = False  # explained in float64 because the target logit is too small for float32 LRP


@dataclass(frozen=True)
class _Weights:
    """The weights laid out for the token-major loops, gates in the order i, f, o, g.

    The i, f and o rows are stored negated. Their pre-activation then comes out as -z, and
    sigmoid(z) = 1 / (1 + exp(-z)) is one exp, one +1 and one reciprocal over one contiguous 3H block, with no
    negation per step. The gradient with respect to the stored -z is -sigmoid'(z) = s (s - 1), and the
    products with the negated weights turn it back into the true gradients of x_t and h_{t-1}. LRP uses only
    the g rows, which keep their signs.
    """

    input_tables: Array  # (4, vocabulary, H) embedding W_k + b_k per gate k: the input term of z_t
    input_table_g: Array  # (vocabulary, H) embedding W_g: the part of z_g that LRP gives to the token
    embedding: Array  # (vocabulary, E)
    recurrent: Array  # (4, H, H) per gate U_k: z_k gets h_{t-1} U_k
    gradient_back: Array  # (4H, H + E) [U^T  W^T]: dz_t (n, 4H) gives [dh_{t-1}  dx_t] in one product
    lrp_back_g: Array  # (H, H + 1) [U_g^T  b_g]: messages of z_g give h_{t-1}'s share and the bias share
    dense: Array  # (H, C) D
    dense_bias: Array  # (C,) d


def _prepare_weights(weights: ModelWeights, dtype: type[np.floating]) -> _Weights:
    """Reorder the gates to i, f, o, g, negate i, f, o (see _Weights) and cast to the engine's dtype."""
    H = weights.hidden_size
    order = np.concatenate([np.arange(k * H, (k + 1) * H) for k in _KERAS_TO_IFOG])  # (4H,)
    sign = np.concatenate([-np.ones(3 * H), np.ones(H)])  # (4H,) negate i, f, o
    kernel = weights.lstm_kernel[:, order] * sign  # (E, 4H)
    recurrent = weights.lstm_recurrent_kernel[:, order] * sign  # (H, 4H)
    bias = weights.lstm_bias[order] * sign  # (4H,)
    input_table = weights.embedding @ kernel + bias  # (vocabulary, 4H)
    g = slice(3 * H, 4 * H)

    def cast(a: Array) -> Array:
        return np.ascontiguousarray(a, dtype=dtype)

    return _Weights(
        input_tables=cast(input_table.reshape(-1, 4, H).transpose(1, 0, 2)),
        input_table_g=cast(weights.embedding @ kernel[:, g]),
        embedding=cast(weights.embedding),
        recurrent=cast(recurrent.reshape(H, 4, H).transpose(1, 0, 2)),
        gradient_back=cast(np.concatenate([recurrent.T, kernel.T], axis=1)),
        lrp_back_g=cast(np.concatenate([recurrent[:, g].T, bias[g, None]], axis=1)),
        dense=cast(weights.dense_kernel),
        dense_bias=cast(weights.dense_bias),
    )


def _view(buffer: Array, *shape: int) -> Array:
    """The first prod(shape) elements of a flat buffer, with that shape."""
    return buffer[: math.prod(shape)].reshape(shape)


def _blocks(buffer: Array, features: int, widths: IntArray, hidden: int) -> list[Array]:
    """Consecutive contiguous (features, width, hidden) blocks of a flat buffer, one per entry of `widths`."""
    ends = features * hidden * np.cumsum(widths)  # (len(widths),)
    starts = ends - features * hidden * widths  # (len(widths),)
    return [
        buffer[start:end].reshape(features, width, hidden)
        for start, end, width in zip(starts.tolist(), ends.tolist(), widths.tolist(), strict=True)
    ]


class _Workspace:
    """Flat buffers reused by every batch (one engine per thread), each with one purpose."""

    def __init__(self, hidden: int, embed: int, dtype: type[np.floating]) -> None:
        self.hidden, self.embed, self.dtype = hidden, embed, dtype
        self.tokens = self.rows = self.states = 0
        self.ensure(tokens=1, rows=1)

    def ensure(self, tokens: int, rows: int) -> None:
        """Grow the buffers to hold a batch of `tokens` tokens (padding takes no room) and `rows` reviews."""
        H, E, dtype = self.hidden, self.embed, self.dtype
        if tokens > self.tokens:
            self.tokens = tokens
            self.gates = np.empty(5 * H * tokens, dtype)  # i, f, o, g and z_g of every step
        if tokens + rows > self.states:
            self.states = tokens + rows
            self.state = np.empty(2 * H * self.states, dtype)  # c_{t-1}, h_{t-1} of every step; c_T, h_T
        if rows > self.rows:
            self.rows = rows
            self.inputs = np.empty(4 * rows * H, dtype)  # (4, n, H) x_t W + b of one step
            self.z = np.empty(4 * rows * H, dtype)  # (4, n, H) pre-activations of one step
            self.i_g = np.empty(rows * H, dtype)  # i * g
            self.tanh_c = np.empty(rows * H, dtype)  # tanh(c_t) of one step
            self.dz = np.empty(rows * 4 * H, dtype)  # (n, 4H) dy/dz of one step
            self.gradient_product = np.empty(rows * (H + E), dtype)  # (n, H + E) [dh_{t-1}  dx_t]
            self.embedded = np.empty(rows * E, dtype)  # (n, E) x_t
            self.output_slope = np.empty(rows * H, dtype)  # o (1 - tanh(c)^2)
            self.tanh_slope = np.empty(rows * H, dtype)  # 1 - g^2
            self.sigmoid_slope = np.empty(3 * rows * H, dtype)  # (3, n, H) s (s - 1) of i, f, o
            self.flush_scratch = np.empty(rows * H, dtype)  # (n, H) |values| in _flush_tiny
            self.stabiliser = np.empty(rows * H, dtype)  # eps sign(pre-activation) of the epsilon rule
            self.message = np.empty(rows * H, dtype)  # R / (pre-activation + stabiliser)
            self.relevance_g = np.empty(rows * H, dtype)  # (n, H) R(g)
            self.f_c_prev = np.empty(rows * H, dtype)  # f * c_{t-1}
            self.lrp_product = np.empty(rows * (H + 1), dtype)  # (n, H + 1) [m_g U_g^T  b_g . m_g]
            self.input_g = np.empty(rows * H, dtype)  # (n, H) x_t W_g


@dataclass
class _Trace:
    """What the forward pass keeps for the backward passes, one contiguous block per step, token-major.

    Step t runs rows [0, n_t) with n_t = active[t]; each of its blocks is (quantities, n_t, H). Packed this
    way the trace holds no padding, every pass over a step streams one contiguous stretch of memory, and the
    rows running at the next step back are a contiguous prefix of every (n, H) array.
    """

    tokens: IntArray  # (T, B) right-aligned token ids
    gates: list[Array]  # T blocks (5, n_t, H): i, f, o, g and the pre-activation z_g
    state: list[Array]  # T + 1 blocks (2, n_t, H): c_{t-1}, h_{t-1} (0 for rows starting at t); c_T, h_T
    active: IntArray  # (T,)


def _flush_tiny(values: Array, scratch: Array) -> None:
    """Zero entries below 1e7 * sqrt(smallest normal number): 1e-12 in float32, 1e-147 in float64.

    Backward signals of distant tokens vanish geometrically; once they (or their squares, for SA) are
    subnormal, every operation on them runs many times slower. Such values are far below the float32
    resolution of any logit or relevance the engine reports.
    """
    np.abs(values, out=scratch)
    np.copyto(values, 0.0, where=scratch < math.sqrt(np.finfo(values.dtype).tiny) * 1e7)


def _lstm_step(w: _Weights, ws: _Workspace, tr: _Trace, t: int) -> None:
    """Forward step t over its n running rows, written into the trace:

    z = x_t W + h_{t-1} U + b;  i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g)
    c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)
    """
    gates, state, state_next = tr.gates[t], tr.state[t], tr.state[t + 1]  # (5, n, H), (2, n, H), (2, n', H)
    n, H = state.shape[1:]
    c_prev, h_prev = state  # (n, H) each
    inputs = _view(ws.inputs, 4, n, H)  # (4, n, H)
    np.take(w.input_tables, tr.tokens[t, :n], axis=1, out=inputs, mode="clip")
    z = _view(ws.z, 4, n, H)  # (4, n, H) with -z for i, f, o
    np.matmul(h_prev, w.recurrent, out=z)
    z += inputs
    negated_ifo = z[:3]  # (3, n, H)
    np.exp(negated_ifo, out=negated_ifo)
    negated_ifo += 1.0
    np.divide(1.0, negated_ifo, out=gates[:3])  # sigmoid = 1 / (1 + exp(-z))
    gates[4] = z[3]  # z_g, for LRP
    np.tanh(z[3], out=gates[3])
    i, f, o, g = gates[:4]  # (n, H) each
    c, h = state_next[0, :n], state_next[1, :n]  # (n, H) each
    np.multiply(f, c_prev, out=c)
    i_g = _view(ws.i_g, n, H)  # (n, H)
    np.multiply(i, g, out=i_g)
    c += i_g
    tanh_c = _view(ws.tanh_c, n, H)  # (n, H)
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)
    state_next[:, n:] = 0.0  # the rows that start at step t + 1 start from the zero state


def _forward(w: _Weights, ws: _Workspace, tokens: IntArray, active: IntArray) -> _Trace:
    """Run the LSTM over a right-aligned batch: tokens (T, B), rows [0, active[t]) run at step t."""
    T, B = tokens.shape
    H = w.recurrent.shape[1]
    tr = _Trace(
        tokens=tokens,
        gates=_blocks(ws.gates, 5, active, H),
        state=_blocks(ws.state, 2, np.append(active, B), H),
        active=active,
    )
    tr.state[0][...] = 0.0  # (2, n_0, H)
    for t in range(T):
        _lstm_step(w, ws, tr, t)
    return tr


def _gradient_step(
    w: _Weights, ws: _Workspace, tr: _Trace, t: int, dh: Array, dc: Array
) -> tuple[Array, Array]:
    """Backpropagation through step t over its n running rows; returns (SA_t, GI_t), each (n,).

    On entry dh = dy/dh_t and dc = the part of dy/dc_t that comes from step t + 1; on exit they hold
    dy/dh_{t-1} and the part of dy/dc_{t-1} that comes from step t:
        dy/do = dh tanh(c_t);  dy/dc_t = dc + dh o (1 - tanh(c_t)^2)
        dy/di = dy/dc_t g;  dy/df = dy/dc_t c_{t-1};  dy/dg = dy/dc_t i;  dy/dc_{t-1} = dy/dc_t f
        dz = dy/d(gate) * gate'(z),  [dh_{t-1}  dx_t] = dz [U^T  W^T]
        SA_t = |dx_t|^2,  GI_t = dx_t . x_t
    """
    n, H = dh.shape
    E = w.gradient_back.shape[1] - H
    i, f, o, g = tr.gates[t][:4]  # (n, H) each
    c_prev = tr.state[t][0]  # (n, H)
    c, h = tr.state[t + 1][0, :n], tr.state[t + 1][1, :n]  # (n, H) each
    tanh_c = _view(ws.tanh_c, n, H)  # (n, H) recomputed: cheaper than storing it
    np.tanh(c, out=tanh_c)
    dz = _view(ws.dz, n, 4 * H)  # (n, 4H) with respect to the stored pre-activations (-z for i, f, o)
    dz_by_gate = dz.reshape(n, 4, H).transpose(1, 0, 2)  # (4, n, H) view
    np.multiply(dh, tanh_c, out=dz_by_gate[2])  # dy/do
    output_slope = _view(ws.output_slope, n, H)  # (n, H) o (1 - tanh(c)^2) = o - h tanh(c)
    np.multiply(h, tanh_c, out=output_slope)
    np.subtract(o, output_slope, out=output_slope)
    output_slope *= dh
    dc += output_slope  # dy/dc_t
    np.multiply(dc, g, out=dz_by_gate[0])  # dy/di
    np.multiply(dc, c_prev, out=dz_by_gate[1])  # dy/df
    np.multiply(dc, i, out=dz_by_gate[3])  # dy/dg
    dc *= f  # dy/dc_{t-1} through the cell
    sigmoid_slope = _view(ws.sigmoid_slope, 3, n, H)  # (3, n, H) s (s - 1), the slope for -z
    np.subtract(tr.gates[t][:3], 1.0, out=sigmoid_slope)
    sigmoid_slope *= tr.gates[t][:3]
    dz_by_gate[:3] *= sigmoid_slope
    tanh_slope = _view(ws.tanh_slope, n, H)  # (n, H) 1 - g^2
    np.multiply(g, g, out=tanh_slope)
    np.subtract(1.0, tanh_slope, out=tanh_slope)
    dz_by_gate[3] *= tanh_slope
    product = _view(ws.gradient_product, n, H + E)  # (n, H + E) [dh_{t-1}  dx_t]
    np.matmul(dz, w.gradient_back, out=product)
    dh[...] = product[:, :H]
    dx = product[:, H:]  # (n, E)
    embedded = _view(ws.embedded, n, E)  # (n, E)
    np.take(w.embedding, tr.tokens[t, :n], axis=0, out=embedded, mode="clip")
    sa: Array = np.einsum("ne,ne->n", dx, dx)  # (n,)
    gi: Array = np.einsum("ne,ne->n", dx, embedded)  # (n,)
    return sa, gi


def _gradients(w: _Weights, ws: _Workspace, tr: _Trace, targets: IntArray) -> tuple[Array, Array]:
    """SA and GI per (step, row), each (T, B), from dy/dh_T = D_k, step by step back to the first token."""
    T, (B, H) = len(tr.active), tr.state[-1].shape[1:]
    sa = np.zeros((T, B), ws.dtype)  # (T, B)
    gi = np.zeros((T, B), ws.dtype)  # (T, B)
    dh = np.ascontiguousarray(w.dense.T[targets])  # (B, H) dy/dh_T
    dc = np.zeros((B, H), ws.dtype)  # (B, H)
    for t in range(T - 1, -1, -1):
        n = int(tr.active[t])
        if t % _FLUSH_EVERY == 0:
            _flush_tiny(dh[:n], _view(ws.flush_scratch, n, H))
            _flush_tiny(dc[:n], _view(ws.flush_scratch, n, H))
        sa[t, :n], gi[t, :n] = _gradient_step(w, ws, tr, t, dh[:n], dc[:n])
    return sa, gi


@dataclass(frozen=True)
class _EpsilonRule:
    """The epsilon rule's constants: eps, and the bits that give eps the sign of a value (see `messages`)."""

    eps: float
    bias_factor: float
    eps_bits: npt.NDArray[np.unsignedinteger]  # () eps as an unsigned integer of the engine's float width
    sign_bit: npt.NDArray[np.unsignedinteger]  # () the sign bit of that width

    @staticmethod
    def of(eps: float, bias_factor: float, dtype: type[np.floating]) -> _EpsilonRule:
        bits = np.dtype(f"u{np.dtype(dtype).itemsize}")
        eps_bits = np.array(eps, dtype).view(bits)  # ()
        sign_bit = np.array(-0.0, dtype).view(bits)  # ()
        return _EpsilonRule(eps, bias_factor, eps_bits, sign_bit)

    def messages(self, relevance: Array, pre_activation: Array, stabiliser: Array, message: Array) -> None:
        """The epsilon rule's step shared by all inputs of y_j: stabiliser s_j = eps sign(y_j), sign(+0) = 1,
        and message m_j = R_j / (y_j + s_j). Input a_i w_ij then receives a_i w_ij m_j; the bias and
        stabiliser (b_j + s_j) m_j.

        s_j is made by copying the sign bit of y_j onto the bits of eps: np.copysign does the same, but NumPy
        does not vectorise it, and it was the slowest pass of the LRP step.
        """
        bits = stabiliser.view(self.eps_bits.dtype)
        np.bitwise_and(pre_activation.view(bits.dtype), self.sign_bit, out=bits)
        np.bitwise_or(bits, self.eps_bits, out=bits)
        np.add(pre_activation, stabiliser, out=message)
        np.divide(relevance, message, out=message)


def _lrp_step(
    w: _Weights,
    ws: _Workspace,
    tr: _Trace,
    t: int,
    relevance_h: Array,
    relevance_c: Array,
    rule: _EpsilonRule,
) -> Array:
    """LRP through step t over its n running rows; returns the relevance of x_t (n,).

    On entry relevance_h = R(h_t) and relevance_c = the part of R(c_t) from step t + 1; on exit they hold
    R(h_{t-1}) and R(c_{t-1}):
        signal-take-all:  R(c_t) += R(h_t)
        epsilon rule on c_t = f c_{t-1} + i g (2H inputs, identity weights, no bias):
            m_c = R(c_t) / (c_t + s_c);  R(c_{t-1}) = f c_{t-1} m_c;  R(g) = i g m_c
        epsilon rule on z_g = x_t W_g + h_{t-1} U_g + b_g (E + H inputs):
            m_g = R(g) / (z_g + s_g);  R(x_t) = sum x_t W_g m_g;  R(h_{t-1}) = h_{t-1} U_g m_g
    and, when bias_factor > 0, every input also receives bias_factor / (number of inputs) of its map's bias
    and stabiliser terms, summed over the units.
    """
    n, H = relevance_h.shape
    E = w.embedding.shape[1]
    i, f, _, g, z_g = tr.gates[t]  # (n, H) each
    c_prev, h_prev = tr.state[t]  # (n, H) each
    c = tr.state[t + 1][0, :n]  # (n, H)
    stabiliser = _view(ws.stabiliser, n, H)  # (n, H)
    message = _view(ws.message, n, H)  # (n, H)
    relevance_g = _view(ws.relevance_g, n, H)  # (n, H)
    f_c_prev = _view(ws.f_c_prev, n, H)  # (n, H)
    product = _view(ws.lrp_product, n, H + 1)  # (n, H + 1) [m_g U_g^T  b_g . m_g]

    relevance_c += relevance_h  # signal-take-all
    rule.messages(relevance_c, c, stabiliser, message)  # m_c
    np.multiply(i, g, out=relevance_g)
    relevance_g *= message
    np.multiply(f, c_prev, out=f_c_prev)
    np.multiply(f_c_prev, message, out=relevance_c)  # R(c_{t-1})
    if rule.bias_factor:
        spread_c = rule.bias_factor / (2 * H) * np.einsum("nh,nh->n", message, stabiliser)  # (n,)
        relevance_c += spread_c[:, None]
        relevance_g += spread_c[:, None]

    rule.messages(relevance_g, z_g, stabiliser, message)  # m_g
    np.matmul(message, w.lrp_back_g, out=product)
    input_g = _view(ws.input_g, n, H)  # (n, H) x_t W_g
    np.take(w.input_table_g, tr.tokens[t, :n], axis=0, out=input_g, mode="clip")
    relevance_x: Array = np.einsum("nh,nh->n", message, input_g)  # (n,) sum x_t W_g m_g
    np.multiply(h_prev, product[:, :H], out=relevance_h)  # R(h_{t-1})
    if rule.bias_factor:
        bias_terms = np.einsum("nh,nh->n", message, stabiliser) + product[:, H]  # (n,) (s_g + b_g) . m_g
        relevance_x += rule.bias_factor * E / (E + H) * bias_terms
        relevance_h += rule.bias_factor / (E + H) * bias_terms[:, None]
    return relevance_x


def _lrp_dense(
    w: _Weights, h_last: Array, target_logit: Array, targets: IntArray, rule: _EpsilonRule
) -> Array:
    """R(h_T), (B, H): the epsilon rule on y = h_T D_k + d_k (H inputs) with R(y) = y."""
    H = h_last.shape[1]
    stabiliser = np.where(target_logit >= 0, rule.eps, -rule.eps)  # (B,)
    message = target_logit / (target_logit + stabiliser)  # (B,)
    bias_terms = (w.dense_bias[targets] + stabiliser) * message  # (B,)
    relevance_h: Array = (
        h_last * w.dense.T[targets] * message[:, None] + (rule.bias_factor / H * bias_terms)[:, None]
    )  # (B, H)
    return relevance_h.astype(h_last.dtype)


def _lrp(
    w: _Weights, ws: _Workspace, tr: _Trace, target_logit: Array, targets: IntArray, rule: _EpsilonRule
) -> Array:
    """LRP per (step, row), (T, B), from R(y) = y, step by step back to the first token."""
    T, (B, H) = len(tr.active), tr.state[-1].shape[1:]
    relevance = np.zeros((T, B), ws.dtype)  # (T, B)
    relevance_h = _lrp_dense(w, tr.state[-1][1], target_logit, targets, rule)  # (B, H)
    relevance_c = np.zeros((B, H), ws.dtype)  # (B, H)
    for t in range(T - 1, -1, -1):
        n = int(tr.active[t])
        if t % _FLUSH_EVERY == 0:
            _flush_tiny(relevance_c[:n], _view(ws.flush_scratch, n, H))
        relevance[t, :n] = _lrp_step(w, ws, tr, t, relevance_h[:n], relevance_c[:n], rule)
    return relevance


def _inner_batches(lengths: IntArray, token_budget: int, max_rows: int) -> list[IntArray]:
    """Split review indices, longest first, into batches of at most max_rows reviews and token_budget tokens
    (padding takes no room in the trace, so only the reviews' own tokens count)."""
    order = np.argsort(-lengths, kind="stable")  # (N,)
    tokens_before = np.concatenate([[0], np.cumsum(lengths[order])])  # (N + 1,)
    batches = []
    start = 0
    while start < len(order):
        fit = int(np.searchsorted(tokens_before, tokens_before[start] + token_budget, side="right")) - 1
        stop = min(max(fit, start + 1), start + max_rows)
        batches.append(order[start:stop])
        start = stop
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
    A float32 engine explains reviews whose |target logit| is below `float64_below_eps` * eps again in
    float64 (see the module docstring); 0 turns that off.
    """

    def __init__(
        self,
        weights: ModelWeights,
        dtype: type[np.floating] = np.float32,
        eps: float = 1e-3,
        bias_factor: float = 0.0,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_rows: int = DEFAULT_MAX_ROWS,
        float64_below_eps: float = FLOAT64_BELOW_EPS,
    ) -> None:
        if eps <= 0:
            raise ValueError("eps must be positive")
        self.weights = weights
        self.dtype = dtype
        self.eps = eps
        self.bias_factor = bias_factor
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.float64_below = float64_below_eps * eps if np.dtype(dtype) != np.float64 else 0.0
        self._weights = _prepare_weights(weights, dtype)
        self._workspace = _Workspace(weights.hidden_size, weights.embedding.shape[1], dtype)
        self._rule = _EpsilonRule.of(eps, bias_factor, dtype)
        self._float64: Engine | None = None  # made on first need
        self.seconds = dict.fromkeys(("forward", "gradient", "lrp", "float64", "other"), 0.0)  # cumulative

    def _check(self, sequences: Sequence[Sequence[int]]) -> list[IntArray]:
        vocabulary_size = self.weights.vocab_size
        arrays = []
        for number, seq in enumerate(sequences):
            ids = np.asarray(seq, dtype=np.intp)  # (L,)
            if ids.ndim != 1 or not np.any(ids != PAD_ID):
                raise ValueError(f"sequence {number} is empty; every review starts with the start token")
            if ids.min() < 0 or ids.max() >= vocabulary_size:
                raise ValueError(f"sequence {number} has token ids outside [0, {vocabulary_size})")
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
        done = [r for r in results if r is not None]
        return self._again_in_float64(ids, given, done)

    def _again_in_float64(
        self, ids: list[IntArray], given: list[IntArray], explained: list[Explanation]
    ) -> list[Explanation]:
        """Replace the explanations whose target logit is too small for float32 LRP by float64 ones."""
        small = [r for r, e in enumerate(explained) if abs(e.logits[e.target_class]) < self.float64_below]
        if not small:
            return explained
        started = time.perf_counter()
        if self._float64 is None:
            self._float64 = Engine(
                self.weights, np.float64, self.eps, self.bias_factor, float64_below_eps=0.0
            )
        again = self._float64.explain(
            [ids[r].tolist() for r in small], [explained[r].target_class for r in small]
        )
        for r, explanation in zip(small, again, strict=True):
            explained[r] = replace(_with_padding(explanation, given[r]), float64=True)
        self.seconds["float64"] += time.perf_counter() - started
        return explained

    def _explain_batch(
        self, ids: list[IntArray], lengths: IntArray, wanted: list[int | None] | None
    ) -> list[Explanation]:
        """One right-aligned batch, rows sorted longest first."""
        w, ws = self._weights, self._workspace
        started = time.perf_counter()
        B, T = len(ids), int(lengths[0])
        ws.ensure(tokens=int(lengths.sum()), rows=B)
        tokens = np.zeros((T, B), dtype=np.intp)  # (T, B) left padding is never read
        for j, seq in enumerate(ids):
            tokens[T - seq.size :, j] = seq
        active = np.searchsorted(-lengths, -(T - np.arange(T)), side="right")  # (T,)
        forward_start = time.perf_counter()
        trace = _forward(w, ws, tokens, active)
        forward_end = time.perf_counter()
        logits = (trace.state[T][1] @ w.dense + w.dense_bias).T  # (C, B)
        shifted = np.exp(logits - logits.max(axis=0))  # (C, B)
        probabilities = shifted / shifted.sum(axis=0)  # (C, B)
        predicted = logits.argmax(axis=0)  # (B,)
        targets = predicted.copy()  # (B,)
        if wanted is not None:
            for j, target in enumerate(wanted):
                if target is not None:
                    targets[j] = target
        target_logit = logits[targets, np.arange(B)]  # (B,)
        gradient_start = time.perf_counter()
        sa, gi = _gradients(w, ws, trace, targets)  # (T, B) each
        lrp_start = time.perf_counter()
        lrp = _lrp(w, ws, trace, target_logit, targets, self._rule)  # (T, B)
        lrp_end = time.perf_counter()
        rest = target_logit.astype(np.float64) - lrp.sum(axis=0, dtype=np.float64)  # (B,) sum(lrp) + rest = y
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
