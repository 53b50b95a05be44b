"""Soundness checking against the independent reference simulator.

``check(fn, centres, ...)`` analyses ``fn`` with jaxerr (at the point or over the
box ``centre ± radius``), then draws points in the box, evaluates the exact real
result (float64 / mpmath) and simulated executions (every operation rounded to the
format, several summation orders), and returns every violation of

    |simulated - exact| <= abs_err,   lo <= exact <= hi,
    computed_lo <= simulated <= computed_hi.

For ``precision=None`` float32 programs it also checks the real XLA execution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import jaxerr

try:
    import _simulator as S
except ImportError:  # pragma: no cover
    from tests import _simulator as S

# jaxerr accumulation name -> list of (simulator accumulation, order)
_SIM_ACC = {
    "recursive": [("recursive", "sequential"), ("recursive", "reverse"), ("recursive", "random"), ("fma", "sequential")],
    "pairwise": [("pairwise", "sequential")],
    "blocked:8": [("blocked:8", "sequential"), ("blocked:8", "random")],
    "blocked:4": [("blocked:4", "sequential"), ("blocked:4", "reverse")],
    "wide:float32": [("wide:float32", "sequential"), ("wide:float32", "random")],
}


def sim_models(precision, accumulation):
    if accumulation == "auto":
        fmt = jaxerr.as_format(precision) if precision is not None else None
        accumulation = "wide:float32" if (fmt is not None and fmt.precision < 24) else "recursive"
    models = list(_SIM_ACC[accumulation])
    if accumulation == "recursive" and precision is not None and jaxerr.as_format(precision).precision > 26:
        models = [m for m in models if m[0] != "fma"]
    return models


def _flat(tree):
    return jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, jaxerr.Bound))


def check(
    fn,
    centres,
    *,
    precision=None,
    accumulation="auto",
    radius=0.0,
    n_samples=6,
    seed=0,
    real_backend=True,
    jit=False,
    domain="interval",
    probabilistic=None,
    symbols=None,
    out=None,
):
    """Return a list of violation strings (empty when sound). ``out``: a result of
    ``bound(fn, ...)`` on the same box computed elsewhere (e.g. under sharding) to check
    instead of computing it here."""
    rng = np.random.default_rng(seed)
    centres = [np.asarray(c) for c in centres]
    is_float = [np.issubdtype(c.dtype, np.floating) for c in centres]
    args = []
    los, his = [], []
    for c, fl in zip(centres, is_float):
        if fl and radius:
            lo = (c.astype(np.float64) - radius).astype(c.dtype)
            hi = (c.astype(np.float64) + radius).astype(c.dtype)
            args.append(jaxerr.Interval(jnp.asarray(lo), jnp.asarray(hi)))
        else:
            lo = hi = c
            args.append(jnp.asarray(c))
        los.append(lo)
        his.append(hi)
    kw = {} if symbols is None else {"symbols": symbols}
    if out is None:
        out = jaxerr.bound(fn, precision, accumulation=accumulation, warn=False, jit=jit, domain=domain,
                           probabilistic=probabilistic, **kw)(*args)
    bounds = _flat(out)
    B = [
        {k: np.asarray(getattr(b, k), dtype=np.float64) for k in ("lo", "hi", "abs_err", "computed_lo", "computed_hi")}
        for b in bounds
    ]

    violations = []
    fmt = None if precision is None else precision
    # sample points: exact inputs are reals in the box; as written they are values of the dtype
    samples = []
    for k in range(n_samples):
        pt = []
        for c, lo, hi, fl in zip(centres, los, his, is_float):
            if not fl or lo is hi:
                pt.append(c)
                continue
            s = S.sample_box(lo.astype(np.float64), hi.astype(np.float64), n_samples, rng)[k]
            if precision is None:
                s = np.clip(s.astype(c.dtype), lo, hi)
            pt.append(s)
        samples.append(pt)

    models = sim_models(precision, accumulation)
    for pt in samples:
        ex = S.exact(fn, pt)
        runs = []
        for acc, order in models:
            flushes = (False, True) if (precision is None or not jaxerr.as_format(precision).subnormals) else (False,)
            for flush in flushes:
                try:
                    sim = S.simulate(fn, pt, fmt=fmt, accumulation=acc, order=order, rng=rng, flush=flush)
                except NotImplementedError:
                    continue
                runs.append((f"sim[{acc},{order},flush={flush}]", sim))
        if real_backend and precision is None:
            real = jax.jit(fn)(*[jnp.asarray(p) for p in pt])
            runs.append(("xla", [np.asarray(r, dtype=np.float64) for r in jax.tree_util.tree_leaves(real)]))
        for j, b in enumerate(B):
            e = np.asarray(ex[j], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                bad_rng = ~((b["lo"] <= e) & (e <= b["hi"]))
            if bad_rng.any():
                i = np.argwhere(bad_rng)[0]
                violations.append(
                    f"output {j}: exact {e[tuple(i)]!r} outside [{b['lo'][tuple(i)]!r}, {b['hi'][tuple(i)]!r}] at {tuple(i)}"
                )
            for name, sim in runs:
                s = np.asarray(sim[j], dtype=np.float64)
                with np.errstate(invalid="ignore"):
                    err = np.abs(s - e)
                    bad = ~(err <= b["abs_err"]) & ~np.isinf(b["abs_err"])
                    # with an infinite abs_err the computed value may be NaN: no range claim
                    bad_c = ~((b["computed_lo"] <= s) & (s <= b["computed_hi"])) & ~np.isinf(b["abs_err"])
                if bad.any():
                    i = tuple(np.argwhere(bad)[0])
                    violations.append(
                        f"output {j} {name}: |sim-exact| = {err[i]!r} > abs_err {b['abs_err'][i]!r} at {i} "
                        f"(sim={s[i]!r}, exact={e[i]!r})"
                    )
                if bad_c.any():
                    i = tuple(np.argwhere(bad_c)[0])
                    violations.append(
                        f"output {j} {name}: computed {s[i]!r} outside [{b['computed_lo'][i]!r}, {b['computed_hi'][i]!r}] at {i}"
                    )
    return violations


def tightness(fn, centres, *, precision, accumulation="auto", n_runs=20, seed=0, **kw):
    """(max abs_err / max observed error) over outputs, at a point input."""
    rng = np.random.default_rng(seed)
    args = [jnp.asarray(c) for c in centres]
    out = _flat(jaxerr.bound(fn, precision, accumulation=accumulation, warn=False, **kw)(*args))
    ex = S.exact(fn, [np.asarray(c) for c in centres])
    (acc, _), *_ = sim_models(precision, accumulation)
    worst = [np.zeros(np.shape(e)) for e in ex]
    for _ in range(n_runs):
        sim = S.simulate(fn, [np.asarray(c) for c in centres], fmt=precision, accumulation=acc, order="random", rng=rng)
        for j in range(len(ex)):
            worst[j] = np.maximum(worst[j], np.abs(np.asarray(sim[j], np.float64) - np.asarray(ex[j], np.float64)))
    ratios = []
    for j, b in enumerate(out):
        obs = float(np.max(worst[j]))
        bnd = float(np.max(np.asarray(b.abs_err)))
        ratios.append(bnd / obs if obs > 0 else float("inf"))
    return ratios
