"""Tests of the reference simulator in tests/_simulator.py.

The simulator is the ground truth for jaxerr's soundness tests, so it is
checked here against independent oracles: exact rational arithmetic
(fractions.Fraction), NumPy / ml_dtypes casts, hand-written loops, and
jax.jit itself where XLA's arithmetic is specified exactly.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

try:  # pytest puts tests/ on sys.path (rootdir-relative "prepend" import mode)
    import _simulator as S
except ImportError:  # pragma: no cover - when tests/ is a package
    from tests import _simulator as S

SIM_FORMATS = S.SIM_FORMATS
round_to = S.round_to

F32 = SIM_FORMATS["float32"]
BF16 = SIM_FORMATS["bfloat16"]
NARROW = ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2"]
ML_TYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2,
}


# ---------------------------------------------------------------------------
# Exact rational reference rounding
# ---------------------------------------------------------------------------


def _floor_log2(a: Fraction) -> int:
    """floor(log2(a)) for a positive Fraction."""
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    assert Fraction(2) ** e <= a < Fraction(2) ** (e + 1)
    return e


def _round_int_even(n: Fraction) -> int:
    f = math.floor(n)
    rem = n - f
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and f % 2 == 1):
        f += 1
    return f


def _finish(r: Fraction, negative: bool, fmt: S.SimFormat) -> float:
    if not fmt.subnormals and r < Fraction(2) ** fmt.emin:
        r = Fraction(0)
    if r > Fraction(fmt.max_finite):
        v = fmt.max_finite if fmt.saturate else math.inf
    else:
        v = float(r)  # exact: r is representable
        assert Fraction(v) == r
    return -v if negative else v


def ref_round_frac(x: Fraction, fmt: S.SimFormat) -> float:
    """Round an exact rational to ``fmt`` (ties to even), independently."""
    if x == 0:
        return 0.0
    neg = x < 0
    a = abs(x)
    e = _floor_log2(a)
    if fmt.subnormals:
        e = max(e, fmt.emin)
    q = e - fmt.p + 1
    n = _round_int_even(a / Fraction(2) ** q)
    return _finish(n * Fraction(2) ** q, neg, fmt)


def ref_round(x: float, fmt: S.SimFormat) -> float:
    if math.isnan(x) or math.isinf(x) or x == 0:
        return x
    return ref_round_frac(Fraction(x), fmt)


def ref_sqrt(a: float, fmt: S.SimFormat) -> float:
    """Correctly rounded sqrt of a positive float (exact integer arithmetic)."""
    fa = Fraction(a)
    e = _floor_log2(fa) // 2  # floor(log2(sqrt(a)))
    if fmt.subnormals:
        e = max(e, fmt.emin)
    q = e - fmt.p + 1
    t = fa / Fraction(2) ** (2 * q)  # sqrt(a)/2**q = sqrt(t)
    m = math.isqrt(math.floor(t))
    half = (Fraction(m) + Fraction(1, 2)) ** 2
    if t > half or (t == half and m % 2 == 1):
        m += 1
    return _finish(Fraction(m) * Fraction(2) ** q, False, fmt)


def _same(a, b) -> bool:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return bool(
        np.array_equal(a, b, equal_nan=True) and np.array_equal(np.signbit(a), np.signbit(b))
    )


def _eq(a, b) -> bool:
    """Value equality (NaN == NaN), ignoring the sign of zero."""
    return bool(np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64), equal_nan=True))


def _random_f64(rng, n, emin=-1074, emax=1023):
    """Random float64 values spread over binades [emin, emax] with both signs."""
    e = rng.integers(emin, emax + 1, n)
    m = rng.uniform(1.0, 2.0, n) * rng.choice([-1.0, 1.0], n)
    with np.errstate(over="ignore"):
        return np.ldexp(m, e)


def _format_range(fmt: S.SimFormat):
    return fmt.emin - fmt.p - 2, fmt.emax + 2


# ---------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SIM_FORMATS))
def test_presets_match_finfo(name):
    fmt = SIM_FORMATS[name]
    fi = np.finfo(np.float64) if name == "float64" else ml_dtypes.finfo(ML_TYPES[name])
    assert fmt.p == fi.nmant + 1
    assert fmt.emin == fi.minexp
    assert fmt.max_finite == float(fi.max)
    assert fmt.min_subnormal == float(fi.smallest_subnormal)
    assert fmt.eps == float(fi.eps)
    assert S.format_for_dtype(ML_TYPES.get(name, np.float64)) == fmt


def test_format_helpers():
    assert S.as_format("bfloat16") is BF16
    assert S.as_format(jnp.bfloat16) == BF16
    assert S.as_format(np.float32) == F32
    c = S.custom(11, -14)
    assert c.max_finite == 65504.0 and c.p == 11
    assert S.custom(4, -6, 448.0).max_finite == 448.0
    with pytest.raises(ValueError):
        S.custom(4, -6, 449.0)  # not representable with p=4
    with pytest.raises(ValueError):
        S.SimFormat("bad", 54, -1022, 1.0)
    with pytest.raises(ValueError):
        S.custom(1, -10)
    assert F32.unit_roundoff == 2.0**-24 and BF16.emax == 127


# ---------------------------------------------------------------------------
# round_to
# ---------------------------------------------------------------------------


def test_round_to_float64_is_identity():
    x = _random_f64(np.random.default_rng(0), 1000)
    x = np.concatenate([x, [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324]])
    assert _same(round_to(x, "float64"), x)


@pytest.mark.parametrize("name", ["float32", "float16"])
def test_round_to_matches_numpy_casts(name):
    # NumPy's float64 -> float32/float16 casts round correctly and directly.
    rng = np.random.default_rng(1)
    fmt = SIM_FORMATS[name]
    lo, hi = _format_range(fmt)
    x = np.concatenate([_random_f64(rng, 100_000, lo, hi), _random_f64(rng, 2000)])
    with np.errstate(over="ignore"):
        expect = x.astype(ML_TYPES[name]).astype(np.float64)
    assert _same(round_to(x, name), expect)


@pytest.mark.parametrize("name", NARROW)
def test_round_to_matches_ml_dtypes(name):
    # ml_dtypes converts float64 through float32 (double rounding), so compare
    # on float32-representable inputs, where its cast is a single rounding.
    rng = np.random.default_rng(2)
    fmt = SIM_FORMATS[name]
    lo, hi = _format_range(fmt)
    with np.errstate(over="ignore", invalid="ignore"):
        x = _random_f64(rng, 100_000, lo, hi).astype(np.float32).astype(np.float64)
        ml = x.astype(ML_TYPES[name]).astype(np.float64)
    mine = round_to(x, name)
    ok = ~np.isnan(ml)
    assert _same(mine[ok], ml[ok])
    # float8_e4m3fn has no infinity: ml_dtypes' NaN is exactly our overflow
    assert np.all(np.isinf(mine[~ok]))
    if name == "float8_e4m3fn":
        assert (~ok).sum() > 100


def test_round_to_does_not_double_round():
    # 1 + 2**-8 + 2**-40 is above the bfloat16 midpoint 1 + 2**-8 ...
    x = 1 + 2.0**-8 + 2.0**-40
    assert round_to(x, "bfloat16") == 1 + 2.0**-7
    # ... while rounding through float32 first lands on the midpoint (-> 1).
    assert round_to(round_to(x, "float32"), "bfloat16") == 1.0


@pytest.mark.parametrize("name", list(SIM_FORMATS)[1:])
def test_round_to_matches_fraction_reference(name):
    rng = np.random.default_rng(3)
    fmt = SIM_FORMATS[name]
    lo, hi = _format_range(fmt)
    x = np.concatenate([_random_f64(rng, 1500, lo, hi), _random_f64(rng, 300)])
    for f in (fmt, S.custom(fmt.p, fmt.emin, fmt.max_finite, subnormals=False, saturate=True)):
        got = round_to(x, f)
        expect = np.array([ref_round(float(v), f) for v in x])
        assert _same(got, expect), f


def _neighbour_midpoints(fmt, rng, n):
    """Random midpoints between consecutive positive values of ``fmt`` (normal,
    subnormal and top binades) with the expected ties-to-even result."""
    lo, hi = fmt.emin - fmt.p + 1, fmt.emax
    v = round_to(np.abs(_random_f64(rng, n, lo, hi)), fmt)
    v = np.concatenate([v, [fmt.max_finite, fmt.min_normal, fmt.min_subnormal, 0.0]])
    v = v[np.isfinite(v) & (v <= fmt.max_finite)]
    step = np.where(v == 0, fmt.min_subnormal, S.ulp(v, fmt))
    nxt = v + step
    mid = v + step / 2
    sig = np.rint(v / step)
    even = np.where(sig % 2 == 0, v, nxt)
    even = np.where(even > fmt.max_finite, np.inf, even)
    return mid, even


@pytest.mark.parametrize("name", list(SIM_FORMATS)[1:])
def test_round_to_ties_to_even(name):
    fmt = SIM_FORMATS[name]
    mid, even = _neighbour_midpoints(fmt, np.random.default_rng(4), 3000)
    got = round_to(np.concatenate([mid, -mid]), fmt)
    assert _same(got, np.concatenate([even, -even]))
    assert _same(got[:50], [ref_round(float(m), fmt) for m in mid[:50]])
    if name != "float32":  # midpoints of p<=23 formats are float32 values
        with np.errstate(over="ignore", invalid="ignore"):
            ml = mid.astype(np.float32).astype(ML_TYPES[name]).astype(np.float64)
        ok = ~np.isnan(ml)
        assert _same(got[: mid.size][ok], ml[ok])


def test_round_to_overflow_thresholds():
    # float16: max 65504, ulp 32; halfway 65520 ties to even -> inf
    assert round_to(65519.99, "float16") == 65504.0
    assert round_to(65520.0, "float16") == np.inf
    # e4m3fn: max 448 = 1.110b * 2**8 is even; 464 ties down, above overflows
    assert round_to(464.0, "float8_e4m3fn") == 448.0
    assert round_to(-464.0001, "float8_e4m3fn") == -np.inf
    sat = S.custom(4, -6, 448.0, saturate=True)
    assert round_to(1e30, sat) == 448.0 and round_to(-1e30, sat) == -448.0
    assert round_to(np.inf, sat) == np.inf


def test_round_to_special_values_and_shapes():
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -1e-300, 1e-300])
    for name in SIM_FORMATS:
        r = round_to(x, name)
        assert np.isnan(r[0]) and r[1] == np.inf and r[2] == -np.inf
        assert _same(r[3:5], [0.0, -0.0])
        if name != "float64":
            assert _same(r[5:], [-0.0, 0.0])
    r = round_to(1.1, "bfloat16")
    assert isinstance(r, np.ndarray) and r.shape == () and r.dtype == np.float64
    assert round_to(np.ones((2, 3, 4)), "float16").shape == (2, 3, 4)
    assert _same(round_to(np.arange(6.0)[::2] + 0.1, "float32"), np.float32([0.1, 2.1, 4.1]))


def test_flush_to_zero():
    ftz = S.custom(24, -126, F32.max_finite, subnormals=False)
    tiny = 2.0**-130
    assert _same(round_to([tiny, -tiny], ftz), [0.0, -0.0])
    assert round_to(tiny, F32) == tiny
    # flushing happens after rounding: a value rounding up to 2**-126 is kept
    assert round_to(2.0**-126 * (1 - 2.0**-26), ftz) == 2.0**-126
    assert round_to(2.0**-126 * (1 - 2.0**-23), ftz) == 0.0


@settings(max_examples=400, deadline=None)
@given(
    x=st.floats(allow_nan=False, allow_infinity=False, width=64),
    name=st.sampled_from(list(SIM_FORMATS)),
    flush=st.booleans(),
)
def test_round_to_hypothesis_presets(x, name, flush):
    fmt = SIM_FORMATS[name]
    if flush:
        fmt = S.custom(fmt.p, fmt.emin, fmt.max_finite, subnormals=False)
    assert _same(round_to(x, fmt), ref_round(x, fmt))


@settings(max_examples=300, deadline=None)
@given(
    p=st.integers(2, 52),
    emin=st.integers(-400, 0),
    m=st.floats(1.0, 2.0, exclude_max=True),
    e=st.integers(-480, 480),
    subnormals=st.booleans(),
)
def test_round_to_hypothesis_custom_formats(p, emin, m, e, subnormals):
    fmt = S.custom(p, emin, subnormals=subnormals)
    x = math.ldexp(m, e)
    assert _same(round_to([x, -x], fmt), [ref_round(x, fmt), ref_round(-x, fmt)])


def test_ulp():
    assert S.ulp(1.0, "float32") == 2.0**-23
    assert S.ulp(1.5, "bfloat16") == 2.0**-7
    assert S.ulp(0.0, "float16") == 2.0**-24
    assert S.ulp(2.0**-20, "float16") == 2.0**-24  # subnormal spacing


# ---------------------------------------------------------------------------
# Correctly rounded basic operations (residual-corrected double rounding)
# ---------------------------------------------------------------------------

WIDE = S.custom(40, -300)  # p=40: float64 -> p40 double rounding is NOT innocuous


def test_basic_ops_correct_for_wide_custom_format():
    rng = np.random.default_rng(5)
    a = round_to(_random_f64(rng, 3000, -20, 20), WIDE)
    b = round_to(_random_f64(rng, 3000, -20, 20), WIDE)
    # Operands engineered so that fl64(a+b) is a p40 midpoint but a+b is not.
    k = rng.integers(0, 2**38, 500) * 2.0
    a2 = 1.0 + k * 2.0**-39
    b2 = rng.choice([-1.0, 1.0], 500) * (2.0**-40 + 2.0**-79)
    a = np.concatenate([a, a2])
    b = np.concatenate([b, b2])
    Fa, Fb = [Fraction(float(v)) for v in a], [Fraction(float(v)) for v in b]
    add = np.array([ref_round_frac(x + y, WIDE) for x, y in zip(Fa, Fb)])
    mul = np.array([ref_round_frac(x * y, WIDE) for x, y in zip(Fa, Fb)])
    div = np.array([ref_round_frac(x / y, WIDE) for x, y in zip(Fa, Fb)])
    sqr = np.array([ref_sqrt(abs(float(x)), WIDE) for x in a])
    assert _same(S._rn_add(a, b, WIDE), add)
    assert _same(S._rn_mul(a, b, WIDE), mul)
    assert _same(S._rn_div(a, b, WIDE), div)
    assert _same(S._rn_sqrt(np.abs(a), WIDE), sqr)
    # naive double rounding really is wrong on the engineered cases
    assert not _same(round_to(a2 + b2, WIDE), add[-500:])
    # and the same through the interpreter
    got = S.simulate(lambda x, y: x + y, (a2, b2), fmt=WIDE)[0]
    assert _same(got, add[-500:])


@settings(max_examples=200, deadline=None)
@given(
    x=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    y=st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    name=st.sampled_from(["float32", "bfloat16", "float16", "float8_e5m2"]),
)
def test_basic_ops_hypothesis(x, y, name):
    fmt = SIM_FORMATS[name]
    x, y = float(round_to(x, fmt)), float(round_to(y, fmt))
    fx, fy = Fraction(x) if math.isfinite(x) else None, Fraction(y) if math.isfinite(y) else None
    if fx is None or fy is None:
        return
    assert _eq(S._rn_add(x, y, fmt), ref_round_frac(fx + fy, fmt))
    assert _eq(S._rn_mul(x, y, fmt), ref_round_frac(fx * fy, fmt))
    if y != 0:
        assert _eq(S._rn_div(x, y, fmt), ref_round_frac(fx / fy, fmt))
    if x > 0:
        assert _eq(S._rn_sqrt(x, fmt), ref_sqrt(x, fmt))


# ---------------------------------------------------------------------------
# simulate() against jax.jit
# ---------------------------------------------------------------------------


def _jit64(f, *args):
    out = jax.jit(f)(*args)
    return [np.asarray(o).astype(np.float64) for o in jax.tree_util.tree_leaves(out)]


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "sqrt": lambda a, b: jnp.sqrt(jnp.abs(a)),
    "max": jnp.maximum,
    "min": jnp.minimum,
    "select": lambda a, b: jnp.where(a > b, a, -b),
    "clamp": lambda a, b: jax.lax.clamp(jnp.float32(-0.5).astype(a.dtype), a, b),
    "misc": lambda a, b: (jnp.floor(a), jnp.ceil(b), jnp.round(a * 4), jnp.sign(b), jnp.abs(a)),
    "intpow": lambda a, b: (a**5, b**-3, a**2, jnp.square(b)),
}


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16, np.float16])
@pytest.mark.parametrize("op", list(BINARY))
def test_elementwise_exactly_like_xla(op, dtype):
    rng = np.random.default_rng(6)
    a = (rng.standard_normal(4000) * 3).astype(dtype)
    b = (rng.standard_normal(4000) + 0.1).astype(dtype)
    # XLA:CPU flushes float32 subnormals (not float16 ones, computed via float32)
    flush = np.dtype(dtype) != np.float16
    got = S.simulate(BINARY[op], (a, b), flush=flush, check=True)
    expect = _jit64(BINARY[op], a, b)
    for g, e in zip(got, expect):
        assert _same(g, e), op


def _pos(t):
    return np.abs(t) + np.float32(1e-3)


TRANSCENDENTAL = {  # name: (input preparation in float32, function)
    "exp": (None, jnp.exp),
    "log": (_pos, jnp.log),
    "tanh": (None, jnp.tanh),
    "logistic": (None, jax.nn.sigmoid),
    "erf": (None, jax.scipy.special.erf),
    "log1p": (np.abs, jnp.log1p),
    "expm1": (None, jnp.expm1),
    "rsqrt": (_pos, jax.lax.rsqrt),
    "exp2": (None, jnp.exp2),
    "pow": (_pos, lambda t: t**1.7),
    "sin": (None, jnp.sin),
}


@pytest.mark.parametrize("name", list(TRANSCENDENTAL))
def test_transcendentals_close_to_xla(name):
    x = (np.random.default_rng(7).standard_normal(3000) * 3).astype(np.float32)
    pre, f = TRANSCENDENTAL[name]
    if pre is not None:
        x = pre(x).astype(np.float32)
    got = S.simulate(f, (x,), flush=True, check=True)[0]
    (expect,) = _jit64(f, x)
    assert np.all(np.abs(got - expect) <= 8 * S.ulp(got, F32))
    ex = S.exact(f, (x,))[0]
    # correctly rounded up to float64 double rounding: within half an ulp (+tiny)
    assert np.all(np.abs(got - ex) <= 0.5000001 * S.ulp(ex, F32))


def test_integer_pow_multiplication_sequence():
    x = (np.random.default_rng(8).standard_normal(1000) * 2).astype(np.float32)
    x2 = x * x
    x4 = x2 * x2
    x5 = x * x4  # jax's binary powering: acc = x; base = x^2, x^4; acc = x * x^4
    inv3 = np.float32(1) / (x * x2)
    got5, got_m3 = S.simulate(lambda t: (t**5, t**-3), (x,))
    assert _same(got5, x5) and _same(got_m3, inv3)
    assert _same(S.simulate(lambda t: t**0, (x,))[0], np.ones(1000))


def test_convert_element_type():
    rng = np.random.default_rng(9)
    x = (rng.standard_normal(5000) * 100).astype(np.float32)
    bf = S.simulate(lambda t: t.astype(jnp.bfloat16), (x,))[0]
    assert _same(bf, x.astype(ml_dtypes.bfloat16).astype(np.float64))
    ints = np.array([-2.7, 2.7, -0.5, 0.5, 1e10, -1e10, np.nan, 7.0], np.float32)
    got = S.simulate(lambda t: t.astype(jnp.int32), (ints,))[0]
    assert got.dtype == np.int32
    assert list(got) == [-2, 2, 0, 0, 2**31 - 1, -(2**31), 0, 7]
    assert list(got[[0, 1, 2, 3, 7]]) == list(np.asarray(jax.jit(lambda t: t.astype(jnp.int32))(ints))[[0, 1, 2, 3, 7]])
    # int -> float rounds correctly (2**24 + 1 is not a float32)
    n = np.array([2**24 + 1, 2**24 + 3, -(2**24) - 1, 7], np.int32)
    got = S.simulate(lambda t: t.astype(jnp.float32), (n,))[0]
    assert _same(got, n.astype(np.float32).astype(np.float64))
    # with a single format everywhere, float->float conversions are the identity
    y = S.simulate(lambda t: t.astype(jnp.float16).astype(jnp.float32) * 3, (x,), fmt="float32")
    assert _same(y[0], S._rn_mul(x, 3.0, F32))


def test_reduce_sum_sequential_is_a_python_loop():
    x = (np.random.default_rng(10).standard_normal((7, 333)) * 10).astype(np.float32)
    got = S.simulate(lambda t: jnp.sum(t, axis=1), (x,))[0]
    for row, g in zip(x, got):
        acc = row[0]
        for v in row[1:]:
            acc = np.float32(acc + v)
        assert g == acc
    rev = S.simulate(lambda t: jnp.sum(t, axis=1), (x,), order="reverse")[0]
    for row, g in zip(x, rev):
        acc = row[-1]
        for v in row[-2::-1]:
            acc = np.float32(acc + v)
        assert g == acc


def _pairwise32(v):
    if len(v) == 1:
        return np.float32(v[0])
    h = len(v) // 2
    return np.float32(_pairwise32(v[:h]) + _pairwise32(v[h:]))


def _seq32(v):
    acc = np.float32(v[0])
    for t in v[1:]:
        acc = np.float32(acc + t)
    return acc


def test_summation_orders_match_hand_loops():
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((5, 101)) * 10).astype(np.float32)
    f = lambda t: jnp.sum(t, axis=1)  # noqa: E731
    pw = S.simulate(f, (x,), accumulation="pairwise")[0]
    pw2 = S.simulate(f, (x,), order="pairwise")[0]
    assert _same(pw, [_pairwise32(r) for r in x]) and _same(pw, pw2)
    bl = S.simulate(f, (x,), accumulation="blocked:8")[0]
    expect = []
    for r in x:
        blocks = [_seq32(r[i : i + 8]) for i in range(0, len(r), 8)]
        expect.append(_seq32(blocks))
    assert _same(bl, expect)
    rnd = S.simulate(f, (x,), order="random", rng=np.random.default_rng(42))[0]
    perms = S.random_perms(np.random.default_rng(42), 5, 101)
    assert _same(rnd, [_seq32(r[p]) for r, p in zip(x, perms)])
    assert not _same(rnd, S.simulate(f, (x,))[0])  # it really is another order


def test_wide_and_fma_accumulation():
    rng = np.random.default_rng(12)
    a = rng.standard_normal((3, 64)).astype(ml_dtypes.bfloat16)
    w = rng.standard_normal((64, 4)).astype(ml_dtypes.bfloat16)
    f = lambda p, q: p @ q  # noqa: E731
    wide = S.simulate(f, (a, w), accumulation="wide:float32")[0]
    a32, w32 = a.astype(np.float32), w.astype(np.float32)
    for i in range(3):
        for j in range(4):
            acc = _seq32(a32[i] * w32[:, j])  # bf16 products are exact in float32
            assert wide[i, j] == float(np.float32(acc).astype(ml_dtypes.bfloat16))
    x = rng.standard_normal((3, 50)).astype(np.float32)
    y = rng.standard_normal((50, 2)).astype(np.float32)
    fma = S.simulate(f, (x, y), accumulation="fma")[0]
    for i in range(3):
        for j in range(2):
            acc = ref_round_frac(Fraction(float(x[i, 0])) * Fraction(float(y[0, j])), F32)
            for k in range(1, 50):
                exact = Fraction(acc) + Fraction(float(x[i, k])) * Fraction(float(y[k, j]))
                acc = ref_round_frac(exact, F32)
            assert fma[i, j] == acc
    with pytest.raises(ValueError):
        S.simulate(f, (x, y), accumulation="fma", order="pairwise")
    with pytest.raises(ValueError):
        S.simulate(f, (x, y), accumulation="nonsense")
    with pytest.raises(ValueError):
        S.simulate(f, (x, y), order="sideways")


def _gamma(n, u):
    return n * u / (1 - n * u)


@pytest.mark.parametrize(
    "acc,order",
    [
        ("recursive", "sequential"),
        ("recursive", "reverse"),
        ("recursive", "random"),
        ("pairwise", "sequential"),
        ("blocked:16", "random"),
        ("wide:float32", "sequential"),
        ("fma", "random"),
    ],
)
def test_accumulations_within_classical_bound(acc, order):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((8, 200)).astype(np.float32)
    w = rng.standard_normal((200, 6)).astype(np.float32)
    f = lambda p, q: (p @ q, jnp.sum(p, axis=1))  # noqa: E731
    for fmt in (None, "bfloat16"):
        xs, ws = (x, w) if fmt is None else (round_to(x, BF16), round_to(w, BF16))
        sim = S.simulate(f, (xs, ws), fmt=fmt, accumulation=acc, order=order, check=True)
        ex = S.exact(f, (xs, ws))
        u = (F32 if fmt is None else BF16).unit_roundoff
        mag = (np.abs(xs.astype(np.float64)) @ np.abs(ws), np.abs(xs).sum(axis=1))
        for s, e, m in zip(sim, ex, mag):
            # products rounded once, n-1 additions, (wide: one final rounding)
            assert np.all(np.abs(s - e) <= _gamma(200, u) * m + u * np.abs(e))
    # and XLA's own float32 matmul/sum are within the same bound of the simulation
    sim = S.simulate(f, (x, w), accumulation=acc, order=order)
    for s, j, m in zip(sim, _jit64(f, x, w), (np.abs(x.astype(float)) @ np.abs(w), np.abs(x).sum(1))):
        assert np.all(np.abs(s - j) <= 2 * _gamma(200, F32.unit_roundoff) * m)


DOT_CASES = [
    ((3, 4), (4, 5), (((1,), (0,)), ((), ()))),
    ((4, 3), (4, 5), (((0,), (0,)), ((), ()))),
    ((2, 3, 4), (2, 4, 5), (((2,), (1,)), ((0,), (0,)))),
    ((2, 3, 4, 5), (5, 2, 3, 6), (((1, 3), (2, 0)), ((0,), (1,)))),
    ((3, 2), (4,), (((), ()), ((), ()))),
    ((3, 2, 4), (3, 4, 2), (((), ()), ((0, 1), (0, 2)))),
    ((2, 3, 7), (7, 3, 2), (((2, 1), (0, 1)), ((0,), (2,)))),
]


@pytest.mark.parametrize("ls,rs,dn", DOT_CASES)
def test_dot_general_layout(ls, rs, dn):
    rng = np.random.default_rng(14)
    lhs = rng.integers(-8, 9, ls).astype(np.float32)  # small integers: exact sums
    rhs = rng.integers(-8, 9, rs).astype(np.float32)

    def f(a, b):
        return jax.lax.dot_general(a, b, dn)

    (expect,) = _jit64(f, lhs, rhs)
    for acc, order in [("recursive", "sequential"), ("recursive", "random"), ("pairwise", "sequential")]:
        got = S.simulate(f, (lhs, rhs), accumulation=acc, order=order)[0]
        assert got.shape == expect.shape and _same(got, expect)
    assert _same(S.exact(f, (lhs, rhs))[0], expect)
    assert _eq(S.exact(f, (lhs, rhs), dps=20)[0], expect)  # mpmath has no -0
    li, ri = lhs.astype(np.int32), rhs.astype(np.int32)
    got = S.simulate(f, (li, ri))[0]
    assert got.dtype == np.int32 and np.array_equal(got, np.asarray(jax.jit(f)(li, ri)))


def test_dot_general_preferred_type_and_big_matmul_speed():
    rng = np.random.default_rng(15)
    a = rng.standard_normal((32, 256)).astype(ml_dtypes.bfloat16)
    w = rng.standard_normal((256, 256)).astype(ml_dtypes.bfloat16)

    def f(p, q):
        return jax.lax.dot_general(p, q, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)

    t0 = time.perf_counter()
    got = S.simulate(f, (a, w))[0]
    S.simulate(lambda p, q: p @ q, (a.astype(np.float32), w.astype(np.float32)), order="random")
    assert time.perf_counter() - t0 < 2.0  # typically ~0.4 s
    # float32 accumulation of exact bf16 products: equal to the hand loop
    a32, w32 = a.astype(np.float32), w.astype(np.float32)
    assert got[0, 0] == _seq32(a32[0] * w32[:, 0])
    assert got[31, 255] == _seq32(a32[31] * w32[:, 255])


# ---------------------------------------------------------------------------
# exact()
# ---------------------------------------------------------------------------


def test_exact_matches_float64_numpy():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((6, 20)).astype(np.float32)
    w = rng.standard_normal((20, 3)).astype(np.float32)

    def f(p, q):
        h = jnp.tanh(p @ q)
        return jax.nn.softmax(h, axis=-1), jnp.sum(jnp.exp(p), axis=0), jnp.sqrt(jnp.abs(p)) / 3

    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    h = np.tanh(x64 @ w64)
    sm = np.exp(h - h.max(-1, keepdims=True))
    sm = sm / sm.sum(-1, keepdims=True)
    expect = [sm, np.exp(x64).sum(0), np.sqrt(np.abs(x64)) / 3]
    for got, e in zip(S.exact(f, (x, w)), expect):
        np.testing.assert_allclose(got, e, rtol=1e-13, atol=0)
    for got, e in zip(S.exact(f, (x, w), dps=30), expect):
        np.testing.assert_allclose(got, e, rtol=1e-13, atol=0)


def test_exact_ignores_program_roundings_and_compensates():
    x = np.array([1.5, 1 + 2.0**-20, 3.0], np.float32)
    f = lambda t: t.astype(jnp.bfloat16).astype(jnp.float32) * 3  # noqa: E731
    assert _same(S.exact(f, (x,))[0], x.astype(np.float64) * 3)
    assert not _same(S.simulate(f, (x,))[0], x.astype(np.float64) * 3)
    big = np.array([1e20, 1.0, -1e20, 3.0, -1.0], np.float32)
    assert float(np.sum(big.astype(np.float64))) != 3.0  # plain float64 fails here
    g = jnp.sum
    assert S.exact(g, (big,))[0] == 3.0
    assert S.exact(g, (big,), dps=50)[0] == 3.0
    assert S.exact(lambda t: jnp.cumsum(t)[-1], (big,))[0] == 3.0
    assert S.exact(lambda t: jnp.dot(t, t * 0 + 1), (big,))[0] == 3.0
    mp = S.exact(lambda t: jnp.exp(t[:2]), (np.float32([0.5, 1.0]),), dps=40, return_mp=True)[0]
    with S.mpmath.workdps(40):
        assert mp.dtype == object and abs(mp[1] - S.mpmath.e) < S.mpmath.mpf(10) ** -35
    # inputs are taken as given unless round_inputs=True
    x64 = np.array([0.1])
    assert S.exact(lambda t: t * 1, (x64,))[0][0] == 0.1
    assert S.exact(lambda t: t * 1, (x64,), round_inputs=True)[0][0] == float(np.float32(0.1))


def test_exact_erfc_of_huge_arguments():
    """mpmath 1.3's erfc raised OverflowError (``int(x)**2 * 1.44`` as a float) past
    x ~ 1.3e154: fuzz seed 22011 (float64 erfc(ceil(exp(x)))) crashed the reference."""
    mp = S.mpmath
    erfc = S._MP_UNARY["erfc"]
    with mp.workdps(40):
        for x in (mp.mpf(1e300), mp.mpf(np.finfo(np.float64).max)):
            got = erfc(x)
            # the asymptotic series' first two terms bracket erfc(x)
            first = mp.exp(-x * x) / (x * mp.sqrt(mp.pi))
            assert first * (1 - 1 / (2 * x * x)) <= got <= first and got > 0
        x = mp.mpf(2e100)  # the huge-argument branch agrees with mpmath where both work
        assert abs(erfc(x) / mp.erfc(x) - 1) < mp.mpf(10) ** -35
        assert erfc(mp.mpf(-1e300)) == 2 and erfc(mp.mpf(3)) == mp.erfc(3)
        assert erfc(mp.inf) == 0 and mp.isnan(erfc(mp.nan))
    # through the exact interpreter: exp(400) ~ 5e173 exactly (no float overflow in mpmath)
    x = np.float32([400.0, 1.0])
    got = S.exact(lambda t: jax.lax.erfc(jnp.exp(t)), (x,), dps=40, return_mp=True)[0]
    with mp.workdps(40):
        assert 0 < got[0] < mp.mpf(10) ** -1000 and abs(got[1] - mp.erfc(mp.e)) < mp.mpf(10) ** -35


def test_exact_float_to_int_still_truncates():
    x = np.array([2.7, -2.7], np.float32)
    for dps in (None, 30):
        got = S.exact(lambda t: t.astype(jnp.int32) * 1.0, (x,), dps=dps)[0]
        assert list(got) == [2.0, -2.0]


# ---------------------------------------------------------------------------
# Interpreter coverage: sub-jaxprs, control flow, structural primitives
# ---------------------------------------------------------------------------


@jax.custom_vjp
def _cvjp(x):
    return x * 3 + 1


_cvjp.defvjp(lambda x: (_cvjp(x), None), lambda r, t: (t * 3,))


def _program(x, w):
    inner = jax.jit(lambda t: t * 2 - 1)
    y = inner(x) @ w
    y = jax.nn.relu(y) + _cvjp(y)
    y = jax.checkpoint(lambda t: t * t + t)(y)
    y = jax.lax.cond(jnp.sum(y) > 0, lambda t: t - 1, lambda t: t + 1, y)
    y = jax.lax.fori_loop(0, 3, lambda i, c: c * 0.5 + 1, y)
    z = jax.lax.while_loop(lambda c: c[0] < 4, lambda c: (c[0] + 1, c[1] * 1.5), (0, y))[1]
    c, s = jax.lax.scan(lambda c, t: (c + t, c * t), jnp.zeros(y.shape[1]), y)
    _, sr = jax.lax.scan(lambda c, t: (c + t, c - t), jnp.zeros(y.shape[1]), y, reverse=True)
    extra = (
        jnp.concatenate([x, x[::-1]], axis=0),
        jnp.pad(x, ((1, 2), (0, 1))),
        jax.lax.pad(x, jnp.float32(-1), ((1, -1, 1), (0, 0, 2))),
        jnp.flip(x, 1),
        jax.lax.dynamic_slice(x, (1, 2), (2, 2)),
        jax.lax.dynamic_update_slice(x, jnp.ones((2, 2)), (5, 5)),
        jnp.transpose(x).reshape(-1)[3:9],
        jnp.expand_dims(x[0], 0).squeeze(0),
        jnp.argmax(x, axis=0),
        jnp.argmin(x, axis=1),
        jnp.max(x, axis=1),
        jnp.min(x),
        jnp.cumsum(x, axis=1),
        jnp.cumprod(x[:, :3], axis=0),
        jax.lax.cummax(x, axis=0, reverse=True),
        jnp.sort(x, axis=1),
        jnp.argsort(x[0]),
        jnp.prod(x[:, :2], axis=0),
        jnp.isfinite(x / (x - x[0, 0])),
        jnp.arange(6.0) * x[0, 0],
        jnp.split(x, [1, 3], axis=1)[1],
        jnp.mean(x) + jnp.var(x),
        (x > 0) & (w[0, 0] < 0) | ~(x < 1),
        jnp.where(x > 0, x, 0).astype(jnp.int32) // 2,
        jax.lax.rem(x, jnp.float32(0.7)),
        jax.lax.reduce_precision(x, exponent_bits=5, mantissa_bits=4),
    )
    return y, z, c, s, sr, extra


def _program_args():
    rng = np.random.default_rng(17)
    return (
        (rng.standard_normal((6, 7)) * 2).astype(np.float32),
        (rng.standard_normal((7, 4)) * 0.3).astype(np.float32),
    )


def test_interpreter_covers_subjaxprs_and_control_flow():
    args = _program_args()
    got = S.simulate(_program, args, flush=True, check=True)
    expect = jax.tree_util.tree_leaves(jax.jit(_program)(*args))
    assert len(got) == len(expect)
    for i, (g, e) in enumerate(zip(got, expect)):
        e = np.asarray(e)
        assert g.shape == e.shape and g.dtype == (np.float64 if e.dtype.kind == "f" else e.dtype)
        if i in (0, 1, 2, 3, 4):  # contain dots / sums: XLA order differs
            np.testing.assert_allclose(g, e.astype(np.float64), rtol=2e-5, atol=1e-5)
        elif e.dtype.kind == "f":
            tol = 0 if i not in (5 + 12, 5 + 13, 5 + 17, 5 + 21) else 1e-5
            np.testing.assert_allclose(g, e.astype(np.float64), rtol=tol, atol=tol)
        else:
            assert np.array_equal(g, e), i
    tree = S.simulate(_program, args, as_tree=True)
    assert isinstance(tree, tuple) and len(tree[5]) == 26
    # exact modes run the same program
    ex = S.exact(_program, args)
    mp = S.exact(_program, args, dps=25)
    for a, b in zip(ex, mp):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_every_result_is_in_format_for_narrow_formats():
    args = _program_args()
    for fmt in ("bfloat16", "float16", "float8_e4m3fn", S.custom(12, -30)):
        S.simulate(_program, args, fmt=fmt, check=True)
        S.simulate(_program, args, fmt=fmt, accumulation="blocked:2", order="random", check=True)


def test_flush_models_xla_cpu():
    a, b = np.float32([2.0**-130, 2.0**-120]), np.float32([3.0, 2.0**-10])
    f = lambda p, q: p * q  # noqa: E731
    assert _same(S.simulate(f, (a, b), flush=True)[0], _jit64(f, a, b)[0])
    assert _same(S.simulate(f, (a, b))[0], [3 * 2.0**-130, 2.0**-130])


def test_unsupported_primitive_raises():
    with pytest.raises(NotImplementedError, match="erf_inv"):
        S.simulate(jax.scipy.special.erfinv, (np.float32([0.5]),))
    with pytest.raises(NotImplementedError, match="bessel_i1e"):
        S.simulate(lambda t: jax.lax.bessel_i1e(t), (np.ones(4, np.float32),))


def test_gather_moves_values_exactly():
    x = np.float32([1.5, 2.25, 3.125, 4.0])
    out = S.simulate(lambda t, i: t[i] * 2.0, (x, np.array([3, 0, 2])))
    np.testing.assert_array_equal(out[0], [8.0, 3.0, 6.25])


def test_jaxpr_entry_points_and_unflatten():
    x = np.float32([1.0, 2.0, 3.0])
    closed, tree = S.trace(lambda t: {"a": t * 2, "b": (jnp.sum(t),)}, (x,))
    flat = S.simulate_jaxpr(closed, [x])
    out = S.unflatten(tree, flat)
    assert set(out) == {"a", "b"} and out["b"][0] == 6.0
    assert S.exact_jaxpr(closed, [x])[1] == 6.0
    # a single non-tuple argument and python scalars
    assert S.simulate(lambda t: t + 1, np.float32(2))[0] == 3.0
    assert S.simulate(lambda t, s: t * s, (x, 0.5))[0][2] == 1.5


def test_sample_box():
    rng = np.random.default_rng(18)
    lo, hi = np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.0, 5.0])
    pts = S.sample_box(lo, hi, 50, rng)
    assert pts.shape == (50, 3) and pts.dtype == np.float64
    assert _same(pts[0], lo) and _same(pts[1], hi) and _same(pts[2], (lo + hi) / 2)
    assert np.all((pts >= lo) & (pts <= hi))
    assert len({tuple(p) for p in pts}) > 40
    pb = S.sample_box(lo, hi, 50, rng, fmt="bfloat16")
    assert np.all((pb >= lo) & (pb <= hi)) and _same(round_to(pb, BF16), pb)
    assert S.sample_box(0.0, 1.0, 2, rng).shape == (2,)
