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
  1 would be a bound that is attained; every value must be >= 1.
* ``FO/limit`` (point inputs): ``first_order abs_err / L`` elementwise (median /
  max), with ``L`` the first-order limit ``sum_k |dy/de_k| E_k`` of the standard
  model (``benchmarks/_first_order_limit.py``, a float32 reference value);
  ``limit/obs``: median of ``L / observed`` (how far even the best worst-case
  first-order bound is from what the simulations hit); ``limit/y``: median of
  ``L / |exact output|``. Where it is not small (bfloat16: 0.15 after two 256-wide
  layers, 0.44 after four) the worst case is not first-order small: second-order
  effects may matter. ``worst/limit``: the largest deviation that sign ascent finds
  over the model's events (``_first_order_limit.adversarial_errors``: every event at
  ``+-E_k``, rounded inputs at their known shift), over ``L``, median over 16 outputs:
  a lower bound on the standard model's worst case. Near 1 (the bfloat16 MLPs: 1.00
  although ``L`` is 36-46 % of ``|y|``), the worst case is first-order and a bound far
  above ``L`` is loose; well above 1, no sound bound can stay near ``L``.
* ``cost iv``, ``cost fo``: time of ``jax.jit(jaxerr.bound(f))`` / time of
  ``jax.jit(f)`` at the same input (for boxes ``f`` runs at the centre), interval
  and first_order programs timed side by side (interleaved blocks, minimum over
  blocks, ``block_until_ready`` after every call, compile excluded);
  ``compile [s]``: trace + lower + XLA compile of ``jit(bound(f))`` for interval /
  first_order, and the (eager) probabilistic call including its compile.
* ``viol``: elements where ``observed > abs_err`` for any of the three domains
  (must be 0: the script exits 1 otherwise).

Compiling the analyses dominates the run time (tens of seconds to minutes per
program on a 2-core CPU), so every row runs in its own process, on a snapshot of
``jaxerr/`` and the simulator taken at the start, with a time limit
(``--row-timeout``) and an address-space limit (``--mem-gb``). A row that hits a
limit keeps the stages it finished (simulation, interval, limit, first_order,
probabilistic, timing, in that order); the others show ``×`` and a note says
why. The script exits 2 if a row failed (exception, memory limit) and there was
no violation; rows stopped by the time limit only get a note.

Usage::

    python benchmarks/tightness.py             # every model, format and input kind
    python benchmarks/tightness.py --quick     # mlp-relu + transformer, bf16 and f32, points
    python benchmarks/tightness.py --markdown  # markdown table
    python benchmarks/tightness.py --selftest  # check the first-order limit on x @ w and exit
    python benchmarks/tightness.py --models mlp-relu,cnn --formats bf16,f32 --inputs point
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
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
from _first_order_limit import adversarial_errors, first_order_limit, selftest  # noqa: E402

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
# Models (fixed PRNG keys; parameters are float32 constants captured by f, drawn as
# float32 so that --x64 analyses the very same networks)
# ---------------------------------------------------------------------------


def _dense(key, fan_in: int, fan_out: int, bias_scale: float = 0.1):
    kw, kb = jax.random.split(key)
    w = np.asarray(jax.random.normal(kw, (fan_in, fan_out), np.float32) / np.sqrt(fan_in), np.float32)
    b = np.asarray(bias_scale * jax.random.normal(kb, (fan_out,), np.float32), np.float32)
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

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(100), (1, width), np.float32), np.float32)
    return f, x


def _im2col(x):
    """3x3 'VALID' patches of (B, H, W, C) as (B, H-2, W-2, 9C), by slicing and concatenating."""
    _, h, w, _ = x.shape
    cols = [x[:, i:i + h - 2, j:j + w - 2, :] for i in range(3) for j in range(3)]
    return jnp.concatenate(cols, axis=-1)


def cnn():
    """8x8x1 image -> conv3x3(8) + relu -> conv3x3(8) + relu -> dense(10); convolutions as
    im2col + dot_general (kept so that the rows stay comparable with earlier runs; the
    zoo and benchmarks/layers_lenet.py use conv_general_dilated)."""
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

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(101), (1, 8, 8, 1), np.float32), np.float32)
    return f, x


def transformer(seq: int = 8, d: int = 32, heads: int = 4, ff: int = 128, upto: str = "out",
                flax_ln: bool = False):
    """One pre-LayerNorm encoder block: LN, 4-head self-attention (jax.nn.softmax),
    residual, LN, GELU MLP, residual. Input (seq, d). ``upto``: return that stage's
    value instead (ln1, logits, softmax, resid1, ln2, ff1, mlp; for
    ``benchmarks/transformer_stages.py``); ``flax_ln``: LayerNorm's variance as
    flax.linen.LayerNorm computes it by default (``use_fast_variance``)."""
    ks = jax.random.split(jax.random.PRNGKey(2), 8)
    wq, _ = _dense(ks[0], d, d)
    wk, _ = _dense(ks[1], d, d)
    wv, _ = _dense(ks[2], d, d)
    wo, bo = _dense(ks[3], d, d)
    w1, b1 = _dense(ks[4], d, ff)
    w2, b2 = _dense(ks[5], ff, d)
    g1 = np.asarray(1 + 0.1 * jax.random.normal(ks[6], (d,), np.float32), np.float32)
    g2 = np.asarray(1 + 0.1 * jax.random.normal(ks[7], (d,), np.float32), np.float32)
    be1 = np.full((d,), 0.05, np.float32)
    be2 = np.full((d,), -0.05, np.float32)
    dh = d // heads
    scale = float(1 / np.sqrt(dh))

    def layer_norm(x, g, b):
        m = jnp.mean(x, -1, keepdims=True)
        if flax_ln:
            v = jnp.maximum(0.0, jnp.mean(jnp.square(x), -1, keepdims=True) - jnp.square(m))
        else:
            v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b

    def split_heads(t):
        return t.reshape(seq, heads, dh).transpose(1, 0, 2)

    def f(x):
        h = layer_norm(x, g1, be1)
        if upto == "ln1":
            return h
        q, k, v = split_heads(h @ wq), split_heads(h @ wk), split_heads(h @ wv)
        s = jnp.einsum("hqd,hkd->hqk", q, k) * scale
        if upto == "logits":
            return s
        p = jax.nn.softmax(s, axis=-1)
        if upto == "softmax":
            return p
        o = jnp.einsum("hqk,hkd->hqd", p, v).transpose(1, 0, 2).reshape(seq, d)
        x = x + o @ wo + bo
        if upto == "resid1":
            return x
        h = layer_norm(x, g2, be2)
        if upto == "ln2":
            return h
        h = h @ w1 + b1
        if upto == "ff1":
            return h
        h = jax.nn.gelu(h)
        if upto == "mlp":
            return h
        return x + h @ w2 + b2

    x = np.asarray(jax.random.normal(jax.random.PRNGKey(102), (seq, d), np.float32), np.float32)
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
           "(slices + concatenate + dot_general)",
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


def measure_row(model: str, fkey: str, kind: str, cfg, emit) -> None:
    """Measure one row; ``emit(dict)`` is called after every stage with its results, so
    that a row killed by the time or memory limit still reports what it had."""
    build, _ = MODELS[model]
    f, x = build()
    prec, acc, sim_fmt, sim_acc = FORMAT_SPECS[fkey]
    rng = np.random.default_rng(zlib.crc32(f"{model}/{fkey}/{kind}".encode()))

    # --- observed errors ------------------------------------------------------
    emit({"stage": "simulate"})
    det = sim_acc in DETERMINISTIC_SIM
    if kind == "point":
        arg = jnp.asarray(x)
        points = [x]
        runs = 1 if det else cfg.runs
    else:
        arg = jaxerr.Interval.around(x, RADIUS)
        pts = S.sample_box(np.asarray(arg.lo), np.asarray(arg.hi), cfg.box_points, rng, fmt="float32")
        points = [p.astype(np.float32) for p in pts]
        runs = 1 if det else cfg.box_runs
    obs, nsim = _observe(f, points, sim_fmt, sim_acc, runs, rng)
    emit({"sims": f"{nsim}{'d' if det else ''}", "obs_max": float(np.max(obs))})

    def jb(**kw):
        return jax.jit(jaxerr.bound(f, prec, accumulation=acc, warn=False, **kw))

    def bound_stats(key: str, b: np.ndarray, compile_s: float) -> dict:
        return {key: _ratios(b, obs), f"compile_{key}": compile_s,
                f"inf_{key}": int(np.isinf(b).sum()), f"viol_{key}": int(np.sum(obs > b))}

    if not cfg.prob_only:
        # --- bounds: the jit programs that are timed below give the values -----------
        emit({"stage": "interval"})
        c_iv, t_iv = _compile(jb(domain="interval"), (arg,))
        iv = np.asarray(c_iv(arg).abs_err, np.float64)
        emit(bound_stats("iv", iv, t_iv))

        L = None
        if kind == "point":
            emit({"stage": "limit"})
            (L,) = first_order_limit(f, (x,), prec, acc)
            mo = (L > 0) & (obs > 0)
            ey = np.abs(np.asarray(S.exact(f, [x])[0], np.float64))
            my = (L > 0) & (ey > 0)
            emit({"lim_obs": float(np.median(L[mo] / obs[mo])) if mo.any() else float("nan"),
                  "lim_rel": float(np.median(L[my] / ey[my])) if my.any() else float("nan"),
                  "lim_below_obs": int(np.sum(obs > L))})

        emit({"stage": "first_order"})
        c_fo, t_fo = _compile(jb(domain="first_order"), (arg,))
        fo = np.asarray(c_fo(arg).abs_err, np.float64)
        upd = bound_stats("fo", fo, t_fo)
        if L is not None:
            m = L > 0
            r = fo[m] / L[m]
            upd["fo_lim"] = (float(np.median(r)), float(np.max(r)), float(np.min(r)))
            # second-order terms: a few unit roundoffs of the format (float32 noise at least)
            upd["lim_tol"] = max(1e-4, 8 * jaxerr.as_format(prec or "float32").unit_roundoff)
        emit(upd)
        if L is not None:
            emit({"stage": "adversary"})
            idx, dev = adversarial_errors(f, (x,), prec, acc)
            Lf, fof = L.reshape(-1)[idx], fo.reshape(-1)[idx]
            ok = Lf > 0
            emit({"adv_lim": float(np.median(dev[ok] / Lf[ok])) if ok.any() else float("nan"),
                  "adv_fo": float(np.max(dev / np.maximum(fof, 1e-300)))})

    if cfg.prob:
        emit({"stage": "first_order probabilistic"})
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bp = jaxerr.bound(f, prec, accumulation=acc, domain="first_order",
                              probabilistic=DELTA, warn=False)(arg)
        fp = np.asarray(bp.abs_err, np.float64)
        emit(bound_stats("fp", fp, time.perf_counter() - t0))

    if cfg.timing and not cfg.prob_only:
        emit({"stage": "timing"})
        c_f, _ = _compile(jax.jit(f), (jnp.asarray(x),))
        t = _time_interleaved({"f": (c_f, (jnp.asarray(x),)), "iv": (c_iv, (arg,)),
                               "fo": (c_fo, (arg,))}, cfg.blocks, cfg.block_s)
        emit({"t": t, "cost": (t["iv"] / t["f"], t["fo"] / t["f"])})
    emit({"stage": "done"})


def _set_memory_limit(gb: float, pid: int) -> None:
    """Cap the address space of the row's process (Linux; best effort elsewhere)."""
    if gb <= 0:
        return
    try:
        import resource

        n = int(gb * 2**30)
        resource.prlimit(pid, resource.RLIMIT_AS, (n, n))
    except (ImportError, AttributeError, OSError, ValueError):  # pragma: no cover
        pass


def run_row(job, a, cfg, snapshot: str | None) -> dict:
    """One row in a child process (own time and memory limits) that runs the code in
    ``snapshot``; the partial results it wrote survive a timeout or a crash."""
    m, fk, kind = job
    row = {"model": m, "format": FORMAT_LABEL[fk], "acc": FORMAT_SPECS[fk][1], "input": kind}
    t0 = time.perf_counter()
    if a.in_process:
        def emit(d):
            row.update(d)
        try:
            measure_row(m, fk, kind, cfg, emit)
        except Exception as e:
            row["status"] = _exc_summary(e)
        row["secs"] = time.perf_counter() - t0
        return row
    with tempfile.TemporaryDirectory() as d:
        out, err = os.path.join(d, "row.jsonl"), os.path.join(d, "stderr")
        cmd = [sys.executable, os.path.join(snapshot, "benchmarks", "tightness.py"),
               "--_row", f"{m},{fk},{kind}", "--_out", out]
        cmd += ["--quick"] if a.quick else []
        cmd += ["--runs", str(a.runs)] if a.runs is not None else []
        cmd += ["--no-prob"] if not cfg.prob else []
        cmd += ["--no-timing"] if not cfg.timing else []
        cmd += ["--prob-only"] if cfg.prob_only else []
        cmd += ["--x64"] if a.x64 else []
        with open(err, "w") as ef:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([snapshot] + [q for q in [env.get("PYTHONPATH")] if q])
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=ef, env=env)
            _set_memory_limit(a.mem_gb, p.pid)
            try:
                rc = p.wait(timeout=cfg.row_timeout)
                status = None
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                rc, status = None, f"time limit {cfg.row_timeout:.0f} s"
        if os.path.exists(out):
            with open(out) as fh:
                for line in fh:
                    row.update(json.loads(line))
        if status is not None:
            row["timeout"] = True
        elif row.get("stage") != "done":
            with open(err, errors="replace") as fh:
                lines = [ln.strip() for ln in fh if ln.strip() and not ln.startswith(("E1", "*", "["))]
            status = (f"exit code {rc}: " + (lines[-1] if lines else "no message"))[:300]
            if "bad_alloc" in status or "MemoryError" in status or rc in (-6, -9):
                status += f" (memory limit {a.mem_gb:g} GiB)"
        if status:
            row["status"] = f"{status} during {row.get('stage', 'startup')}"
    row["secs"] = time.perf_counter() - t0
    return row


def _snapshot() -> str:
    """Copy jaxerr/, tests/_simulator.py and these benchmark files to a temporary directory,
    so that every row of a long run uses the same code even if the checkout changes."""
    d = tempfile.mkdtemp(prefix="jaxerr-tightness-")
    pkg = os.path.dirname(os.path.abspath(jaxerr.__file__))
    shutil.copytree(pkg, os.path.join(d, "jaxerr"), ignore=shutil.ignore_patterns("__pycache__"))
    os.makedirs(os.path.join(d, "tests"))
    shutil.copy2(os.path.abspath(S.__file__), os.path.join(d, "tests", "_simulator.py"))
    os.makedirs(os.path.join(d, "benchmarks"))
    for name in ("tightness.py", "_first_order_limit.py"):
        shutil.copy2(os.path.join(_HERE, name), os.path.join(d, "benchmarks", name))
    return d


def _exc_summary(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = next((fr for fr in reversed(tb) if "jaxerr" in fr.filename), tb[-1] if tb else None)
    msg = str(e).splitlines()[0] if str(e) else ""
    loc = f" [{where.filename}:{where.lineno} in {where.name}]" if where else ""
    return f"{type(e).__name__}: {msg}{loc}"


def _child(a, cfg) -> int:
    m, fk, kind = a._row.split(",")
    with open(a._out, "w") as fh:
        def emit(d):
            fh.write(json.dumps(d) + "\n")
            fh.flush()

        emit({"jaxerr_file": os.path.abspath(jaxerr.__file__)})
        try:
            measure_row(m, fk, kind, cfg, emit)
        except Exception as e:
            print(_exc_summary(e), file=sys.stderr, flush=True)
            return 3
    return 0


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
          "FO prob", "FO/limit", "limit/obs", "limit/y", "worst/limit", "cost iv", "cost fo", "compile iv/fo/prob [s]",
          "viol", "row [s]"]


def _cells(r: dict) -> list[str]:
    miss = "×" if "status" in r else ""  # a stage that did not finish (see the notes)

    def get(key, fmt):
        return fmt(r[key]) if key in r else miss

    comp = [f"{r[k]:.1f}" if k in r else miss for k in ("compile_iv", "compile_fo", "compile_fp")]
    viol = [r[k] for k in ("viol_iv", "viol_fo", "viol_fp") if k in r]
    return [
        r["model"], r["format"], r["acc"], r["input"],
        get("sims", str), get("obs_max", lambda v: f"{v:.2e}"),
        get("iv", _pair), get("fo", _pair), get("fp", _pair),
        (get("fo_lim", lambda v: _pair(v[:2])) if r["input"] == "point" else ""),
        (get("lim_obs", _num) if r["input"] == "point" else ""),
        (get("lim_rel", lambda v: f"{v:.2g}") if r["input"] == "point" else ""),
        (get("adv_lim", lambda v: f"{v:.3f}") if r["input"] == "point" else ""),
        get("cost", lambda v: _num(v[0])), get("cost", lambda v: _num(v[1])),
        "/".join(comp),
        str(sum(viol)) if viol else miss, f"{r['secs']:.0f}",
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
        self.prob = not (a.no_prob or a.quick)
        self.timing = not a.no_timing
        self.prob_only = bool(a.prob_only)
        if self.prob_only and not self.prob:
            raise SystemExit("--prob-only needs the probabilistic bound (not --quick / --no-prob)")
        self.row_timeout = a.row_timeout if a.row_timeout is not None else (45.0 if a.quick else 300.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: mlp-relu and transformer, bf16 and f32, point inputs, "
                         "5 simulated runs, no probabilistic bound, short timing, 45 s per row")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--selftest", action="store_true",
                    help="check the first-order limit against gamma_n |x||w| for x @ w and exit")
    ap.add_argument("--runs", type=int, default=None,
                    help="simulated executions per row (default 20, quick 5)")
    ap.add_argument("--models", type=str, default=None, help=f"comma-separated, from {','.join(MODELS)}")
    ap.add_argument("--formats", type=str, default=None,
                    help=f"comma-separated, from {','.join(FORMAT_SPECS)} (each model has its own list)")
    ap.add_argument("--inputs", type=str, default=None, help="point,box (quick: point)")
    ap.add_argument("--no-prob", action="store_true", help="skip the probabilistic first_order bound")
    ap.add_argument("--no-timing", action="store_true", help="skip the cost columns")
    ap.add_argument("--prob-only", action="store_true",
                    help="only the probabilistic bound (FO prob column; no interval, first_order, "
                         "limit or timing stages)")
    ap.add_argument("--row-timeout", type=float, default=None,
                    help="seconds per row before it is stopped (default 300, quick 45)")
    ap.add_argument("--mem-gb", type=float, default=10.0,
                    help="address-space limit of each row's process in GiB (default 10; 0: none)")
    ap.add_argument("--in-process", action="store_true",
                    help="run the rows in this process (no time or memory limit; for debugging)")
    ap.add_argument("--x64", action="store_true",
                    help="enable jax_enable_x64: jaxerr analyses in float64 (the models are the same; "
                         "their parameters are drawn as float32)")
    ap.add_argument("--_row", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_out", type=str, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.x64:
        os.environ["JAX_ENABLE_X64"] = "1"  # (the rows' processes inherit it)
        jax.config.update("jax_enable_x64", True)
    cfg = _Cfg(a)
    if a._row:
        return _child(a, cfg)
    if a.selftest:
        selftest()
        return 0
    models = (a.models or ("mlp-relu,transformer" if a.quick else ",".join(MODELS))).split(",")
    fsel = (a.formats or ("bf16,f32" if a.quick else ",".join(FORMAT_SPECS))).split(",")
    kinds = (a.inputs or ("point" if a.quick else "point,box")).split(",")
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}")
    for k in fsel:
        if k not in FORMAT_SPECS:
            ap.error(f"unknown format {k!r}")
    for k in kinds:
        if k not in ("point", "box"):
            ap.error(f"unknown input kind {k!r}")
    jobs = [(m, fk, kind) for m in models for fk in MODELS[m][1] if fk in fsel for kind in kinds]

    snapshot = None if a.in_process else _snapshot()
    try:
        ncpu_aff = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        ncpu_aff = os.cpu_count()
    print(f"jax {jax.__version__} (jaxlib {getattr(jax.lib, '__version__', '?')}), jaxerr "
          f"{jaxerr.__version__} [{_git_state()}], python {platform.python_version()}")
    print(f"backend: {jax.default_backend()} {jax.devices()}; CPUs: os.cpu_count()={os.cpu_count()}, "
          f"usable={ncpu_aff}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"analysis dtype: {'float64 (--x64)' if jax.config.read('jax_enable_x64') else 'float32'}")
    print(f"simulated executions per row: {cfg.runs} at a point, {cfg.box_points} points x "
          f"{cfg.box_runs} in a box (Interval.around(x, {RADIUS:g})); order='random'; "
          f"probabilistic delta = {DELTA:g}")
    print(f"timing: min over {cfg.blocks} interleaved blocks of >= {cfg.block_s * 1e3:.0f} ms "
          "(at least one call), block_until_ready after every call; compile excluded")
    print(f"each row runs in its own process on a snapshot of jaxerr/ and the simulator taken "
          f"now: limit {cfg.row_timeout:.0f} s, {a.mem_gb:g} GiB address space"
          if not a.in_process else "rows run in this process")
    for m in models:
        print(f"  {m}: {MODEL_NOTES[m]}")
    print(flush=True)

    t_start = time.perf_counter()
    rows = []
    try:
        for i, job in enumerate(jobs):
            r = run_row(job, a, cfg, snapshot)
            if "jaxerr_file" in r and not r["jaxerr_file"].startswith(snapshot):
                r["status"] = f"the row imported jaxerr from {r['jaxerr_file']}, not from the snapshot"
            rows.append(r)
            print(f"  [{i + 1}/{len(jobs)}] {' '.join(job)}: {r['secs']:.0f} s "
                  f"(total {time.perf_counter() - t_start:.0f} s)"
                  + (f"  STOPPED: {r['status']}" if "status" in r else ""), file=sys.stderr, flush=True)
    finally:
        if snapshot is not None:
            shutil.rmtree(snapshot, ignore_errors=True)
    _print_table(HEADER, [_cells(r) for r in rows], a.markdown)
    print()
    print("interval / first_order / FO prob: median over elements of abs_err/observed / "
          "max(abs_err)/max(observed). FO/limit: median / max over elements of first_order "
          "abs_err / first-order limit; limit/obs: median of limit/observed; limit/y: median "
          "of limit/|exact output|; worst/limit: median over 16 outputs of the largest deviation "
          "found by sign ascent over the model's events (a lower bound on the worst case; "
          "near 1: the worst case is first-order, above: second-order effects are real). "
          "cost: time of "
          "jit(bound(f)) / time of jit(f). compile: trace + lower + XLA compile of jit(bound(f)) "
          "(prob: eager call, compile included). sims: simulated executions (d: deterministic "
          "summation tree). ×: stage not reached (see notes).")
    notes = []
    for r in rows:
        tag = f"{r['model']} {r['format']} {r['acc']} {r['input']}"
        if "status" in r:
            notes.append(f"{tag}: STOPPED: {r['status']}")
        infs = [r.get(k, "×") for k in ("inf_iv", "inf_fo", "inf_fp")]
        if any(v not in (0, "×") for v in infs):
            notes.append(f"{tag}: elements with infinite abs_err (interval/first_order/prob): "
                         f"{'/'.join(map(str, infs))}")
        viol = [r.get(k, 0) for k in ("viol_iv", "viol_fo", "viol_fp")]
        if any(viol):
            notes.append(f"{tag}: VIOLATIONS, observed > abs_err (interval/first_order/prob): "
                         f"{'/'.join(map(str, viol))}")
        if "fo_lim" in r and r["fo_lim"][2] < 1 - r["lim_tol"]:
            notes.append(f"{tag}: first_order abs_err below the first-order limit by more than "
                         f"second-order terms allow (min ratio {r['fo_lim'][2]:.4f})")
        if r.get("adv_fo", 0) > 1:
            notes.append(f"{tag}: sign ascent found a deviation {r['adv_fo']:.3f}x the first_order "
                         "bound (its events use the standard model's u|y|; round to nearest, and "
                         "jaxerr, use u 2^floor(log2|y|): see docs/results.md)")
        if r.get("lim_below_obs"):
            notes.append(f"{tag}: observed > first-order limit at {r['lim_below_obs']} elements "
                         "(second-order effects or the limit's float32 evaluation)")
    if notes:
        print("notes:")
        for n in notes:
            print(f"  - {n}")
    n_viol = sum(r.get(k, 0) for r in rows for k in ("viol_iv", "viol_fo", "viol_fp"))
    n_time = sum(1 for r in rows if r.get("timeout"))
    n_fail = sum(1 for r in rows if "status" in r and not r.get("timeout"))
    print(f"violations: {n_viol}; rows stopped by the time limit: {n_time}; rows that failed "
          f"(exception, memory limit): {n_fail}; total wall time: {time.perf_counter() - t_start:.0f} s")
    return 1 if n_viol else (2 if n_fail else 0)


if __name__ == "__main__":
    raise SystemExit(main())
