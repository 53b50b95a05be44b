"""Smoke tests of the demo (``python -m jaxerr.demo``) and the example scripts, and a
real check of examples/flax_mlp_box.py: the largest error seen in simulated low-precision
runs never exceeds the bound."""

import json
import pathlib
import runpy
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxerr import demo

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def fast_compile():
    """XLA without most optimisations for one smoke test: the examples' programs compile
    about twice as fast (their results are not what these tests check; the numbers the
    docs quote come from the full runs, `-m slow`)."""
    prev = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", prev)


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "rich"])
def test_demo_main(capsys, plain):
    argv = ["--precision", "bfloat16", "--box", "1e-3", "--accumulation", "pairwise"]
    assert demo.main(argv + (["--plain"] if plain else [])) == 0
    out = capsys.readouterr().out
    assert "Bounds at the input point x" in out
    assert "Over the box x +- 0.001 in bf16" in out
    assert "exact in [lo, hi]" in out  # brackets survive rich markup
    assert "bf16 at x" in out and "bf16 on box" in out and "max abs_err" in out
    assert "accumulation=pairwise" in out
    assert len(out.splitlines()) <= 40


def _demo_reference(variables, x):
    """The demo MLP in float64 NumPy on its float32 weights (gelu constants as traced)."""
    p = {k: {n: np.asarray(a, np.float64) for n, a in d.items()}
         for k, d in variables["params"].items()}
    h = np.maximum(np.asarray(x, np.float64) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], 0)
    z = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    c3, s = float(np.float32(0.044715)), float(np.float32(np.sqrt(2 / np.pi)))
    h = z * (0.5 * (1.0 + np.tanh(s * (z + c3 * z**3))))
    return h @ p["Dense_2"]["kernel"] + p["Dense_2"]["bias"]


@pytest.mark.parametrize("precision", [None, "bfloat16"])
def test_demo_bounds_hold_at_the_point(precision):
    model, variables, x = demo.build()
    res, _, _ = demo.analyse(model, variables, x, precision)
    dtype = jnp.float32 if precision is None else jnp.dtype(precision)
    low = jax.tree_util.tree_map(lambda a: a.astype(dtype), variables)
    computed = np.asarray(model.apply(low, x.astype(dtype)), np.float64)
    exact = _demo_reference(variables, x)
    value, abs_err = np.asarray(res.value, np.float64), np.asarray(res.abs_err, np.float64)
    if precision is None:  # the value is the program's own output
        np.testing.assert_array_equal(value, computed)
    assert np.all(np.asarray(res.lo) <= exact) and np.all(exact <= np.asarray(res.hi))
    assert np.all(np.abs(computed - exact) <= abs_err)
    assert np.all(np.abs(value - exact) <= abs_err)


def test_demo_rejects_bad_options(capsys):
    with pytest.raises(SystemExit) as e:
        demo.main(["--precision", "float17"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        demo.main(["--accumulation", "sideways"])
    assert e.value.code == 2
    assert "--accumulation" in capsys.readouterr().err


def test_demo_module_help():
    r = subprocess.run([sys.executable, "-m", "jaxerr.demo", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--precision" in r.stdout and "--box" in r.stdout and "--accumulation" in r.stdout


def test_quickstart(capsys):
    runpy.run_path(str(EXAMPLES / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "bfloat16 at the point x:" in out
    assert "bfloat16 over the box x +- 0.001:" in out
    assert out.count("abs_err =") == 2
    first = out.splitlines()[0]  # the README's print: max abs_err, box.lo[:3], box.hi[:3]
    assert 0 < float(first.split()[0]) < 0.1
    page = (EXAMPLES.parent / "docs" / "getting-started.md").read_text()  # shows that line
    shown = next(ln for ln in page.splitlines() if ln.startswith(first.split()[0][:5]))

    def nums(line):
        return [float(t) for t in line.replace("[", " ").replace("]", " ").split()]

    np.testing.assert_allclose(nums(first), nums(shown), rtol=1e-5)  # (other CPUs: last digits)


def test_flax_mlp_box_bound_holds(capsys):
    mod = runpy.run_path(str(EXAMPLES / "flax_mlp_box.py"))
    results = mod["run"](verbose=True)
    out = capsys.readouterr().out
    assert "20 simulated runs" in out and "observed" in out and "ratio" in out
    assert "NO" not in out
    pairs = {(r["format"], r["accumulation"]) for r in results}
    assert pairs == {(f, a) for f in ("float16", "bfloat16") for a in ("recursive", "wide:float32")}
    for r in results:
        where = f"{r['format']}/{r['accumulation']}"
        assert np.all(np.isfinite(r["bound"])), where
        assert np.all(r["observed"] <= r["bound"]), where
        assert r["exact_inside"], where
        assert np.max(r["observed"]) > 0, where  # the simulation really ran in low precision
    # a wide accumulator can only tighten the bound
    by = {(r["format"], r["accumulation"]): r["bound"] for r in results}
    for f in ("float16", "bfloat16"):
        assert np.all(by[f, "wide:float32"] <= by[f, "recursive"])


def test_cli_target_example(capsys):
    """docs/cli.md's first example (and the one in `jaxerr --help`)."""
    from jaxerr import cli

    assert cli.main(["analyze", str(EXAMPLES / "cli_target.py") + ":f", "--input", "uniform:64",
                     "--precision", "bfloat16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # --json alone: only JSON on stdout
    assert out["precision"] == "bfloat16" and out["outputs"][0]["shape"] == [10]
    assert 0 < out["outputs"][0]["abs_err"] < 0.1


@pytest.fixture(scope="module")
def digits_example():
    """examples/report_digits.py, loaded once: the digits tests share its compilations."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    return runpy.run_path(str(EXAMPLES / "report_digits.py"))


def test_report_digits_quick(digits_example, tmp_path, capsys, fast_compile):
    """examples/report_digits.py --quick: training, report, plot, JSON, tune (two
    candidates) and the certified check; the full run is test_report_digits (slow)."""
    res = digits_example["main"](["--out", str(tmp_path), "--quick"])
    out = capsys.readouterr().out
    assert res["accuracy"] > 0.8
    assert "created" in out and "inherited" in out and "fewer bits x operations" in out
    assert "lies within the certified bound" in out
    assert 0 <= res["saving"] < 1 and set(res["assignment"].values()) <= {"float32", "bfloat16"}
    assert (tmp_path / "digits_report.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "digits_report.json").read_text())["stages"]


def test_getting_started_test_file(digits_example, monkeypatch, fast_compile):
    """The test file docs/getting-started.md has the user write (examples/test_digits_bf16.py),
    run from the repository root as the docs say. Its `runpy.run_path("examples/report_digits.py")`
    gets the module the other digits tests loaded, so that the training step and the certified
    analysis compile once; JAXERR_DIGITS_STEPS shortens the training (the docs' numbers come
    from the default 300 steps)."""
    monkeypatch.setenv("JAXERR_DIGITS_STEPS", "20")
    monkeypatch.chdir(EXAMPLES.parent)
    load = runpy.run_path

    def run_path(path, *a, **k):
        return digits_example if path == "examples/report_digits.py" else load(path, *a, **k)

    monkeypatch.setattr(runpy, "run_path", run_path)
    user = load("examples/test_digits_bf16.py")
    user["test_bf16_classifier"]()
    assert user["x"].shape == (4, 64)


@pytest.mark.slow
def test_report_digits(tmp_path, capsys):
    """The full run whose numbers docs/tutorials/digits.md quotes."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    mod = runpy.run_path(str(EXAMPLES / "report_digits.py"))
    res = mod["main"](["--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert res["accuracy"] > 0.9
    assert "50.0% fewer bits x operations" in out
    assert res["assignment"]["DigitsMLP/Dense_0"] == "float16"
    # the report and tune tables docs/getting-started.md shows are today's
    page = (EXAMPLES.parent / "docs" / "getting-started.md").read_text()
    rows = [ln.rstrip() for ln in out.splitlines() if ln.startswith("│ DigitsMLP")]
    assert len(rows) == 9 and all(r in page for r in rows), [r for r in rows if r not in page]


@pytest.mark.slow
def test_cli_digits(tmp_path, capsys, monkeypatch):
    """docs/getting-started.md's and docs/cli.md's report and tune commands on the digits
    classifier, from the repository root (the README's 50 % saving)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from jaxerr import cli

    monkeypatch.chdir(EXAMPLES.parent)
    png, js = tmp_path / "digits.png", tmp_path / "digits.json"
    assert cli.main(["report", "examples/report_digits.py:predict", "--plot", str(png),
                     "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "DigitsMLP/Dense_0" in out and "DigitsMLP: logistic" in out and f"plot saved to {png}" in out
    assert png.stat().st_size > 10_000
    assert [s["name"] for s in json.loads(js.read_text())["stages"]][0] == "DigitsMLP/Dense_0"
    assert cli.main(["tune", "examples/report_digits.py:predict", "--target", "argmax",
                     "--radius", "0.0078125"]) == 0
    assert "saving: 50.0% of the bits x operations of all-float32" in capsys.readouterr().out


def test_certified_test_example():
    """The certified-tolerance tutorial's test file: both of its tests pass."""
    mod = runpy.run_path(str(EXAMPLES / "certified_test_example.py"))
    mod["test_bf16_layer_is_certified"]()
    mod["test_a_wrong_approximation_is_caught"]()
    # the failure message docs/tutorials/certified-tests.md shows is today's
    from jaxerr.testing import assert_allclose_certified

    x, w, b = mod["x"], mod["w"], mod["b"]
    with pytest.raises(AssertionError) as e:
        assert_allclose_certified(mod["approx_layer"](x, w, b), mod["reference"], x, w, b, precision="bfloat16")
    page = (EXAMPLES.parent / "docs" / "tutorials" / "certified-tests.md").read_text()
    lines = str(e.value).splitlines()
    assert lines[0] in page and len(lines) == 6
    for ln in lines[1:]:  # the worst elements and their values (the bounds' last digits may vary by CPU)
        assert ln.split(" not in ")[0] in page


@pytest.mark.slow  # 31 s on the shared 2-core machine even with fast_compile: over the default run's budget
def test_tutorial_cnn_quick(tmp_path, capsys, fast_compile):
    """docs/tutorials/cnn.md's script, --quick: every section but first_order (which
    compiles for ~30 s of CPU; test_tutorial_cnn_full runs it)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    mod = runpy.run_path(str(EXAMPLES / "tutorial_cnn.py"))
    res = mod["main"](["--quick", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "real bfloat16 run inside [lo - abs_err, hi + abs_err]: True" in out
    names = {st.name for st in res["report"].stages}
    assert {"CNN/Conv_0", "CNN/BatchNorm_0", "CNN/Conv_1", "CNN/Dense_0"} <= names
    assert "assert_allclose_certified: passed" in out and "jaxerr tune" in out
    assert np.isfinite(res["point_abs_err"]) and res["box_abs_err"] >= res["point_abs_err"]
    assert 0 <= res["saving"] < 1
    assert (tmp_path / "cnn_report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_tutorial_cnn_full(tmp_path, capsys):
    pytest.importorskip("sklearn")
    mod = runpy.run_path(str(EXAMPLES / "tutorial_cnn.py"))
    res = mod["main"](["--out", str(tmp_path)])
    assert res["accuracy"] > 0.9
    assert res["first_order_abs_err"] <= res["interval_abs_err"]
    assert 0 <= res["saving"] < 1


def _check_transformer(res, out):
    if not np.isfinite(res["all_bf16_abs_err"]):  # all-bfloat16: the LayerNorm is named
        assert "rsqrt" in out
    assert np.isfinite(res["mixed_abs_err"])
    assert any("MultiHeadDotProductAttention_0" in st.name for st in res["report"].stages)


@pytest.mark.slow  # ~70 s (three op-by-op analyses of an attention block): over the default budget
def test_tutorial_transformer_quick(tmp_path, capsys, fast_compile):
    """docs/tutorials/transformer.md's script, --quick: every section, a short training."""
    pytest.importorskip("sklearn")
    mod = runpy.run_path(str(EXAMPLES / "tutorial_transformer.py"))
    res = mod["main"](["--quick", "--out", str(tmp_path)])
    _check_transformer(res, capsys.readouterr().out)
    assert (tmp_path / "transformer_report.png").stat().st_size > 10_000


@pytest.mark.slow
def test_tutorial_transformer(tmp_path, capsys):
    pytest.importorskip("sklearn")
    mod = runpy.run_path(str(EXAMPLES / "tutorial_transformer.py"))
    res = mod["main"](["--out", str(tmp_path)])  # the trained model of the tutorial (bounds checked there)
    _check_transformer(res, capsys.readouterr().out)


def test_mixed_precision_digits_tiny(capsys):
    """examples/mixed_precision_digits.py --tiny (a 784-16-8-10 ReLU MLP, 20 training steps,
    16 test digits): the vmapped sweep, the validation selection of (tol, c) and the tables."""
    pytest.importorskip("optax")
    pytest.importorskip("sklearn")
    mod = runpy.run_path(str(EXAMPLES / "mixed_precision_digits.py"))
    res = mod["main"](["--tiny", "--out", ""])
    out = capsys.readouterr().out
    assert "chosen on the validation split" in out and "seed rule's logit error" in out
    rows = {r[0]: r for r in res["relu"]}
    assert rows["uniform fp8"][5] == 0.0 and rows["uniform fp16"][5] == 1.0
    assert rows["uniform fp16"][4] < rows["uniform fp8"][4]  # fp16 is closer to fp32 than e4m3
    assert all(0.0 <= r[5] <= 1.0 for r in res["relu"])
    assert any(k.startswith("condition+sign c=") for k in rows)


@pytest.mark.slow  # ~15 s of CPU (six compilations); the digits example's tiny run is the default one
def test_mixed_precision_cnn_transformer_tiny(capsys):
    """examples/mixed_precision_cnn_transformer.py --tiny --nets cnn (the transformer's
    tiny run is test_mixed_precision_cnn_transformer_tiny_both: ~40 s of compiling)."""
    pytest.importorskip("optax")
    pytest.importorskip("sklearn")
    mod = runpy.run_path(str(EXAMPLES / "mixed_precision_cnn_transformer.py"))
    res = mod["main"](["--tiny", "--nets", "cnn"])
    out = capsys.readouterr().out
    assert "conv_general_dilated -> relu" in out
    rows = {r[0]: r for r in res["cnn"]}
    assert rows["uniform fp8"][5] == 0.0 and rows["uniform fp16"][5] == 1.0
    assert all(0.0 <= r[5] <= 1.0 for r in res["cnn"])


@pytest.mark.slow
def test_mixed_precision_cnn_transformer_tiny_both(capsys):
    pytest.importorskip("optax")
    pytest.importorskip("sklearn")
    mod = runpy.run_path(str(EXAMPLES / "mixed_precision_cnn_transformer.py"))
    res = mod["main"](["--tiny"])
    assert set(res) == {"cnn", "transformer"}
    assert "exp" in capsys.readouterr().out  # the products feeding softmax use exp's criterion
