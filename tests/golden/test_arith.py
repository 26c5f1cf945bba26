"""golden.arith against a scalar, Python-int transcription of the C code."""

import math

import numpy as np
import pytest

from golden.arith import (
    INT32_MAX,
    INT32_MIN,
    AccumulatorOverflowError,
    accumulator_bounds,
    check_accumulator,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from golden.requant import activation_range, requantize


def wrap32(x):
    return (x + 2**31) % 2**32 - 2**31


def srdhm_ref(a, b):
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    s = ab + nudge
    q = abs(s) // 2**31
    return q if s >= 0 else -q


def rdbpot_ref(x, n):
    mask = (1 << n) - 1
    rem = x & mask
    thr = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> n) + (1 if rem > thr else 0)


def mbqm_ref(acc, m0, shift, rounding):
    if rounding == "double":
        left, right = max(shift, 0), max(-shift, 0)
        return rdbpot_ref(srdhm_ref(wrap32(acc * (1 << left)), m0), right)
    t = 31 - shift
    return wrap32((acc * m0 + (1 << (t - 1))) >> t)


def qm_ref(m, rounding):
    if m == 0:
        return 0, 0
    q, e = math.frexp(m)
    x = q * 2**31
    m0 = int(math.floor(x + 0.5))
    if m0 == 2**31:
        m0, e = 2**30, e + 1
    if e < -31:
        m0, e = 0, 0
    if rounding == "single" and e > 30:
        m0, e = 2**31 - 1, 30
    return m0, e


CORNER_A = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX, -(2**30), 2**30]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_srdhm_random_and_corners(rng):
    a = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 20000, endpoint=True), CORNER_A])
    b = np.concatenate([rng.integers(INT32_MIN, INT32_MAX, 20000, endpoint=True), CORNER_A])
    aa, bb = np.meshgrid(CORNER_A, CORNER_A)
    a = np.concatenate([a, aa.ravel()])
    b = np.concatenate([b, bb.ravel()])
    got = saturating_rounding_doubling_high_mul(a.astype(np.int32), b.astype(np.int32))
    assert got.dtype == np.int32
    want = np.array([srdhm_ref(int(x), int(y)) for x, y in zip(a, b, strict=True)], dtype=np.int64)
    np.testing.assert_array_equal(got, want)
    assert saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX


def test_rdbpot_random_ties_and_corners(rng):
    x = rng.integers(INT32_MIN, INT32_MAX, 20000, endpoint=True)
    n = rng.integers(0, 31, 20000, endpoint=True)
    # exact ties, both signs: x = (2k+1) * 2**(n-1)
    tn = rng.integers(1, 20, 2000)
    tk = rng.integers(-1000, 1000, 2000)
    ties = (2 * tk + 1) << (tn - 1)
    x = np.concatenate([x, ties, CORNER_A * 32])
    n = np.concatenate([n, tn, np.repeat(np.arange(32), 8)])
    got = rounding_divide_by_pot(x, n)
    want = np.array([rdbpot_ref(int(a), int(b)) for a, b in zip(x, n, strict=True)])
    np.testing.assert_array_equal(got, want)
    # a negative tie rounds away from zero: -2.5 -> -3, 2.5 -> 3
    assert rounding_divide_by_pot(-5, 1) == -3 and rounding_divide_by_pot(5, 1) == 3


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_quantize_multiplier_matches_scalar(rng, rounding):
    m = np.concatenate([
        np.exp2(rng.uniform(-45, 35, 5000)),
        [0.0, 0.5, 1.0, 2.0**-31, 2.0**-32, 2.0**31, 1 - 2.0**-40, 0.49999999999999994],
    ])
    m0, shift = quantize_multiplier(m, rounding=rounding)
    want = [qm_ref(float(v), rounding) for v in m]
    np.testing.assert_array_equal(m0, [w[0] for w in want])
    np.testing.assert_array_equal(shift, [w[1] for w in want])
    nz = m0 != 0
    assert np.all(m0[nz] >= 2**30)


def test_quantize_multiplier_known_values():
    m0, s = quantize_multiplier([0.5, 1.0, 0.75, 0.0])
    np.testing.assert_array_equal(m0, [2**30, 2**30, 3 * 2**29, 0])
    np.testing.assert_array_equal(s, [0, 1, 0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        quantize_multiplier([-0.1])


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_mbqm_per_channel_random(rng, rounding):
    hi = 31 if rounding == "double" else 30
    acc = rng.integers(INT32_MIN, INT32_MAX, (300, 64), endpoint=True)
    m0 = rng.integers(2**30, INT32_MAX, 64, endpoint=True)
    shift = rng.integers(-31, 1, 64)
    shift[:4] = [-31, 0, -1, -30]
    got = multiply_by_quantized_multiplier(acc, m0, shift, rounding=rounding)
    want = np.array([[mbqm_ref(int(a), int(m0[j]), int(shift[j]), rounding)
                      for j, a in enumerate(row)] for row in acc])
    np.testing.assert_array_equal(got, want)
    # positive shifts on small accumulators (no wrap in valid models), to the top end
    acc = rng.integers(-1000, 1000, (50, 8))
    shift = np.array([1, 2, 5, 10, 20, hi - 10, hi - 9, 3])
    m0 = rng.integers(2**30, INT32_MAX, 8, endpoint=True)
    got = multiply_by_quantized_multiplier(acc, m0, shift, rounding=rounding)
    want = np.array([[mbqm_ref(int(a), int(m0[j]), int(shift[j]), rounding)
                      for j, a in enumerate(row)] for row in acc])
    np.testing.assert_array_equal(got, want)


def test_single_and_double_rounding_differ_somewhere(rng):
    acc = rng.integers(-(2**20), 2**20, 100000)
    a = multiply_by_quantized_multiplier(acc, 1518500250, -7)
    b = multiply_by_quantized_multiplier(acc, 1518500250, -7, rounding="single")
    assert np.any(a != b) and np.max(np.abs(a.astype(int) - b)) == 1


def corner_range(w):
    """min and max of x @ w over the 2**K corners of [-128, 127]**K, per column.

    A linear function on a box takes its extremes at corners, so this is the exact range,
    computed by enumeration rather than by the per-weight sign rule under test.
    """
    k = w.shape[0]
    bits = (np.arange(2**k)[:, None] >> np.arange(k)) & 1
    corners = np.where(bits == 1, 127, -128).astype(np.int64)
    sums = corners @ w.astype(np.int64)
    return sums.min(axis=0), sums.max(axis=0)


def test_accumulator_bounds_equal_exhaustive_search_k2():
    """K = 2: every one of the 65536 inputs, several weight columns."""
    x = np.stack(np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)), -1).reshape(-1, 2)
    w = np.array([[127, -127, 0, 5, -128, 0], [-127, -127, 0, -3, 127, 9]], np.int8)
    sums = x @ w.astype(np.int64)
    lo, hi = accumulator_bounds(w)
    np.testing.assert_array_equal(lo, sums.min(axis=0))
    np.testing.assert_array_equal(hi, sums.max(axis=0))
    assert lo.dtype == hi.dtype == np.int64


@pytest.mark.parametrize("k", [1, 3, 7, 12])
def test_accumulator_bounds_equal_corner_search(rng, k):
    w = rng.integers(-128, 128, (k, 40)).astype(np.int8)
    w[:, 0] = 127
    w[:, 1] = -128
    w[:, 2] = 0
    w[0, 3] = -127
    bias = rng.integers(INT32_MIN, INT32_MAX, 40, endpoint=True)
    lo, hi = corner_range(w)
    got = accumulator_bounds(w, bias)
    np.testing.assert_array_equal(got[0], lo + bias)
    np.testing.assert_array_equal(got[1], hi + bias)
    # Random inputs stay inside, and are never outside by the arithmetic.
    x = rng.integers(-128, 128, (1000, k))
    sums = x @ w.astype(np.int64)
    assert np.all(sums >= lo) and np.all(sums <= hi)


def test_accumulator_bounds_of_large_k_are_attained(rng):
    """K = 4608 (3x3x512): the extremal input of each channel reaches its bound exactly."""
    w = rng.integers(-127, 128, (4608, 16)).astype(np.int8)
    lo, hi = accumulator_bounds(w)
    for n in range(16):
        col = w[:, n].astype(np.int64)
        assert int(np.where(col > 0, 127, -128) @ col) == hi[n]
        assert int(np.where(col > 0, -128, 127) @ col) == lo[n]
    assert np.all(hi < 4608 * 127 * 128)


def test_accumulator_bounds_rejects():
    with pytest.raises(ValueError, match=r"w must be a 2-D integer array of shape \(K, N\)"):
        accumulator_bounds(np.zeros(3, np.int8))
    with pytest.raises(ValueError, match="w must be"):
        accumulator_bounds(np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"bias must be .* shape \(2,\)"):
        accumulator_bounds(np.zeros((3, 2), np.int8), [1, 2, 3])


def test_check_accumulator_at_the_int32_limits(rng):
    """bias' placed so that a channel's range touches INT32_MAX / INT32_MIN: accepted;
    one more: refused, naming the layer, the channel and the numbers."""
    w = rng.integers(-127, 128, (12, 8)).astype(np.int8)
    lo, hi = corner_range(w)
    bias = np.where(np.arange(8) % 2 == 0, INT32_MAX - hi, INT32_MIN - lo)
    got_lo, got_hi = check_accumulator(w, bias, name="conv7")
    np.testing.assert_array_equal(got_lo, lo)
    np.testing.assert_array_equal(got_hi, hi)
    for c in (0, 5):
        over = bias.copy()
        over[c] += 1 if c % 2 == 0 else -1
        with pytest.raises(AccumulatorOverflowError) as e:
            check_accumulator(w, over, name="conv7")
        message = str(e.value)
        assert message.startswith(f"conv7: output channel {c}: ")
        assert "accumulator + bias'" in message and "int32" in message and "K=12" in message
        end = INT32_MAX + 1 if c % 2 == 0 else INT32_MIN - 1
        assert str(end) in message and str(over[c]) in message


def test_check_accumulator_width(rng):
    """Passes at the narrowest width that holds every channel's range, fails one bit below."""
    for _ in range(20):
        k = int(rng.integers(1, 10))
        w = rng.integers(-128, 128, (k, 5)).astype(np.int8)
        if not w.any():
            continue
        lo, hi = corner_range(w)
        width = next(b for b in range(1, 40)
                     if lo.min() >= -(2 ** (b - 1)) and hi.max() <= 2 ** (b - 1) - 1)
        check_accumulator(w, None, width)
        with pytest.raises(AccumulatorOverflowError, match=f"{width - 1}-bit signed accumulator"):
            check_accumulator(w, None, width - 1)


def test_check_accumulator_counts_failing_channels():
    w = np.full((132105, 3), 127, np.int8)
    w[:, 1] = 1  # channels 0 and 2: [-132105 * 128 * 127, 132105 * 127 * 127]
    with pytest.raises(AccumulatorOverflowError,
                       match=r"^fc: output channel 0 \(and 1 more\): worst-case accumulator "
                             r"\[-2147498880, 2130721545\] \(K=132105"):
        check_accumulator(w, 0, name="fc")
    # The crude K * 127 * 128 bound would refuse these; the weights' own range fits.
    check_accumulator(np.full((132105, 3), 1, np.int8), 0)
    check_accumulator(np.zeros((1, 2), np.int8), [INT32_MAX, INT32_MIN])


def test_check_accumulator_rejects_bad_width():
    for width in (0, 65, True, 8.0):
        with pytest.raises(ValueError, match="acc_width must be an int in"):
            check_accumulator(np.zeros((1, 1), np.int8), None, width)


def test_requantize_against_scalar(rng):
    acc = rng.integers(-(2**24), 2**24, (100, 16))
    bias = rng.integers(-(2**20), 2**20, 16)
    m0, shift = quantize_multiplier(np.exp2(rng.uniform(-20, 0, 16)))
    got = requantize(acc, bias, m0, shift, -5, -5, 120)
    want = np.array([[min(120, max(-5, mbqm_ref(int(a) + int(bias[j]), int(m0[j]),
                                                   int(shift[j]), "double") - 5))
                      for j, a in enumerate(row)] for row in acc])
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)


def test_activation_range():
    assert activation_range("NONE", 0.1, 3) == (-128, 127)
    assert activation_range("RELU", 0.1, -128) == (-128, 127)
    assert activation_range("RELU", 0.1, 10) == (10, 127)
    assert activation_range("RELU6", 6 / 255, -128) == (-128, 127)
    assert activation_range("RELU6", 0.05, -100) == (-100, 20)
    with pytest.raises(ValueError, match="activation"):
        activation_range("TANH", 0.1, 0)
