"""jaxerr.mixed_dot_general / mixed_precision: masked == compacted, recomputed components
equal the high-precision result and kept ones the low one, statistics, the bound
criterion's certificate, jaxpr pattern detection, jit/vmap, and the example's smoke run."""

import pathlib
import runpy

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxerr
from jaxerr._emulate import Arithmetic, emulated_dot_general

LOW = Arithmetic.make("float8_e4m3fn", "blocked:8", fma=True, overflow="saturate")
HIGH = Arithmetic.make("float16", "recursive")
DN = (((1,), (0,)), ((), ()))


def _data(seed=0, m=6, k=16, n=6):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.random((m, k)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, n)) / 4, jnp.float32)
    b = jnp.asarray(rng.normal(size=(1, n)) / 4, jnp.float32)
    return x, w, b


def _emul(ar, x, w):
    return emulated_dot_general(ar.round(x), ar.round(w), DN, ar)


@pytest.mark.slow  # ~10 s of XLA compilation on an idle 2-core machine (35 s under load)
@pytest.mark.parametrize("criterion,tol", [("activation", 0.5), ("condition", 0.3)])
def test_masked_equals_compacted_and_selects_low_or_high(criterion, tol):
    x, w, b = _data()
    outs = {}
    for mode, cap in (("masked", None), ("compacted", 36.0), ("compacted", 3)):
        outs[(mode, cap)] = jax.jit(lambda x: jaxerr.mixed_dot_general(
            x, w, DN, low=LOW, high=HIGH, tol=tol, activation="relu", criterion=criterion, bias=b,
            mode=mode, capacity=cap, return_stats=True))(x)
    y, st = outs[("masked", None)]
    for key in (("compacted", 36.0), ("compacted", 3)):
        np.testing.assert_array_equal(np.asarray(outs[key][0]), np.asarray(y))
    assert not bool(outs[("compacted", 36.0)][1]["fallback"])
    assert bool(outs[("compacted", 3)][1]["fallback"]) == (int(st["count"]) > 3)
    lo, hi = np.asarray(_emul(LOW, x, w)), np.asarray(_emul(HIGH, x, w))
    y = np.asarray(y)
    flagged = y != lo
    assert np.all((y == lo) | (y == hi))
    v = lo + np.asarray(b)
    if criterion == "activation":  # the seed rule for ReLU: recompute 0 < v < 1/tol
        expect = (v > 0) & (v < 1 / tol)
        np.testing.assert_array_equal(np.where(expect, hi, lo), y)
        assert float(st["recomputed"]) == pytest.approx(expect.mean())
        assert int(st["count"]) == int(expect.sum())
    assert 0 < flagged.sum() < flagged.size


@pytest.mark.slow
def test_bound_criterion_certifies_kept_components():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.random((16, 32)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(32, 12)) / 4, jnp.float32)
    b = jnp.asarray(rng.normal(size=(1, 12)) / 4, jnp.float32)
    low = Arithmetic.make("bfloat16", "blocked:8")
    tol = 0.02
    y, st = jaxerr.mixed_dot_general(x, w, DN, low=low, high=HIGH, tol=tol, activation="relu",
                                     criterion="bound", bias=b, return_stats=True)
    lo = np.asarray(_emul(low, x, w), np.float64)
    kept = np.asarray(y) == lo
    exact = np.asarray(x, np.float64) @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
    v = lo + np.asarray(b, np.float64)
    err = np.abs(np.maximum(v, 0) - np.maximum(exact, 0))
    assert np.all(err[kept] <= tol * np.abs(np.maximum(v, 0))[kept])
    assert 0 < kept.mean() < 1
    # float8 with 32-term blocked accumulation: the worst-case (a-priori) bound is infinite ->
    # all recomputed; the running (a-posteriori) bound certifies some, correctly
    _, st8 = jaxerr.mixed_dot_general(x, w, DN, low=LOW, high=HIGH, tol=tol, activation="relu",
                                      criterion="bound", bias=b, bound="apriori", return_stats=True)
    assert float(st8["recomputed"]) == 1.0
    y8, st8 = jaxerr.mixed_dot_general(x, w, DN, low=LOW, high=HIGH, tol=tol, activation="relu",
                                       criterion="bound", bias=b, return_stats=True)
    lo8 = np.asarray(_emul(LOW, x, w), np.float64)
    kept8 = np.asarray(y8) == lo8
    v8 = lo8 + np.asarray(b, np.float64)
    err8 = np.abs(np.maximum(v8, 0) - np.maximum(exact, 0))
    assert np.all(err8[kept8] <= tol * np.abs(np.maximum(v8, 0))[kept8])
    assert float(st8["recomputed"]) < 1.0


@pytest.mark.slow
def test_mixed_precision_detects_chain_and_composes_with_vmap():
    x, w, b = _data(2, m=6, k=16, n=8)
    w2 = jnp.asarray(np.random.default_rng(3).normal(size=(8, 4)), jnp.float32)

    def net(x):
        h = jax.nn.relu((x @ w) * 0.5 + b)
        return jnp.tanh(h @ w2)

    g = jaxerr.mixed_precision(net, low=LOW, high=HIGH, tol=0.5, return_stats=True)
    out, st = jax.jit(g)(x)
    assert list(st) == ["0: dot_general -> relu", "1: dot_general -> tanh"]
    # the first layer's criterion saw scale and bias: recompute where 0 < 0.5 y + b < 2
    v = 0.5 * np.asarray(_emul(LOW, x, w)) + np.asarray(b)
    assert float(st["0: dot_general -> relu"]["recomputed"]) == pytest.approx(((v > 0) & (v < 2)).mean())
    ref = np.asarray(net(x))
    assert np.max(np.abs(np.asarray(out) - ref)) < 0.25
    h = jaxerr.mixed_precision(net, low=LOW, high=HIGH, tol=0.5, mode="compacted", capacity=0.9)
    np.testing.assert_array_equal(np.asarray(jax.vmap(h)(x[:, None, :])[:, 0]),
                                  np.asarray(jax.vmap(g)(x[:, None, :])[0][:, 0]))


def test_never_and_always_are_uniform_low_and_high():
    x, w, b = _data(4)
    ys = jax.jit(lambda x: [(jaxerr.mixed_dot_general(x, w, DN, low=LOW, high=HIGH, tol=1.0, criterion=crit),
                             _emul(ar, x, w)) for crit, ar in (("never", LOW), ("always", HIGH))])(x)
    for y, ref in ys:
        np.testing.assert_array_equal(np.asarray(y), np.asarray(ref))


def test_bad_arguments_are_rejected():
    x, w, _ = _data()
    with pytest.raises(ValueError, match="criterion"):
        jaxerr.mixed_dot_general(x, w, DN, tol=1.0, criterion="nope")
    with pytest.raises(ValueError, match="activation"):
        jaxerr.mixed_dot_general(x, w, DN, tol=1.0, activation="gelu")


@pytest.mark.slow
def test_example_smoke(capsys):
    pytest.importorskip("optax")
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "mixed_precision_digits.py"
    mod = runpy.run_path(str(path))
    res = mod["main"](["--tiny", "--out", ""])
    out = capsys.readouterr().out
    assert "uniform fp8" in out and "activation" in out
    assert "chosen on the validation split" in out and "seed rule's logit error" in out
    rows = res["relu"]
    assert all(0.0 <= r[5] <= 1.0 for r in rows)


def test_example_validation_selection_and_interpolation():
    """The digits example's tau/c selection (cheapest candidate meeting the goal on the
    validation split, else the most accurate) and its equal-error interpolation."""
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "mixed_precision_digits.py"
    mod = runpy.run_path(str(path))
    sel, at = mod["select_on_validation"], mod["work_at_error"]
    # (tau, c, acc, agree, err, work); fp16 error 0.01: goal err <= 0.02, agree >= 0.998
    cands = [(1.0, 0.1, 0.9, 1.0, 0.05, 0.3), (0.3, 0.1, 0.9, 1.0, 0.015, 0.6),
             (0.3, 1.0, 0.9, 1.0, 0.011, 0.9), (0.1, 0.1, 0.9, 0.99, 0.012, 0.5)]
    assert sel(cands, 0.01)[:2] == (0.3, 0.1)  # cheapest that meets the goal (0.5 fails agreement)
    assert sel(cands[:1], 0.01)[:2] == (1.0, 0.1)  # none meets it: the most accurate
    rows = [("uniform fp8", "-", 0, 0, 0.2, 0.0, None), ("uniform fp16", "-", 0, 0, 0.002, 1.0, None),
            ("condition", 1.0, 0, 0, 0.02, 0.5, None), ("condition", 3.0, 0, 0, 0.1, 0.2, None)]
    assert at(rows, "condition", 0.1) == pytest.approx(0.2)
    assert at(rows, "condition", float(np.sqrt(0.1 * 0.02))) == pytest.approx(0.35)  # log-linear
    assert at(rows, "condition", 0.5) == 0.0 and at(rows, "bound", 0.1) is None


@pytest.mark.slow  # ~15 s of compilation (both lax.cond branches, five modes)
def test_compaction_modes_equal_masked():
    """compacted (terms gathered per step) and columns (compaction by component across the
    batch) give the masked result bit for bit, with and without capacity fallback, on a
    batched dot_general."""
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.random((2, 5, 12)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(2, 12, 4)) / 4, jnp.float32)
    b = jnp.asarray(rng.normal(size=(2, 1, 4)) / 4, jnp.float32)
    dn = (((2,), (1,)), ((0,), (0,)))

    def run(x, mode, cap):
        return jaxerr.mixed_dot_general(x, w, dn, low=LOW, high=HIGH, tol=0.5, activation="relu", bias=b,
                                        mode=mode, capacity=cap, return_stats=True)

    f = jax.jit(lambda x: [run(x, m, c) for m, c in (("masked", None), ("compacted", 0.9), ("columns", 0.99),
                                                       ("compacted", 2), ("columns", 1))])
    outs = f(x)
    y = np.asarray(outs[0][0])
    assert 0 < float(outs[0][1]["recomputed"]) < 1
    for (yy, st), fb in zip(outs[1:], (False, False, True, True)):
        np.testing.assert_array_equal(np.asarray(yy), y)
        assert bool(st["fallback"]) == fb


@pytest.mark.slow
def test_softmax_and_div_detected_and_exp_criteria():
    """A dot feeding softmax (through a division) gets the exp criteria: the seed rule
    recomputes all when tol < 1; "condition" is S·gamma > tol (absolute score error);
    "bound" keeps only scores certified within expm1(e) <= tol."""
    rng = np.random.default_rng(6)
    q = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)
    kk = jnp.asarray(rng.normal(size=(2, 5, 8)), jnp.float32)

    def att(q):
        return jax.nn.softmax(jnp.einsum("bqd,bkd->bqk", q, kk) / np.float32(4.0), axis=-1)

    for crit, tol in (("activation", 0.5), ("activation", 2.0), ("condition", 0.2), ("bound", 0.5)):
        out, st = jax.jit(jaxerr.mixed_precision(att, low=LOW, high=HIGH, tol=tol, criterion=crit,
                                                 return_stats=True))(q)
        (name, s), = st.items()
        assert name.endswith("-> exp")
        frac = float(s["recomputed"])
        if crit == "activation":
            assert frac == (1.0 if tol < 1 else 0.0)
        else:
            assert 0 < frac < 1
        if crit == "bound":  # kept scores: the probabilities are within ~2 tol of exact
            ref = np.asarray(att(q), np.float64)
            assert np.all(np.abs(np.asarray(out) - ref) <= 2.5 * tol * ref + 1e-3)


@pytest.mark.slow
def test_cnn_transformer_example_smoke(capsys):
    pytest.importorskip("optax")
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "mixed_precision_cnn_transformer.py"
    mod = runpy.run_path(str(path))
    res = mod["main"](["--tiny"])
    out = capsys.readouterr().out
    assert "conv_general_dilated -> relu" in out and "dot_general -> exp" in out
    for rows in res.values():
        assert all(0.0 <= r[5] <= 1.0 for r in rows)


@pytest.mark.parametrize("ar", [HIGH, LOW, pytest.param(Arithmetic.make("float8_e5m2", "pairwise"),
                                                         marks=pytest.mark.slow)], ids=str)
def test_gathered_dot_equals_full_product(ar, monkeypatch):
    """emulated_gathered_dot (the compacted mode's kernel), with small step and component
    chunks so that every chunking path runs, equals the full emulated product's entries."""
    import importlib

    E = importlib.import_module("jaxerr._emulate")
    monkeypatch.setattr(E, "_GATHER_CHUNK", 4)
    monkeypatch.setattr(E, "_COMPONENT_CHUNK", 5)
    rng = np.random.default_rng(7)
    x = np.asarray(rng.normal(size=(6, 37)) * 4, np.float32)
    w = np.asarray(rng.normal(size=(37, 5)) * 4, np.float32)
    idx = rng.choice(30, 13, replace=False)
    il, ir = idx // 5, idx % 5

    @jax.jit
    def f(x, w, il, ir):
        x, w = ar.round(x), ar.round(w)
        return E.emulated_gathered_dot(x.T, w, il, ir, ar), E.emulated_dot_general(x, w, DN, ar)

    got, full = f(x, w, il, ir)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(full).reshape(-1)[idx])


@pytest.mark.slow
def test_condition_sign_guard():
    """sign_guard adds ReLU components with v^ <= 0 whose sign the estimate cannot trust:
    0 keeps all of them (the seed's behaviour), a huge guard recomputes all of them."""
    x, w, b = _data(8)

    def frac(sg):
        _, st = jaxerr.mixed_dot_general(x, w, DN, low=LOW, high=HIGH, tol=1e-9, activation="relu", bias=b,
                                         criterion="condition", sign_guard=sg, return_stats=True)
        return float(st["recomputed"])

    v = np.asarray(_emul(LOW, x, w)) + np.asarray(b)
    f0, f1, fbig = frac(0.0), frac(0.05), frac(1e9)
    assert f0 == pytest.approx((v > 0).mean())
    assert f0 <= f1 <= fbig == 1.0
