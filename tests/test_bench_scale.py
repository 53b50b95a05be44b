"""benchmarks/scale.py's row code path on a tiny MLP (no timings are asserted: the row
must produce every field, the table and the plot)."""

from __future__ import annotations

import os
import sys

import pytest

_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


@pytest.fixture
def scale():
    pytest.importorskip("flax")
    pytest.importorskip("matplotlib")
    sys.path.insert(0, _BENCH)
    try:
        import scale

        yield scale
    finally:
        sys.path.remove(_BENCH)


def test_scale_row_table_and_plot(scale, tmp_path, capsys):
    r = {"section": "mlp", "model": "mlp", "width": 8, "depth": 2, "batch": 2, "domain": "interval",
         "input": "box", "symbols": None}
    got = dict(r)
    scale.measure_row(r, blocks=1, block_s=0.001, emit=got.update)
    assert got["stage"] == "done"
    for k in ("compile_f", "compile_b", "t_f", "t_b", "mem_f", "mem_b", "rss"):
        assert got[k] > 0, k
    assert got["n_inf"] == 0 and got["abs_err_max"] > 0
    stopped = dict(r, depth=4, stage="compile bound", compile_f=0.1, timeout=True, status="time limit 1 s")
    sym = dict(got, section="symbols", domain="affine", symbols=64)
    scale.report([got, stopped, sym], markdown=True)
    out = capsys.readouterr().out
    assert "| MLP | 2 | 8 | 2 | interval | box |" in out and "STOPPED: time limit 1 s" in out
    scale.plot([got, sym], str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 1000
    # the full grid holds every width, depth and symbol budget the issue asks for
    keys = [scale._key(j) for j in scale.jobs(False, list(scale.SECTIONS))]
    assert len(set(keys)) == len(keys)
    assert {k[2] for k in keys if k[0] == "mlp"} == {64, 256, 1024, 4096}
    assert {k[3] for k in keys if k[0] == "mlp"} == {2, 4, 8, 16}
    assert {k[7] for k in keys if k[0] == "symbols"} == {64, 128, 256, 512, 1024}
    assert {k[0] for k in keys} == set(scale.SECTIONS)
