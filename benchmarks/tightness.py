"""Tightness of jaxerr's bounds against simulated executions, and what they cost.

For small models (4-layer 256-wide MLPs with relu/tanh/gelu, a CNN written with
im2col, one transformer encoder block), in bfloat16, float16 and float32, at a
point input and over a box ``Interval.around(x, 1e-3)``, this prints one table:

* ``observed``: per-element max of ``|simulated - exact|`` over simulated
  executions (``tests/_simulator.py``: every operation rounded to the format,
  sums in random orders under the same accumulation model as the analysis; for
  boxes over a few sampled points of the box, corners and centre included).
  The simulator's ``pairwise`` model is one fixed tree, so float32/pairwise rows
  simulate one execution per point (``d`` in the ``sims`` column).
* ``interval``, ``first_order``, ``FO prob``: tightness of ``abs_err`` from
  ``domain="interval"``, ``domain="first_order"`` and ``domain="first_order",
  probabilistic=1e-6``, as ``median / max``: the median over elements (with
  ``observed > 0``) of ``abs_err / observed``, and ``max(abs_err) / max(observed)``.
  1 would be a bound that is attained; every value must be >= 1 for the guaranteed
  domains.
* ``FO/limit`` (point inputs): ``first_order abs_err / L`` elementwise (median /
  max), with ``L`` the first-order limit ``sum_k |dy/de_k| E_k`` of the standard
  model (``benchmarks/_first_order_limit.py``, a float32 reference value);
  ``limit/obs``: median of ``L / observed`` (how far even the best worst-case
  first-order bound is from what the simulations hit).
* ``cost iv``, ``cost fo``: time of ``jax.jit(jaxerr.bound(f))`` / time of
  ``jax.jit(f)`` at the same input (for boxes ``f`` runs at the centre), interval
  and first_order programs timed side by side (interleaved blocks, minimum over
  blocks, ``block_until_ready`` after every call, compile excluded);
  ``compile [s]``: trace + lower + XLA compile of ``jit(bound(f))`` for interval /
  first_order, and the (eager) probabilistic call including its compile.
* ``viol``: elements where ``observed > abs_err`` for any of the three domains
  (must be 0; the script exits 1 otherwise, 2 if some row raised).

Usage::

    python benchmarks/tightness.py             # the table (see the README for its run time)
    python benchmarks/tightness.py --quick     # mlp-relu + transformer, bf16 and f32, fewer runs
    python benchmarks/tightness.py --markdown  # markdown table
    python benchmarks/tightness.py --selftest  # check the first-order limit on x @ w and exit
    python benchmarks/tightness.py --models mlp-relu,cnn --formats bf16,f32 --inputs point
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
import zlib

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))
sys.path.insert(0, _HERE)

import _simulator as S  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _first_order_limit import first_order_limit, selftest  # noqa: E402

import jaxerr  # noqa: E402

RADIUS = 1e-3
DELTA = 1e-6

#: format key -> (precision for bound, accumulation for bound, simulator format, simulator accumulation)
FORMAT_SPECS = {
    "bf16": ("bfloat16", "auto", "bfloat16", "wide:float32"),
    "f16": ("float16", "auto", "float16", "wide:float32"),
    "f32": (None, "pairwise", None, "pairwise"),
    "f32rec": (None, "recursive", None, "recursive"),
}
FORMAT_LABEL = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "f32rec": "float32"}
DETERMINISTIC_SIM = {"pairwise"}  # the simulator's pairwise tree does not depend on the order


# ---------------------------------------------------------------------------
# Models (fixed PRNG keys; parameters are float32 constants captured by f)
# ---------------------------------------------------------------------------


def _dense(key, fan_in: int, fan_out: int, bias_scale: float = 0.1):
    kw, kb = jax.random.split(key)
    w = np.asarray(jax.random.normal(kw, (fan_in, fan_out)) / np.sqrt(fan_in), np.float32)
    b = np.asarray(bias_scale * jax.random.normal(kb, (fan_out,)), np.float32)
    return w, b


_ACT = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu}


def mlp(act: str, depth: int = 4, width: int = 256):
    """``depth`` dense layers of ``width``, ``act`` between them; input (1, width)."""
    keys = jax.random.split(jax.random.PRNGKey(0), depth)
    layers = [_dense(k, width, width) for k in keys]
    fn = _ACT[act]

    def f(x):
        for i, (w, b) in enumerate(layers):
            x = x @ w + b[None, :]
            if i < depth - 1:
                x = fn(x)
        return x

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(100), (1, width)), np.float32)
    return f, x


def _im2col(x):
    """3x3 'VALID' patches of (B, H, W, C) as (B, H-2, W-2, 9C), by slicing and concatenating."""
    _, h, w, _ = x.shape
    cols = [x[:, i:i + h - 2, j:j + w - 2, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(cols, axis=-1)


def cnn():
    """8x8x1 image -> conv3x3(8) + relu -> conv3x3(8) + relu -> dense(10); convolutions as
    im2col + dot_general (conv_general_dilated has no jaxerr rule yet)."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    w1, b1 = _dense(k1, 9 * 1, 8)
    w2, b2 = _dense(k2, 9 * 8, 8)
    w3, b3 = _dense(k3, 4 * 4 * 8, 10)

    def conv(x, w, b):
        p = _im2col(x)
        bsz, h, wd, k = p.shape
        y = p.reshape(bsz * h * wd, k) @ w + b[None, :]
        return jax.nn.relu(y).reshape(bsz, h, wd, -1)

    def f(x):
        h = conv(conv(x, w1, b1), w2, b2)
        return h.reshape(h.shape[0], -1) @ w3 + b3[None, :]

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(101), (1, 8, 8, 1)), np.float32)
    return f, x


def transformer(seq: int = 8, d: int = 32, heads: int = 4, ff: int = 128):
    """One pre-LayerNorm encoder block: LN, 4-head self-attention (jax.nn.softmax),
    residual, LN, GELU MLP, residual. Input (seq, d)."""
    ks = jax.random.split(jax.random.PRNGKey(2), 8)
    wq, _ = _dense(ks[0], d, d)
    wk, _ = _dense(ks[1], d, d)
    wv, _ = _dense(ks[2], d, d)
    wo, bo = _dense(ks[3], d, d)
    w1, b1 = _dense(ks[4], d, ff)
    w2, b2 = _dense(ks[5], ff, d)
    g1 = np.asarray(1 + 0.1 * jax.random.normal(ks[6], (d,)), np.float32)
    g2 = np.asarray(1 + 0.1 * jax.random.normal(ks[7], (d,)), np.float32)
    be1 = np.full((d,), 0.05, np.float32)
    be2 = np.full((d,), -0.05, np.float32)
    dh = d // heads
    scale = float(1 / np.sqrt(dh))

    def layer_norm(x, g, b):
        m = jnp.mean(x, -1, keepdims=True)
        v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b

    def split_heads(t):
        return t.reshape(seq, heads, dh).transpose(1, 0, 2)

    def f(x):
        h = layer_norm(x, g1, be1)
        q, k, v = split_heads(h @ wq), split_heads(h @ wk), split_heads(h @ wv)
        s = jnp.einsum("hqd,hkd->hqk", q, k) * scale
        p = jax.nn.softmax(s, axis=-1)
        o = jnp.einsum("hqk,hkd->hqd", p, v).transpose(1, 0, 2).reshape(seq, d)
        x = x + o @ wo + bo
        h = layer_norm(x, g2, be2)
        h = jax.nn.gelu(h @ w1 + b1)
        return x + h @ w2 + b2

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(102), (seq, d)), np.float32)
    return f, x


MODELS = {
    "mlp-relu": (lambda: mlp("relu"), ("bf16", "f16", "f32", "f32rec")),
    "mlp-tanh": (lambda: mlp("tanh"), ("bf16", "f16", "f32", "f32rec")),
    "mlp-gelu": (lambda: mlp("gelu"), ("bf16", "f16", "f32", "f32rec")),
    "cnn": (cnn, ("bf16", "f16", "f32")),
    "transformer": (transformer, ("bf16", "f16", "f32")),
}
MODEL_NOTES = {
    "mlp-relu": "4 x Dense(256), relu between; input (1, 256)",
    "mlp-tanh": "4 x Dense(256), tanh between; input (1, 256)",
    "mlp-gelu": "4 x Dense(256), gelu (tanh approximation) between; input (1, 256)",
    "cnn": "8x8x1 image, 2 x conv3x3(8 ch, VALID) + relu, dense(10); conv via im2col "
           "(slices + concatenate + dot_general): conv_general_dilated has no jaxerr rule yet",
    "transformer": "pre-LN encoder block, seq 8, hidden 32, 4 heads, softmax attention, "
                   "GELU MLP 128, two residuals; input (8, 32)",
}


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------


def _observe(f, points, sim_fmt, sim_acc, runs: int, rng) -> tuple[np.ndarray, int]:
    """Per-element max over points and runs of |simulated - exact| (float64)."""
    worst = None
    n = 0
    for p in points:
        ex = S.exact(f, [p])[0]
        for _ in range(runs):
            s = S.simulate(f, [p], fmt=sim_fmt, accumulation=sim_acc, order="random", rng=rng)[0]
            with np.errstate(invalid="ignore"):
                e = np.abs(s - ex)
            e = np.where(np.isnan(e), np.inf, e)
            worst = e if worst is None else np.maximum(worst, e)
            n += 1
    return worst, n


def _compile(fn, args):
    t0 = time.perf_counter()
    c = fn.lower(*args).compile()
    return c, time.perf_counter() - t0


def _block(out):
    return jax.block_until_ready(out)


def _time_interleaved(progs: dict, blocks: int, block_s: float) -> dict:
    """Minimum over ``blocks`` interleaved blocks of the per-call time of each program."""
    reps = {}
    for name, (fn, args) in progs.items():
        _block(fn(*args))
        t0 = time.perf_counter()
        _block(fn(*args))
        one = max(time.perf_counter() - t0, 1e-7)
        reps[name] = max(1, int(block_s / one))
    names = list(progs)
    per_call = {nm: [] for nm in names}
    for b in range(blocks):
        for nm in names[b % len(names):] + names[:b % len(names)]:
            fn, args = progs[nm]
            t0 = time.perf_counter()
            for _ in range(reps[nm]):
                _block(fn(*args))
            per_call[nm].append((time.perf_counter() - t0) / reps[nm])
    return {nm: min(v) for nm, v in per_call.items()}


def _ratios(bound: np.ndarray, obs: np.ndarray) -> tuple[float, float]:
    """(median over elements with obs > 0 of bound/obs, max(bound)/max(obs))."""
    m = obs > 0
    med = float(np.median(bound[m] / obs[m])) if m.any() else float("nan")
    mx = float(np.max(bound) / np.max(obs)) if np.max(obs) > 0 else float("nan")
    return med, mx


def measure_row(model: str, fkey: str, kind: str, cfg) -> dict:
    t_row = time.perf_counter()
    build, _ = MODELS[model]
    f, x = build()
    prec, acc, sim_fmt, sim_acc = FORMAT_SPECS[fkey]
    row = {"model": model, "format": FORMAT_LABEL[fkey], "acc": acc, "input": kind}
    rng = np.random.default_rng(zlib.crc32(f"{model}/{fkey}/{kind}".encode()))

    # --- observed errors ------------------------------------------------------
    runs = 1 if sim_acc in DETERMINISTIC_SIM else cfg.runs
    if kind == "point":
        arg = jnp.asarray(x)
        points = [x]
    else:
        arg = jaxerr.Interval.around(x, RADIUS)
        lo, hi = np.asarray(arg.lo), np.asarray(arg.hi)
        pts = S.sample_box(lo, hi, cfg.box_points, rng, fmt="float32")
        points = [p.astype(np.float32) for p in pts]
        if runs > 1:
            runs = cfg.box_runs
    obs, nsim = _observe(f, points, sim_fmt, sim_acc, runs, rng)
    row["sims"] = f"{nsim}{'d' if sim_acc in DETERMINISTIC_SIM else ''}"
    row["obs_max"] = float(np.max(obs))

    # --- bounds (the jit programs are also the ones timed) --------------------
    def jb(**kw):
        return jax.jit(jaxerr.bound(f, prec, accumulation=acc, warn=False, **kw))

    c_f, _ = _compile(jax.jit(f), (jnp.asarray(x),))
    c_iv, t_iv = _compile(jb(domain="interval"), (arg,))
    c_fo, t_fo = _compile(jb(domain="first_order"), (arg,))
    iv = np.asarray(c_iv(arg).abs_err, np.float64)
    fo = np.asarray(c_fo(arg).abs_err, np.float64)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bp = jaxerr.bound(f, prec, accumulation=acc, domain="first_order", probabilistic=DELTA,
                          warn=False)(arg)
    fp = np.asarray(bp.abs_err, np.float64)
    t_fp = time.perf_counter() - t0
    row["compile"] = (t_iv, t_fo, t_fp)
    row["iv"] = _ratios(iv, obs)
    row["fo"] = _ratios(fo, obs)
    row["fp"] = _ratios(fp, obs)
    row["inf"] = tuple(int(np.isinf(b).sum()) for b in (iv, fo, fp))
    row["viol"] = tuple(int(np.sum(obs > b)) for b in (iv, fo, fp))

    # --- first-order limit (point inputs) ---------------------------------------
    if kind == "point":
        (L,) = first_order_limit(f, (x,), prec, acc)
        m = L > 0
        r = fo[m] / L[m]
        row["fo_lim"] = (float(np.median(r)), float(np.max(r)), float(np.min(r)))
        mo = m & (obs > 0)
        row["lim_obs"] = float(np.median(L[mo] / obs[mo])) if mo.any() else float("nan")
        row["lim_below_obs"] = int(np.sum(obs > L))

    # --- cost ---------------------------------------------------------------------
    t = _time_interleaved({"f": (c_f, (jnp.asarray(x),)), "iv": (c_iv, (arg,)),
                           "fo": (c_fo, (arg,))}, cfg.blocks, cfg.block_s)
    row["t"] = t
    row["cost"] = (t["iv"] / t["f"], t["fo"] / t["f"])
    row["secs"] = time.perf_counter() - t_row
    return row


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def _num(v: float) -> str:
    if v != v:
        return "–"
    if v == float("inf"):
        return "inf"
    if v >= 1e4:
        return f"{v:.1e}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _pair(p) -> str:
    return f"{_num(p[0])} / {_num(p[1])}"


HEADER = ["model", "format", "acc", "input", "sims", "max obs", "interval", "first_order",
          "FO prob", "FO/limit", "limit/obs", "cost iv", "cost fo", "compile iv/fo/prob [s]",
          "viol", "row [s]"]


def _cells(r: dict) -> list[str]:
    if "error" in r:
        return [r["model"], r["format"], r["acc"], r["input"]] + ["ERROR"] + [""] * (len(HEADER) - 6) \
            + [f"{r['secs']:.0f}"]
    return [
        r["model"], r["format"], r["acc"], r["input"], r["sims"], f"{r['obs_max']:.2e}",
        _pair(r["iv"]), _pair(r["fo"]), _pair(r["fp"]),
        _pair(r["fo_lim"][:2]) if "fo_lim" in r else "",
        _num(r["lim_obs"]) if "lim_obs" in r else "",
        _num(r["cost"][0]), _num(r["cost"][1]),
        "/".join(f"{c:.1f}" for c in r["compile"]),
        str(sum(r["viol"])), f"{r['secs']:.0f}",
    ]


def _print_table(header, table, markdown: bool) -> None:
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "|".join("---" if i < 4 else "---:" for i in range(len(header))) + "|")
        for row in table:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in table:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))


def _git_state() -> str:
    """The commit of jaxerr's checkout and a hash of uncommitted changes to jaxerr/."""
    pkg = os.path.dirname(os.path.abspath(jaxerr.__file__))

    def run(*cmd: str) -> str:
        return subprocess.run(cmd, cwd=pkg, capture_output=True, text=True, timeout=10).stdout

    try:
        head = run("git", "rev-parse", "--short", "HEAD").strip()
        if not head:
            return f"from {pkg}, not a git checkout"
        diff = run("git", "diff", "HEAD", "--", ".")
        if not diff:
            return head
        digest = hashlib.sha1(diff.encode()).hexdigest()[:10]
        return f"{head} + uncommitted jaxerr/ changes (diff sha1 {digest})"
    except Exception:  # pragma: no cover
        return "unknown"


class _Cfg:
    def __init__(self, a):
        self.runs = a.runs if a.runs is not None else (5 if a.quick else 20)
        self.box_points = 3 if a.quick else 5
        self.box_runs = max(1, -(-self.runs // self.box_points))  # >= runs executions in all
        self.blocks = 3 if a.quick else 5
        self.block_s = (10.0 if a.quick else 20.0) / 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="mlp-relu and transformer, bf16 and f32, 5 simulated runs, short timing")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--selftest", action="store_true",
                    help="check the first-order limit against gamma_n |x||w| for x @ w and exit")
    ap.add_argument("--runs", type=int, default=None,
                    help="simulated executions per row (default 20, quick 5)")
    ap.add_argument("--models", type=str, default=None, help=f"comma-separated, from {','.join(MODELS)}")
    ap.add_argument("--formats", type=str, default=None,
                    help=f"comma-separated, from {','.join(FORMAT_SPECS)} (each model has its own list)")
    ap.add_argument("--inputs", type=str, default="point,box", help="point,box")
    a = ap.parse_args(argv)

    if a.selftest:
        selftest()
        return 0
    cfg = _Cfg(a)
    models = (a.models or ("mlp-relu,transformer" if a.quick else ",".join(MODELS))).split(",")
    fsel = (a.formats or ("bf16,f32" if a.quick else ",".join(FORMAT_SPECS))).split(",")
    kinds = a.inputs.split(",")
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}")
    for k in fsel:
        if k not in FORMAT_SPECS:
            ap.error(f"unknown format {k!r}")
    jobs = [(m, fk, kind) for m in models for fk in MODELS[m][1] if fk in fsel for kind in kinds]

    try:
        ncpu_aff = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        ncpu_aff = os.cpu_count()
    print(f"jax {jax.__version__} (jaxlib {getattr(jax.lib, '__version__', '?')}), jaxerr "
          f"{jaxerr.__version__} [{_git_state()}], python {platform.python_version()}")
    print(f"backend: {jax.default_backend()} {jax.devices()}; CPUs: os.cpu_count()={os.cpu_count()}, "
          f"usable={ncpu_aff}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"simulated executions per row: {cfg.runs} at a point, {cfg.box_points} points x "
          f"{cfg.box_runs} at a box (Interval.around(x, {RADIUS:g})); order='random'; "
          f"probabilistic delta = {DELTA:g}")
    print(f"timing: min over {cfg.blocks} interleaved blocks of >= {cfg.block_s * 1e3:.0f} ms "
          "(at least one call), block_until_ready after every call; compile excluded")
    for m in models:
        print(f"  {m}: {MODEL_NOTES[m]}")
    print(flush=True)

    t_start = time.perf_counter()
    rows = []
    for i, (m, fk, kind) in enumerate(jobs):
        t0 = time.perf_counter()
        try:
            r = measure_row(m, fk, kind, cfg)
        except Exception as e:  # report, keep going
            tb = traceback.extract_tb(e.__traceback__)
            where = next((fr for fr in reversed(tb) if "jaxerr" in fr.filename), tb[-1])
            r = {"model": m, "format": FORMAT_LABEL[fk], "acc": FORMAT_SPECS[fk][1], "input": kind,
                 "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                          f"[{os.path.relpath(where.filename)}:{where.lineno} in {where.name}]",
                 "secs": time.perf_counter() - t0}
        rows.append(r)
        print(f"  [{i + 1}/{len(jobs)}] {m} {fk} {kind}: {r['secs']:.0f} s "
              f"(total {time.perf_counter() - t_start:.0f} s)"
              + (f"  ERROR {r['error']}" if "error" in r else ""), file=sys.stderr, flush=True)

    _print_table(HEADER, [_cells(r) for r in rows], a.markdown)
    print()
    print("interval / first_order / FO prob: median over elements of abs_err/observed / "
          "max(abs_err)/max(observed). FO/limit: median / max over elements of "
          "first_order abs_err / first-order limit. cost: time of jit(bound(f)) / time of jit(f).")
    notes = []
    for r in rows:
        tag = f"{r['model']} {r['format']} {r['acc']} {r['input']}"
        if "error" in r:
            notes.append(f"{tag}: {r['error']}")
            continue
        if any(r["inf"]):
            notes.append(f"{tag}: infinite abs_err elements (interval/first_order/prob): "
                         f"{'/'.join(map(str, r['inf']))}")
        if any(r["viol"]):
            notes.append(f"{tag}: VIOLATIONS observed > abs_err (interval/first_order/prob): "
                         f"{'/'.join(map(str, r['viol']))}")
        if "fo_lim" in r and r["fo_lim"][2] < 0.999:
            notes.append(f"{tag}: first_order abs_err below the first-order limit somewhere "
                         f"(min ratio {r['fo_lim'][2]:.4f})")
        if r.get("lim_below_obs"):
            notes.append(f"{tag}: observed > first-order limit at {r['lim_below_obs']} elements "
                         "(second-order effects or the limit's float32 evaluation)")
    if notes:
        print("notes:")
        for n in notes:
            print(f"  - {n}")
    n_viol = sum(sum(r["viol"]) for r in rows if "viol" in r)
    n_err = sum(1 for r in rows if "error" in r)
    print(f"violations: {n_viol}; rows with errors: {n_err}; "
          f"total wall time: {time.perf_counter() - t_start:.0f} s")
    return 1 if n_viol else (2 if n_err else 0)


if __name__ == "__main__":
    raise SystemExit(main())
