"""jaxerr.report: per-equation records agree with jaxerr.bound, created/inherited are
consistent bounds, condition numbers show cancellation and its recovery."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.tanh(nn.Dense(8)(x))
        return nn.Dense(3)(x)


@pytest.fixture(scope="module")
def mlp():
    m = _MLP()
    v = m.init(jax.random.PRNGKey(0), jnp.ones(6))
    x = jnp.linspace(-1.0, 1.0, 6)
    return (lambda v, x: m.apply(v, x)), v, x


@pytest.fixture(scope="module")
def rep(mlp):
    f, v, x = mlp
    return jaxerr.report(f, "bfloat16", jit=False)(v, x)


def test_report_matches_bound(mlp, rep):
    f, v, x = mlp
    b = jaxerr.bound(f, "bfloat16", jit=False)(v, x)
    np.testing.assert_array_equal(np.asarray(rep.outputs.abs_err), np.asarray(b.abs_err))
    # (compiled, XLA's tanh may differ from the eager one in the last bit; each result is
    # widened outward for that, so the bounds may differ by an ulp)
    bj = jaxerr.bound(f, "bfloat16")(v, x)
    np.testing.assert_allclose(np.asarray(bj.abs_err), np.asarray(b.abs_err), rtol=1e-6)
    last = rep.equations[-1]
    assert last.abs_err == pytest.approx(float(np.max(b.abs_err)), rel=0, abs=0)
    assert last.lo == float(np.min(b.lo)) and last.hi == float(np.max(b.hi))
    # the last stage is the output layer; its abs_err is the output's
    assert rep.stages[-1].abs_err == last.abs_err
    assert [s.name for s in rep.stages] == ["_MLP/Dense_0", "_MLP", "_MLP/Dense_1"]
    assert rep.stages[1].label == "_MLP: tanh"


def test_created_inherited_relation(rep):
    for e in rep.equations:
        if e.structural:
            assert e.created == 0 and e.inherited == 0
            continue
        # inherited = the rule with exact operations on the same operands: never above
        # the propagated bound; created + inherited bounds the error as well, and the
        # propagated bound is within a few ulps of it (both are ~ prop + rounding)
        assert e.inherited <= e.abs_err * (1 + 1e-6), e
        assert e.abs_err <= (e.created + e.inherited) * (1 + 1e-3), e
        assert e.created > 0, e  # every arithmetic equation rounds in bf16
    # the first equation's inputs are rounded into bf16: it inherits their error
    assert rep.equations[0].inherited > 0


def test_created_is_local_rounding(mlp):
    # in float32 the created error of tanh is ~ its budget * |tanh| <= 1e-6, while
    # the inherited error is the propagated dense-layer error
    f, v, x = mlp
    r = jaxerr.report(f, "float32", jit=False)(v, x)
    tanh = next(e for e in r.equations if e.primitive == "tanh")
    assert 0 < tanh.created < 2e-6
    assert tanh.inherited > 0


@pytest.mark.slow
def test_condition_numbers_cancellation_and_recovery():
    # w.x with heavy cancellation, then tanh: dot condition >> 1, tanh condition < 1
    w = jnp.array([[1.0], [-1.0]], jnp.float32)

    def f(x):
        with jax.named_scope("dense"):
            y = x @ w
        with jax.named_scope("act"):
            return jnp.tanh(y * 300.0)

    x = jnp.array([[1.0, 0.99]], jnp.float32)
    r = jaxerr.report(f, "bfloat16", jit=False)(x)
    dot = next(e for e in r.equations if e.primitive == "dot_general")
    tanh = next(e for e in r.equations if e.primitive == "tanh")
    assert dot.cond_median > 50  # (|1| + |0.99|) / |0.01| ~ 199
    assert tanh.cond_max < 1.0
    # relative error jumps at the cancelling product and falls after tanh
    assert dot.rel_err_median > 0.05  # bf16 inputs, 199x amplification
    assert tanh.rel_err_median < dot.rel_err_median / 3


def test_json_and_plot(rep, tmp_path):
    d = json.loads(rep.to_json(str(tmp_path / "r.json")))
    assert d["precision"] == "bfloat16" and len(d["stages"]) == 3
    assert {"created", "inherited", "cond_median", "abs_err"} <= set(d["equations"][0])
    assert json.loads((tmp_path / "r.json").read_text()) == d
    pytest.importorskip("matplotlib")
    p = rep.plot(str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").stat().st_size > 10_000 and p.endswith("r.png")
    s = str(rep)
    assert "created" in s and "_MLP/Dense_0" in s


def test_report_rejects_first_order(mlp):
    f, v, x = mlp
    with pytest.raises(ValueError, match="interval"):
        jaxerr.report(f, "bfloat16", domain="first_order")(v, x)


def test_convolution_condition_number():
    """The report gives a convolution its inner-product condition number (|w|*|x|)/|w*x|."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, 5, 2)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 3, 2, 4)), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    rep = jaxerr.report(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn),
                        "bfloat16", jit=False)(x, w)
    (eq,) = [e for e in rep.equations if e.primitive == "conv_general_dilated"]
    num = jax.lax.conv_general_dilated(jnp.abs(x), jnp.abs(w), (1, 1), "VALID", dimension_numbers=dn)
    den = jnp.abs(jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn))
    assert eq.cond_max == pytest.approx(float(jnp.max(num / den)), rel=1e-3)
    assert eq.cond_median is not None and eq.cond_median >= 1.0
