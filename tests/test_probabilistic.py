"""probabilistic=delta (domain="first_order") against the independent simulator.

The bound holds with probability >= 1 - delta per output element under the model of
independent mean-zero rounding errors (Higham & Mary 2019). At delta = 1e-6 a single
violation in these few hundred simulated executions means the model or the code is
wrong. The tightness assertions use medians measured on this code (with margin), so
that a regression fails.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr

try:
    import _simulator as S
except ImportError:  # pragma: no cover
    from tests import _simulator as S

DELTA = 1e-6
_ACT = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "sigmoid": jax.nn.sigmoid}


def _mlp(act: str, depth: int, width: int, seed: int = 0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 2 * depth + 1)
    ws = [np.asarray(jax.random.normal(ks[2 * i], (width, width)) / np.sqrt(width), np.float32)
          for i in range(depth)]
    bs = [np.asarray(0.1 * jax.random.normal(ks[2 * i + 1], (width,)), np.float32) for i in range(depth)]
    fn = _ACT[act]

    def f(x):
        for i, (w, b) in enumerate(zip(ws, bs)):
            x = x @ w + b[None, :]
            if i < depth - 1:
                x = fn(x)
        return x

    f.params = (ws, bs)
    x = np.asarray(jax.random.normal(ks[-1], (1, width)), np.float32)
    return f, x


def _observed(f, x, fmt, acc, runs, seed=0):
    """Per-element max over ``runs`` simulated executions (random summation orders)
    of |simulated - exact|."""
    rng = np.random.default_rng(seed)
    ex = S.exact(f, [x])[0]
    worst = np.zeros(np.shape(ex))
    for _ in range(runs):
        s = S.simulate(f, [x], fmt=fmt, accumulation=acc, order="random", rng=rng)[0]
        worst = np.maximum(worst, np.abs(s - ex))
    return worst


def _bounds(f, x, precision, accumulation="auto"):
    # jit=False: the same analysis, without compiling the large first_order program
    kw = dict(accumulation=accumulation, domain="first_order", warn=False, jit=False)
    bp = jaxerr.bound(f, precision, probabilistic=DELTA, **kw)(x)
    bw = jaxerr.bound(f, precision, **kw)(x)
    return bp, np.asarray(bp.abs_err, np.float64), np.asarray(bw.abs_err, np.float64)


def _check(f, x, precision, accumulation, sim_fmt, sim_acc, runs, max_median):
    bp, p, w = _bounds(f, x, precision, accumulation)
    assert bp.probabilistic and bp.confidence == pytest.approx(1 - DELTA)
    obs = _observed(f, x, sim_fmt, sim_acc, runs)
    bad = np.argwhere(obs > p)
    assert bad.size == 0, f"probabilistic bound violated at {bad[:5].tolist()}: obs {obs[obs > p][:5]}, bound {p[obs > p][:5]}"
    assert np.all(p <= w), "the probabilistic bound must not exceed the worst-case first_order bound"
    m = obs > 0
    med = float(np.median(p[m] / obs[m]))
    assert med <= max_median, f"median tightness {med:.1f} > {max_median} (regression?)"
    return med


# measured medians (bound / max over 20 runs of |simulated - exact|) on this code, in the
# comments; the thresholds leave ~1.5x margin


def test_probabilistic_holds_and_is_tight_bf16_mlp():
    f, x = _mlp("relu", depth=2, width=16)
    med = _check(f, x, "bfloat16", "auto", "bfloat16", "wide:float32", runs=20,
                 max_median=MEDIANS[("relu", "bf16", 16)])
    print(f"median tightness {med:.2f}")


#: (activation, format, width) -> largest median tightness accepted
MEDIANS = {
    ("relu", "bf16", 16): 12.0,  # depth 2, measured 7.7
    ("relu", "bf16", 32): 15.0,  # measured 9.7 (11.7 before linearising at points)
    ("relu", "f16", 32): 14.0,  # 9.5 (11.1)
    ("relu", "f32", 32): 47.0,  # 31.1 (recursive, random order)
    ("tanh", "bf16", 32): 30.0,  # 19.8 (20.8)
    ("tanh", "f16", 32): 27.0,  # 17.6 (18.7)
    ("tanh", "f32", 32): 58.0,  # 38.7
    ("gelu", "bf16", 32): 24.0,  # 16.0 (44.2: the rounded literals cut the nodes)
    ("gelu", "f16", 32): 16.0,  # 10.3
    ("gelu", "f32", 32): 38.0,  # 25.0
}
_FMT = {"bf16": ("bfloat16", "auto", "bfloat16", "wide:float32"),
        "f16": ("float16", "auto", "float16", "wide:float32"),
        "f32": (None, "recursive", None, "recursive")}


@pytest.mark.slow
@pytest.mark.parametrize("fkey", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("act", ["relu", "tanh", "gelu"])
def test_probabilistic_holds_and_is_tight_mlp(act, fkey):
    f, x = _mlp(act, depth=3, width=32)
    prec, acc, sf, sa = _FMT[fkey]
    med = _check(f, x, prec, acc, sf, sa, runs=20, max_median=MEDIANS[(act, fkey, 32)])
    print(f"{act} {fkey}: median tightness {med:.1f}")


def test_partial_sum_levels():
    from jaxerr._first_order import _sum_levels
    from jaxerr._formats import Accumulation

    assert _sum_levels(Accumulation("recursive"), 5).tolist() == [2, 3, 4, 5]
    assert _sum_levels(Accumulation("pairwise"), 5).tolist() == [2, 4, 5]
    assert _sum_levels(Accumulation("pairwise"), 8).tolist() == [2, 4, 8]
    assert _sum_levels(Accumulation("blocked", block=4), 10).tolist() == [2, 3, 4, 8, 10]
    assert _sum_levels(Accumulation("recursive"), 1).size == 0
    # as many levels as the model's depth (the roundings any one term goes through)
    for acc in (Accumulation("recursive"), Accumulation("pairwise"), Accumulation("blocked", block=8)):
        for n in (2, 3, 7, 64, 100):
            assert _sum_levels(acc, n).size == acc.depth(n, False)


@pytest.mark.parametrize("n", [pytest.param(256, id="n256"), pytest.param(2048, id="n2048", marks=pytest.mark.slow)])
def test_long_dot_product_below_the_classic_probabilistic_bound(n):
    # x @ w, float32 recursive (any order): the per-level partial-sum bound
    # must hold in random-order simulations and be below Higham & Mary's
    # lam * sqrt(n) * u * sum|x_i w_i| (the model's classic bound)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, n)).astype(np.float32)
    w = rng.standard_normal((n, 2)).astype(np.float32)

    def f(x):
        return x @ w

    bp, p, wc = _bounds(f, x, None, "recursive")
    obs = _observed(f, x, None, "recursive", runs=10)
    assert np.all(obs <= p) and np.all(p <= wc)
    u = 2.0 ** -24
    lam = np.sqrt(2 * np.log(2 / DELTA))
    S = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64))
    classic = lam * np.sqrt(n) * u * S
    assert np.all(p < classic), (p / classic)
    print(f"bound / classic: {np.max(p / classic):.2f}; median bound / observed {np.median(p / obs):.1f}")


def test_model_weakness_stagnation_is_documented():
    # The model's known failure (docs/domains.md, "When not to trust it"): a float16
    # recursive sum 2048 + 1 + 1 + ... stagnates (2048 + 1 ties to 2048: every rounding
    # has the same sign, not mean zero). The probabilistic bound is then below the real
    # error; the guaranteed bound is not.
    x = np.ones((1000,), np.float32)
    x[0] = 2048.0

    def f(x):
        return jnp.sum(x)

    kw = dict(accumulation="recursive", domain="first_order", warn=False, jit=False)
    p = float(jaxerr.bound(f, "float16", probabilistic=DELTA, **kw)(x).abs_err)
    w = float(jaxerr.bound(f, "float16", **kw)(x).abs_err)
    s = S.simulate(f, [x], fmt="float16", accumulation="recursive", order="sequential")[0]
    err = abs(float(s) - float(S.exact(f, [x])[0]))
    assert err == 999.0
    assert w >= err
    assert err > p, (err, p)  # the model's assumption fails here: do not trust it


def test_probabilistic_gelu_form_sum_well_below_worst_case():
    # the tanh form of GELU multiplies by literals rounded into bfloat16 (0.044715,
    # 0.797...): their events must not cut the nodes (the mul remainder
    # w_b|da| + w_a|db| + |da||db| handles the broadcast scalar), and the nonlinear
    # nodes are linearised at points (no interval-width radius on the derivatives):
    # over 256 independent terms (signed, so that the output's own rounding is small) the probabilistic bound is far below the worst case
    # (it was equal to it while the literal products were cut); it holds in simulation
    rng = np.random.default_rng(7)
    x = rng.standard_normal((256,)).astype(np.float32)
    sign = np.where(rng.random(256) < 0.5, -1.0, 1.0).astype(np.float32)  # exact in bf16

    def f(x):
        t = jnp.tanh(0.7978845834732056 * (x + 0.044715 * x ** 3))
        return jnp.sum(sign * (0.5 * x * (1.0 + t)))

    kw = dict(accumulation="wide:float32", domain="first_order", warn=False, jit=False)
    p = float(jaxerr.bound(f, "bfloat16", probabilistic=DELTA, **kw)(x).abs_err)
    w = float(jaxerr.bound(f, "bfloat16", **kw)(x).abs_err)
    obs = float(_observed(f, x, "bfloat16", "wide:float32", runs=5))
    assert obs <= p <= w
    assert p < 0.35 * w, p / w
    print(f"prob / worst case {p / w:.3f}; tightness {p / obs:.1f}")


def test_cut_events_stay_deterministic():
    """A cut equation (here a while_loop: one event per element, bounded by its interval
    error) is no mean-zero rounding: its events go to the deterministic part, so over
    4096 cut elements the probabilistic bound of their sum is not below the guaranteed
    one (which caps it). Regression: an edit in d67438c moved that bookkeeping under
    the worst-case-only kink branch, and the cut events were summed as random
    (43.2 against the guaranteed 47.5)."""
    from jax import lax

    def f(x):
        y = lax.while_loop(lambda s: s[0] < 3, lambda s: (s[0] + 1, jnp.tanh(s[1] * 1.1)), (0, x))[1]
        return jnp.sum(y)

    x = np.linspace(0.5, 1.5, 4096).astype(np.float32)
    wc = jaxerr.bound(f, "bfloat16", domain="first_order", warn=False)(x)
    pb = jaxerr.bound(f, "bfloat16", domain="first_order", probabilistic=1e-6, warn=False)(x)
    assert float(pb.abs_err) >= float(wc.abs_err), (float(pb.abs_err), float(wc.abs_err))
