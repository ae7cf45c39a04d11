"""An independent, deliberately plain explanation of one review at a time, float64, for testing the engine.

Shares no code with the engine (shared/relevance/engine.py): Keras layout read directly (gates i, f, c, o),
a per-step loop, explicit gradient vectors, and LRP written as Arras et al.'s dense epsilon rule with
(D, M) message matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.relevance.weights import ModelWeights


@dataclass
class Reference:
    logits: np.ndarray
    target: int
    lrp: np.ndarray
    sa: np.ndarray
    gi: np.ndarray
    lrp_rest: float


def sigmoid(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return result


def lrp_linear(
    inputs: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    out: np.ndarray,
    relevance_out: np.ndarray,
    bias_units: int,
    eps: float,
    bias_factor: float,
) -> np.ndarray:
    """Epsilon rule for out = inputs @ w + b (+ other inputs), as in Arras et al.'s lrp_linear."""
    sign = np.where(out >= 0, 1.0, -1.0)
    numerator = w * inputs[:, None] + bias_factor * (b[None, :] + eps * sign[None, :]) / bias_units
    denominator = out[None, :] + eps * sign[None, :]
    relevance_in: np.ndarray = (numerator / denominator * relevance_out[None, :]).sum(axis=1)
    return relevance_in


def explain_one(
    weights: ModelWeights,
    ids: list[int],
    target: int | None = None,
    eps: float = 1e-3,
    bias_factor: float = 0.0,
) -> Reference:
    emb = weights.embedding.astype(np.float64)
    W = weights.lstm_kernel.astype(np.float64)
    U = weights.lstm_recurrent_kernel.astype(np.float64)
    b = weights.lstm_bias.astype(np.float64)
    Wd = weights.dense_kernel.astype(np.float64)
    bd = weights.dense_bias.astype(np.float64)
    H = U.shape[0]
    E = W.shape[0]
    gi_, gf_, gc_, go_ = (slice(k * H, (k + 1) * H) for k in range(4))

    x = [emb[i] for i in ids]
    L = len(x)
    hs, cs = [np.zeros(H)], [np.zeros(H)]  # hs[t + 1] is h after token t
    ins, fgs, gs, os_, zgs = [], [], [], [], []
    for t in range(L):
        z = x[t] @ W + hs[-1] @ U + b
        i, f, g, o = sigmoid(z[gi_]), sigmoid(z[gf_]), np.tanh(z[gc_]), sigmoid(z[go_])
        c = f * cs[-1] + i * g
        h = o * np.tanh(c)
        ins.append(i)
        fgs.append(f)
        gs.append(g)
        os_.append(o)
        zgs.append(z[gc_])
        cs.append(c)
        hs.append(h)
    logits = hs[-1] @ Wd + bd
    k = int(np.argmax(logits)) if target is None else target

    # Gradient of logits[k] by plain backpropagation through time.
    dh = Wd[:, k].copy()
    dc = np.zeros(H)
    sa, gi = np.zeros(L), np.zeros(L)
    for t in reversed(range(L)):
        i, f, g, o, c, c_prev = ins[t], fgs[t], gs[t], os_[t], cs[t + 1], cs[t]
        d_o = dh * np.tanh(c)
        dc = dc + dh * o * (1 - np.tanh(c) ** 2)
        d_i, d_f, d_g = dc * g, dc * c_prev, dc * i
        dz = np.concatenate([d_i * i * (1 - i), d_f * f * (1 - f), d_g * (1 - g**2), d_o * o * (1 - o)])
        dx = W @ dz
        sa[t] = np.sum(dx**2)
        gi[t] = np.sum(dx * x[t])
        dh = U @ dz
        dc = dc * f

    # LRP from the target logit, Arras et al.'s rules; absorbed = what each layer does not pass on.
    absorbed = 0.0
    r_out = np.zeros_like(logits)
    r_out[k] = logits[k]
    Rh = lrp_linear(hs[-1], Wd, bd, logits, r_out, H, eps, bias_factor)
    absorbed += r_out.sum() - Rh.sum()
    Rc = np.zeros(H)
    Rx = np.zeros((L, E))
    identity = np.eye(H)
    for t in reversed(range(L)):
        Rc = Rc + Rh
        c, c_prev = cs[t + 1], cs[t]
        Rc_prev = lrp_linear(fgs[t] * c_prev, identity, np.zeros(H), c, Rc, 2 * H, eps, bias_factor)
        Rg = lrp_linear(ins[t] * gs[t], identity, np.zeros(H), c, Rc, 2 * H, eps, bias_factor)
        absorbed += Rc.sum() - Rc_prev.sum() - Rg.sum()
        Rx[t] = lrp_linear(x[t], W[:, gc_], b[gc_], zgs[t], Rg, E + H, eps, bias_factor)
        Rh = lrp_linear(hs[t], U[:, gc_], b[gc_], zgs[t], Rg, E + H, eps, bias_factor)
        absorbed += Rg.sum() - Rx[t].sum() - Rh.sum()
        Rc = Rc_prev
    rest = absorbed + Rh.sum() + Rc.sum()
    return Reference(logits=logits, target=k, lrp=Rx.sum(axis=1), sa=sa, gi=gi, lrp_rest=float(rest))
