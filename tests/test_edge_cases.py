"""Bad and edge input, in both domains: every case either gives a sound result (inf plus
a diagnostic naming the equation where nothing finite holds) or raises a clear jaxerr
error that says how to fix the input. Nothing crashes inside JAX or NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr

DOMAINS = ["interval", "first_order"]
# first_order compiles a second (reverse) pass: in the default run only where it is cheap
SLOW_FO = ["interval", pytest.param("first_order", marks=pytest.mark.slow)]


def B(f, *args, domain, **kw):
    return jaxerr.bound(f, domain=domain, warn=False, **kw)(*args)


def fired(b):
    return b.diagnostics.fired()


@pytest.mark.parametrize("domain", DOMAINS)
def test_nan_in_point_or_interval_end_is_a_clear_error(domain):
    with pytest.raises(ValueError, match="NaN in a point input at index \\(1,\\)"):
        B(jnp.tanh, jnp.array([1.0, np.nan]), domain=domain)
    with pytest.raises(ValueError, match="NaN in an interval end"):
        B(jnp.tanh, jaxerr.Interval(jnp.array([0.0, np.nan]), jnp.array([1.0, 1.0])), domain=domain)


@pytest.mark.parametrize("domain", SLOW_FO)
def test_inf_in_points_and_interval_ends(domain):
    # inf is an extended real: tanh saturates (finite, sound), 2*inf is inf with a diagnostic
    b = B(lambda x: jnp.tanh(x) * 2.0, jnp.array([1.0, np.inf]), domain=domain)
    assert np.all(np.isfinite(b.abs_err)) and float(b.hi[1]) >= 2.0 >= float(b.lo[1])
    b = B(lambda x: x * 2.0, jnp.array([1.0, np.inf]), domain=domain)
    assert np.isinf(float(b.abs_err[1])) and np.isfinite(float(b.abs_err[0]))
    assert any("`mul`" in m and "inf" in m for m in fired(b))
    # unbounded boxes: an enclosure of tanh over (-inf, 1] and [0, inf)
    b = B(jnp.tanh, jaxerr.Interval(jnp.array([-np.inf, 0.0]), jnp.array([1.0, np.inf])), domain=domain)
    assert float(b.lo[0]) <= -1.0 and float(b.hi[0]) >= np.tanh(1.0) and float(b.hi[1]) >= 1.0
    b = B(lambda x: x + 1.0, jaxerr.Interval(jnp.array([-np.inf]), jnp.array([0.0])), domain=domain)
    assert float(b.lo[0]) == -np.inf


def test_lo_greater_than_hi_is_a_clear_error():
    with pytest.raises(ValueError, match="lo > hi at 1 element.*Swap the ends"):
        jaxerr.Interval(jnp.array([1.0, 0.0]), jnp.array([2.0, -1.0]))


@pytest.mark.parametrize("domain", SLOW_FO)
def test_lo_greater_than_hi_under_jit_is_flagged_inf(domain):
    g = jax.jit(jaxerr.bound(lambda x: x * 2.0, domain=domain, warn=False))
    iv = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(jaxerr.Interval(0.0, 1.0)),
                                      [jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])])
    b = g(iv)
    assert np.isinf(float(b.abs_err[0])) and np.isfinite(float(b.abs_err[1]))
    assert any("lo > hi" in m for m in fired(b))


@pytest.mark.parametrize("domain", SLOW_FO)
def test_integer_and_boolean_arguments(domain):
    b = B(lambda x, n: x * n, jnp.array([1.5, 2.0]), jnp.array([2, 3]), domain=domain)
    np.testing.assert_allclose(b.value, [3.0, 6.0])
    assert np.all(b.abs_err > 0) and np.all(b.abs_err < 1e-6)
    b = B(lambda x, m: jnp.where(m, x, -x), jnp.array([1.5, 2.0]), jnp.array([True, False]), domain=domain)
    np.testing.assert_array_equal(b.lo, [1.5, -2.0])
    # an integer box
    b = B(lambda x, n: x * n, jnp.array([1.5, 2.0]), jaxerr.Interval(jnp.array([1, 2]), jnp.array([3, 4])),
          domain=domain)
    assert float(b.lo[0]) <= 1.5 and float(b.hi[0]) >= 4.5
    # integer-only functions: exact, certain
    b = B(lambda n: n * 2 + 1, jnp.array([1, 2]), domain=domain)
    np.testing.assert_array_equal(b.value, [3, 5])
    assert np.all(b.abs_err == 0)


@pytest.mark.parametrize("domain", DOMAINS)
def test_zero_size_arrays(domain):
    x = jnp.zeros((0, 3))
    b = B(lambda x: jnp.tanh(x) + 1.0, x, domain=domain)
    assert b.lo.shape == (0, 3)
    b = B(lambda x: jnp.sum(x, axis=0), x, domain=domain)
    assert b.lo.shape == (3,) and np.all(b.lo <= 0) and np.all(b.hi >= 0) and np.all(np.isfinite(b.abs_err))
    b = B(lambda x: jnp.max(x, axis=0, initial=-5.0), x, domain=domain)
    np.testing.assert_array_equal(b.value, [-5.0] * 3)
    b = B(lambda x: x @ jnp.ones((3, 2)), jaxerr.Interval(jnp.zeros((0, 3)), jnp.ones((0, 3))), domain=domain)
    assert b.lo.shape == (0, 2)


@pytest.mark.parametrize("domain", SLOW_FO)
def test_scalars_and_python_numbers(domain):
    for arg in (jnp.float32(0.5), 0.5, np.float32(0.5)):
        b = B(jnp.exp, arg, domain=domain)
        assert b.lo.shape == () and float(b.lo) <= np.exp(0.5) <= float(b.hi)
    b = B(lambda x: jnp.exp(x * 1.0), 2, domain=domain)
    assert float(b.lo) <= np.exp(2.0) <= float(b.hi)


@pytest.mark.parametrize("domain", SLOW_FO)
def test_float64_program_under_x64(x64, domain):
    x = np.linspace(-1, 1, 5)
    b = B(lambda x: jnp.tanh(x) * 3.0, jnp.asarray(x), domain=domain)
    assert b.abs_err.dtype == jnp.float64 and float(jnp.max(b.abs_err)) < 1e-14
    assert np.all(b.lo <= np.tanh(x) * 3) and np.all(np.tanh(x) * 3 <= b.hi)


def test_float64_format_without_x64_is_a_clear_error():
    with pytest.raises(ValueError, match="jax_enable_x64"):
        jaxerr.bound(jnp.tanh, "float64")


@pytest.mark.parametrize("domain", SLOW_FO)
@pytest.mark.parametrize("fmt,x", [("float16", 300.0), pytest.param("float8_e4m3fn", 30.0, marks=pytest.mark.slow),
                                   pytest.param("float8_e5m2", 300.0, marks=pytest.mark.slow)])
def test_overflow_of_narrow_formats_is_inf_with_the_equation_named(domain, fmt, x):
    b = B(lambda x: x * x, jnp.array([x, 1.0]), domain=domain, precision=fmt)
    assert np.isinf(float(b.abs_err[0])) and np.isfinite(float(b.abs_err[1]))
    assert any("equation 0 `mul`" in m and "overflow" in m and fmt in m for m in fired(b))


@pytest.mark.parametrize("domain", SLOW_FO)
def test_input_overflowing_the_format_names_the_argument(domain):
    b = B(lambda x: x, jnp.array([1e5, 1.0]), domain=domain, precision="float16")
    assert np.isinf(float(b.abs_err[0])) and np.isfinite(float(b.abs_err[1]))
    assert any("argument leaf 0" in m and "overflow" in m for m in fired(b))


@pytest.mark.parametrize("domain", SLOW_FO)
def test_division_by_an_interval_containing_zero(domain):
    b = B(lambda x: 1.0 / x, jaxerr.Interval(jnp.array([-1.0, 1.0]), jnp.array([1.0, 2.0])), domain=domain)
    assert float(b.lo[0]) == -np.inf and float(b.hi[0]) == np.inf and np.isinf(float(b.abs_err[0]))
    assert np.isfinite(float(b.abs_err[1])) and float(b.lo[1]) <= 0.5
    assert any("`div`" in m and "contains 0" in m for m in fired(b))


@pytest.mark.parametrize("domain", SLOW_FO)
@pytest.mark.parametrize("fn,name", [(jnp.log, "log"), (jnp.sqrt, "sqrt"),
                                     pytest.param(jax.lax.rsqrt, "rsqrt", marks=pytest.mark.slow),
                                     pytest.param(jnp.log1p, "log1p", marks=pytest.mark.slow)])
def test_functions_of_ranges_reaching_negatives(domain, fn, name):
    lo = -2.0 if name == "log1p" else -1.0
    b = B(fn, jaxerr.Interval(jnp.array([lo, 1.0]), jnp.array([1.0, 2.0])), domain=domain)
    assert np.isinf(float(b.abs_err[0])) and np.isfinite(float(b.abs_err[1]))
    assert any(f"`{name}`" in m for m in fired(b))


@pytest.mark.parametrize("domain", DOMAINS)
def test_unsupported_primitives_listed_in_one_message(domain):
    f = lambda x: jnp.sin(x) + jnp.cos(x) + jnp.arctan2(x, x)  # noqa: E731
    with pytest.raises(jaxerr.UnsupportedPrimitiveError) as e:
        B(f, jnp.array([1.0, 2.0]), domain=domain)
    msg = str(e.value)
    assert "3 primitive(s)" in msg and all(f"`{p}`" in msg for p in ("sin", "cos", "atan2"))
    assert "register_rule" in msg


def test_complex_arguments_are_a_clear_error():
    with pytest.raises(TypeError, match="complex.*real and imaginary parts"):
        jaxerr.bound(lambda x: x * 2.0)(jnp.array([1 + 1j]))


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="unknown format 'float7'"):
        jaxerr.bound(jnp.tanh, "float7")
    with pytest.raises(ValueError, match="unknown accumulation 'foo'"):
        jaxerr.bound(jnp.tanh, accumulation="foo")
    with pytest.raises(ValueError, match="unknown domain"):
        jaxerr.bound(jnp.tanh, domain="octagon")


def test_xla_division_by_a_broadcast_is_covered():
    """XLA on CPU computes x / broadcast(c) as x * (1/c): 1 ulp, and 3e38 / 3e38 = 0 (1/c
    underflows). The bound covers the real backend (found by fuzzing, seed 3005)."""
    x = np.full((4,), 3e38, np.float32)
    b = jaxerr.bound(lambda x, c: x / c, warn=False)(jnp.asarray(x), jnp.float32(3e38))
    real = np.asarray(jax.jit(lambda x, c: x / c)(x, np.float32(3e38)), np.float64)
    assert np.all(np.abs(real - 1.0) <= np.asarray(b.abs_err))
    xs = np.random.default_rng(0).uniform(0, 10, 2000).astype(np.float32)
    c = np.float32(1 / 3)
    b = jaxerr.bound(lambda x: x / c, warn=False)(jnp.asarray(xs))
    real = np.asarray(jax.jit(lambda x: x / c)(xs), np.float64)
    assert np.all(np.abs(real - xs.astype(np.float64) / np.float64(c)) <= np.asarray(b.abs_err))


def test_subnormal_box_end_under_jit_is_detected():
    """Fuzz finding (seed 2038): a box end below float32's smallest normal, traced under
    jit/vmap, was not detected (float comparisons flush it) and kept abs_err 0."""
    f = lambda x: x[::-1]  # noqa: E731
    lo = jnp.asarray([8.79e-39, 3.0], jnp.float32)
    hi = jnp.asarray([2.2e-38, 3.1], jnp.float32)
    b = jax.jit(lambda lo, hi: jaxerr.bound(f, warn=False)(jaxerr.Interval(lo, hi)))(lo, hi)
    assert np.all(np.isinf(np.asarray(b.abs_err)))
    bv = jax.vmap(lambda lo, hi: jaxerr.bound(f, warn=False)(jaxerr.Interval(lo, hi)))(lo[None], hi[None])
    assert np.all(np.isinf(np.asarray(bv.abs_err)))


def test_float32_subnormal_input_under_x64_makes_no_false_claim(x64):
    """XLA flushes float32 subnormals to 0 when it converts them to the float64 analysis
    dtype, so the exact value is lost: the result claims nothing (fuzz seed 5063: the
    exact 2e-79 of x*x fell outside [lo, hi] = [-1e-307, 1e-307])."""
    x = np.array([4.5e-40, 1.0], np.float32)
    out = jaxerr.bound(lambda x: x * x, "float64", warn=False)(x)
    assert np.all(np.isinf(np.asarray(out.abs_err)))
    assert np.all(np.asarray(out.lo) <= 2.02e-79) and np.all(np.asarray(out.hi) >= 2.02e-79)
    assert "subnormal" in str(out.diagnostics)


@pytest.mark.parametrize("precision", [None, "bfloat16", "float16"])
def test_traced_weights_with_subnormals_are_covered(precision):
    """Under jit, a weight used only as a dot_general rhs is not scanned for subnormals
    (a per-call pass as costly as a matmul); the rule widens by tiny * sum|x| instead.
    Weights below float32's smallest normal times large activations: the exact product
    (about 1e-9) is what XLA flushes to 0, and the bound must still cover it, with a
    batch dimension too (the rule's reduction follows the dot's dimension numbers)."""
    W = jnp.array([[1e-39, 2.0], [-3e-39, 1.0], [5e-40, -1.0]], jnp.float32)
    x = jnp.array([[1e30, 1e30, 1e30], [1e20, -1e20, 3.0]], jnp.float32)

    def f(W, x):
        return x @ W

    out = jax.jit(jaxerr.bound(f, precision, warn=False))(W, x)
    exact = np.asarray(x, np.float64) @ np.asarray(W, np.float64)
    computed = np.asarray(jax.jit(f)(W, x), np.float64)  # XLA: the subnormals flushed
    lo, hi, err = (np.asarray(a, np.float64) for a in (out.lo, out.hi, out.abs_err))
    assert np.all(lo <= exact) and np.all(exact <= hi)
    if precision is None:
        assert np.all(np.abs(computed - exact) <= err)
    if precision != "float16":  # 1e30 overflows float16: inf is right there
        assert np.all(np.isfinite(err))

    # batched: vmap over a stack of weight matrices (dot_general with batch dims)
    Wb = jnp.stack([W, -W])
    xb = jnp.stack([x, 2 * x])
    ob = jax.jit(jax.vmap(jaxerr.bound(f, precision, warn=False, jit=False)))(Wb, xb)
    exb = np.einsum("bij,bjk->bik", np.asarray(xb, np.float64), np.asarray(Wb, np.float64))
    assert np.all(np.asarray(ob.lo, np.float64) <= exb) and np.all(exb <= np.asarray(ob.hi, np.float64))


def test_traced_nan_weight_is_reported_and_unbounded():
    """The NaN scan of such a weight runs only in the second (diagnostic) pass: a NaN
    weight makes its dot's bounds infinite, which triggers that pass."""
    W = jnp.array([[1.0, jnp.nan], [2.0, 3.0]], jnp.float32)
    x = jnp.ones((4, 2), jnp.float32)
    out = jax.jit(jaxerr.bound(lambda W, x: jnp.tanh(x @ W), warn=False))(W, x)
    err = np.asarray(out.abs_err)
    assert np.all(np.isinf(err[:, 1])) and np.all(np.isfinite(err[:, 0]))
    assert any("NaN in a point input" in m for m in out.diagnostics.fired())


def test_weight_passes_are_not_hoisted():
    """Each layer's |w| is computed when that layer runs, so its buffer is reused:
    before, XLA computed every layer's |w| up front and kept them all alive, a temp
    buffer the size of all weights that was page-faulted afresh on every call (3.3x
    the program's own time at 8 layers of 1024)."""
    ws = [jnp.full((256, 256), 0.01, jnp.float32) for _ in range(6)]

    def f(ws, x):
        for w in ws:
            x = jax.nn.relu(x @ w)
        return x

    x = jnp.ones((32, 256), jnp.float32)
    for arg in (x, jaxerr.Interval(x - 0.01, x + 0.01)):
        c = jax.jit(jaxerr.bound(f, warn=False)).lower(ws, arg).compile()
        temp = c.memory_analysis().temp_size_in_bytes
        assert temp < 0.75 * sum(w.nbytes for w in ws), temp


@pytest.mark.parametrize("domain", ["affine", "interval", pytest.param("first_order", marks=pytest.mark.slow)])
def test_uncertain_update_index_error_spans_both_operands(domain):
    """With an uncertain index, the computed program may write the update where the
    exact one keeps the operand: |computed - exact| spans the union of both ranges
    (fuzz seed 9061: abs_err 92 where the bfloat16 program's argmin picked another
    index and the error was 509)."""
    v0 = jaxerr.Interval(jnp.array([1.4548815, 1.5928283]), jnp.array([1.4549409, 1.5928876]))
    v2 = jaxerr.Interval(jnp.array([2.9999986, 2.9999673]), jnp.array([2.999999, 3.0000126]))

    def f(v0, v2):
        i = jnp.argmin(v2)
        v3 = jax.lax.dynamic_update_slice_in_dim(v0, v2[:1] * 3.0, i, axis=0)
        return jnp.exp2(jnp.abs(v3))

    out = jaxerr.bound(f, "bfloat16", domain=domain, warn=False)(v0, v2)
    # exact: index 1 chosen, exp2(1.4549) ~ 2.741; bfloat16: index 0, exp2(9) = 512
    assert float(out.abs_err[0]) >= 512 - 2.742


def test_diagnostic_location_names_the_users_line_before_a_library_frame(monkeypatch):
    """When JAX's summary of an equation's source lands in an installed library (Flax's
    ``_normalize`` in a fresh virtual environment), the diagnostic names the user's
    line first and the library frame after ``via``."""
    import types

    from jaxerr import _compat

    lib = "/venv/lib/python3.11/site-packages/flax/linen/normalization.py"
    frames = [types.SimpleNamespace(file_name=lib, line_num=206, function_name="_normalize"),
              types.SimpleNamespace(file_name=_compat.__file__, line_num=1, function_name="bind_eqn"),
              types.SimpleNamespace(file_name="/home/u/model.py", line_num=41, function_name="Block.__call__")]
    eqn = types.SimpleNamespace(source_info=types.SimpleNamespace(traceback=types.SimpleNamespace(frames=frames)))
    monkeypatch.setattr(_compat._source_info_util, "summarize", lambda si: f"{lib}:206 (_normalize)")
    assert _compat.source_summary(eqn) == f"model.py:41 (Block.__call__) via {lib}:206 (_normalize)"
    # a summary outside installed packages is kept as JAX gives it
    monkeypatch.setattr(_compat._source_info_util, "summarize", lambda si: "/home/u/model.py:41 (f)")
    assert _compat.source_summary(eqn) == "/home/u/model.py:41 (f)"


def test_variance_plus_eps_stays_positive_in_bfloat16():
    """Flax's fast variance ``max(0, E[x^2] - E[x]^2) + eps`` on a constant row: the
    variance may be 0, and ``0 + eps`` rounds to about ``eps`` (round to nearest is
    monotone: the lower end's error is that of ``eps``, not ``u`` times the largest
    variance). The rsqrt after it is finite (it was inf: the computed range of the sum
    reached 0)."""
    def f(x):
        m = jnp.mean(x, -1, keepdims=True)
        v = jnp.maximum(0.0, jnp.mean(jnp.square(x), -1, keepdims=True) - jnp.square(m))
        return jax.lax.rsqrt(v + 1e-6)

    x = np.array([[1.5, 1.5, 1.5, 1.5], [0.3, -1.2, 2.0, 0.7]], np.float32)
    b = jaxerr.bound(f, "bfloat16", warn=False)(x)
    assert np.all(np.isfinite(np.asarray(b.abs_err))), b.diagnostics
    try:
        from _soundness import check
    except ImportError:  # pragma: no cover
        from tests._soundness import check
    v = check(f, [x], precision="bfloat16", n_samples=3)
    assert not v, "\n".join(v[:5])



@pytest.mark.parametrize("domain", ["interval", pytest.param("first_order", marks=pytest.mark.slow),
                                    pytest.param("affine", marks=pytest.mark.slow)])
def test_erfc_of_an_operand_past_sqrt_max_finite_is_finite(domain):
    """erf/erfc's derivative bound exp(-d^2) squared the operand's smallest magnitude d
    with a rounding-down product, NaN once d*d overflows (d past 1.8e19 in float32): the
    bound was inf for erfc(3e30) although the result is 0 (2 for -3e30) up to its own
    rounding. Now finite (erf shares the derivative bound in every domain)."""
    def f(x):
        return jax.lax.erfc(x * 3.0)  # x * 3 is rounded: erfc's operand carries an error

    x = np.array([1e30, -1e25, 2e19, 0.5], np.float32)
    b = jaxerr.bound(f, "float32", domain=domain, warn=False)(x)
    err = np.asarray(b.abs_err)
    assert np.all(np.isfinite(err)) and np.all(err < 1e-4), (err, b.diagnostics)
    try:
        from _soundness import check
    except ImportError:  # pragma: no cover
        from tests._soundness import check
    v = check(f, [x], precision="float32", domain=domain, n_samples=2, real_backend=False)
    assert not v, "\n".join(v[:5])


@pytest.mark.parametrize("domain", ["interval", pytest.param("first_order", marks=pytest.mark.slow),
                                    pytest.param("affine", marks=pytest.mark.slow)])
def test_negative_integer_pow_whose_power_overflows(domain):
    """x**-2 is computed as 1 / x**2: in float16 696**2 overflows, XLA returns 1/inf = 0,
    and 696**-2 = 2.06e-6. The computed range was [2.03e-6, 2.10e-6] with abs_err 3.2e-8
    (first_order, fuzz seed 22039): now it reaches 0 and abs_err covers |x**-2|."""
    def f(x):
        return jax.lax.integer_pow(x, -2), jax.lax.integer_pow(x * 1.5, -3)

    x = np.array([696.0, -300.0, 100.0, 8.0, 2.0], np.float32)
    x64 = x.astype(np.float64)
    powers = ((x64**2, x64**-2), ((1.5 * x64) ** 3, (1.5 * x64) ** -3))
    b = jaxerr.bound(f, "float16", domain=domain, warn=False)(x)
    for o, (p, e) in zip(b, powers):
        err = np.asarray(o.abs_err, np.float64)
        assert np.all(np.isfinite(err))
        ovf = np.abs(p) > 65520  # x**k rounds to inf in float16: computed 0
        assert ovf.sum() in (2, 3)
        clo, chi = np.asarray(o.computed_lo)[ovf], np.asarray(o.computed_hi)[ovf]
        assert np.all(err[ovf] >= np.abs(e[ovf])) and np.all(clo <= 0) and np.all(chi >= 0)
        # elsewhere the usual bound (below float16's smallest normal: flushing)
        assert np.all(err[~ovf] < 1e-2 * np.abs(e[~ovf]) + 6.2e-5)
    try:
        from _soundness import check
    except ImportError:  # pragma: no cover
        from tests._soundness import check
    v = check(f, [x], precision="float16", domain=domain, n_samples=3, radius=0.5)
    assert not v, "\n".join(v[:5])


def test_analysis_division_is_correctly_rounded_under_jit():
    """XLA rewrites ``a / broadcast(b)`` into ``a * (1/b)``: with ``1/b`` subnormal it is
    flushed and the quotient comes out 0. The analysis' own directed divisions must not
    be rewritten (``_formats.quot``)."""
    from jaxerr import _formats as F

    a = np.full((4, 4), 9.898614, np.float32)
    b = np.full((1, 4), 2.3319820e38, np.float32)
    q = np.float64(a[0, 0]) / np.float64(b[0, 0])  # 4.24e-38, a normal float32
    up = jax.jit(F.div_up)(a, b)
    dn = jax.jit(F.div_dn)(a, b)
    assert np.all(np.asarray(up, np.float64) >= q) and np.all(np.asarray(dn, np.float64) <= q)


@pytest.mark.parametrize("domain", ["interval", pytest.param("first_order", marks=pytest.mark.slow),  # 20 s
                                    pytest.param("affine", marks=pytest.mark.slow)])  # 12 s
def test_quotient_by_a_huge_broadcast_divisor_is_sound(domain):
    """Found by fuzzing (seed 28405): ``relu(x / (|y| + 0.5))`` with ``y`` of one row
    broadcast over ``x``'s rows and ``|y| ~ 1e38``: the interval rule's upper end was the
    smallest normal, below the exact 4.2e-38."""

    try:
        from _soundness import check
    except ImportError:  # pragma: no cover
        from tests._soundness import check

    def f(x, y):
        return jax.nn.relu(x / (jnp.abs(y) + 0.5))

    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 10.0, (4, 4)).astype(np.float32)
    y = np.array([[2.3319820e38, -3.02e37, 1.62e38, -8.29e37]], np.float32)
    v = check(f, [x, y], precision="float32", radius=0.0, n_samples=2, domain=domain)
    b = jaxerr.bound(f, "float32", domain=domain, warn=False)(x, y)
    exact = np.maximum(x.astype(np.float64) / (np.abs(y.astype(np.float64)) + 0.5), 0.0)
    assert np.all(np.asarray(b.hi, np.float64) >= exact), (np.asarray(b.hi), exact)
    assert not v, "\n".join(v[:5])


@pytest.mark.parametrize("domain", ["interval", "first_order", "affine"])
def test_division_whose_reciprocal_flushes_keeps_zero_in_the_computed_range(domain):
    """XLA computes a division by a broadcast value as ``x * (1/y)``: ``1/1.6e38`` is
    subnormal and flushed, so ``2.6e13 / 1.6e38`` is 0 although the quotient 1.6e-25 is
    a normal float32. The computed range had been narrowed as if the division were one
    correctly rounded operation, and first_order's error bound (tightened by that range)
    was 8.6e-32 (fuzz seed 40068)."""
    a = np.full((2, 3), 26042181877760.0, np.float32)
    b = np.full((2, 1), np.float32(26042181877760.0 / 1.6260696960057213e-25), np.float32)

    def f(a, b):
        return a / b

    got = np.asarray(jax.jit(f)(a, b))
    r = jaxerr.bound(f, domain=domain, warn=False, jit=False)(a, b)
    exact = float(a[0, 0]) / float(b[0, 0])
    assert np.all(np.asarray(r.computed_lo) <= got) and np.all(got <= np.asarray(r.computed_hi))
    assert np.all(np.asarray(r.abs_err, np.float64) >= np.abs(got.astype(np.float64) - exact))
