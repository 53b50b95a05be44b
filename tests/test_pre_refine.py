"""first_order's pre-rounding refinement of bilinear results (``_first_order._pre_refine``)
and the binade bound of a wide accumulator's final rounding (``_common.nearest``)."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jaxerr
from jaxerr import _first_order as FO
from jaxerr._rules._common import nearest

try:
    from _soundness import check
    from test_probabilistic import _mlp
except ImportError:  # pragma: no cover
    from tests._soundness import check
    from tests.test_probabilistic import _mlp


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16, ml_dtypes.float8_e4m3fn])
def test_nearest_bounds_round_to_nearest(dtype):
    """``nearest(M, u)`` >= |fl(r) - r| for every normal r with |r| <= M, M at powers of
    two, just below and above them and random; and never above ``u M``."""
    rng = np.random.default_rng(0)
    fi = ml_dtypes.finfo(dtype)
    u = float(fi.eps) / 2
    r = np.exp(rng.uniform(np.log(float(fi.tiny)), np.log(float(fi.max) / 2), 20000))
    r = np.concatenate([r, 2.0 ** rng.integers(int(np.log2(float(fi.tiny))), 8, 200)])
    r = r.astype(np.float32)
    err = np.abs(r.astype(dtype).astype(np.float64) - r.astype(np.float64))
    for M in (r, np.nextafter(r, np.float32(np.inf)), r * np.float32(1.7)):
        b = np.asarray(nearest(jnp.asarray(M), u), np.float64)
        assert np.all(err <= b), (r[err > b][:5], b[err > b][:5])
        assert np.all(b <= u * M.astype(np.float64) * (1 + 1e-6) + float(np.finfo(np.float32).tiny))
    # at a power of two the bound is the binade's half spacing: half of u M just below it
    M = np.float32(2.0 ** 3)
    assert float(nearest(jnp.asarray(np.nextafter(M, np.float32(0))), u)) == u * 4


def _record_hints(monkeypatch):
    """Capture every pre-rounding refinement's ``range_hint`` (by equation path)."""
    hints: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    orig = FO._pre_refine

    def spy(tape, ctx, ins):
        orig(tape, ctx, ins)
        if ctx.range_hint is not None:
            def store(lo, hi, path=ctx.path):
                hints[path] = (np.asarray(lo, np.float64), np.asarray(hi, np.float64))
            jax.debug.callback(store, *ctx.range_hint)

    monkeypatch.setattr(FO, "_pre_refine", spy)
    return hints


def _bf(x):
    return np.asarray(x, np.float64).astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


@pytest.mark.parametrize("act", ["relu", pytest.param("tanh", marks=pytest.mark.slow)])
def test_hint_encloses_the_computed_pre_rounding_products(act, monkeypatch):
    """Every layer's ``x^ @ W^`` of a bfloat16 execution (every operation rounded to
    nearest, the products summed exactly then rounded to float32 and bfloat16: one
    admissible execution of the 'wide:float32' model) lies in the hint: a state of the
    segment at t = 1. Dropping ``B'`` (the hint the exact range) fails here."""
    hints = _record_hints(monkeypatch)
    f0, x = _mlp(act, 3, 48, seed=3)
    ws, bs = f0.params
    b = jaxerr.bound(f0, precision="bfloat16", domain="first_order")(x)
    np.asarray(b.abs_err)
    jax.effects_barrier()
    assert len(hints) == 3, sorted(hints)
    fn = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}[act]
    a = _bf(x)
    for k, w, bias in zip(sorted(hints, key=int), ws, bs):
        lo, hi = hints[k]
        pre = a @ _bf(w)
        assert np.all(lo <= pre) and np.all(pre <= hi), np.max(np.maximum(lo - pre, pre - hi))
        y = _bf(pre)
        a = _bf(fn(_bf(y + _bf(bias))))


def _conv_net():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    w1 = np.asarray(jax.random.normal(k1, (3, 3, 1, 6)) / 3, np.float32)
    w2 = np.asarray(jax.random.normal(k2, (3, 3, 6, 6)) / 7, np.float32)
    w3 = np.asarray(jax.random.normal(k3, (6 * 2 * 2, 5)) / 5, np.float32)
    dn = ("NHWC", "HWIO", "NHWC")

    def f(x):
        h = jax.lax.conv_general_dilated(x, w1, (1, 1), "VALID", dimension_numbers=dn)
        h = jnp.tanh(h + 0.1)
        h = jax.lax.conv_general_dilated(h, w2, (1, 1), "VALID", dimension_numbers=dn)
        h = jax.nn.relu(h - 0.05)
        return h.reshape(h.shape[0], -1) @ w3

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(6), (1, 6, 6, 1)), np.float32)
    return f, x


@pytest.mark.parametrize("fmt,acc", [pytest.param("bfloat16", "auto", marks=pytest.mark.slow),  # 66 s
                                     pytest.param("float8_e4m3fn", "wide:float32", marks=pytest.mark.slow),
                                     pytest.param("float16", "auto", marks=pytest.mark.slow),
                                     pytest.param("bfloat16", "pairwise", marks=pytest.mark.slow)])
def test_pre_refined_programs_sound(fmt, acc):
    """Convolutions, dense layers and a product of two computed matrices (attention
    scores), analysed with the pre-rounding refinement, against the simulator."""
    def sound(f, x):
        # (the analysis jitted: one compile instead of op-by-op dispatch of its passes)
        b = jax.jit(jaxerr.bound(f, precision=fmt, accumulation=acc, domain="first_order"))(x)
        return check(f, [x], precision=fmt, accumulation=acc, domain="first_order", n_samples=1, seed=1, out=b)

    f, x = _conv_net()
    v = sound(f, x)
    assert not v, v[:3]
    rng = np.random.default_rng(2)
    wq, wk, wv = [(rng.normal(size=(16, 16)) / 4).astype(np.float32) for _ in range(3)]

    def attn(h):
        q, k, vv = h @ wq, h @ wk, h @ wv
        s = jax.nn.softmax(q @ k.T / 4.0, axis=-1)
        return jnp.tanh(s @ vv) @ wq

    h = rng.normal(size=(6, 16)).astype(np.float32)
    v = sound(attn, h)
    assert not v, v[:3]


@pytest.mark.slow  # 22 s
def test_pre_refinement_tightens_relu_mlp():
    """4x96 bfloat16 ReLU MLP at a point: first_order / first-order limit, median below
    1.15 (1.39 before the pre-rounding refinement and the binade bound, 1.00 with)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from _first_order_limit import first_order_limit

    f, x = _mlp("relu", 4, 96)
    L = first_order_limit(f, (x,), precision="bfloat16")[0].reshape(-1)
    b = jaxerr.bound(f, precision="bfloat16", domain="first_order")(x)
    r = np.asarray(b.abs_err, np.float64).reshape(-1) / L
    assert np.median(r) < 1.15, np.median(r)
