"""The batched engine against a plain-loop reference, finite differences, conservation, hand-made numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shared.relevance.engine import Engine, _EpsilonRule, _inner_batches, truncate
from shared.relevance.weights import ModelWeights
from tests.helpers.reference_loop import explain_one


def random_weights(
    seed: int, V: int = 40, E: int = 6, H: int = 5, C: int = 2, scale: float = 0.8
) -> ModelWeights:
    rng = np.random.default_rng(seed)
    return ModelWeights(
        embedding=rng.normal(0, scale, (V, E)),
        lstm_kernel=rng.normal(0, scale, (E, 4 * H)),
        lstm_recurrent_kernel=rng.normal(0, scale, (H, 4 * H)),
        lstm_bias=rng.normal(0, scale, 4 * H),
        dense_kernel=rng.normal(0, scale, (H, C)),
        dense_bias=rng.normal(0, scale, C),
    )


def random_sequences(seed: int, n: int, V: int, max_len: int = 12) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[1, *rng.integers(3, V, rng.integers(0, max_len)).tolist()] for _ in range(n)]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("bias_factor", [0.0, 1.0, 0.5])
def test_matches_plain_loop_on_random_models(seed: int, bias_factor: float) -> None:
    weights = random_weights(seed, H=3 + seed % 4, E=2 + seed % 5, C=2 + seed % 2)
    sequences = random_sequences(seed, 25, weights.vocab_size)
    engine = Engine(weights, dtype=np.float64, bias_factor=bias_factor, token_budget=40, max_rows=7)
    for seq, got in zip(sequences, engine.explain(sequences), strict=True):
        want = explain_one(weights, seq, bias_factor=bias_factor)
        assert got.target_class == want.target
        assert rel_err(got.logits, want.logits) <= 1e-9
        for name in ("lrp", "sa", "gi"):
            assert rel_err(getattr(got, name), getattr(want, name)) <= 1e-6, name
        assert got.lrp_rest == pytest.approx(want.lrp_rest, rel=1e-6, abs=1e-9)


def test_given_targets_are_explained() -> None:
    weights = random_weights(1, C=3)
    sequences = random_sequences(2, 9, weights.vocab_size)
    targets: list[int | None] = [0, 1, 2, None, 0, 1, 2, None, 1]
    for seq, target, got in zip(
        sequences, targets, Engine(weights, np.float64).explain(sequences, targets), strict=True
    ):
        want = explain_one(weights, seq, target=target)
        assert got.target_class == want.target
        assert rel_err(got.lrp, want.lrp) <= 1e-6
        assert rel_err(got.gi, want.gi) <= 1e-6


def test_conservation_with_bias_factor_one() -> None:
    """Token relevances plus the explicitly tracked rest add up to the target logit, for any bias factor."""
    weights = random_weights(3, H=6, E=4)
    sequences = random_sequences(4, 30, weights.vocab_size, max_len=30)
    for bias_factor in (1.0, 0.0):
        for got in Engine(weights, np.float64, bias_factor=bias_factor).explain(sequences):
            total = got.lrp.sum() + got.lrp_rest
            assert total == pytest.approx(got.logits[got.target_class], abs=1e-6)


def test_gradients_match_central_finite_differences() -> None:
    weights = random_weights(5, V=20, E=3, H=4)
    seq = [1, 5, 9, 4, 17, 11]  # distinct ids: moving one embedding row moves one token's input
    got = Engine(weights, np.float64).explain([seq])[0]
    k = got.target_class
    step = 1e-6
    for t, token in enumerate(seq):
        grad = np.zeros(weights.embedding.shape[1])
        for e in range(grad.size):
            logit = []
            for sign in (1, -1):
                emb = weights.embedding.copy()
                emb[token, e] += sign * step
                moved = ModelWeights(**{**weights.__dict__, "embedding": emb})
                logit.append(Engine(moved, np.float64).explain([seq], [k])[0].logits[k])
            grad[e] = (logit[0] - logit[1]) / (2 * step)
        assert got.sa[t] == pytest.approx(np.sum(grad**2), rel=1e-6)
        assert got.gi[t] == pytest.approx(np.sum(grad * weights.embedding[token]), rel=1e-6, abs=1e-10)


def test_hand_worked_two_tokens() -> None:
    """E = H = 1, gates i = f = o = sigmoid(0) = 1/2, g = tanh(x), logits (-h, h); numbers by hand."""
    weights = ModelWeights(
        embedding=np.array([[0.0], [0.5], [-1.0]]),  # token 1 -> 0.5, token 2 -> -1.0
        lstm_kernel=np.array([[0.0, 0.0, 1.0, 0.0]]),
        lstm_recurrent_kernel=np.zeros((1, 4)),
        lstm_bias=np.zeros(4),
        dense_kernel=np.array([[-1.0, 1.0]]),
        dense_bias=np.zeros(2),
    )
    got = Engine(weights, np.float64, eps=1e-3).explain([[1, 2]], [1])[0]
    g1, g2 = math.tanh(0.5), math.tanh(-1.0)  # 0.462117, -0.761594
    c1 = 0.5 * g1  # 0.231059
    c2 = 0.5 * c1 + 0.5 * g2  # -0.265268
    h2 = 0.5 * math.tanh(c2)  # -0.129608
    assert got.logits == pytest.approx([0.129608, -0.129608], abs=1e-6)
    # LRP, bias factor 0: R(h2) = h2 * h2 / (h2 - eps); all of it to c2, split between c1 and g2 by value.
    r_c2 = h2 * h2 / (h2 - 1e-3)
    r_g2 = 0.5 * g2 / (c2 - 1e-3) * r_c2
    r_c1 = 0.5 * c1 / (c2 - 1e-3) * r_c2
    r_x2 = -1.0 / (-1.0 - 1e-3) * r_g2
    r_x1 = 0.5 / (0.5 + 1e-3) * (0.5 * g1 / (c1 + 1e-3) * r_c1)
    assert got.lrp == pytest.approx([r_x1, r_x2], rel=1e-12)
    assert got.lrp == pytest.approx([0.055453, -0.183753], abs=1e-6)
    # Gradients: d h2 / d x2 = 0.5 (1 - tanh(c2)^2) * 0.5 (1 - g2^2); d x1 goes through c1 with factor 0.5.
    dc2 = 0.5 * (1 - math.tanh(c2) ** 2)
    dx2 = dc2 * 0.5 * (1 - g2**2)
    dx1 = dc2 * 0.5 * 0.5 * (1 - g1**2)
    assert got.sa == pytest.approx([dx1**2, dx2**2], rel=1e-12)
    assert got.gi == pytest.approx([dx1 * 0.5, dx2 * -1.0], rel=1e-12)


def test_batch_of_mixed_lengths_equals_one_by_one() -> None:
    weights = random_weights(7, V=200, E=16, H=12)
    rng = np.random.default_rng(8)
    sequences = [[1, *rng.integers(3, 200, rng.integers(0, 120)).tolist()] for _ in range(256)]
    engine = Engine(weights, np.float32)
    together = engine.explain(sequences)
    for index in (0, 17, 100, 255):
        alone = engine.explain([sequences[index]])[0]
        for name in ("lrp", "sa", "gi", "logits"):
            assert rel_err(getattr(together[index], name), getattr(alone, name)) <= 1e-5


def test_padding_is_masked_and_gets_exact_zero() -> None:
    weights = random_weights(9)
    seq = [1, 7, 8, 9, 10]
    padded = [0, 0, 0, *seq]
    inner = [1, 7, 0, 8, 9, 0, 10]
    engine = Engine(weights, np.float64)
    plain, pre, mid = engine.explain([seq, padded, inner])
    assert np.array_equal(pre.lrp[:3], np.zeros(3)) and np.array_equal(pre.sa[:3], np.zeros(3))
    assert np.allclose(pre.lrp[3:], plain.lrp, rtol=1e-12) and np.allclose(pre.logits, plain.logits)
    assert mid.lrp[2] == 0.0 and mid.gi[5] == 0.0
    assert np.allclose(mid.lrp[[0, 1, 3, 4, 6]], plain.lrp, rtol=1e-12)


def test_float32_is_close_to_float64() -> None:
    weights = random_weights(10, V=300, E=32, H=16, scale=0.3)
    sequences = random_sequences(11, 40, 300, max_len=200)
    for a, b in zip(
        Engine(weights, np.float32).explain(sequences),
        Engine(weights, np.float64).explain(sequences),
        strict=True,
    ):
        for name in ("lrp", "sa", "gi"):
            assert rel_err(getattr(a, name), getattr(b, name)) <= 1e-4, name


def test_deterministic() -> None:
    weights = random_weights(12)
    sequences = random_sequences(13, 50, weights.vocab_size)
    first, second = Engine(weights).explain(sequences), Engine(weights).explain(sequences)
    assert all(
        np.array_equal(a.lrp, b.lrp) and np.array_equal(a.sa, b.sa)
        for a, b in zip(first, second, strict=True)
    )


@pytest.mark.parametrize(
    ("sequences", "message"),
    [([[]], "empty"), ([[0, 0]], "empty"), ([[1, 40]], "outside"), ([[1, -1]], "outside")],
)
def test_rejects_bad_sequences(sequences: list[list[int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Engine(random_weights(0)).explain(sequences)


def test_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="target"):
        Engine(random_weights(0)).explain([[1, 5]], [2])


def test_truncate_keeps_the_chosen_end() -> None:
    assert truncate([1, 2, 3, 4], 3, "start") == ([1, 2, 3], True)
    assert truncate([1, 2, 3, 4], 3, "end") == ([2, 3, 4], True)
    assert truncate([1, 2], 3, "start") == ([1, 2], False)


def with_target_logit(weights: ModelWeights, seq: list[int], target: int, logit: float) -> ModelWeights:
    """The same model with its dense bias moved so that `seq`'s target logit is `logit`."""
    now = Engine(weights, np.float64).explain([seq], [target])[0].logits[target]
    bias = weights.dense_bias.copy()
    bias[target] += logit - now
    return ModelWeights(**{**weights.__dict__, "dense_bias": bias})


def test_a_target_logit_near_eps_is_explained_in_float64() -> None:
    """float32 LRP of a logit about as small as eps is imprecise; such reviews are redone in float64."""
    base = random_weights(14, V=60, E=8, H=6)
    tiny = [1, 7, 12, 40, 33, 9]
    weights = with_target_logit(base, tiny, target=1, logit=1e-4)
    others = random_sequences(15, 12, weights.vocab_size)
    engine = Engine(weights, np.float32, eps=1e-3)
    explained = engine.explain([*others, tiny], [*[None] * len(others), 1])
    redone = explained[-1]
    exact = Engine(weights, np.float64, eps=1e-3).explain([tiny], [1])[0]
    assert redone.float64 and redone.lrp.dtype == np.float64
    for name in ("lrp", "sa", "gi", "logits"):
        assert np.array_equal(getattr(redone, name), getattr(exact, name)), name
    assert redone.lrp_rest == exact.lrp_rest
    for got in explained[:-1]:
        small = abs(got.logits[got.target_class]) < 10 * 1e-3
        assert got.float64 == small and (got.lrp.dtype == np.float32) != small
    assert not any(e.float64 for e in Engine(weights, np.float64).explain([tiny], [1]))
    assert not Engine(weights, np.float32, float64_below_eps=0.0).explain([tiny], [1])[0].float64


def test_redone_review_keeps_its_padding_zeros() -> None:
    weights = with_target_logit(random_weights(16), [1, 5, 6, 7], target=0, logit=-2e-4)
    got = Engine(weights, np.float32).explain([[0, 1, 5, 0, 6, 7]], [0])[0]
    assert got.float64 and got.lrp.shape == (6,) and got.lrp[0] == 0.0 and got.sa[3] == 0.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batches_of_any_shape_give_the_same_numbers(dtype: type[np.floating]) -> None:
    """How reviews are grouped into inner batches (rows, padded length, order) changes no value beyond
    rounding: BLAS picks its kernels by matrix width, so float32 can differ in the last bits."""
    weights = random_weights(17, V=90, E=7, H=9)
    rng = np.random.default_rng(18)
    sequences = [[1, *rng.integers(3, 90, rng.integers(0, 70)).tolist()] for _ in range(60)]
    shapes = [(10**6, 512), (400, 8), (90, 3), (1, 1)]  # (token_budget, max_rows)
    first, *others = (
        Engine(weights, dtype, token_budget=budget, max_rows=rows, float64_below_eps=0.0).explain(sequences)
        for budget, rows in shapes
    )
    for other in others:
        for a, b in zip(first, other, strict=True):
            for name in ("lrp", "sa", "gi", "logits"):
                assert rel_err(getattr(a, name), getattr(b, name)) <= (1e-12 if dtype == np.float64 else 1e-5)
            assert a.lrp_rest == pytest.approx(b.lrp_rest, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_epsilon_rule_stabiliser_is_eps_with_the_sign_of_its_value(dtype: type[np.floating]) -> None:
    values = np.array([[0.0, -0.0, 3.5, -2.0], [1e-30, -1e-30, np.finfo(dtype).max, -7e-4]], dtype)
    relevance = np.arange(1.0, 9.0, dtype=dtype).reshape(2, 4)
    stabiliser, message = np.empty_like(values), np.empty_like(values)
    _EpsilonRule.of(1e-3, 0.0, dtype).messages(relevance, values, stabiliser, message)
    assert np.array_equal(stabiliser, np.copysign(dtype(1e-3), values))
    assert stabiliser[0, 0] > 0  # sign(+0) = +1
    assert np.array_equal(message, relevance / (values + stabiliser))


def test_inner_batches_count_the_reviews_own_tokens() -> None:
    """The trace holds no padding, so a batch is bounded by its reviews' tokens, not by longest x rows."""
    lengths = np.array([5, 400, 30, 30, 200, 1, 399, 7], dtype=np.intp)
    batches = _inner_batches(lengths, token_budget=600, max_rows=3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(lengths.size))
    for batch in batches:
        assert len(batch) <= 3 and (lengths[batch].sum() <= 600 or len(batch) == 1)
        assert np.all(np.diff(lengths[batch]) <= 0)  # longest first
    assert [lengths[b].tolist() for b in batches] == [[400], [399, 200], [30, 30, 7], [5, 1]]
    assert [b.size for b in _inner_batches(lengths, token_budget=10, max_rows=512)] == [1, 1, 1, 1, 1, 1, 2]
