"""The steady-state integrator benchmark measures what it says (quick run on real MNIST)."""

from pathlib import Path

import pytest

from implicit.deq import SteadyState
from train import _bench_steady
from train._results import write_json_and_summary

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (DATA / "MNIST" / "raw").is_dir(), reason="real MNIST not found")
def test_quick_run_reports_each_integrator_with_its_own_calls_and_the_tests_it_passed(tmp_path):
    cfg = _bench_steady.parse(["--quick", "--out", str(tmp_path / "s.json"), "--data-dir", str(DATA)])
    result = _bench_steady.run(cfg)
    (case,) = result["cases"]
    rows = case["rows"]
    assert {r["integrator"] for r in rows} == set(_bench_steady.INTEGRATORS)
    ref = [r for r in rows if (r["integrator"], r["ode_tolerances"]) == _bench_steady.REFERENCE]
    assert len(ref) == 1 and ref[0]["nfe_vs_reference"] == 1.0
    for r in rows:
        assert r["nfe"] > r["steps"] > 0
        if r["outcome"] == "successful":
            assert r["batch_residual"] <= case["tol"]
        else:
            assert r["batch_residual"] > case["tol"]
    # the recorded NFE is that of an independent solve with the same settings
    (cell, f, shape, tol, max_steps), = _bench_steady._cells(cfg)
    import torch

    r = next(r for r in rows if r["integrator"] == "vcab3" and r["ode_tolerances"] == "papers'")
    st = SteadyState(solver=_bench_steady.INTEGRATORS["vcab3"], rtol=tol, atol=1e-12, stopping_test="batch",
                     max_steps=max_steps, ode_rtol=r["ode_rtol"], ode_atol=r["ode_atol"]).solve(
        f, torch.zeros(cfg.batch, *shape)).stats
    assert st.nfe == r["nfe"]
    write_json_and_summary(cfg.out, result, _bench_steady.render_markdown(result))
    md = cfg.out.with_suffix(".md").read_text()
    assert md.count("| MNIST FC, init |") == len(rows)
    assert "/tmp" not in cfg.out.read_text() and str(tmp_path) not in cfg.out.read_text()
