"""How the cost of ``jax.jit(jaxerr.bound(f))`` grows with model size, depth and symbol budget.

For each row this measures, side by side in one process:

* compile time (trace + lower + XLA compile) of ``jax.jit(f)`` and of
  ``jax.jit(jaxerr.bound(f, domain=...))``, reported apart from the run time;
* run time per call of both compiled programs, timed in interleaved blocks (the method of
  ``benchmarks/overhead.py``: min over blocks of back-to-back calls, ``block_until_ready``
  after every call, blocks of the two programs alternating so that a slow phase of a shared
  machine hits both), and their ratio ``bound / f``;
* peak memory of both programs as XLA plans it (``compiled.memory_analysis()``: argument +
  output + temp bytes, minus aliased bytes), and their ratio; and the peak resident set size
  of the row's whole process (compile included).

Models (float32 parameters passed as arguments, batch 32 for the MLPs):

* ``mlp``: the Flax linen MLP of ``overhead.py`` (``depth - 1`` x ``Dense(width)`` + relu,
  then ``Dense(width)``; input width ``width``), widths 64 ... 4096, depths 2 ... 16;
* ``block``: one pre-LayerNorm transformer encoder block in plain JAX (sequence 128, hidden 384,
  6 heads, ``jax.nn.softmax`` attention, GELU MLP 4x = 1536, residuals), input (128, 384);
* ``encoder``: 6 such blocks.

Domains: ``interval`` at a point and over the box ``x +- 0.01`` (the whole MLP grid);
``first_order`` and ``affine`` on a subset; the affine symbol budget swept over 64 ... 1024.

Every row runs in its own process with a time limit (``--row-timeout``) and an address-space
limit (``--mem-gb``): a compile that does not finish in time stops that row only, which is
then shown with the stages it finished and a note (``×`` for the rest). ``--quick`` runs 8
small MLP rows (about 3 minutes on a loaded 2-core CPU); the default grid takes hours there
(compiling the depth-16 and transformer analyses takes minutes per row).
``--plot PATH`` (default ``docs/scale.png``) draws cost growth vs width, depth and symbol
budget; ``--json PATH`` saves the rows and ``--from-json PATH`` reprints / replots them.

Usage::

    python benchmarks/scale.py --quick
    python benchmarks/scale.py --markdown --json scale.json     # full grid
    python benchmarks/scale.py --from-json scale.json --markdown --plot docs/scale.png
    python benchmarks/scale.py --sections block,encoder --row-timeout 600
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

BATCH = 32
RADIUS = 0.01
SEQ, HIDDEN, HEADS, FF, LAYERS = 128, 384, 6, 1536, 6

SECTIONS = ("mlp", "first_order", "affine", "symbols", "block", "encoder")


# ---------------------------------------------------------------------------
# The grid
# ---------------------------------------------------------------------------


def jobs(quick: bool, sections: list[str]) -> list[dict]:
    """The rows to measure, in order (the most informative first, so that a run cut
    short still has them). Each row is a dict of section, model, width, depth, batch,
    domain, input, symbols."""

    def row(section, model, domain, inp, width=HIDDEN, depth=1, symbols=None, batch=BATCH):
        batch = batch if model == "mlp" else 1
        return {"section": section, "model": model, "width": width, "depth": depth, "batch": batch,
                "domain": domain, "input": inp, "symbols": symbols}

    out = []
    if quick:
        grid = [(64, 2), (256, 4)]
        fo = [(64, 2)]
        aff = [(64, 2)]
        syms = (64, 256)
        sym_cfg = (64, 2)
    else:
        grid = [(w, d) for w in (64, 256, 1024, 4096) for d in (2, 4, 8, 16)]
        fo = [(64, 2), (256, 2), (64, 4)]
        aff = [(64, 2), (256, 2), (64, 4)]
        syms = (64, 128, 256, 512, 1024)
        sym_cfg = (64, 4)
    if "mlp" in sections:
        # the box at every size first; the point input (about the same cost) at depth 2 and 4
        for d in sorted({d for _, d in grid}):
            for w in sorted({w for w, _ in grid}):
                if (w, d) not in grid:
                    continue
                out.append(row("mlp", "mlp", "interval", "box", w, d))
                if quick or d <= 4:
                    out.append(row("mlp", "mlp", "interval", "point", w, d))
    if "block" in sections and not quick:  # its compile alone takes minutes on 2 cores
        out.append(row("block", "block", "interval", "point"))
        out.append(row("block", "block", "interval", "box"))
    if "encoder" in sections and not quick:
        out.append(row("encoder", "encoder", "interval", "point", depth=LAYERS))
    if "symbols" in sections:
        # batch 1: the box (width elements) fits the budget, so every K promotes it
        w, d = sym_cfg
        for k in syms:
            out.append(row("symbols", "mlp", "affine", "box", w, d, k, batch=1))
    if "first_order" in sections:
        for w, d in fo:
            out.append(row("first_order", "mlp", "first_order", "point", w, d))
        if not quick:
            out.append(row("first_order", "mlp", "first_order", "box", 64, 2))
    if "affine" in sections:
        for w, d in aff:
            out.append(row("affine", "mlp", "affine", "box", w, d, 1024 if not quick else 256))
        if not quick:
            out.append(row("affine", "mlp", "affine", "point", 256, 4, 1024))
    if "block" in sections and not quick:
        out.append(row("block", "block", "affine", "point", symbols=256))
        out.append(row("block", "block", "first_order", "point"))
        out.append(row("block", "block", "affine", "box", symbols=256))
    if "encoder" in sections and not quick:
        out.append(row("encoder", "encoder", "interval", "box", depth=LAYERS))
        out.append(row("encoder", "encoder", "affine", "point", depth=LAYERS, symbols=256))
        out.append(row("encoder", "encoder", "first_order", "point", depth=LAYERS))
    return out


# ---------------------------------------------------------------------------
# Models (built in the row's process)
# ---------------------------------------------------------------------------


def _mlp(width: int, depth: int, batch: int = BATCH):
    import jax
    import jax.numpy as jnp
    from overhead import MLP

    model = MLP(depth, width)
    key_p, key_x = jax.random.split(jax.random.PRNGKey(depth * 10_000 + width))
    x = jax.random.normal(key_x, (batch, width), jnp.float32)
    params = model.init(key_p, x)

    def f(params, x):
        return model.apply(params, x)

    return f, params, x


def _block_params(key, d=HIDDEN, ff=FF):
    import jax
    import jax.numpy as jnp

    ks = jax.random.split(key, 8)

    def dense(k, n, m):
        return jax.random.normal(k, (n, m), jnp.float32) / jnp.sqrt(n), jnp.full((m,), 0.01, jnp.float32)

    p = {}
    for name, k, (n, m) in zip(("q", "k", "v", "o", "1", "2"), ks, [(d, d)] * 4 + [(d, ff), (ff, d)]):
        p["w" + name], p["b" + name] = dense(k, n, m)
    p["g1"] = 1 + 0.1 * jax.random.normal(ks[6], (d,), jnp.float32)
    p["g2"] = 1 + 0.1 * jax.random.normal(ks[7], (d,), jnp.float32)
    p["be1"] = jnp.full((d,), 0.05, jnp.float32)
    p["be2"] = jnp.full((d,), -0.05, jnp.float32)
    return p


def block_apply(p, x, heads: int = HEADS):
    """Pre-LayerNorm encoder block: LN, multi-head self-attention (``jax.nn.softmax``),
    residual, LN, GELU MLP, residual. ``x``: (seq, hidden)."""
    import jax
    import jax.numpy as jnp

    seq, d = x.shape
    dh = d // heads

    def layer_norm(x, g, b):
        m = jnp.mean(x, -1, keepdims=True)
        v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(v + 1e-5) * g + b

    def split(t):
        return t.reshape(seq, heads, dh).transpose(1, 0, 2)

    h = layer_norm(x, p["g1"], p["be1"])
    q, k, v = split(h @ p["wq"] + p["bq"]), split(h @ p["wk"] + p["bk"]), split(h @ p["wv"] + p["bv"])
    s = jnp.einsum("hqd,hkd->hqk", q, k) * (1 / dh**0.5)
    a = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("hqk,hkd->hqd", a, v).transpose(1, 0, 2).reshape(seq, d)
    x = x + o @ p["wo"] + p["bo"]
    h = layer_norm(x, p["g2"], p["be2"])
    h = jax.nn.gelu(h @ p["w1"] + p["b1"])
    return x + h @ p["w2"] + p["b2"]


def _transformer(layers: int):
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.PRNGKey(7), layers + 1)
    params = [_block_params(k) for k in keys[:layers]]
    x = jax.random.normal(keys[-1], (SEQ, HIDDEN), jnp.float32)

    def f(params, x):
        for p in params:
            x = block_apply(p, x)
        return x

    return f, params, x


def build(r: dict):
    if r["model"] == "mlp":
        return _mlp(r["width"], r["depth"], r.get("batch", BATCH))
    return _transformer(1 if r["model"] == "block" else r["depth"])


# ---------------------------------------------------------------------------
# One row (child process)
# ---------------------------------------------------------------------------


def _mem(compiled) -> float:
    """Peak bytes XLA plans for one call: arguments + outputs + temporaries - aliased."""
    try:
        m = compiled.memory_analysis()
        return float(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                     - m.alias_size_in_bytes)
    except Exception:  # pragma: no cover - backend without memory analysis
        return float("nan")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure_row(r: dict, blocks: int, block_s: float, emit) -> None:
    import jax
    import numpy as np
    from overhead import _time

    import jaxerr

    emit({"stage": "setup", "load0": os.getloadavg()[0]})
    f, params, x = build(r)
    arg = jaxerr.Interval(x - RADIUS, x + RADIUS) if r["input"] == "box" else x
    kw = {"domain": r["domain"], "warn": False}
    if r["symbols"] is not None:
        kw["symbols"] = r["symbols"]

    emit({"stage": "compile f"})
    t0 = time.perf_counter()
    cf = jax.jit(f).lower(params, x).compile()
    emit({"compile_f": time.perf_counter() - t0, "mem_f": _mem(cf)})
    jax.block_until_ready(cf(params, x))

    emit({"stage": "compile bound"})
    t0 = time.perf_counter()
    cb = jax.jit(jaxerr.bound(f, **kw)).lower(params, arg).compile()
    emit({"compile_b": time.perf_counter() - t0, "mem_b": _mem(cb), "rss_compiled": _rss_mb()})

    emit({"stage": "first call"})
    t0 = time.perf_counter()
    out = jax.block_until_ready(cb(params, arg))
    err = np.asarray(out.abs_err, np.float64)
    emit({"first_call": time.perf_counter() - t0, "abs_err_max": float(np.max(err)),
          "abs_err_median": float(np.median(err)), "n_inf": int(np.sum(~np.isfinite(err)))})

    emit({"stage": "timing"})
    per_call, reps, _ = _time({"f": (cf, (params, x)), "b": (cb, (params, arg))}, blocks, block_s)
    t = {k: min(v) for k, v in per_call.items()}
    emit({"t_f": t["f"], "t_b": t["b"], "reps": reps, "rss": _rss_mb(), "load1": os.getloadavg()[0]})
    emit({"stage": "done"})


def _exc_summary(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = next((fr for fr in reversed(tb) if "jaxerr" in fr.filename), tb[-1] if tb else None)
    msg = str(e).splitlines()[0] if str(e) else ""
    loc = f" [{os.path.basename(where.filename)}:{where.lineno} in {where.name}]" if where else ""
    return f"{type(e).__name__}: {msg[:200]}{loc}"


def _child(a) -> int:
    r = json.loads(a._row)
    with open(a._out, "w") as fh:
        def emit(d):
            fh.write(json.dumps(d) + "\n")
            fh.flush()

        try:
            measure_row(r, a.blocks, a.block_ms / 1e3, emit)
        except Exception as e:
            print(_exc_summary(e), file=sys.stderr, flush=True)
            return 3
    return 0


def _set_memory_limit(gb: float, pid: int) -> None:
    if gb <= 0:
        return
    try:
        n = int(gb * 2**30)
        resource.prlimit(pid, resource.RLIMIT_AS, (n, n))
    except (AttributeError, OSError, ValueError):  # pragma: no cover
        pass


def run_row(r: dict, a) -> dict:
    """Measure one row in a child process with a time and memory limit; the stages it
    finished survive a timeout or a crash."""
    row = dict(r)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        out, err = os.path.join(d, "row.jsonl"), os.path.join(d, "stderr")
        cmd = [sys.executable, os.path.abspath(__file__), "--_row", json.dumps(r), "--_out", out,
               "--blocks", str(a.blocks), "--block-ms", str(a.block_ms)]
        env = dict(os.environ)
        root = os.path.dirname(_HERE)
        env["PYTHONPATH"] = os.pathsep.join([root] + [q for q in [env.get("PYTHONPATH")] if q])
        with open(err, "w") as ef:
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=ef, env=env)
            _set_memory_limit(a.mem_gb, p.pid)
            try:
                rc = p.wait(timeout=a.row_timeout)
                status = None
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                rc, status = None, f"time limit {a.row_timeout:.0f} s"
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
                status += f" (memory limit {a.mem_gb:g} GiB?)"
        if status:
            row["status"] = f"{status} during {row.get('stage', 'startup')}"
    row["secs"] = time.perf_counter() - t0
    return row


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def _g(v, unit=1.0, nd=2) -> str:
    if v is None:
        return "×"
    v = v / unit
    if v != v:
        return "–"
    if v >= 1000:
        return f"{v:.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.{nd}f}"


def _ms(v) -> str:
    return "×" if v is None else (f"{v * 1e3:.3f}" if v < 1e-3 else _g(v * 1e3))


HEADER = ["model", "batch", "width", "depth", "domain", "input", "K", "compile f [s]", "compile bound [s]",
          "jit(f) [ms]", "bound [ms]", "time ratio", "XLA mem f [MB]", "XLA mem bound [MB]",
          "mem ratio", "RSS [MB]", "load"]


def cells(r: dict) -> list[str]:
    tf, tb = r.get("t_f"), r.get("t_b")
    mf, mb = r.get("mem_f"), r.get("mem_b")
    ratio = "×" if tf is None or tb is None else _g(tb / tf)
    mratio = "×" if mf is None or mb is None else _g(mb / mf)
    model = {"mlp": "MLP", "block": "block", "encoder": "encoder"}[r["model"]]
    width = str(r["width"]) if r["model"] == "mlp" else f"{SEQ}x{HIDDEN}"
    load = r.get("load1", r.get("load0"))
    batch = str(r.get("batch", BATCH)) if r["model"] == "mlp" else "1"
    return [model, batch, width, str(r["depth"]), r["domain"], r["input"],
            "–" if r["symbols"] is None else str(r["symbols"]),
            _g(r.get("compile_f")), _g(r.get("compile_b")) + ("" if "compile_b" in r else " (stopped)"),
            _ms(tf), _ms(tb), ratio, _g(mf, 1e6), _g(mb, 1e6), mratio,
            _g(r.get("rss"), nd=0) if "rss" in r else _g(r.get("rss_compiled"), nd=0),
            "–" if load is None else f"{load:.1f}"]


def print_table(rows: list[dict], markdown: bool) -> None:
    table = [cells(r) for r in rows]
    if markdown:
        print("| " + " | ".join(HEADER) + " |")
        print("|" + "|".join("---" if i < 7 else "---:" for i in range(len(HEADER))) + "|")
        for c in table:
            print("| " + " | ".join(c) + " |")
        return
    widths = [max(len(h), *(len(c[i]) for c in table)) for i, h in enumerate(HEADER)]
    print("  ".join(h.rjust(w) for h, w in zip(HEADER, widths)))
    print("  ".join("-" * w for w in widths))
    for c in table:
        print("  ".join(x.rjust(w) for x, w in zip(c, widths)))


def report(rows: list[dict], markdown: bool) -> None:
    for sec in SECTIONS:
        sel = [r for r in rows if r["section"] == sec]
        if not sel:
            continue
        sel.sort(key=lambda r: (r["depth"], r["width"], r["symbols"] or 0, r["domain"], r["input"] != "point"))
        print(f"\n{'### ' if markdown else '== '}{sec}\n")
        print_table(sel, markdown)
    print()
    print("time ratio: time per call of jit(bound(f)) / jit(f) (compiled programs, min over "
          "interleaved blocks). XLA mem: argument + output + temp bytes of the compiled program "
          "(memory_analysis). RSS: peak resident set of the row's process (compile included). "
          "load: 1-minute load average of the machine after the row. ×: stage not reached.")
    notes = []
    for r in rows:
        tag = (f"{r['model']} w{r['width']} d{r['depth']} {r['domain']} {r['input']}"
               + (f" K={r['symbols']}" if r["symbols"] else ""))
        if "status" in r:
            notes.append(f"{tag}: STOPPED: {r['status']}")
        if r.get("n_inf"):
            notes.append(f"{tag}: {r['n_inf']} outputs with infinite abs_err")
    if notes:
        print("notes:")
        for n in notes:
            print(f"  - {n}")


def plot(rows: list[dict], path: str) -> None:
    """Four panels: time ratio vs width, compile time vs depth, XLA memory ratio vs width
    (interval domain, box input, MLPs) and the affine symbol sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mlp = [r for r in rows if r["section"] == "mlp" and r["input"] == "box"]
    fig, axs = plt.subplots(2, 2, figsize=(12, 8.5))
    (a_t, a_c), (a_m, a_s) = axs
    depths = sorted({r["depth"] for r in mlp})
    widths = sorted({r["width"] for r in mlp})

    def series(sel, x, y):
        return sorted((r[x], y(r)) for r in sel if y(r) is not None)

    for d in depths:
        sel = [r for r in mlp if r["depth"] == d]
        pts = series(sel, "width", lambda r: r["t_b"] / r["t_f"] if "t_b" in r and "t_f" in r else None)
        if pts:
            a_t.plot(*zip(*pts), "-o", label=f"depth {d}")
        pts = series(sel, "width", lambda r: r["mem_b"] / r["mem_f"] if "mem_b" in r and "mem_f" in r else None)
        if pts:
            a_m.plot(*zip(*pts), "-o", label=f"depth {d}")
    for w in widths:
        sel = [r for r in mlp if r["width"] == w]
        pts = series(sel, "depth", lambda r: r.get("compile_b"))
        if pts:
            a_c.plot(*zip(*pts), "-o", label=f"bound(f), width {w}")
        stopped = [(r["depth"], r.get("row_timeout", 0)) for r in sel if "compile_b" not in r and "compile_f" in r]
        if stopped:
            a_c.plot(*zip(*stopped), "x", color="red", ms=10, label=f"width {w}: stopped at the row limit")
    pts = series([r for r in mlp if r["width"] == widths[0]] if widths else [], "depth", lambda r: r.get("compile_f"))
    if pts:
        a_c.plot(*zip(*pts), "--", color="gray", label=f"f, width {widths[0]}")
    for ax, xl, yl, title in (
        (a_t, "MLP width (batch 32)", "time jit(bound(f)) / jit(f)", "interval, box: run time ratio vs width"),
        (a_m, "MLP width (batch 32)", "XLA peak memory bound(f) / f", "interval, box: memory ratio vs width"),
        (a_c, "MLP depth (Dense layers)", "compile time [s]", "interval, box: compile time vs depth"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ok = [r for r in rows if r["section"] == "symbols" and "t_b" in r and "t_f" in r]
    sym = sorted((r["symbols"], r["t_b"] / r["t_f"], r["mem_b"] / r["mem_f"], r["compile_b"]) for r in ok)
    if sym:
        k = [v[0] for v in sym]
        a_s.plot(k, [v[1] for v in sym], "-o", label="run time ratio")
        a_s.plot(k, [v[2] for v in sym], "-s", label="XLA memory ratio")
        a_s.plot(k, [v[3] for v in sym], ":^", color="gray", label="compile time [s]")
        cfg = ok[0]
        a_s.set_title(f"affine, MLP width {cfg['width']} depth {cfg['depth']} batch {cfg['batch']}, box: "
                      "cost vs symbol budget", fontsize=10)
        a_s.set_xscale("log", base=2)
        a_s.set_yscale("log")
        a_s.set_xlabel("symbols K")
        a_s.set_ylabel("bound(f) / f  (compile: seconds)")
        a_s.grid(True, which="both", alpha=0.3)
        a_s.legend(fontsize=7)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot written to {path}")


def _header(a) -> None:
    import jax
    from overhead import _git_state

    import jaxerr

    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        ncpu = os.cpu_count()
    print(f"jax {jax.__version__}, jaxerr {jaxerr.__version__} [{_git_state()}], python "
          f"{platform.python_version()}, {platform.processor() or platform.machine()}")
    print(f"backend: {jax.default_backend()}; CPUs: os.cpu_count()={os.cpu_count()}, usable={ncpu}; "
          f"load average {os.getloadavg()[0]:.1f}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"timing: min over {a.blocks} interleaved blocks of >= {a.block_ms:.0f} ms (at least one "
          f"call) per program; compile excluded. Each row in its own process: limit "
          f"{a.row_timeout:.0f} s, {a.mem_gb:g} GiB address space. Box: x +- {RADIUS}. "
          f"MLP batch {BATCH}; transformer seq {SEQ}, hidden {HIDDEN}, {HEADS} heads, MLP {FF}.", flush=True)


def _key(r: dict) -> tuple:
    return tuple(r.get(k) for k in ("section", "model", "width", "depth", "batch", "domain", "input", "symbols"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 small MLP rows (about 3 minutes on a loaded 2-core CPU)")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument("--sections", type=str, default=None, help=f"comma-separated, from {','.join(SECTIONS)}")
    ap.add_argument("--row-timeout", type=float, default=None, help="seconds per row (default 300, quick 60)")
    ap.add_argument("--mem-gb", type=float, default=16.0, help="address-space limit per row [GiB] (0: none)")
    ap.add_argument("--blocks", type=int, default=None, help="timing blocks per program (default 5, quick 3)")
    ap.add_argument("--block-ms", type=float, default=None, help="block length [ms] (default 50, quick 20)")
    ap.add_argument("--plot", type=str, default=None,
                    help="PNG path (default docs/scale.png for a full run; quick: no plot unless given)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--json", type=str, default=None, help="save the rows to this JSON file")
    ap.add_argument("--from-json", type=str, default=None,
                    help="print / plot rows saved by --json (comma-separated files are merged)")
    ap.add_argument("--domains", type=str, default=None, help="only rows of these domains (comma-separated)")
    ap.add_argument("--inputs", type=str, default=None, help="only rows with these inputs (point,box)")
    ap.add_argument("--resume", action="store_true",
                    help="with --json: keep the rows already in that file and skip them")
    ap.add_argument("--_row", type=str, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_out", type=str, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.blocks = a.blocks or (3 if a.quick else 5)
    a.block_ms = a.block_ms or (20.0 if a.quick else 50.0)
    a.row_timeout = a.row_timeout or (60.0 if a.quick else 300.0)
    if a._row:
        return _child(a)

    if a.from_json:
        merged: dict[tuple, dict] = {}  # a row measured again in a later file replaces it
        for path in a.from_json.split(","):
            with open(path) as fh:
                for r in json.load(fh)["rows"]:
                    merged.pop(_key(r), None)
                    merged[_key(r)] = r
        rows = sorted(merged.values(), key=lambda r: SECTIONS.index(r["section"]))
    else:
        sections = (a.sections or ",".join(SECTIONS)).split(",")
        for s in sections:
            if s not in SECTIONS:
                ap.error(f"unknown section {s!r}")
        _header(a)
        rows = []
        if a.resume and a.json and os.path.exists(a.json):
            with open(a.json) as fh:
                rows = json.load(fh)["rows"]
        done = {_key(r) for r in rows if "status" not in r}  # stopped rows are run again
        t_start = time.perf_counter()
        todo = [r for r in jobs(a.quick, sections) if _key(r) not in done
                and (a.domains is None or r["domain"] in a.domains.split(","))
                and (a.inputs is None or r["input"] in a.inputs.split(","))]
        for i, r in enumerate(todo):
            row = run_row(r, a)
            row["row_timeout"] = a.row_timeout
            rows = [q for q in rows if _key(q) != _key(row)] + [row]
            print(f"  [{i + 1}/{len(todo)}] {row['model']} w{row['width']} d{row['depth']} "
                  f"{row['domain']} {row['input']} K={row['symbols']}: {row['secs']:.0f} s (total "
                  f"{time.perf_counter() - t_start:.0f} s)" + (f"  STOPPED: {row['status']}" if "status" in row else ""),
                  file=sys.stderr, flush=True)
            if a.json:  # save as we go
                with open(a.json, "w") as fh:
                    json.dump({"argv": sys.argv[1:], "rows": rows}, fh, indent=1)
        print(f"total wall time: {time.perf_counter() - t_start:.0f} s")
    report(rows, a.markdown)
    path = a.plot or (None if (a.quick or a.from_json) else os.path.join(os.path.dirname(_HERE), "docs", "scale.png"))
    if path and not a.no_plot:
        plot(rows, path)
    n_stop = sum(1 for r in rows if "status" in r)
    print(f"rows: {len(rows)}; stopped (time/memory limit or error): {n_stop}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
