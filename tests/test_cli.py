"""The jaxerr command line (main([...]) in process, one subprocess for the entry point)."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxerr import cli

TARGET = """
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import jax

W = np.linspace(-1, 1, 24, dtype=np.float32).reshape(6, 4) / 3

def f(x):
    return jnp.tanh(x @ W)

class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.tanh(nn.Dense(4)(x)))

_net = Net()

def predict(v, x):
    return _net.apply(v, x)

def predict_inputs():
    x = np.linspace(-1, 1, 6, dtype=np.float32)
    return _net.init(jax.random.PRNGKey(0), x), x
"""


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "model.py"
    p.write_text(TARGET)
    return str(p)


def test_help_teaches(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for s in ("analyze", "report", "tune", "demo", "normal:8x64", "--radius", "FN_inputs()", "examples"):
        assert s in out


def test_analyze_json(target, capsys):
    assert cli.main(["analyze", f"{target}:f", "--input", "uniform:6", "--precision", "bfloat16",
                     "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["precision"] == "bfloat16" and d["outputs"][0]["shape"] == [4]
    assert 0 < d["outputs"][0]["abs_err"] < 0.1


@pytest.mark.slow
def test_analyze_table_box(target, capsys):
    assert cli.main(["analyze", f"{target}:f", "--input", "normal:2x6:seed=1", "--radius", "1e-3"]) == 0
    out = capsys.readouterr().out
    assert "box radius 0.001" in out and "max abs_err" in out


@pytest.mark.slow
def test_report_plot_json(target, tmp_path, capsys):
    png, js = tmp_path / "r.png", tmp_path / "r.json"
    assert cli.main(["report", f"{target}:predict", "--precision", "bfloat16", "--plot", str(png),
                     "--json", str(js), "--equations"]) == 0
    out = capsys.readouterr().out
    assert "Net/Dense_0" in out and "created" in out and f"plot saved to {png}" in out
    assert png.stat().st_size > 10_000
    assert [s["name"] for s in json.loads(js.read_text())["stages"]] == ["Net/Dense_1", "Net", "Net/Dense_0"]  # flax names Dense(3) first


@pytest.mark.slow
def test_tune(target, capsys):
    assert cli.main(["tune", f"{target}:predict", "--target", "argmax", "--candidates",
                     "float32,bfloat16", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["target"] == "argmax certified" and set(d["assignment"].values()) <= {"float32", "bfloat16"}
    assert d["saving"] > 0


def test_bad_inputs(target):
    with pytest.raises(SystemExit, match="input spec"):
        cli.main(["analyze", f"{target}:f", "--input", "gauss:3"])
    with pytest.raises(SystemExit, match="no attribute"):
        cli.main(["analyze", f"{target}:nope", "--input", "uniform:6"])
    with pytest.raises(SystemExit, match="--input"):
        cli.main(["analyze", f"{target}:f"])


def test_analyze_first_order_refine_budget(target, capsys):
    assert cli.main(["analyze", f"{target}:f", "--input", "uniform:6", "--precision", "bfloat16",
                     "--domain", "first_order", "--refine-budget", "0", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert 0 < d["outputs"][0]["abs_err"] < 0.1
    with pytest.raises(SystemExit, match="domain='first_order'"):
        cli.main(["analyze", f"{target}:f", "--input", "uniform:6", "--refine-budget", "8"])


def test_analyze_analysis_dtype(target, capsys):
    assert cli.main(["analyze", f"{target}:f", "--input", "uniform:6", "--analysis-dtype", "float64",
                     "--json"]) == 0
    d64 = json.loads(capsys.readouterr().out)
    assert cli.main(["analyze", f"{target}:f", "--input", "uniform:6", "--json"]) == 0
    d32 = json.loads(capsys.readouterr().out)
    assert 0 < d64["outputs"][0]["abs_err"] <= d32["outputs"][0]["abs_err"] * 1.01


def test_npy_input(target, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones(6, np.float32))
    assert cli.main(["analyze", f"{target}:f", "--input", str(tmp_path / "x.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"][0]["shape"] == [4]


@pytest.mark.slow
def test_entry_point_subprocess():
    # python -m jaxerr.cli works without the console script installed
    r = subprocess.run([sys.executable, "-m", "jaxerr.cli", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=pathlib.Path(__file__).resolve().parent.parent)
    assert r.returncode == 0 and "jaxerr" in r.stdout


def test_demo_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: jaxerr demo")


def test_help_examples_name_existing_files():
    """`jaxerr --help`'s examples run from the repository root: the example files exist and
    the commands parse (the epilog once named a function that took other shapes)."""
    import shlex

    root = pathlib.Path(__file__).resolve().parent.parent
    parser = cli.build_parser()
    lines = [ln.split("#", 1)[0].strip() for ln in cli._EPILOG.splitlines()]
    cmds = [shlex.split(ln)[1:] for ln in lines if ln.startswith("jaxerr ") and ln != "jaxerr demo"]
    assert len(cmds) >= 4
    for argv in cmds:
        ns = parser.parse_args(argv)
        path = ns.function.rsplit(":", 1)[0]
        if path.startswith("examples/"):
            assert (root / path).exists(), argv


def test_stage_labels():
    from jaxerr.report import _stage_label

    seen: dict[str, int] = {}
    got = [_stage_label(n, p, seen) for n, p in [
        ("CNN/Conv_0", ["conv_general_dilated", "add"]), ("CNN", ["tanh"]), ("CNN/Dense_0", ["dot_general"]),
        ("CNN", ["tanh"]), ("CNN", ["logistic"]), ("", ["exp"]), ("CNN/Dense_0", ["dot_general", "add"])]]
    assert got == ["CNN/Conv_0", "CNN: tanh", "CNN/Dense_0", "CNN: tanh #2", "CNN: logistic", "(top): exp",
                   "CNN/Dense_0 #2"]


@pytest.mark.slow  # ~11 s (a report of a Flax model); test_stage_labels checks the labelling itself
def test_report_stage_labels_number_repeats_only():
    """Stage labels: a module's own path for dense/conv layers, the ops for activations called
    in the parent, and '#k' only when the same label repeats."""
    import flax.linen as nn
    import jax

    import jaxerr

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.tanh(nn.Dense(4)(x))
            x = nn.tanh(nn.Dense(4)(x))
            return nn.sigmoid(nn.Dense(3)(x))

    net = Net()
    x = np.linspace(-1, 1, 6, dtype=np.float32)
    v = net.init(jax.random.PRNGKey(0), x)
    rep = jaxerr.report(lambda v, x: net.apply(v, x), "bfloat16")(v, x)
    assert [s.label for s in rep.stages] == ["Net/Dense_0", "Net: tanh", "Net/Dense_1", "Net: tanh #2",
                                             "Net/Dense_2", "Net: logistic"]
    assert "Net: tanh #2" in str(rep)


def test_tune_table_states_margin_and_saving():
    from rich.console import Console

    from jaxerr.tune import Target, TuneResult

    res = TuneResult(assignment={"a": "bfloat16", "b": "float32"}, precision=None, bounds=None,
                     target=Target.parse("argmax"), achieved=0.25, cost=48.0, baseline_cost=64.0,
                     baseline="float32", operations={"a": 1, "b": 1}, analyses=3)
    c = Console(width=120, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    c.print(res.table())
    out = c.export_text()
    assert "argmax certified (margin 0.25)" in out and "25.0% saved" in out and "bfloat16" in out


def test_radius_boxes_only_the_last_argument():
    """--radius: the data (last argument) becomes a box, parameters stay points, as the help says."""
    import jaxerr

    params = {"w": np.ones(3, np.float32)}
    mod = type("M", (), {"predict_inputs": staticmethod(lambda: (params, np.zeros(3, np.float32)))})
    args = cli.make_args("predict", mod, [], 0.5)
    assert isinstance(args[1], jaxerr.Interval) and not isinstance(args[0]["w"], jaxerr.Interval)
    np.testing.assert_array_equal(np.asarray(args[1].hi), 0.5)
    assert "the other arguments (parameters) stay points" in cli._EPILOG
