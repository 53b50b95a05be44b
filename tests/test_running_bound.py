"""A-posteriori (running-error) bounds of emulated low-precision products, and the
mixed-precision "bound" criterion built on them: property tests against exact rational
arithmetic (the bound must hold for every case), with the emulated result checked bit for
bit against the independent simulator."""

from fractions import Fraction

import _simulator as S
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxerr
from jaxerr._emulate import Arithmetic, emulated_dot_general, emulated_dot_general_with_bound
from jaxerr._exact import rounding_error_bound

DN = (((1,), (0,)), ((), ()))

# (format, accumulation, fma, overflow, simulator accumulation, K)
CASES = [
    ("float8_e4m3fn", "blocked:8", True, "saturate", "fma_blocked:8", 37),
    ("bfloat16", "recursive", False, "inf", "recursive", 23),
    pytest.param("float8_e5m2", "pairwise", False, "inf", "pairwise", 16, marks=pytest.mark.slow),
    pytest.param("float16", "blocked:4", False, "inf", "blocked:4", 19, marks=pytest.mark.slow),
    pytest.param("float8_e4m3fn", "recursive", True, "inf", "fma", 21, marks=pytest.mark.slow),
]


def _sim_fmt(fmt, saturate):
    return S.custom(fmt.precision, fmt.emin, fmt.max_finite, name=fmt.name, subnormals=fmt.subnormals,
                    saturate=saturate)


@st.composite
def _operands(draw, fmt, K):
    """Values over the whole range (zeros, subnormals, near overflow) in a few magnitude
    regimes, so that cancellation, underflow and saturation all occur (drawn as a few
    parameters and a seed: cheap for hypothesis)."""
    top = int(np.floor(np.log2(fmt.max_finite)))
    lo_e = max(fmt.emin - fmt.precision, -40)
    hi_e = min(top, 40)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    def arr(shape):
        centre = draw(st.integers(lo_e + 2, hi_e - 2))
        spread = draw(st.integers(0, 6))
        pzero = draw(st.sampled_from([0.0, 0.3]))
        ppos = draw(st.sampled_from([0.5, 1.0]))
        e = rng.integers(max(lo_e, centre - spread), min(hi_e, centre + spread) + 1, shape)
        v = (1 + rng.random(shape)) * 2.0**e * np.where(rng.random(shape) < ppos, 1.0, -1.0)
        return np.where(rng.random(shape) < pzero, 0.0, v)

    return arr((3, K)), arr((K, 4))


@pytest.mark.parametrize("name,acc,fma,ov,sim_acc,K", CASES)
def test_running_bound_holds(name, acc, fma, ov, sim_acc, K):
    fmt = jaxerr.FORMATS[name]
    ar = Arithmetic.make(fmt, acc, fma=fma, overflow=ov)
    @jax.jit
    def f(x, w):
        x, w = ar.round(x), ar.round(w)
        return (x, w) + emulated_dot_general_with_bound(x, w, DN, ar)

    sf = _sim_fmt(fmt, ov == "saturate")
    seen = {"finite": 0, "tight": 0.0}

    @given(_operands(fmt, K))
    def check(xw):
        xs, ws, y, e = (np.asarray(a, np.float64) for a in f(*(np.asarray(a, np.float32) for a in xw)))
        ref = S.simulate(lambda a, b: a @ b, (xs.astype(np.float32), ws.astype(np.float32)), sf,
                         accumulation=sim_acc)[0]
        assert np.array_equal(y, ref) or np.all((y == ref) | (np.isnan(y) & np.isnan(ref)))
        for i in range(3):
            for j in range(4):
                if not np.isfinite(y[i, j]):
                    assert e[i, j] == np.inf
                    continue
                if e[i, j] == np.inf:
                    continue
                exact = sum(Fraction(float(xs[i, k])) * Fraction(float(ws[k, j])) for k in range(K))
                err = abs(Fraction(float(y[i, j])) - exact)
                assert err <= Fraction(float(e[i, j])), (i, j, float(err), e[i, j])
                seen["finite"] += 1
                seen["tight"] = max(seen["tight"], float(err) / float(e[i, j]) if e[i, j] else 0.0)

    check()
    assert seen["finite"] > 0  # not vacuous: finite bounds were checked
    assert seen["tight"] > 0.01  # ... and some were not absurdly loose


def test_rounding_error_bound_per_operation():
    """Every exact real near a format value rounds within the per-result bound: checked for
    random reals against the simulator's correct rounding (e4m3 with saturation, bfloat16
    with flush to zero)."""
    rng = np.random.default_rng(0)
    for name, ov in (("float8_e4m3fn", "saturate"), ("bfloat16", "inf"), ("float16", "inf")):
        fmt = jaxerr.FORMATS[name]
        e = rng.integers(fmt.emin - fmt.precision - 3, int(np.log2(fmt.max_finite)) + 2, 20000)
        z = np.ldexp(rng.random(20000) + 1, e) * rng.choice([-1.0, 1.0], 20000)
        y = S.round_to(z, _sim_fmt(fmt, ov == "saturate"))
        r = np.asarray(rounding_error_bound(jnp.asarray(y, jnp.float32), fmt, ov), np.float64)
        with np.errstate(invalid="ignore"):
            err = np.abs(y - z)
        ok = (err <= r) | (r == np.inf)
        assert ok.all(), (name, z[~ok][:3], y[~ok][:3], r[~ok][:3])
        assert np.isinf(r[np.abs(z) > 2 * fmt.max_finite]).all()


LOW = Arithmetic.make("float8_e4m3fn", "blocked:8", fma=True, overflow="saturate")
HIGH = Arithmetic.make("float16", "recursive")


@pytest.mark.parametrize("act,divide", [("relu", False), pytest.param("tanh", False, marks=pytest.mark.slow),
                                        pytest.param("exp", True, marks=pytest.mark.slow)])
def test_bound_criterion_certifies_kept_components(act, divide):
    """Every component the running-bound criterion keeps in e4m3 is within tol·|phi(v^)| of
    the exact activated output, with a scale (a multiplier, or a divisor) and a bias in the
    chain; some are kept."""
    K, tol = 24, 0.5
    low = LOW

    def run(x, w, b, s):
        return jaxerr.mixed_dot_general(x, w, DN, low=low, high=HIGH, tol=tol, activation=act,
                                        criterion="bound", bias=b, scale=s, divide=divide, return_stats=True)

    g = jax.jit(run)
    lowdot = jax.jit(lambda x, w: emulated_dot_general(low.round(x), low.round(w), DN, low))
    phi = {"relu": lambda v: np.maximum(v, 0.0), "tanh": np.tanh, "exp": np.exp}[act]
    kept_total = [0]

    @given(st.integers(0, 2**31 - 1))
    def check(seed):
        rng = np.random.default_rng(seed)
        x = (rng.random((8, K)) * (rng.random((8, K)) < 0.7)).astype(np.float32)
        w = (rng.normal(size=(K, 6)) * 4).astype(np.float32)
        b = (rng.normal(size=(1, 6)) * 2).astype(np.float32)
        s = np.float32(2.0 ** rng.integers(-3, 2) * (1 + rng.random() * 0.1))
        y, st_ = g(x, w, b, s)
        y = np.asarray(y, np.float64)
        lo = np.asarray(lowdot(x, w), np.float64)
        kept = (y == lo) & (np.asarray(st_["count"]) >= 0)
        lo32 = jnp.asarray(lo, jnp.float32)
        v_hat = np.asarray((lo32 / s if divide else lo32 * s) + jnp.asarray(b), np.float64)
        fs = 1 / Fraction(float(s)) if divide else Fraction(float(s))
        exact = np.asarray([[float(sum(Fraction(float(x[i, k])) * Fraction(float(w[k, j])) for k in range(K))
                                   * fs + Fraction(float(b[0, j])))
                             for j in range(6)] for i in range(8)])
        err = np.abs(phi(v_hat) - phi(exact))
        bad = kept & ~(err <= tol * np.abs(phi(v_hat)) + 1e-12 * np.abs(phi(exact)))
        assert not bad.any(), (v_hat[bad], exact[bad])
        kept_total[0] += int(kept.sum())

    check()
    assert kept_total[0] > 0
