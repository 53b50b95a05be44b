"""Fuzzing: random programs x formats x accumulation models x domains against the
independent simulator (tests/_fuzz.py). A bounded run here; long campaigns with
``python scripts/fuzz.py --cases N``. Also the minimised reproducers of every bug
the fuzzer found."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import jaxerr

try:
    import _fuzz as Z
    from _soundness import check
except ImportError:  # pragma: no cover
    from tests import _fuzz as Z
    from tests._soundness import check


def test_fuzz_ops_use_only_supported_primitives_and_cover_the_rules():
    """Every op of the generator traces to primitives jaxerr has rules for, and the ops
    together exercise most of the registered rules."""
    from jaxerr import _compat

    seen = set()

    def visit(j):
        for e in j.eqns:
            seen.add(e.primitive)
            for s in _compat.subjaxprs(e):
                visit(s)

    x = jnp.ones((3, 3), jnp.float32)
    for op in Z.OPS:
        arity = 1 if op in Z.UNARY else 2 if op in Z.BINARY else 3
        d = Z.NumpyDraw(0)
        params = Z._draw_params(d, op, [[3, 3]] * arity)
        if params is None:
            continue
        visit(jax.make_jaxpr(lambda *xs, op=op, params=params: Z._apply(op, list(xs), params))(*[x] * arity).jaxpr)
    missing = {p.name for p in seen if p not in jaxerr.interval_rules and p not in _compat.CALL_PRIMITIVES}
    assert not missing, missing
    # the elementwise, reduction, linear and structural rules (newer families, e.g.
    # control flow and convolutions, are fuzzed by their own tests)
    core = {"abs", "add", "argmax", "argmin", "broadcast_in_dim", "ceil", "clamp", "concatenate",
            "convert_element_type", "div", "dot_general", "dynamic_slice", "dynamic_update_slice", "eq",
            "erf", "erfc", "exp", "exp2", "expm1", "floor", "gather", "ge", "gt", "integer_pow",
            "is_finite", "le", "log", "log1p", "logistic", "lt", "max", "min", "mul", "neg", "pad",
            "pow", "reduce_max", "reduce_min", "reduce_sum", "reshape", "rev", "round", "rsqrt",
            "select_n", "sign", "slice", "sqrt", "square", "stop_gradient", "sub", "tanh", "transpose"}
    assert core <= {p.name for p in seen}, sorted(core - {p.name for p in seen})


def test_spec_json_roundtrip_and_dce():
    spec = Z.draw_spec(Z.NumpyDraw(5))
    again = Z.Spec.from_json(json.loads(json.dumps(spec.to_json())))
    assert again == spec
    assert len(Z._dce(spec).nodes) <= len(spec.nodes)


# The bounded default run: few examples (each compiles one analysis), small programs.
@settings(max_examples=2, derandomize=True, deadline=None)
@given(case=Z.cases(batch=8, max_nodes=3))
def test_fuzz_bounded(case):
    spec, config, inputs, batched = case
    r = Z.run_case(spec, config, inputs, batched=batched, n_samples=3)
    assert not r.violations, f"{config.label()}\n{spec}\n" + "\n".join(r.violations[:5])


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(case=Z.cases(batch=32, max_nodes=8))
def test_fuzz_long(case):
    spec, config, inputs, batched = case
    r = Z.run_case(spec, config, inputs, batched=batched, n_samples=3)
    assert not r.violations, f"{config.label()}\n{spec}\n" + "\n".join(r.violations[:5])


# ---------------------------------------------------------------------------
# Minimised reproducers of the bugs the fuzzer found
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("domain", ["interval", pytest.param("first_order", marks=pytest.mark.slow)])
def test_sqrt_of_range_touching_zero_in_computed_values(domain):
    """sqrt(x*x) over x in [-0.0283, -0.0086] in float8_e5m2: the computed x*x may be 0,
    and the derivative bound 0.5/down(sqrt(0)) = 0.5/(-tiny) was negative: abs_err came
    back as -1.3e34 (seeds 13, 1000 of the fuzzer)."""
    lo, hi = np.float32(-0.028261371), np.float32(-0.008591764)
    b = jaxerr.bound(lambda x: jnp.sqrt(x * x), "float8_e5m2", domain=domain, warn=False)(
        jaxerr.Interval(jnp.asarray([lo]), jnp.asarray([hi])))
    assert float(b.abs_err[0]) >= 0 and float(b.computed_lo[0]) <= float(b.computed_hi[0])
    v = check(lambda x: jnp.sqrt(x * x), [np.array([(lo + hi) / 2], np.float32)], precision="float8_e5m2",
              radius=float(hi - lo) / 2, domain=domain, n_samples=3)
    assert not v, v[:3]


def test_rsqrt_derivative_bound_does_not_underflow():
    """rsqrt over a range whose lower end^1.5 is below float32's smallest normal: the
    derivative bound was negative (the propagated error dropped)."""
    f = lambda x: jax.lax.rsqrt(x * x * x)  # noqa: E731
    x = np.array([3e-9], np.float32)
    b = jaxerr.bound(f, warn=False)(jaxerr.Interval(jnp.asarray(x * 0.5), jnp.asarray(x * 2)))
    # |d rsqrt(y)| err at y = (1.5e-9)^3 with err ~ 2.4 u (6e-9)^3: about 6e7
    assert 5e7 < float(b.abs_err[0]) < 1e9
    assert not check(f, [x], radius=float(x[0]) * 0.4)


@pytest.mark.parametrize("domain", ["interval", "first_order"])
def test_input_overflowing_the_format_is_inf(domain):
    """An input beyond float16's range rounds to inf; returned as an output it kept a
    finite abs_err (fuzzer seed 17). Now inf, with a diagnostic naming the argument."""
    x = jaxerr.Interval(jnp.asarray([-68800.0, 1.0]), jnp.asarray([-68700.0, 2.0]))
    b = jaxerr.bound(lambda x: x, "float16", domain=domain, warn=False)(x)
    assert np.isinf(float(b.abs_err[0])) and np.isfinite(float(b.abs_err[1]))
    assert any("argument leaf 0" in m and "overflow" in m for m in b.diagnostics.fired())


def test_compare_measures_float64_errors_against_the_unrounded_exact_result():
    """Seed 15005 (float64, gelu at -1.06e-6): |sim - float(exact)| was one ulp
    (1.06e-22) > abs_err 8.24e-23, but the float64 copy of the exact result carries half
    an ulp of its own rounding; against the 40-digit value the error is 5.6e-23. The
    comparison confirms candidates against the unrounded value, and still reports a
    real violation."""
    import mpmath

    with mpmath.workdps(40):
        e64 = np.array([-5.302646915415215e-07])
        exact = mpmath.mpf(float(e64[0])) + mpmath.mpf(2.0) ** -75  # a quarter ulp above
        sim = np.array([np.nextafter(e64[0], 0.0)])  # one ulp from float(exact)
        err = float(abs(mpmath.mpf(float(sim[0])) - exact))
    assert abs(sim[0] - e64[0]) > err  # the float64 comparison overstates the error
    mp = [np.array([exact], dtype=object)]

    def bound(a):
        return [{"lo": e64 - 1e-21, "hi": e64 + 1e-21, "abs_err": np.array([a]),
                 "computed_lo": sim - 1e-21, "computed_hi": sim + 1e-21,
                 "internal": np.array([False])}]

    runs = [("sim", [sim])]
    a = (err + float(abs(sim[0] - e64[0]))) / 2  # >= the true error, < the float64 one
    assert Z._compare(bound(a), [e64], runs, 1, "")  # float64 comparison: a false alarm
    assert not Z._compare(bound(a), [e64], runs, 1, "", mp)
    assert Z._compare(bound(err * 0.9), [e64], runs, 1, "", mp)  # a real one stays


@pytest.mark.parametrize("domain", ["interval", "affine", "first_order"])
def test_integer_pow_error_counts_every_use_of_a_rounded_square(domain):
    """Seed 18070 of the fuzzer (float32 as written, interval, a point): x**4 at
    x = 2.1499 is computed as (x^2)^2, whose error is (1 + d1)^2 (1 + d2) - 1, up to 3u;
    the rule used gamma_2 (two multiplications): |sim - exact| 3.07e-6 > abs_err
    2.55e-6. Now gamma_{n-1}."""
    x = np.float32(21.36551973612276) ** np.float32(0.25)
    xs = (x + np.arange(-64, 64, dtype=np.float32) * np.spacing(x)).astype(np.float32)
    b = jaxerr.bound(lambda v: v ** 4, domain=domain, warn=False)(jnp.asarray(xs))
    x64 = xs.astype(np.float64)
    sim = ((xs * xs) * (xs * xs)).astype(np.float64)  # float32 binary powering, as XLA
    err = np.abs(sim - x64 ** 4)
    assert np.all(err <= np.asarray(b.abs_err, np.float64))
    assert np.max(err / np.asarray(b.abs_err, np.float64)) > 0.55  # the worst cases get near the bound
    v = check(lambda v: v ** 4, [xs], precision=None, n_samples=1, domain=domain)
    assert not v, "\n".join(v[:5])
