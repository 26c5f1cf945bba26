"""golden.quant against exact scalar references (fractions, Python ints)."""

import math
from fractions import Fraction

import numpy as np
import pytest

from golden.quant import (
    asymmetric_params,
    dequantize,
    qrange,
    quantize,
    quantize_bias,
    reduce_range,
    round_half_away,
    symmetric_scale,
)


@pytest.fixture
def rng():
    return np.random.default_rng(99)


def round_ref(x):
    """Half away from zero, exact: on the rational value of the double."""
    f = Fraction(float(x))
    r = math.floor(abs(f) + Fraction(1, 2))
    return r if f >= 0 else -r


def quantize_ref(x, s, z, qmin, qmax):
    return min(max(round_ref(Fraction(float(x)) / Fraction(float(s))) + int(z), qmin), qmax)


def test_round_half_away_ties_and_near_ties(rng):
    near_half = np.nextafter(0.5, 0.0)
    x = np.concatenate([
        np.arange(-6, 6.5, 0.5), [near_half, -near_half, 2.0**52 + 1, -(2.0**52) - 1, 0.0],
        rng.normal(0, 100, 1000),
    ])
    got = round_half_away(x)
    assert got.dtype == np.float64
    assert [int(v) for v in got] == [round_ref(v) for v in x]


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("narrow", [False, True])
def test_qrange(bits, narrow):
    lo, hi = qrange(bits, narrow)
    assert hi == 2 ** (bits - 1) - 1
    assert lo == (-hi if narrow else -hi - 1)


@pytest.mark.parametrize("bits, narrow", [(1, False), (9, False), (8.0, False), (True, False),
                                          (8, 1)])
def test_qrange_rejects(bits, narrow):
    with pytest.raises(ValueError, match="must be"):
        qrange(bits, narrow)


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
def test_quantize_per_tensor_matches_scalar_reference(rng, bits):
    lo, hi = qrange(bits)
    x = rng.normal(0, 2, 2000)
    s, z = 0.037, int(rng.integers(lo, hi + 1))
    # exact ties: x / s lands on k + 0.5 for these
    x[:20] = (np.arange(-10, 10) + 0.5) * 0.25
    got = quantize(x[20:], s, z, bits=bits)
    assert got.dtype == np.int8
    assert list(got) == [quantize_ref(v, s, z, lo, hi) for v in x[20:]]
    ties = quantize(x[:20], 0.25, 0, bits=8)
    assert list(ties) == [round_ref(v / 0.25) for v in x[:20]]


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_narrow_range_never_gives_the_most_negative_code(bits):
    q = quantize(np.linspace(-1000, 1000, 101), 0.5, 0, bits=bits, narrow=True)
    assert q.min() == -(2 ** (bits - 1) - 1) and q.max() == 2 ** (bits - 1) - 1


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_quantize_per_channel_any_axis(rng, axis):
    x = rng.normal(0, 1, (4, 5, 6))
    n = x.shape[axis]
    s = rng.uniform(0.005, 0.05, n)
    z = rng.integers(-20, 20, n)
    got = quantize(x, s, z, axis=axis)
    want = np.empty(x.shape, dtype=np.int64)
    for idx in np.ndindex(x.shape):
        c = idx[axis]
        want[idx] = quantize_ref(x[idx], s[c], z[c], -128, 127)
    np.testing.assert_array_equal(got, want)
    back = dequantize(got, s, z, axis=axis)
    for idx in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        c = idx[axis]
        assert back[idx] == s[c] * (int(got[idx]) - int(z[c]))


def test_quantize_per_group(rng):
    """(N, K) weights, groups of G consecutive inputs, one scale per (row, group)."""
    n, k, g = 3, 12, 4
    x = rng.normal(0, 1, (n, k))
    lo, hi = reduce_range(x, axis=1, group_size=g)
    assert lo.shape == (n, k // g)
    s = symmetric_scale(np.maximum(-lo, hi), bits=4)
    got = quantize(x, s, 0, bits=4, narrow=True, axis=1, group_size=g)
    for i in range(n):
        for j in range(k):
            assert got[i, j] == quantize_ref(x[i, j], s[i, j // g], 0, -7, 7)
    # every group uses its full range: its absmax lands on +-7
    assert np.all(np.abs(got).reshape(n, k // g, g).max(axis=2) == 7)
    # one scale per group shared by all rows
    s1 = rng.uniform(0.01, 0.1, k // g)
    got1 = quantize(x, s1, 0, axis=1, group_size=g)
    assert all(got1[i, j] == quantize_ref(x[i, j], s1[j // g], 0, -128, 127)
               for i in range(n) for j in range(k))
    np.testing.assert_allclose(dequantize(got1, s1, 0, axis=1, group_size=g),
                               got1 * np.repeat(s1, g))


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale=0.0), "scale must be finite and positive"),
    (dict(scale=[0.1, 0.2]), "scale must be a scalar when axis is None"),
    (dict(scale=[0.1, 0.2], axis=1), r"scale must have shape \(6,\)"),
    (dict(scale=0.1, axis=3), "axis must be an integer in"),
    (dict(scale=[0.1, 0.2], axis=1, group_size=4), "group_size must be a positive divisor"),
    (dict(scale=0.1, group_size=2), "group_size needs an axis"),
    (dict(scale=0.1, zero_point=200), "zero_point must be in"),
    (dict(scale=0.1, zero_point=0.5), "zero_point must be integer"),
    (dict(scale=0.1, bits=9), "bits must be an integer in"),
])
def test_quantize_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize(np.zeros((4, 6)), **kwargs)


def test_quantize_rejects_nonfinite():
    with pytest.raises(ValueError, match="x must be finite"):
        quantize([1.0, np.nan], 0.1)


def test_symmetric_scale():
    np.testing.assert_array_equal(symmetric_scale([127.0, 0.0, 1.0], 8), [1.0, 1.0, 1 / 127])
    assert symmetric_scale(7.0, 4) == 1.0
    assert symmetric_scale(3.0, 3) == 1.0
    with pytest.raises(ValueError, match="absmax must be finite and non-negative"):
        symmetric_scale(-1.0)


def asym_ref(lo, hi, bits):
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        return 1.0, qmin
    s = (hi - lo) / (qmax - qmin)
    return s, min(max(round_ref(qmin - lo / s), qmin), qmax)


@pytest.mark.parametrize("bits", [3, 5, 8])
def test_asymmetric_params(rng, bits):
    lo = np.concatenate([rng.uniform(-5, 1, 300), [0.0, 0.5, -2.0, 0.0]])
    hi = np.concatenate([lo[:300] + rng.uniform(0, 6, 300), [0.0, 2.0, -1.0, 3.0]])
    s, z = asymmetric_params(lo, hi, bits)
    for i in range(lo.size):
        rs, rz = asym_ref(lo[i], hi[i], bits)
        assert s[i] == rs and z[i] == rz
    # real 0 is exactly representable, and the range covers [min(lo, 0), max(hi, 0)]
    # up to the half step the zero-point nudge may move it
    assert np.all(dequantize(z, s, z, axis=0) == 0.0)
    np.testing.assert_array_equal(quantize(np.zeros_like(s), s, z, bits, axis=0), z)
    qmin, qmax = qrange(bits)
    assert np.all(s * (qmin - z) <= np.minimum(lo, 0) + s / 2 + 1e-12)
    assert np.all(s * (qmax - z) >= np.maximum(hi, 0) - s / 2 - 1e-12)


def test_asymmetric_params_rejects():
    with pytest.raises(ValueError, match="min_value must be <= max_value"):
        asymmetric_params(1.0, 0.5)
    with pytest.raises(ValueError, match="must be finite"):
        asymmetric_params(-np.inf, 1.0)


def test_dequantize_round_trip_error(rng):
    x = rng.uniform(-3, 5, 5000)
    s, z = asymmetric_params(x.min(), x.max())
    err = np.abs(dequantize(quantize(x, s, z), s, z) - x)
    assert err.max() <= s / 2 + 1e-12
    with pytest.raises(ValueError, match="q must be an integer array"):
        dequantize(x, s, z)


def test_quantize_bias():
    got = quantize_bias([1.0, -2.5, 0.0], 0.5, [0.1, 1.0, 0.3])
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [20, -5, 0])
    with pytest.raises(ValueError, match="does not fit int32"):
        quantize_bias([1e9], 1e-3, 1e-3)
