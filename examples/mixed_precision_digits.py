"""Condition-guided mixed-precision inference on scikit-learn's digits (El Arar et al. 2025).

Digits (8x8, shipped with scikit-learn) are upsampled to 28x28 so that the first layer's
inner products have length 784, a 784-784-128-10 MLP (ReLU, and a tanh variant) is
trained in float32 with optax, its weights are quantised to float8 e4m3 (per layer,
with a power-of-two scale applied after the product), and the test set is evaluated:

- uniform fp8: every product in e4m3 with 8-term blocked FMA accumulation, saturating
  (the seed paper's kernel model, emulated bit-exactly by ``jaxerr.emulate``);
- uniform fp16: recursive float16 accumulation; fp32: native;
- mixed: fp8 first, the components flagged by each criterion recomputed in fp16, for a
  sweep of thresholds.

Printed per configuration: accuracy, agreement of predicted classes with fp32, median
relative logit error ``||z - z32|| / ||z32||``, and the fraction of inner-product work
recomputed (weighted by inner-product length). The accuracy-cost curves go to a PNG.

The thresholds are not picked on the test set: a fifth of the training split is held out
(not trained on) as a validation split, and for each criterion the cheapest ``tol`` (and,
for ``"condition+sign"``, the sign guard's constant ``c``) that meets the goal on the
validation split (logit error within 2x uniform fp16's, >= 99.8 % agreement) is
evaluated on the test split. A last table interpolates, at the logit errors the seed
rule reaches, the work the other criteria need.

Run: ``python examples/mixed_precision_digits.py [--tiny] [--out mixed_digits.png]``
(``--tiny`` or ``JAXERR_EXAMPLE_TINY=1``: a few seconds, for the smoke test).
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxerr
from jaxerr import Arithmetic

LOW = Arithmetic.make("float8_e4m3fn", "blocked:8", fma=True, overflow="saturate")
HIGH = Arithmetic.make("float16", "recursive")
E4M3 = jaxerr.FORMATS["float8_e4m3fn"]

TAUS = (1.0, 0.5, 0.3, 0.1)
SWEEPS = {
    "activation": TAUS,
    "condition": (30.0, 10.0, 3.0, 1.0, 0.3, 0.1),
    "condition+sign": (3.0, 1.0, 0.3, 0.1),
    "bound": (3.0, 1.0, 0.3),
}
#: ``"condition+sign"``: the condition criterion plus the sign-uncertainty test for ReLU:
#: a pre-activation ``v^ <= 0`` is also recomputed where ``|v^| < c · gamma · S`` (``S =
#: |x^|·|w^| + |b|``, ``gamma = sqrt(d) u`` the criterion's own error estimate), i.e. where
#: the estimated error could flip the sign. ``c = 1`` takes the estimate at face value
#: (parameter-free); the calibrated ``c`` is chosen on the validation split (SIGN_GRID).
SIGN_GUARD = 1.0
#: the constants ``c`` tried on the validation split (held out from training, never the test set)
SIGN_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)
#: the validation selection's target, the issue's goal: logit error within this factor of
#: uniform fp16's and at least this agreement with fp32 (on the validation split)
GOAL_FACTOR, GOAL_AGREE = 2.0, 0.998


def criterion_kw(name: str, sign_guard: float | None = None) -> dict:
    if name.startswith("condition+sign"):
        return {"criterion": "condition", "sign_guard": SIGN_GUARD if sign_guard is None else sign_guard}
    return {"criterion": name}


def load_digits_28(seed: int = 0, n_test: int | None = None, val: bool = False):
    """Digits upsampled to 28x28: ``(xtr, ytr, xte, yte)``; with ``val=True``
    ``(xtr, ytr, xva, yva, xte, yte)``, a fifth of the training split held out for
    validation (the test split is the same either way)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.images.astype(np.float32) / 16.0
    x = np.asarray(jax.image.resize(jnp.asarray(x), (x.shape[0], 28, 28), "linear"))
    x = np.clip(x, 0.0, 1.0).reshape(len(x), 784)
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=seed, stratify=d.target)
    if n_test is not None:
        xte, yte = xte[:n_test], yte[:n_test]
    if not val:
        return xtr, ytr, xte, yte
    xtr, xva, ytr, yva = train_test_split(xtr, ytr, test_size=0.2, random_state=seed + 1, stratify=ytr)
    if n_test is not None:
        xva, yva = xva[:n_test], yva[:n_test]
    return xtr, ytr, xva, yva, xte, yte


def init_mlp(key, sizes):
    params = []
    for k, (m, n) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        params.append({"w": jax.random.normal(k, (m, n)) * np.sqrt(2.0 / m), "b": jnp.zeros(n)})
    return params


def mlp(params, x, act="relu", scales=None):
    """The network as written: ``act((x @ w) * scale + b)`` per hidden layer."""
    phi = jax.nn.relu if act == "relu" else jnp.tanh
    h = x
    for i, p in enumerate(params):
        z = h @ p["w"]
        if scales is not None:
            z = z * scales[i]
        z = z + p["b"].reshape((1,) * (z.ndim - 1) + (-1,))
        h = phi(z) if i < len(params) - 1 else z
    return h


def train(act: str, xtr, ytr, steps: int, seed: int = 0, sizes=(784, 784, 128, 10)):
    import optax

    params = init_mlp(jax.random.PRNGKey(seed), sizes)
    opt = optax.adam(1e-3)
    state = opt.init(params)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(mlp(p, x, act), y).mean()

    @jax.jit
    def step(p, s, x, y):
        g = jax.grad(loss)(p, x, y)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.choice(len(xtr), 128, replace=False)
        params, state = step(params, state, jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx]))
    return params


def round_low(arrays):
    """``LOW.round`` (to e4m3, saturating) of each array, in one compiled call (rounding
    op by op compiles every primitive for every weight shape: seconds)."""
    flat = np.asarray(_round_low(jnp.concatenate([jnp.ravel(jnp.asarray(a, jnp.float32)) for a in arrays])))
    out, i = [], 0
    for a in arrays:
        out.append(jnp.asarray(flat[i:i + a.size].reshape(a.shape)))
        i += a.size
    return out


_round_low = jax.jit(lambda v: LOW.round(v))


def quantise(params):
    """Weights to e4m3 with a per-layer power-of-two scale: ``w ~= wq * scale`` where
    ``wq`` holds e4m3 values whose largest magnitude is in [8, 16)."""
    ks = [int(np.floor(np.log2(8.0 / float(jnp.max(jnp.abs(p["w"])))))) for p in params]
    wqs = round_low([p["w"] * 2.0**k for p, k in zip(params, ks)])
    qs = [{"w": wq, "b": p["b"].astype(jnp.float32)} for p, wq in zip(params, wqs)]
    return qs, [2.0**-k for k in ks]


def metrics(z, z32, y):
    z, z32 = np.asarray(z, np.float64), np.asarray(z32, np.float64)
    acc = float(np.mean(np.argmax(z, 1) == y))
    agree = float(np.mean(np.argmax(z, 1) == np.argmax(z32, 1)))
    rel = np.linalg.norm(z - z32, axis=1) / np.linalg.norm(z32, axis=1)
    return acc, agree, float(np.median(rel))


def work_fraction(stats) -> float:
    """Recomputed inner products weighted by their length (the fraction of MAC work)."""
    num = sum(float(s["count"]) * float(s["length"]) for s in stats.values())
    den = sum(float(s["total"]) * float(s["length"]) for s in stats.values())
    return num / den


def run_experiment(act: str, xtr, ytr, xte, yte, steps: int, sweeps=SWEEPS, mode="masked", log=print,
                   sizes=(784, 784, 128, 10), val=None, sign_grid=SIGN_GRID):
    """Train, quantise, and evaluate every configuration on the test split. With ``val =
    (xva, yva)`` also select, per criterion, ``tau`` (and the sign guard's ``c``) on the
    validation split (:func:`select_on_validation`) and evaluate the selection on the test
    split: :func:`print_selection` prints them. The ``"condition+sign"`` sweep on the test
    split uses the validated ``c`` (labelled ``"condition+sign c=..."``).

    Cost: one compiled program per criterion (:func:`sweep_fn`), run once on the
    validation and test digits together for every ``(tau, c)`` of its sweep."""
    params = train(act, xtr, ytr, steps, sizes=sizes)
    qp, scales = quantise(params)
    net = jax.jit(lambda x: mlp(qp, x, act, scales))
    splits = {"test": (np.asarray(xte), np.asarray(yte))}
    if val is not None:
        splits["val"] = (np.asarray(val[0]), np.asarray(val[1]))
    xs = jnp.asarray(np.concatenate([v[0] for v in splits.values()]))
    z32 = np.asarray(net(xs))
    cut, sl = 0, {}
    for k, (xk, _) in splits.items():
        sl[k] = slice(cut, cut + len(xk))
        cut += len(xk)
    rows = []
    acc, agree, rel = metrics(z32[sl["test"]], z32[sl["test"]], yte)
    rows.append(("fp32", "-", acc, agree, rel, 1.0, None))

    def evaluate(crit, pairs):
        """``{split: [(acc, agree, err, work, stats)] per (tau, c) of pairs}``."""
        f = sweep_fn(act, scales, crit, mode)
        z, st = f(qp, xs[:, None, :], jnp.asarray([p[0] for p in pairs], jnp.float32),
                  jnp.asarray([p[1] for p in pairs], jnp.float32))
        z, st = np.asarray(z)[:, :, 0], jax.tree_util.tree_map(np.asarray, st)
        out = {}
        for k, (_, yk) in splits.items():
            out[k] = []
            for i in range(len(pairs)):
                sti = {name: _split_stats(s, i, sl[k]) for name, s in st.items()}
                out[k].append((*metrics(z[i, sl[k]], z32[sl[k]], yk), work_fraction(sti), sti))
        return out

    for name, crit in (("uniform fp8", "never"), ("uniform fp16", "always")):
        t = time.time()
        res = evaluate(crit, [(0.0, 0.0)])
        rows.append((name, "-", *res["test"][0]))
        if crit == "always" and val is not None:
            e16 = res["val"][0][2]
        log(f"  {act} {name}: {time.time() - t:.1f}s")
    selected, last = [], []
    for crit, taus in sweeps.items():
        if crit == "condition+sign" and act != "relu":
            continue  # no ReLU: the sign guard changes nothing
        cs = sign_grid if (crit == "condition+sign" and val is not None) else (SIGN_GUARD,)
        pairs = [(tau, c) for tau in taus for c in cs]
        if crit == "condition+sign" and (1.0, SIGN_GUARD) not in pairs:
            pairs.append((1.0, SIGN_GUARD))  # the parameter-free guard, for comparison
        t = time.time()
        res = evaluate(crit, pairs)
        c = SIGN_GUARD
        if val is not None:  # choose tol (and c) on the validation split, never the test split
            cands = [(tau, c, *r[:4]) for (tau, c), r in zip(pairs, res["val"])]
            tau, c, vacc, vagree, verr, vwork = select_on_validation(cands, e16)
            i = pairs.index((tau, c))
            selected.append(dict(criterion=crit, tol=tau, c=c, val_err=verr, val_fp16_err=e16, val_agree=vagree,
                                 val_work=vwork, test=res["test"][i][:4]))
            log(f"  {act} {crit}: validation selection tol={tau} c={c} ({len(cands)} candidates)")
        # the test sweep: the validated c if any, else the parameter-free c = SIGN_GUARD
        label = f"condition+sign c={c:g}" if crit == "condition+sign" else crit
        for tau in taus:
            rows.append((label, tau, *res["test"][pairs.index((tau, c))]))
        if crit == "condition+sign" and c != SIGN_GUARD:
            last.append((f"condition+sign c={SIGN_GUARD:g}", 1.0, *res["test"][pairs.index((1.0, SIGN_GUARD))]))
        log(f"  {act} {crit}: {len(pairs)} (tol, c) on {len(xs)} digits, {time.time() - t:.1f}s")
    rows += last
    return rows, (qp, scales, selected)


def _split_stats(s, i, rows):
    """Stats of sweep entry ``i`` summed over the digits ``rows`` (per-digit counts)."""
    count, total = float(np.sum(s["count"][i, rows])), float(np.sum(s["total"][i, rows]))
    return {"recomputed": count / total, "count": count, "total": total, "length": float(s["length"][i, 0])}


_SWEEP_FNS: dict = {}


def sweep_fn(act, scales, crit, mode="masked"):
    """``f(qp, x, taus, cs) -> (z, stats)``: the mixed-precision MLP with weights ``qp``
    (arguments, not constants: no constant folding of 784x784 weights at compile time) on
    digits ``x`` of shape ``(R, 1, 784)``, vmapped over the digits (per-digit stats, so the
    validation and test digits share one call) and over the ``(tau, c)`` of a sweep (the
    first layer's two products do not depend on them and are computed once). Bit for bit
    the per-threshold, per-split calls; one compiled program per criterion, cached."""
    key = (act, tuple(scales), crit, mode)
    if key not in _SWEEP_FNS:
        def f(qp, x, tol, c):
            g = jaxerr.mixed_precision(lambda x: mlp(qp, x, act, scales), low=LOW, high=HIGH, tol=tol,
                                       mode=mode, return_stats=True, **criterion_kw(crit, c))
            return g(x)

        per_digit = jax.vmap(f, in_axes=(None, 0, None, None))
        _SWEEP_FNS[key] = jax.jit(jax.vmap(per_digit, in_axes=(None, None, 0, 0)))
    return _SWEEP_FNS[key]


def select_on_validation(cands, fp16_err, factor=GOAL_FACTOR, agree=GOAL_AGREE):
    """The cheapest candidate ``(tau, c, acc, agree, err, work)`` on the validation split
    that meets the goal (logit error <= ``factor`` x uniform fp16's, agreement >= ``agree``);
    if none does, the most accurate one."""
    ok = [r for r in cands if r[4] <= factor * fp16_err and r[3] >= agree]
    if ok:
        return min(ok, key=lambda r: (r[5], r[4]))
    return min(cands, key=lambda r: (r[4], r[5]))


def work_at_error(rows, crit, err):
    """Interpolated work the criterion ``crit`` needs to reach logit error ``err`` (linear in
    work, log-linear in error, between consecutive points of its Pareto front; the curve
    starts at uniform fp8 (work 0) and ends at uniform fp16 (work 1)). ``None`` if ``crit``
    was not run."""
    pts = [(r[5], r[4]) for r in rows if r[0] == crit]
    if not pts:
        return None
    pts += [(r[5], r[4]) for r in rows if r[0] in ("uniform fp8", "uniform fp16")]
    pts.sort()
    front, best = [], float("inf")
    for w, e in pts:  # Pareto front: least error at each work so far
        if e < best:
            front.append((w, max(e, 1e-12)))
            best = e
    if front[0][1] <= err:
        return front[0][0]
    for (w0, e0), (w1, e1) in zip(front, front[1:]):
        if e1 <= err:
            t = (np.log(e0) - np.log(max(err, 1e-12))) / (np.log(e0) - np.log(e1))
            return w0 + t * (w1 - w0)
    return None


def print_equal_error(act, rows, crits=("condition", "condition+sign", "bound")):
    crits = [next((r[0] for r in rows if (r[0] == c or r[0].startswith(c + " c=")) and r[1] != "-"
                   and r[0] != f"condition+sign c={SIGN_GUARD:g}"), c) for c in crits]
    """At the logit errors the seed rule reaches, the work each other criterion needs."""
    print(f"\n{act} MLP: work (fraction recomputed) needed for the seed rule's logit error, interpolated")
    print(f"{'seed tol':>8}{'error':>10}{'seed work':>11}" + "".join(f"{c:>22}" for c in crits))
    for r in rows:
        if r[0] != "activation":
            continue
        ws = [work_at_error(rows, c, r[4]) for c in crits]
        cells = "".join(f"{'-' if w is None else f'{w:.3f}':>22}" for w in ws)
        print(f"{r[1]!s:>8}{r[4]:10.4g}{r[5]:11.3f}{cells}")


def print_selection(act, rows, selected):
    """The validation-selected configuration of each criterion, evaluated on the test split."""
    e16 = next(r[4] for r in rows if r[0] == "uniform fp16")
    print(f"\n{act} MLP: tol (and c) chosen on the validation split, goal err <= {GOAL_FACTOR:g}x fp16 and "
          f"agree >= {GOAL_AGREE}; test numbers")
    print(f"{'criterion':<16}{'tol':>6}{'c':>6}{'val err/fp16':>14}{'acc':>8}{'agree':>8}{'err':>10}"
          f"{'err/fp16':>10}{'work':>8}")
    for s in selected:
        acc, agree, err, work = s["test"]
        c = f"{s['c']:g}" if s["criterion"] == "condition+sign" else "-"
        print(f"{s['criterion']:<16}{s['tol']!s:>6}{c:>6}{s['val_err'] / s['val_fp16_err']:14.2f}{acc:8.4f}"
              f"{agree:8.4f}{err:10.4g}{err / e16:10.2f}{work:8.3f}")


def print_table(act, rows):
    print(f"\n{act} MLP, weights e4m3, low = {LOW}, high = {HIGH}")
    print(f"{'config':<28}{'tol':>6}{'acc':>8}{'agree':>8}{'med rel err':>13}{'recomputed':>12}  per layer")
    for name, tau, acc, agree, rel, frac, st in rows:
        per = "" if st is None else " ".join(f"{float(s['recomputed']):.3f}" for s in st.values())
        print(f"{name:<28}{tau!s:>6}{acc:8.4f}{agree:8.4f}{rel:13.4g}{frac:12.3f}  {per}")


def plot(results, path, selected=None):
    selected = selected or {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax_i, (act, rows) in enumerate(results.items()):
        ax = axes[ax_i]
        labels = dict.fromkeys(r[0] for r in rows if r[1] != "-")
        for crit in labels:
            marker = {"activation": "o-", "condition": "s-", "bound": "^-"}.get(crit, "d-")
            pts = sorted((r[5], r[4]) for r in rows if r[0] == crit)
            ax.plot([p[0] for p in pts], [max(p[1], 1e-6) for p in pts], marker, label=crit)
        sel = [r for r in rows for s in selected.get(act, []) if r[0].startswith(s["criterion"]) and r[1] == s["tol"]
               and (s["criterion"] != "condition" or not r[0].startswith("condition+"))]
        if sel:
            ax.plot([r[5] for r in sel], [max(r[4], 1e-6) for r in sel], "r*", markersize=11,
                    label="tol (c) chosen on validation")
        for name, m in (("uniform fp8", "kx"), ("uniform fp16", "k+")):
            for r in rows:
                if r[0] == name:
                    ax.plot([r[5]], [max(r[4], 1e-6)], m, markersize=10, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("fraction of inner-product work recomputed in fp16")
        ax.set_ylabel("median relative logit error vs fp32")
        ax.set_title(f"digits 28x28, {act} MLP")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a few seconds: small test set, few steps")
    ap.add_argument("--out", default="mixed_digits.png")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--acts", default="relu,tanh")
    ap.add_argument("--mode", default="masked", choices=("masked", "compacted"))
    args = ap.parse_args(argv)
    tiny = args.tiny or os.environ.get("JAXERR_EXAMPLE_TINY") == "1"
    steps = 20 if tiny else args.steps
    xtr, ytr, xva, yva, xte, yte = load_digits_28(n_test=16 if tiny else None, val=True)
    sweeps = {"condition+sign": (0.3,)} if tiny else SWEEPS  # tiny: the fewest compilations
    sizes = (784, 16, 8, 10) if tiny else (784, 784, 128, 10)
    results, sel = {}, {}
    for act in ("relu",) if tiny else args.acts.split(","):
        t = time.time()
        rows, (_, _, selected) = run_experiment(act, xtr, ytr, xte, yte, steps, sweeps, args.mode,
                                                log=(lambda *a: None) if tiny else print, sizes=sizes,
                                                val=(xva, yva), sign_grid=(0.1, 1.0) if tiny else SIGN_GRID)
        results[act], sel[act] = rows, selected
        print_table(act, rows)
        print_selection(act, rows, selected)
        print_equal_error(act, rows)
        print(f"({act}: {time.time() - t:.1f}s)")
    if args.out:
        plot(results, args.out, sel)
        print(f"saved {args.out}")
    return results


if __name__ == "__main__":
    main()
